"""Mixing the synthetic data with the user's sources at given ratios (``--mix synthetic=0.5,my.jsonl=0.5``).

The mixed dataset has ``samples`` documents in all; a source with ratio ``r`` contributes
``round(samples * r)`` of them. A source with more documents than that is subsampled (a seeded
choice, without repetition); one with fewer is repeated whole as often as needed and then topped up
by a seeded choice, and the log says by how much it was upsampled. Counting a source takes one
streaming pass over it and selecting a second one, so no source is held in memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterable, Iterator
from typing import TypeVar

from codette.errors import CodetteError

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
COPY = "copy"  # the copy documents, generated (codette.data.copydocs) to the count the mix gives them
T = TypeVar("T")


def parse_mix(spec: str | dict | None) -> dict[str, float]:
    """``"synthetic=0.5,my.jsonl=0.5"`` (or a dict) -> ``{"synthetic": 0.5, "my.jsonl": 0.5}``, checked.

    Ratios must be numbers in [0, 1] that sum to 1 (within 1e-6); names must be unique.
    """
    if not spec:
        return {}
    items: list[tuple[str, object]]
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            name, sep, value = part.rpartition("=")
            if not sep or not name.strip():
                raise CodetteError(f"--mix entry {part!r} must look like NAME=RATIO (e.g. synthetic=0.5)")
            items.append((name.strip(), value.strip()))
    mix: dict[str, float] = {}
    for name, value in items:
        try:
            ratio = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CodetteError(f"--mix ratio for {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(ratio) or not 0 <= ratio <= 1:
            raise CodetteError(f"--mix ratio for {name!r} must be between 0 and 1, got {value}")
        if name in mix:
            raise CodetteError(f"--mix names {name!r} twice")
        mix[name] = ratio
    if not mix:
        raise CodetteError("--mix is empty; give NAME=RATIO pairs such as synthetic=0.5,my.jsonl=0.5")
    total = sum(mix.values())
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{k}={v:g}" for k, v in mix.items())
        raise CodetteError(f"--mix ratios must sum to 1, but {listed} sum to {total:g}")
    return mix


def target_counts(mix: dict[str, float], total: int) -> dict[str, int]:
    """Documents per source: largest-remainder rounding, so the counts add up to ``total`` exactly."""
    raw = {k: total * v for k, v in mix.items()}
    counts = {k: int(math.floor(x)) for k, x in raw.items()}
    short = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:short]:
        counts[k] += 1
    return counts


def selection(available: int, wanted: int, seed: int, name: str) -> dict[int, int]:
    """Document index -> how many times to emit it, so that the copies add up to ``wanted``."""
    if wanted <= 0:
        return {}
    if available <= 0:
        raise CodetteError(f"mix source {name} has no documents")
    salt = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big")
    rng = random.Random(seed * 1_000_003 + salt)
    repeats, extra = divmod(wanted, available)
    if repeats:
        log.warning("mix source %s has %d documents for %d wanted: upsampled %.2fx", name, available, wanted,
                    wanted / available)
    picks: dict[int, int] = {}
    if repeats:
        picks = {i: repeats for i in range(available)}
    for i in rng.sample(range(available), extra):
        picks[i] = picks.get(i, 0) + 1
    return picks


def take(items: Iterable[T], picks: dict[int, int]) -> Iterator[T]:
    """The items at the picked positions, each repeated as often as picked, in stream order."""
    if not picks:
        return
    last = max(picks)
    for i, item in enumerate(items):
        for _ in range(picks.get(i, 0)):
            yield item
        if i >= last:
            return
