"""Constrained decoding for the PyTorch backend, with llguidance.

Why llguidance (and not xgrammar, measured on this project's tokenizers, see docs/SERVING.md): both
compute a token mask in microseconds on a CPU, far below one forward pass of even the smallest
model; llguidance names the JSON-schema keywords it cannot express (``uniqueItems``, ``not``, ...)
where xgrammar ignores them and lets invalid output through; its regexes keep free text valid UTF-8
and tell special tokens from text; and it is one small wheel, where xgrammar pulls in transformers
and triton.

The grammar is a Lark grammar (:func:`lark_grammar`) whose JSON parts are llguidance's own JSON-schema
compiler (``%json``), written with ``json.dumps``' separators, the form the model is trained on. The
tool-call markers are Codette's special tokens, so a call opens only with the ``<tool_call>`` token;
free text may not spell ``<tool_call>`` out of ordinary tokens either, or the parser would read an
unconstrained call in it. :func:`guided_tokens` is the decoding loop: the model's KV cache, the sampler
of :mod:`codette.model.generate`, and the mask only where the model's own pick breaks the grammar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from codette.backends.base import SamplingConfig
from codette.backends.constraints import (Constraint, Kept, UnsupportedSchema, answer_schema, call_schema,
                                          constraint_key)
from codette.backends.finish import Finish, closers
from codette.errors import CodetteError
from codette.model.generate import _pick
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import MARKER_TOKENS
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

# json.dumps' separators and no other whitespace: the model's training text, and no room to stall in blanks.
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
MATCHERS_KEPT = 8  # built matchers a Guide keeps to copy from


def _json(schema: dict[str, Any]) -> str:
    options = {**(schema.get("x-guidance") or {}), **JSON_OPTIONS}
    return "%json " + json.dumps({**schema, "x-guidance": options})


def lark_grammar(constraint: Constraint, tokenizer: CodetteTokenizer) -> str:
    """The llguidance (Lark) grammar of ``constraint`` for the model's tokenizer."""
    rules = []
    calls = constraint.calls
    if constraint.answer is not None:
        rules.append(f"answer: {_json(answer_schema(constraint.answer))}")
    if calls is not None and calls.functions:
        open_id, close_id = tokenizer.token_id(TOOL_CALL_OPEN), tokenizer.token_id(TOOL_CALL_CLOSE)
        more = ' ("\\n" call)*' if calls.parallel else ""
        rules += [f"calls: call{more}",
                  f'call: <[{open_id}]> "\\n" call_body "\\n" <[{close_id}]>',
                  f"call_body: {_json(call_schema(calls.functions))}"]
    if calls is None or (not calls.functions and constraint.answer is not None):
        start = "answer"
    elif not calls.functions:  # no tool to call: text that never opens a call
        start = "text"
        rules += _free_text(tokenizer)
    elif calls.required:
        start = "calls"
    elif constraint.answer is not None:
        start = "answer | calls"
    else:
        start = "text calls?"
        rules += _free_text(tokenizer)
    return "\n".join([f"start: {start}", *rules])


def _free_text(tokenizer: CodetteTokenizer) -> list[str]:
    """Rule ``text``: free text, the model's markers (<consciousness>, <perspective>) between its pieces, and
    never ``<tool_call>``, as a token or spelt out."""
    marks = sorted(tokenizer.token_id(t) for t in MARKER_TOKENS if t not in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE))
    return [f"text: TEXT? (<[{','.join(map(str, marks))}]> TEXT?)*",
            f"TEXT: /(?s:.+)/ & ~/(?s:.*){TOOL_CALL_OPEN}(?s:.*)/"]


