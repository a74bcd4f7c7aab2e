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
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from codette.data.loader import IGNORE_INDEX

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


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None,
                token_bytes: torch.Tensor | None = None) -> LMMetrics:
    """Loss, perplexity and accuracy of ``model`` over ``batches`` of (inputs, targets).

    ``token_bytes[i]`` is the UTF-8 length of token ``i`` (:func:`token_byte_lengths`); with it the
    result also has bits per byte.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count, n_bytes = 0.0, 0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast or contextlib.nullcontext():
            logits = model(x)
        logits = logits.float()
        total_loss += float(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1),
                                            ignore_index=IGNORE_INDEX, reduction="sum"))
        valid = y != IGNORE_INDEX
        correct += int(((logits.argmax(-1) == y) & valid).sum())
        count += int(valid.sum())
        if token_bytes is not None:
            n_bytes += int(token_bytes.to(y.device)[y[valid]].sum())
    model.train(was_training)
    if count == 0:
        return LMMetrics(float("nan"), float("nan"), float("nan"), 0)
    loss = total_loss / count
    bpb = total_loss / math.log(2) / n_bytes if n_bytes else float("nan")
    return LMMetrics(loss, math.exp(min(loss, 50.0)), correct / count, count, bpb, n_bytes)


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
