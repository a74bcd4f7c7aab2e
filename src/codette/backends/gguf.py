"""Chat with an exported GGUF through llama-cpp-python: the same probes as the PyTorch checkpoint.

Why a backend and not a converter: evaluating the file users actually run (quantised, through
llama.cpp's kernels and tokenizer) is the only way to see what quantisation costs. The prompt is
rendered with Codette's chat template (the one stored in the GGUF, which the exporter writes from
:data:`~codette.tokenizer.CHAT_TEMPLATE`); prompts are tokenized with Codette's tokenizer when its
files are beside the GGUF (so prompt ids equal the PyTorch path's) and by llama.cpp from the GGUF's
own vocabulary otherwise. A tokenizer whose vocabulary differs from the GGUF's is refused: its ids
would index the wrong embedding rows and every reply would be garbage that looks like a bad model.
Decoding is greedy by default and stops at ``<|im_end|>`` or ``<eos>``. A reply held to a grammar
(structured output) is decoded by this module's own loop on llama.cpp's sampler API (:class:`Hold`),
which masks only the steps where the model's own pick breaks the grammar.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from codette.backends.base import Chunk, SamplingConfig
from codette.backends.constraints import Kept, UnsupportedSchema, constraint_for
from codette.backends.finish import Finish, closers
from codette.backends.gbnf import gbnf_grammar
from codette.backends.textdeltas import TextDeltas
from codette.errors import CodetteError
from codette.tokenizer import CodetteTokenizer, render
from codette.tokenizer.bpe import TOKENIZER_FILE
from codette.tokenizer.chat_template import CHAT_TEMPLATE, CONTROL_TOKENS, EOS, IM_END

log = logging.getLogger(__name__)


class GGUFMeta(NamedTuple):
    tokens: list[str]
    chat_template: str | None
    context_length: int | None  # the context the model was trained with (``<arch>.context_length``)
    architecture: str | None = None  # ``general.architecture`` (llama, starcoder2, ...)
    file_type: str | None = None  # ``general.file_type`` by llama.cpp's name: F32, F16, Q8_0, Q4_K_M, ...
    parameter_count: int | None = None  # the tensors' elements, summed


def gguf_metadata(path: Path) -> GGUFMeta:
    """The GGUF's token list, chat template, context length, architecture, file type and parameter count
    (None when absent), read without loading weights."""
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf-py raises ValueError / struct errors on bad files
        raise CodetteError(f"{path} is not a readable GGUF file: {type(exc).__name__}: {exc}") from None
    tokens_field = reader.fields.get("tokenizer.ggml.tokens")
    if tokens_field is None:
        raise CodetteError(f"{path}: no 'tokenizer.ggml.tokens' metadata; it has no vocabulary to chat with")
    tokens = [str(t) for t in tokens_field.contents()]
    tmpl = reader.fields.get("tokenizer.chat_template")
    arch = reader.fields.get("general.architecture")
    ctx = reader.fields.get(f"{arch.contents()}.context_length") if arch is not None else None
    ftype = reader.fields.get("general.file_type")
    return GGUFMeta(tokens, str(tmpl.contents()) if tmpl is not None else None,
                    int(ctx.contents()) if ctx is not None else None,
                    str(arch.contents()) if arch is not None else None,
                    _file_type_name(int(ftype.contents())) if ftype is not None else None,
                    sum(int(t.n_elements) for t in reader.tensors))


def _file_type_name(value: int) -> str:
    """``general.file_type`` as llama.cpp prints it (``MOSTLY_Q8_0`` -> ``Q8_0``, ``ALL_F32`` -> ``F32``)."""
    import gguf

    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return str(value)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def check_vocab(gguf_tokens: list[str], tok: CodetteTokenizer, path: Path, tokenizer_dir: Path) -> None:
    """Refuse a tokenizer whose id -> token table is not the GGUF's (padding rows aside)."""
    ours = tok.tok.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in ours.items()}
    if len(by_id) > len(gguf_tokens):
        raise CodetteError(f"{path} has {len(gguf_tokens)} tokens but the tokenizer in {tokenizer_dir} has "
                           f"{len(by_id)}: they are not the same vocabulary")
    for i in range(len(by_id)):
        if by_id.get(i) != gguf_tokens[i]:
            raise CodetteError(f"{path}: its vocabulary differs from the tokenizer in {tokenizer_dir} (token id {i} "
                               f"is {gguf_tokens[i]!r} in the GGUF but {by_id.get(i)!r} in {TOKENIZER_FILE})")
    # Rows past the tokenizer are the exporter's "[PADn]" fillers; a real token there means the GGUF was made
    # with a larger tokenizer (a smaller BPE of the same data shares its first ids, so the loop above passes).
    extra = [t for i, t in enumerate(gguf_tokens[len(by_id):], len(by_id)) if t != f"[PAD{i}]"]
    if extra:
        raise CodetteError(f"{path} has {len(by_id) + len(extra)} real tokens but the tokenizer in {tokenizer_dir} "
                           f"has {len(by_id)} (e.g. {extra[0]!r} is missing): they are not the same vocabulary")


