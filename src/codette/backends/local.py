"""Chat with a PyTorch checkpoint: render with the chat template, decode with the KV cache (held to a
grammar with llguidance when the sampling settings ask for structured output, :mod:`codette.backends.guided`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from codette.backends.base import Chunk, SamplingConfig
from codette.backends.constraints import constraint_for
from codette.backends.textdeltas import TextDeltas
from codette.checkpoint import load_model
from codette.errors import CodetteError
from codette.fileio import file_sha256
from codette.model import CodetteModel
from codette.model.generate import generate_tokens
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import TOKENIZER_FILE


def check_tokenizer_matches(state: dict, tok: CodetteTokenizer, tokenizer_dir: Path, ckpt: Path,
                            model: CodetteModel) -> None:
    """Refuse a tokenizer that is not the one the checkpoint was trained with."""
    want = state.get("tokenizer_sha256") or ""
    path = Path(tokenizer_dir) / TOKENIZER_FILE
    if want and file_sha256(path) != want:
        raise CodetteError(f"{path} is not the tokenizer {ckpt} was trained with (sha256 differs)")
    if len(tok) > model.cfg.vocab_size:
        raise CodetteError(
            f"tokenizer {path} has {len(tok)} tokens but {ckpt} has only {model.cfg.vocab_size} embedding rows")


class LocalBackend:
    """A PyTorch model and its tokenizer: a checkpoint (:meth:`from_checkpoint`) or a model in memory
    (the training loop's, for probes between steps)."""

    name = "local"

    def __init__(self, model: CodetteModel, tokenizer: CodetteTokenizer, step: int = 0) -> None:
        self.model, self.tokenizer, self.step = model, tokenizer, step
        self.path: Path | None = None  # the checkpoint file, when loaded from one
        self._guide: Any = None  # llguidance's view of the tokenizer, built at the first constraint
        # The last held reply's steps (0 = its first token) where the grammar refused the model's pick and
        # masked the step (guided_tokens), and the step from which the finishing policy wrote it (None: the
        # model wrote all of it; codette.backends.finish).
        self.masked_at: list[int] = []
        self.finished_at: int | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | str, tokenizer_dir: Path | str | None = None,
                        device: str = "cpu") -> LocalBackend:
        """Load ``checkpoint`` and its tokenizer (by default the folder the checkpoint is in)."""
        checkpoint = Path(checkpoint)
        model, state = load_model(checkpoint, device=device)
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else checkpoint.parent
        tokenizer = CodetteTokenizer.load(tokenizer_dir)
        check_tokenizer_matches(state, tokenizer, tokenizer_dir, checkpoint, model)
        backend = cls(model, tokenizer, int(state.get("step", 0)))
        backend.path = checkpoint
        return backend

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tools, add_generation_prompt=True)
        return self.tokenizer.encode(text)

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt and reply) the model was built for."""
        return self.model.cfg.max_seq_len

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """Tokens of the rendered prompt (generation header included), as :meth:`chat` would send it."""
        return len(self.prompt_ids(messages, tools))

    def _checked_prompt(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        ids = self.prompt_ids(messages, tools)
        ctx = self.model.cfg.max_seq_len
        if len(ids) >= ctx:
            raise CodetteError(f"the conversation is {len(ids)} tokens; this model's context is {ctx}")
        return ids

    def check_constraint(self, sampling: SamplingConfig, tools: list[dict] | None = None) -> None:
        """Raise :class:`~codette.backends.constraints.UnsupportedSchema` (or CodetteError) now, before any
        token, when ``sampling`` asks for a constraint the grammar cannot express (a server's 400)."""
        self._matcher(sampling, tools)

    def _matcher(self, sampling: SamplingConfig, tools: list[dict] | None) -> Any:
        constraint = constraint_for(sampling, tools)
        if constraint is None:
            return None
        if self._guide is None:
            from codette.backends.guided import Guide

            self._guide = Guide(self.tokenizer)
        return self._guide.matcher(constraint)

    def _generate(self, ids: list[int], sampling: SamplingConfig, tools: list[dict] | None = None) -> Iterator[int]:
        """The reply's token ids (KV-cache decoding), stop token excluded: what chat and stream share."""
        matcher = self._matcher(sampling, tools)
        self.masked_at, self.finished_at = [], None  # this reply's, held or not
        if matcher is not None:
            from codette.backends.guided import guided_tokens

            return guided_tokens(self.model, ids, sampling, matcher, self.tokenizer.stop_ids, self._guide.lengths,
                                 self._guide.closers, on_masked=self.masked_at.append, on_finish=self._finished)
        return generate_tokens(self.model, ids, max_new_tokens=sampling.max_new_tokens,
                               temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                               seed=sampling.seed, stop_ids=self.tokenizer.stop_ids, vocab_size=len(self.tokenizer))

    def _finished(self, step: int) -> None:
        self.finished_at = step

    @torch.no_grad()
    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             sampling: SamplingConfig | None = None) -> str:
        sampling = sampling or SamplingConfig()
        ids = self._checked_prompt(messages, tools)
        out = list(self._generate(ids, sampling, tools))
        return self.tokenizer.decode(out, skip_control=True).strip()

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        """:meth:`chat`'s reply as text deltas (KV-cache decoding), then the token counts."""
        sampling = sampling or SamplingConfig()
        yield from self.stream_tokens(self._checked_prompt(messages, tools), sampling, tools)

    # -- raw text: what a server's text-completion and tokenizer routes need -----------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as written (no chat template; special tokens in it become their ids)."""
        return self.tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens included (so ``detokenize(tokenize(t)) == t``)."""
        if any(not 0 <= i < len(self.tokenizer) for i in ids):
            raise CodetteError(f"token ids must be 0 to {len(self.tokenizer) - 1}")
        return self.tokenizer.decode(ids)

    def stream_tokens(self, ids: list[int], sampling: SamplingConfig | None = None,
                      tools: list[dict] | None = None) -> Iterator[Chunk]:
        """The continuation of the prompt ``ids`` (already rendered and tokenized) as text deltas, then the
        token counts: :meth:`stream` after its template (``tools``: what its calls are held to), and raw
        completions."""
        sampling = sampling or SamplingConfig()
        ctx = self.model.cfg.max_seq_len
        if not ids or len(ids) >= ctx:
            raise CodetteError(f"the prompt is {len(ids)} tokens; it must be 1 to {ctx - 1} for this model's "
                               f"context of {ctx}")
        deltas = TextDeltas(lambda out: self.tokenizer.decode(out, skip_control=True))
        for token in self._generate(ids, sampling, tools):
            text = deltas.push(token)
            if text:
                yield Chunk(text)
        n = len(deltas.ids)
        full = n >= sampling.max_new_tokens or len(ids) + n >= ctx
        yield Chunk(deltas.flush(), prompt_tokens=len(ids), completion_tokens=n,
                    finish_reason="length" if full else "stop")

    def model_facts(self) -> dict[str, object]:
        """What a server reports about the model (Ollama's /api/show): format, family, size, dtype, context."""
        first = next(self.model.parameters(), None)
        dtype = str(first.dtype).removeprefix("torch.") if first is not None else "float32"
        return {"format": "pytorch", "family": self.model.cfg.block_style,
                "parameter_count": self.model.num_parameters(),
                "quantization": {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(dtype, dtype.upper()),
                "context_length": self.context_length, "template": self.tokenizer.chat_template,
                "file": str(self.path) if self.path else None}
