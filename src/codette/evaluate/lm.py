"""Held-out language-modelling metrics.

Definitions (over target tokens only, i.e. tokens whose loss mask is 1 — for chat data the
assistant's tokens):

- ``val_loss``: mean cross-entropy in nats per target token.
- ``perplexity``: ``exp(val_loss)``.
- ``token_accuracy``: fraction of target tokens where the argmax of the logits is the true token.
- ``bits_per_byte`` (when ``token_bytes`` is given): total nats over the target tokens / ln 2 /
  the UTF-8 byte length of those target tokens' text. Unlike perplexity it does not depend on how
  the tokenizer cuts text, so models with different vocabularies can be compared. Special tokens
  count as the bytes of their literal text (``<|im_end|>`` is 10 bytes).

The nats come from the model's own loss (:func:`codette.model.cross_entropy_sum`), for a
checkpoint and for a GGUF's logits alike; :class:`LMTally` adds them up.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from codette.data.loader import IGNORE_INDEX
from codette.model import cross_entropy_sum

if TYPE_CHECKING:
    from codette.tokenizer import CodetteTokenizer


@dataclass
class LMMetrics:
    val_loss: float
    perplexity: float
    token_accuracy: float
    tokens: int
    bits_per_byte: float = float("nan")
    target_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class LMTally:
    """Running sums over batches of (logits, targets): nats, correct argmaxes, targets and their bytes."""

    def __init__(self, token_bytes: torch.Tensor | None = None) -> None:
        self.token_bytes = token_bytes
        self.nats, self.correct, self.count, self.n_bytes = 0.0, 0, 0, 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor, nats: torch.Tensor | None = None) -> None:
        """One batch; ``nats`` is its summed loss when the model already computed it."""
        if nats is None:
            nats, _ = cross_entropy_sum(logits, targets, IGNORE_INDEX)
        valid = targets != IGNORE_INDEX
        self.nats += float(nats)
        self.correct += int(((logits.argmax(-1) == targets) & valid).sum())
        self.count += int(valid.sum())
        if self.token_bytes is not None:
            self.n_bytes += int(self.token_bytes.to(targets.device)[targets[valid]].sum())

    def metrics(self) -> LMMetrics:
        if self.count == 0:
            return LMMetrics(float("nan"), float("nan"), float("nan"), 0)
        loss = self.nats / self.count
        bpb = self.nats / math.log(2) / self.n_bytes if self.n_bytes else float("nan")
        return LMMetrics(loss, math.exp(min(loss, 50.0)), self.correct / self.count, self.count, bpb, self.n_bytes)


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None,
                token_bytes: torch.Tensor | None = None) -> LMMetrics:
    """Loss, perplexity and accuracy of ``model`` over ``batches`` of (inputs, targets).

    ``model(inputs, targets)`` returns an :class:`~codette.model.LMOutput`, as a
    :class:`~codette.model.CodetteModel` does, so the loss is the one training minimises.

    ``token_bytes[i]`` is the UTF-8 length of token ``i`` (:func:`token_byte_lengths`); with it the
    result also has bits per byte.
    """
    was_training = model.training
    model.eval()
    tally = LMTally(token_bytes)
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast or contextlib.nullcontext():
                out = model(x, y)
            tally.add(out.logits, y, out.loss_sum)  # no upcast: fp32 would not change the argmax
    finally:
        model.train(was_training)
    return tally.metrics()


def token_byte_lengths(tokenizer: "CodetteTokenizer", n_rows: int | None = None) -> torch.Tensor:
    """UTF-8 bytes of every token id (0 for embedding padding rows beyond the vocabulary).

    Byte-level BPE spells each byte as one character of its 256-symbol alphabet, so a regular
    token's byte length is its string length; special tokens count their literal text.
    """
    from codette.tokenizer.chat_template import SPECIAL_TOKENS

    vocab = tokenizer.tok.get_vocab(with_added_tokens=True)
    lengths = torch.zeros(max(n_rows or 0, len(tokenizer)), dtype=torch.long)
    for token, i in vocab.items():
        lengths[i] = len(token.encode("utf-8")) if token in SPECIAL_TOKENS else len(token)
    return lengths