GRAMMARS_KEPT = 8  # parsed grammars a backend keeps to copy from
CANDIDATES = 64  # greedy: the best tokens checked one by one before the grammar masks the whole vocabulary
# llama.cpp's llama_token_data (id, logit, p), as numpy lays it out: one array the samplers work on in place.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Freed:
    """What holds llama.cpp samplers: freed by ``close`` (once), at the latest when collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.close()
        except (AttributeError, TypeError):  # at interpreter exit llama_cpp's functions may be gone already
            pass


class FirstChars:
    """A byte-level vocabulary's token ids grouped by their text's first character (byte), so that a grammar
    over characters is asked about the tokens whose first byte it takes, not about the whole vocabulary: a
    token is allowed only if its first byte is, and checking the 256 one-byte tokens first and then the few
    hundred that start with an allowed one takes about a sixth of checking all 4,096 of the quickstart's
    vocabulary (llama.cpp's grammar costs about 80 ns a token).

    None (:meth:`of`) for a vocabulary without a token for every byte (SentencePiece's ``<0x41>`` tokens do
    not start with their byte): there every token is checked."""

    def __init__(self, singles: np.ndarray, groups: list[np.ndarray], always: np.ndarray) -> None:
        self.singles, self.groups, self.always = singles, groups, always

    @classmethod
    def of(cls, tokens: list[str], n_vocab: int, always: Iterable[int]) -> FirstChars | None:
        """``tokens``: the GGUF's token texts; ``always``: ids checked whatever their text (the end-of-turn
        tokens, which llama.cpp's grammar judges by the grammar's state, not by their text)."""
        from tokenizers.pre_tokenizers import ByteLevel

        single = {text: i for i, text in enumerate(tokens) if len(text) == 1}
        chars = sorted(ByteLevel.alphabet())  # the characters byte-level BPE writes the 256 bytes as
        if any(c not in single for c in chars):
            return None
        singles = np.array([single[c] for c in chars], dtype=np.int32)
        slot = {c: k for k, c in enumerate(chars)}
        by_first: list[list[int]] = [[] for _ in chars]
        rest = set(always)
        for i, text in enumerate(tokens[:n_vocab]):
            k = slot.get(text[:1])
            if k is None:
                rest.add(i)  # a marker (``<tool_call>``) starts with a byte too; anything else is checked always
            elif i not in rest:
                by_first[k].append(i)
        return cls(singles, [np.array(ids, dtype=np.int32) for ids in by_first],
                   np.array(sorted(rest), dtype=np.int32))


class LlamaGrammar(Freed):
    """A llama.cpp grammar sampler as :class:`codette.backends.finish.Grammar`: checked one candidate at a time
    (microseconds), cloned for a plan, freed once.

    llama.cpp's grammar is over characters, so it lets a control token with no text (``<pad>``) through
    wherever it is, as writing nothing; llguidance refuses such tokens, and so does this grammar, or a
    reply held to it could stall on them."""

    def __init__(self, sampler: Any, lengths: np.ndarray, stops: Iterable[int], silent: Iterable[int] = (),
                 firsts: FirstChars | None = None) -> None:
        """``sampler``: a llama.cpp grammar sampler, which this object now owns (and frees); ``lengths``: each
        token's length in characters (its text in the GGUF's vocabulary); ``stops``: the ids that end the
        turn; ``silent``: the control tokens it refuses; ``firsts``: the vocabulary by first byte, if it
        has one."""
        import llama_cpp

        self._lc, self.sampler, self.lengths, self.stops = llama_cpp, sampler, lengths, tuple(stops)
        self.firsts = firsts
        self.n_vocab = len(lengths)
        self._silent = frozenset(int(t) for t in silent) - set(self.stops)
        self.silent = np.array(sorted(self._silent), dtype=np.int64)
        self._one = llama_cpp.llama_token_data(0, 0.0, 0.0)
        self._one_array = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    def mask(self, cells: np.ndarray) -> None:
        """Set the logit of every cell the grammar refuses to -inf: ``cells`` (:data:`TOKEN_DATA`) hold every
        id, in order."""
        firsts = self.firsts
        if firsts is None:
            self._apply(cells)
        else:  # the one-byte tokens first, then the tokens that start with a byte the grammar takes
            singles = np.zeros(len(firsts.singles), TOKEN_DATA)
            singles["id"] = firsts.singles
            self._apply(singles)
            ok = np.flatnonzero(np.isfinite(singles["logit"]))
            if len(ok) > len(singles) // 2:  # most bytes go (inside a string): the filter would save nothing
                self._apply(cells)
                cells["logit"][self.silent] = -math.inf
                return
            ids = np.concatenate([firsts.always, *(firsts.groups[k] for k in ok)])
            some = np.zeros(len(ids), TOKEN_DATA)
            some["id"], some["logit"] = ids, cells["logit"][ids]
            self._apply(some)
            logits = np.full(len(cells), -math.inf, dtype=np.float32)
            logits[some["id"]] = some["logit"]
            cells["logit"] = logits
        cells["logit"][self.silent] = -math.inf

    def _apply(self, cells: np.ndarray) -> None:
        array = self._lc.llama_token_data_array(cells.ctypes.data_as(self._lc.llama_token_data_p), len(cells),
                                                -1, False)
        self._lc.llama_sampler_apply(self.sampler, ctypes.byref(array))

    def allows(self, token: int) -> bool:
        if token in self._silent:
            return False
        one = self._one
        one.id, one.logit, one.p = token, 1.0, 0.0
        array = self._one_array
        array.size, array.selected, array.sorted = 1, -1, False
        self._lc.llama_sampler_apply(self.sampler, ctypes.byref(array))
        return array.data[0].logit != -math.inf

    def accept(self, token: int) -> None:
        self._lc.llama_sampler_accept(self.sampler, token)

    def can_end(self) -> bool:
        return any(self.allows(token) for token in self.stops)

    def longest_allowed(self) -> int | None:
        cells = np.zeros(self.n_vocab, TOKEN_DATA)
        cells["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self.mask(cells)
        ok = np.isfinite(cells["logit"])
        if not ok.any():
            return None
        return int(np.argmax(np.where(ok, self.lengths, -1)))  # argmax: the first of the longest

    def fork(self) -> LlamaGrammar:
        return LlamaGrammar(self._lc.llama_sampler_clone(self.sampler), self.lengths, self.stops, self.silent,
                            self.firsts)

    def close(self) -> None:
        if self.sampler:
            self._lc.llama_sampler_free(self.sampler)
        self.sampler = None


class Hold(Freed):
    """A llama.cpp grammar and the sampler chain it holds, for one reply: llama.cpp's own common sampler
    with ``grammar_first = false``.

    ``Llama.generate`` puts the grammar at the head of its chain, before top-k, so the grammar checks every
    token of the vocabulary at every step, free text included: 0.3 to 0.7 ms a step with a 4,096-token
    vocabulary (the quickstart's), as long as a tiny model's forward pass. Here the chain picks a token
    from the model's own distribution, the grammar checks that one token (microseconds), and only when it
    refuses does the step start again with the grammar's mask over the whole vocabulary. Sampling from
    the distribution and, on a refusal, from the masked one is sampling from the masked distribution (for
    greedy decoding and for plain temperature sampling exactly; with top-k or top-p the cut is made before
    the mask first), so the replies are the ones the grammar allows, and free text that the grammar lets
    through is decoded exactly as it is unheld, which makes a ``<tool_call>`` hold lazy: nothing is masked
    until the model writes what the grammar refuses.
    """

    def __init__(self, llm: Any, grammar: LlamaGrammar, sampling: SamplingConfig) -> None:
        """``grammar``: a fresh grammar, which the hold now owns (and frees)."""
        import llama_cpp

        self._lc = llama_cpp
        self.n_vocab = int(llm.n_vocab())
        self.grammar = grammar
        # The chain Llama.generate builds for these settings, less its grammar (and its penalties, all off).
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.greedy = sampling.temperature <= 0
        if self.greedy:
            parts = [llama_cpp.llama_sampler_init_greedy()]
        else:
            seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
            parts = [llama_cpp.llama_sampler_init_top_k(sampling.top_k),
                     llama_cpp.llama_sampler_init_typical(1.0, 1),
                     llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1),
                     llama_cpp.llama_sampler_init_min_p(0.0, 1),
                     llama_cpp.llama_sampler_init_temp(sampling.temperature),
                     llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF)]
        for part in parts:
            llama_cpp.llama_sampler_chain_add(self.chain, part)
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._cells = np.zeros(self.n_vocab, TOKEN_DATA)
        self._data = self._cells.ctypes.data_as(llama_cpp.llama_token_data_p)
        self._array = llama_cpp.llama_token_data_array(self._data, self.n_vocab, -1, False)

    def pick(self, ctx: Any) -> int:
        """The chain's token for the context's last logits, unmasked: what ``Llama.generate`` samples."""
        return int(self._lc.llama_sampler_sample(self.chain, ctx, -1))

    def pick_masked(self, ctx: Any) -> int | None:
        """The chain's token for the context's last logits after the grammar's mask (None when the mask leaves
        nothing). Greedy, that is the best token the grammar allows: the best :data:`CANDIDATES` are checked
        one by one first (microseconds each), and the whole vocabulary is masked only when none passes."""
        logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,))
        if self.greedy and CANDIDATES:
            best = np.argpartition(logits, -CANDIDATES)[-CANDIDATES:] if self.n_vocab > CANDIDATES \
                else np.arange(self.n_vocab)
            for token in best[np.lexsort((best, -logits[best]))]:  # the best first, the lower id on a tie
                if logits[token] == -math.inf:
                    break
                if self.allows(int(token)):
                    return int(token)
        cells, array = self._cells, self._array
        cells["id"] = self._ids
        cells["logit"] = logits
        cells["p"] = 0.0
        self.grammar.mask(cells)
        array.data, array.size, array.selected, array.sorted = self._data, self.n_vocab, -1, False
        if not np.isfinite(cells["logit"]).any():
            return None
        self._lc.llama_sampler_apply(self.chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def allows(self, token: int) -> bool:
        """Whether the grammar takes ``token`` next (it checks this one candidate only)."""
        return self.grammar.allows(token)

    def close(self) -> None:
        """Free llama.cpp's samplers (once; a reply abandoned before its first token is freed when collected)."""
        grammar = getattr(self, "grammar", None)
        if grammar is not None:
            grammar.close()
        chain = getattr(self, "chain", None)
        if chain:
            self._lc.llama_sampler_free(chain)
        self.chain = None


