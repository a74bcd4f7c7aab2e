"""The one cross-entropy: training, held-out evaluation and GGUF scoring all sum nats through here.

The loss is returned as a sum and a count of the targets that count, never as a mean, so that a
caller can normalise by tokens over any number of micro-batches (or processes) by dividing the
sums by the summed counts, instead of averaging means of unequal batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this id are not scored (F.cross_entropy's default; data.loader uses it)


class LMOutput(NamedTuple):
    """What :meth:`CodetteModel.forward` returns when it is given targets."""

    logits: torch.Tensor  # (B, T, vocab) in the compute dtype; with scored_only, the scored positions (padded rows after)
    loss_sum: torch.Tensor  # fp32 (or fp64) scalar: nats summed over the targets that count
    n_targets: torch.Tensor  # int64 scalar: how many targets count


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor,
                      ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """(nats summed over the targets != ``ignore_index``, their number) for logits (..., V), targets (...).

    Computed in at least fp32 (bf16 logits are upcast; fp64 logits stay fp64).
    """
    flat = logits.reshape(-1, logits.size(-1))
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    y = targets.reshape(-1)
    loss = F.cross_entropy(flat, y, ignore_index=ignore_index, reduction="sum")
    return loss, (y != ignore_index).sum()
