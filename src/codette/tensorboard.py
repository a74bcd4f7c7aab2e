"""TensorBoard events from metrics records (live during training, or afterwards from the JSONL).

Shared by the training monitor (:mod:`codette.evaluate.training`, live) and ``codette report``
(afterwards), so it belongs to neither stage; it needs only the errors module (and torch's writer,
imported when a writer is opened).

Tags: ``train/<metric>`` for step records, ``eval/<metric>`` for held-out LM metrics and
``behavior/<metric>`` for the behavioral probes (their ``_n`` counts are not plotted).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from codette.errors import CodetteError

LM_EVAL = {"val_loss", "perplexity", "token_accuracy", "val_tokens", "val_bits_per_byte"}


def scalars_of(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(tag, value, step) for every numeric field of a train or eval record."""
    kind, step = record.get("kind"), record.get("step")
    if kind not in ("train", "eval") or not isinstance(step, int):
        return []
    out = []
    for key, value in record.items():
        if key in ("kind", "time", "step") or key.endswith("_n") or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            continue
        group = "train" if kind == "train" else "eval" if key in LM_EVAL or key.startswith("probe_") else "behavior"
        out.append((f"{group}/{key}", float(value), step))
    return out


def open_writer(log_dir: Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter``; a clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CodetteError("train.tensorboard / --tensorboard needs the tensorboard package: "
                           "pip install 'codette[tensorboard]'") from None
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(log_dir))


def write_events(records: Iterable[dict[str, Any]], log_dir: Path) -> Path:
    """Write every train/eval record's scalars as TensorBoard events under ``log_dir``."""
    writer = open_writer(log_dir)
    try:
        for rec in records:
            for tag, value, step in scalars_of(rec):
                writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    return Path(log_dir)
