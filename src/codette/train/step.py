"""One optimizer step's forward and backward passes, normalised by tokens, with no host synchronisation.

The loss of a step is the mean over every target token of the step: of all its micro-batches and, when
distributed, of all processes. Each micro-batch contributes its *summed* cross-entropy divided by the
step's global target count, so accumulating micro-batches (or adding processes) is the same as one
bigger batch even when assistant-only masks leave them with different numbers of targets. A mean of
per-micro-batch means would weigh a micro-batch with 3 targets as much as one with 3,000.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import ContextManager

import torch


def micro_batch_positions(position: int, batch_size: int, grad_accum: int, world_size: int = 1,
                          rank: int = 0) -> list[int]:
    """Data positions of this rank's micro-batches in the step that starts at ``position``.

    The step covers the ``batch_size * grad_accum * world_size`` sequences from ``position`` on, in the
    order one process would read them; micro-batch ``m`` of rank ``r`` is slice ``m * world_size + r``,
    so together the ranks read each sequence exactly once and the next step starts where this one ends.
    """
    return [position + (micro * world_size + rank) * batch_size for micro in range(grad_accum)]


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    step_targets: int,
    device: torch.device,
    autocast: ContextManager | None = None,
    world_size: int = 1,
    no_sync: Callable[[], ContextManager] | None = None,
) -> torch.Tensor:
    """Backward over ``micro_batches``; returns each micro-batch's share of the step loss (device, fp32).

    ``step_targets`` is the number of targets of the whole step (every micro-batch of every process).
    ``world_size`` undoes the data-parallel wrappers' gradient *average* over processes, so the result
    is the gradient of the global token mean. ``no_sync`` (a context factory) suppresses the wrapper's
    gradient reduction for all but the last micro-batch. Nothing here reads a value back to the host.
    """
    shares = []
    last = len(micro_batches) - 1
    for i, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = no_sync() if no_sync is not None and i < last else contextlib.nullcontext()
        with sync:
            with autocast if autocast is not None else contextlib.nullcontext():
                out = model(x, y, scored_only=True)  # the output layer only where a target is scored
            loss = out.loss_sum / step_targets
            shares.append(loss.detach())
            (loss * world_size if world_size > 1 else loss).backward()
    return torch.stack(shares)
