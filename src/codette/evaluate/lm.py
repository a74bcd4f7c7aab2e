"""Held-out language-modelling metrics.

Definitions (over target tokens only, i.e. tokens whose loss mask is 1 — for chat data the
assistant's tokens):

- ``val_loss``: mean cross-entropy in nats per target token.
- ``perplexity``: ``exp(val_loss)``.
- ``token_accuracy``: fraction of target tokens where the argmax of the logits is the true token.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from codette.data.loader import IGNORE_INDEX


@dataclass
class LMMetrics:
    val_loss: float
    perplexity: float
    token_accuracy: float
    tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None) -> LMMetrics:
    """Loss, perplexity and accuracy of ``model`` over ``batches`` of (inputs, targets)."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
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
    model.train(was_training)
    if count == 0:
        return LMMetrics(float("nan"), float("nan"), float("nan"), 0)
    loss = total_loss / count
    return LMMetrics(loss, math.exp(min(loss, 50.0)), correct / count, count)
