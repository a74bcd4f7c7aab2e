"""The random-number states a training step depends on (torch CPU, CUDA, Python's ``random``).

One place for saving and restoring them: checkpoints store :func:`rng_state` so a resumed run draws
the same numbers as an uninterrupted one, and mid-training probes restore it afterwards so they
cannot change what training draws next.
"""

from __future__ import annotations

import random
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """The current states: ``torch`` and ``python`` always, ``cuda`` where a CUDA device exists."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also after a checkpoint turned its tuples into lists)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
