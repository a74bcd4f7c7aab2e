"""Which split a record belongs to: a hash of its key, so the splits are disjoint by key and stable.

``train`` is what the model learns from; ``val`` scores every evaluation during training and picks
``model_best.pt``; ``test`` is read by nothing during training or selection, so the figures
``codette eval`` reports on it were not tuned on. A synthetic sample's key is its (category,
template, slots) combination (:attr:`codette.data.curriculum.common.Sample.key`), a user document's
key is its content, so no combination or document is in two splits.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")
_BUCKETS = 10_000


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """``val`` for the first ``val_fraction`` of the hash buckets, ``test`` for the next ``test_fraction``,
    ``train`` for the rest."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % _BUCKETS
    if bucket < val_fraction * _BUCKETS:
        return "val"
    if bucket < (val_fraction + test_fraction) * _BUCKETS:
        return "test"
    return "train"