class GGUFBackend:
    """A ``.gguf`` file as a :class:`~codette.backends.ChatBackend`."""

    name = "gguf"

    def __init__(self, path: Path | str, tokenizer_dir: Path | str | None = None, n_threads: int | None = None,
                 n_ctx: int = 0, logits_all: bool = False) -> None:
        """Read the metadata and load the weights once; ``logits_all`` keeps every position's logits
        (``llm.scores``), which scoring held-out text needs and chatting does not."""
        from codette.backends.llama_runtime import import_llama_cpp

        llama_cpp = import_llama_cpp()
        self.path = Path(path)
        if not self.path.is_file():
            raise CodetteError(f"GGUF file not found: {self.path}")
        self.meta = gguf_metadata(self.path)
        gguf_tokens, template, trained_ctx = self.meta.tokens, self.meta.chat_template, self.meta.context_length
        self.chat_template = template or CHAT_TEMPLATE
        self.tokenizer: CodetteTokenizer | None = None
        tdir = Path(tokenizer_dir) if tokenizer_dir else self.path.parent
        if tokenizer_dir or (tdir / TOKENIZER_FILE).is_file():
            self.tokenizer = CodetteTokenizer.load(tdir)
            check_vocab(gguf_tokens, self.tokenizer, self.path, tdir)
        self.llm = llama_cpp.Llama(str(self.path), n_ctx=n_ctx, n_threads=n_threads or min(4, os.cpu_count() or 1),
                                   logits_all=logits_all, verbose=False)
        self.logits_all = logits_all
        # llama.cpp rounds a context up (to 256); prompts beyond the trained context are refused, as the
        # PyTorch backend refuses them, so both backends answer the same probes.
        self.n_ctx = min(self.llm.n_ctx(), trained_ctx or self.llm.n_ctx())
        self._stop = {i for i, t in enumerate(gguf_tokens) if t in (IM_END, EOS)}
        self._control = {i for i, t in enumerate(gguf_tokens) if t in CONTROL_TOKENS}
        # each token's length in characters, padded to the model's rows (what the finishing policy weighs)
        self._lengths = np.zeros(int(self.llm.n_vocab()), dtype=np.int64)
        self._lengths[:len(gguf_tokens)] = [len(t) for t in gguf_tokens[:len(self._lengths)]]
        self._firsts = FirstChars.of(gguf_tokens, len(self._lengths), self._stop)
        self.step = None
        # The last held reply's steps (0 = its first token) where the grammar refused the model's pick and
        # masked the step (see Hold).
        self.masked_at: list[int] = []
        self.finished_at: int | None = None  # the step the last held reply's finish began (see _held)
        self._closing: list[int] | None = None
        # GBNF text -> llama.cpp's parsed grammar, never advanced: each reply gets a clone
        self._grammars: Kept[Any] = Kept(GRAMMARS_KEPT, copy=llama_cpp.llama_sampler_clone,
                                         drop=llama_cpp.llama_sampler_free)

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        text = render(messages, tools, add_generation_prompt=True, template=self.chat_template)
        if self.tokenizer is not None:
            return self.tokenizer.encode(text)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    @property
    def context_length(self) -> int:
        """The context prompts must fit (the trained one, see ``n_ctx``)."""
        return self.n_ctx

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """Tokens of the rendered prompt (generation header included), as :meth:`chat` would send it."""
        return len(self.prompt_ids(messages, tools))

    def _tokens(self, ids: list[int], sampling: SamplingConfig, tools: list[dict] | None = None) -> Iterator[int]:
        """The generated ids after the prompt ``ids`` (stop token excluded), after the context check."""
        if not ids or len(ids) >= self.n_ctx:
            raise CodetteError(f"the prompt is {len(ids)} tokens; it must be 1 to {self.n_ctx - 1} for this "
                               f"model's context of {self.n_ctx}")
        greedy = sampling.temperature <= 0
        hold = self._hold(sampling, tools)  # before any token: a grammar llama.cpp refuses is the caller's error
        self.masked_at, self.finished_at = [], None  # this reply's, held or not
        if hold is not None:
            return self._held(ids, sampling, hold)
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed)

        def generated() -> Iterator[int]:
            n = 0
            for token in self.llm.generate(ids, temp=0.0 if greedy else sampling.temperature,
                                           top_k=1 if greedy else sampling.top_k,
                                           top_p=1.0 if greedy else sampling.top_p,
                                           min_p=0.0, repeat_penalty=1.0, reset=True):
                if token in self._stop:
                    return
                yield int(token)
                n += 1
                if n >= sampling.max_new_tokens or len(ids) + n >= self.n_ctx:
                    return

        return generated()

    def _held(self, ids: list[int], sampling: SamplingConfig, hold: Hold) -> Iterator[int]:
        """:meth:`_tokens` under a grammar: the sampler picks from the model's own distribution, the grammar
        checks that one token, and only a token it refuses sends the step through the grammar's mask (see
        :class:`Hold`). ``masked_at`` lists those steps. In the budget's last tokens the reply is planned to
        end where the grammar lets it (:mod:`codette.backends.finish`); ``finished_at`` is the step from which
        the finishing policy wrote it (None: the model wrote all of it)."""
        llm = self.llm
        finish = Finish(self._closers())
        try:
            self._prefill(ids)
            n = 0
            while True:
                remaining = min(sampling.max_new_tokens - n, self.n_ctx - len(ids) - n)
                if finish.finishing:
                    token = finish.step(hold.grammar, None, remaining)
                else:
                    token = hold.pick(llm.ctx)
                    if not hold.allows(token):
                        self.masked_at.append(n)
                        token = hold.pick_masked(llm.ctx)
                    if token is None or token in self._stop:  # None: the grammar allows nothing more
                        return
                    token = finish.step(hold.grammar, token, remaining)
                    if finish.finishing and self.finished_at is None:
                        self.finished_at = n
                if token is None:
                    return
                yield token
                n += 1
                if n >= sampling.max_new_tokens or len(ids) + n >= self.n_ctx:
                    return
                if not finish.finishing:  # the plan's tokens need no logits: the reply ends with them
                    llm.eval([token])
        finally:
            hold.close()

    def _closers(self) -> list[int]:
        """The finishing policy's tokens for this vocabulary (:func:`codette.backends.finish.closers`), once."""
        if self._closing is None:
            self._closing = closers(self.tokenize)
        return self._closing

    def _prefill(self, ids: list[int]) -> None:
        """Evaluate the prompt, keeping the KV cache of the longest prefix it shares with what was evaluated
        last (the agent's next round repeats the whole conversation before it): as ``Llama.generate`` does,
        at least the last prompt token is evaluated again, for its logits."""
        llm = self.llm
        n = min(llm.n_tokens, len(ids) - 1)
        same = np.asarray(llm.input_ids[:n]) == np.asarray(ids[:n], dtype=np.intc)
        keep = n if bool(same.all()) else int(np.argmin(same))
        if keep == 0:
            llm.reset()
        llm.n_tokens = keep  # eval drops the cache from here on
        llm.eval(ids[keep:])

    def check_constraint(self, sampling: SamplingConfig, tools: list[dict] | None = None) -> None:
        """Raise :class:`~codette.backends.constraints.UnsupportedSchema` (or CodetteError) now, before any
        token, when ``sampling`` asks for a constraint the grammar cannot express (a server's 400)."""
        hold = self._hold(sampling, tools)
        if hold is not None:
            hold.close()

    def _hold(self, sampling: SamplingConfig, tools: list[dict] | None) -> Hold | None:
        """llama.cpp's grammar for what ``sampling`` asks (see :mod:`codette.backends.gbnf`) with the sampler
        it checks, or None.

        llama.cpp parses it here, on its own: a grammar it refuses is a null sampler, which would crash the
        decoding loop."""
        constraint = constraint_for(sampling, tools)
        if constraint is None:
            return None
        text = gbnf_grammar(constraint)
        sampler = self._grammars.get(text, lambda: self._parse(text, constraint.param))
        return Hold(self.llm, LlamaGrammar(sampler, self._lengths, self._stop, self._control, self._firsts), sampling)

    def _parse(self, text: str, param: str) -> Any:
        """llama.cpp's grammar sampler for the GBNF ``text`` (a tool table's takes about a millisecond to parse,
        a tenth of that to clone), or :class:`UnsupportedSchema` naming ``param`` when llama.cpp refuses it."""
        import llama_cpp

        parsed = llama_cpp.llama_sampler_init_grammar(llama_cpp.llama_model_get_vocab(self.llm.model),
                                                      text.encode(), b"root")
        if not parsed:
            raise UnsupportedSchema(f"{param}: llama.cpp refused the grammar made from this schema "
                                    f"(too large or too deeply nested)", param)
        return parsed

    def _checked(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        ids = self.prompt_ids(messages, tools)
        if len(ids) >= self.n_ctx:
            raise CodetteError(f"the conversation is {len(ids)} tokens; this model's context is {self.n_ctx}")
        return ids

    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             sampling: SamplingConfig | None = None) -> str:
        tokens = self._tokens(self._checked(messages, tools), sampling or SamplingConfig(), tools)
        return self._decode(list(tokens)).strip()

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        """:meth:`chat`'s reply as text deltas, then the token counts."""
        yield from self.stream_tokens(self._checked(messages, tools), sampling, tools)

    # -- raw text: what a server's text-completion and tokenizer routes need -----------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as written (no chat template; special tokens in it become their ids)."""
        if self.tokenizer is not None:
            return self.tokenizer.encode(text)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens included (so ``detokenize(tokenize(t)) == t``)."""
        if any(not 0 <= i < len(self.meta.tokens) for i in ids):
            raise CodetteError(f"token ids must be 0 to {len(self.meta.tokens) - 1}")
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def stream_tokens(self, ids: list[int], sampling: SamplingConfig | None = None,
                      tools: list[dict] | None = None) -> Iterator[Chunk]:
        """The continuation of the prompt ``ids`` as text deltas, then the token counts (raw completions,
        and :meth:`stream` after its template, with the ``tools`` its calls are held to)."""
        sampling = sampling or SamplingConfig()
        tokens = self._tokens(ids, sampling, tools)
        deltas = TextDeltas(self._decode)
        for token in tokens:
            text = deltas.push(token)
            if text:
                yield Chunk(text)
        n = len(deltas.ids)
        full = n >= sampling.max_new_tokens or len(ids) + n >= self.n_ctx
        yield Chunk(deltas.flush(), prompt_tokens=len(ids), completion_tokens=n,
                    finish_reason="length" if full else "stop")

    def model_facts(self) -> dict[str, object]:
        """What a server reports about the model (Ollama's /api/show), from the file's own metadata."""
        return {"format": "gguf", "family": self.meta.architecture, "parameter_count": self.meta.parameter_count,
                "quantization": self.meta.file_type, "context_length": self.n_ctx, "template": self.chat_template,
                "file": str(self.path)}

    def _decode(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_control=True)
        keep = [i for i in ids if i not in self._control]
        return self.llm.detokenize(keep, special=True).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Free the llama.cpp context now rather than at garbage collection."""
        self._grammars.clear()
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
