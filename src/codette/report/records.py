"""Read a run's ``metrics_*.jsonl`` files into per-metric series over steps.

A log folder (``<out_dir>/training_logs`` unless ``log_dir`` names another) may be shared by several
runs, and a resumed run writes a new file. The run reported is the newest file plus the files it
resumed from (each ``start`` record says whether it resumed); a step logged twice (resumed after a
crash) keeps its latest record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codette.errors import CodetteError
from codette.jsonl import read_jsonl

TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_second")
LM_EVAL_KEYS = ("val_loss", "perplexity", "token_accuracy", "val_bits_per_byte")
PROBE_KEYS = ("probe_n", "probe_seconds", "probe_overhead")


@dataclass
class RunSeries:
    files: list[Path]
    start: dict[str, Any] = field(default_factory=dict)
    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    eval: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    behavior: dict[str, list[tuple[int, float, int]]] = field(default_factory=dict)  # metric -> [(step, value, n)]
    events: list[dict[str, Any]] = field(default_factory=list)  # diverged / interrupted records
    records: list[dict[str, Any]] = field(default_factory=list)  # every record kept, in step order

    @property
    def last_step(self) -> int:
        steps = [s for v in self.train.values() for s, _ in v]
        return max(steps, default=0)


def _candidates(run_dir: Path) -> list[Path]:
    """Folders that may hold the metrics: the folder itself, its log folders, run_config.json's log_dir."""
    dirs = [run_dir, run_dir / "training_logs", run_dir / "logs"]
    cfg = run_dir / "run_config.json"
    if cfg.is_file():
        try:
            log_dir = Path(json.loads(cfg.read_text(encoding="utf-8")).get("log_dir", ""))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            log_dir = Path("")
        if str(log_dir):
            dirs += [log_dir] if log_dir.is_absolute() else [Path.cwd() / log_dir, run_dir / log_dir,
                                                             run_dir.parent / log_dir]
    return dirs


def find_metrics_files(run_dir: Path | str) -> list[Path]:
    """Every ``metrics_*.jsonl`` of the first candidate folder that has any (oldest first)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CodetteError(f"run folder not found: {run_dir}")
    if run_dir.is_file() and run_dir.suffix == ".jsonl":
        return [run_dir]
    for d in _candidates(run_dir):
        files = sorted(d.glob("metrics_*.jsonl")) if d.is_dir() else []
        if files:
            return sorted(files, key=lambda f: (f.stat().st_mtime, f.name))
    raise CodetteError(f"no metrics_*.jsonl in {run_dir} (nor in its training_logs/ or the log_dir of its "
                       f"run_config.json); pass the training log folder")


def _read(path: Path) -> list[dict[str, Any]]:
    records = []
    # A run killed mid-write leaves a partial last line: it is skipped.
    for i, rec in read_jsonl(path, errors="replace", partial_last_ok=True):
        if not isinstance(rec, dict) or "kind" not in rec:
            raise CodetteError(f"{path}:{i}: a metrics record needs a 'kind' field")
        records.append(rec)
    return records


def _chain(files: list[Path]) -> list[tuple[Path, list[dict]]]:
    """The newest file and, walking back, the files it resumed from."""
    chain: list[tuple[Path, list[dict]]] = []
    for f in reversed(files):
        recs = _read(f)
        chain.insert(0, (f, recs))
        start = next((r for r in recs if r["kind"] == "start"), {})
        if not start.get("resumed_from"):
            break
    return chain


def load_run(run_dir: Path | str) -> RunSeries:
    """The newest run (with the files it resumed from) as series; a CodetteError when it has no records."""
    chain = _chain(find_metrics_files(run_dir))
    by_key: dict[tuple[str, int], dict] = {}
    run = RunSeries(files=[f for f, _ in chain])
    for _, recs in chain:
        for r in recs:
            if r["kind"] == "start" and not run.start:
                run.start = r
            elif r["kind"] in ("train", "eval") and isinstance(r.get("step"), int):
                by_key[(r["kind"], r["step"])] = r
            elif r["kind"] not in ("start",):
                run.events.append(r)
    if not by_key:
        raise CodetteError(f"{', '.join(map(str, run.files))}: no train or eval records yet")
    for (kind, step), r in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        run.records.append(r)
        target = run.train if kind == "train" else run.eval
        for key, value in r.items():
            if key in ("kind", "time", "step") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if kind == "eval" and key.endswith("_n"):
                continue
            if kind == "eval" and f"{key}_n" in r:
                run.behavior.setdefault(key, []).append((step, float(value), int(r[f"{key}_n"])))
            else:
                target.setdefault(key, []).append((step, float(value)))
    return run