class Guide:
    """llguidance for one tokenizer: its token table, built once, and a checked matcher per constraint."""

    def __init__(self, tokenizer: CodetteTokenizer) -> None:
        try:
            import llguidance
        except ImportError as exc:  # a core dependency; a broken install still gets a clear line
            raise CodetteError(f"constrained decoding needs llguidance ({exc}): pip install llguidance") from None
        self._llg = llguidance
        self.tokenizer = tokenizer
        self.lltok = llguidance.LLTokenizer(tokenizer.tok.to_str(), n_vocab=len(tokenizer),
                                            eos_token=tokenizer.stop_ids)
        # constraint_key -> a matcher never advanced; each reply gets a copy
        self._built: Kept[Any] = Kept(MATCHERS_KEPT, copy=lambda matcher: matcher.deep_copy())
        self.closers = closers(tokenizer.encode)  # the finishing policy's tokens
        by_id = {i: text for text, i in tokenizer.tok.get_vocab(with_added_tokens=True).items()}
        self.lengths = torch.tensor([len(by_id.get(i, "")) for i in range(len(tokenizer))])

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher for ``constraint``; :class:`UnsupportedSchema` naming what llguidance cannot express
        (``Unimplemented keys: ["uniqueItems"]``) and the request field it is in.

        Checking and compiling a tool table's grammar takes about ten milliseconds, a good part of a short
        reply; a copy of a matcher built before takes microseconds, so the last few are kept unused to copy."""
        return self._built.get(constraint_key(constraint), lambda: self._build(constraint))

    def _build(self, constraint: Constraint) -> Any:
        parts = []
        if constraint.answer is not None:
            parts.append(("response_format", answer_schema(constraint.answer)))
        if constraint.calls is not None and constraint.calls.functions:
            parts.append(("tools", call_schema(constraint.calls.functions)))
        for param, schema in parts:  # one at a time, so the error names the field
            error = self._check(self._llg.LLMatcher.grammar_from_json_schema(schema))
            if error:
                raise UnsupportedSchema(f"{param}: the grammar cannot express this schema: {error}", param)
        grammar = self._llg.LLMatcher.grammar_from_lark(lark_grammar(constraint, self.tokenizer))
        error = self._check(grammar)
        if error:  # the parts passed: this is ours, not the request's
            raise CodetteError(f"constrained decoding: llguidance refused the grammar: {error}")
        return self._llg.LLMatcher(self.lltok, grammar, log_level=0)

    def _check(self, grammar: str) -> str:
        return self._llg.LLMatcher.validate_grammar(grammar, self.lltok)


class MatcherGrammar:
    """An llguidance matcher as :class:`codette.backends.finish.Grammar` (a plan advances a deep copy)."""

    def __init__(self, matcher: Any, lengths: torch.Tensor) -> None:
        """``lengths``: each token's length in characters (its text as the tokenizer's vocabulary spells it)."""
        self.matcher, self.lengths = matcher, lengths

    def fork(self) -> MatcherGrammar:
        return MatcherGrammar(self.matcher.deep_copy(), self.lengths)

    def allows(self, token: int) -> bool:
        return self.matcher.validate_tokens([token]) == 1

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise CodetteError(f"constrained decoding failed: {self.matcher.get_error()}")

    def can_end(self) -> bool:
        return self.matcher.is_accepting()

    def longest_allowed(self) -> int | None:
        ok = allowed(self.matcher, len(self.lengths))
        if not ok.any():
            return None
        return int(torch.argmax(torch.where(ok, self.lengths, -1)))  # argmax: the first of the longest

    def close(self) -> None:
        """Nothing to free: the copy is Python's."""


def allowed(matcher: Any, vocab_size: int) -> torch.Tensor:
    """The matcher's next-token mask as booleans over the first ``vocab_size`` ids."""
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
    return torch.from_numpy(bits[:vocab_size].astype(bool))


@torch.no_grad()
def guided_tokens(model: Any, prompt: Sequence[int], sampling: SamplingConfig, matcher: Any,
                  stop_ids: Sequence[int], lengths: torch.Tensor, order: Sequence[int] = (),
                  on_masked: Callable[[int], None] | None = None,
                  on_finish: Callable[[int], None] | None = None) -> Iterator[int]:
    """Yield the reply's token ids, each one the grammar allows, until a stop id (not yielded), the grammar's
    end, ``max_new_tokens`` or the context end.

    :func:`codette.model.generate.generate_tokens` has no hook for a mask, so this is its loop with one:
    the model's KV cache, the last position's logits cut to the tokenizer's ids, then its sampler. The
    sampler picks from the model's own distribution first and the matcher checks that one token; only a
    token it refuses sends the step through the grammar's mask (``on_masked`` gets the step's index), as
    llama.cpp's common sampler does. Sampling from the distribution and, on a refusal, from the masked one
    is sampling from the masked distribution (exactly so for greedy decoding and plain temperature
    sampling; with top-k or top-p the cut is made before the mask first), and free text the grammar lets
    through is decoded exactly as it is unheld, so a lazy ``<tool_call>`` hold costs next to nothing until
    the model writes what the grammar refuses.

    In the budget's last tokens the reply is planned to end where the grammar lets it, with the finishing
    policy's tokens ``order`` (:mod:`codette.backends.finish`); ``on_finish`` gets the step it began at.
    """
    max_len = model.cfg.max_seq_len
    device = model.embed.weight.device
    gen = torch.Generator(device="cpu").manual_seed(sampling.seed) if sampling.seed is not None else None
    stops = set(stop_ids)
    vocab_size = len(lengths)
    grammar, finish = MatcherGrammar(matcher, lengths), Finish(order)
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(1)
        feed, length = list(prompt), len(prompt)
        for step in range(sampling.max_new_tokens):
            if length >= max_len or matcher.is_stopped():
                return
            remaining = min(sampling.max_new_tokens - step, max_len - length)
            if finish.finishing:  # the plan's tokens need no logits: the reply ends with them
                nxt = finish.step(grammar, None, remaining)
            else:
                logits = model(torch.tensor([feed], device=device), cache=cache, last_only=True)[0, -1]
                logits = logits[:vocab_size].float().cpu()
                nxt = _pick(logits, sampling.temperature, sampling.top_k, sampling.top_p, gen)
                if not matcher.validate_tokens([nxt]):
                    if on_masked is not None:
                        on_masked(step)
                    logits = logits.masked_fill(~allowed(matcher, vocab_size), float("-inf"))
                    nxt = _pick(logits, sampling.temperature, sampling.top_k, sampling.top_p, gen)
                if nxt in stops:
                    return
                nxt = finish.step(grammar, nxt, remaining)
                if finish.finishing and on_finish is not None:
                    on_finish(step)
            if nxt is None:
                return
            yield nxt
            feed, length = [nxt], length + 1
    finally:
        model.train(was_training)
