"""Shared helpers for tests that need a prepared output folder (data + tokenizer) and tiny models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from codette.cli import stages
from codette.config import RunConfig, build_config

# A model small enough that a training step takes milliseconds on one core.
TINY = {
    "data": {"samples": 300, "seed": 0},
    "tokenizer": {"vocab_size": 512},
    "model": {"preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 64},
    "train": {"lr": 3e-3, "warmup_steps": 5, "max_steps": 40, "eval_every": 20, "save_every": 10,
              "batch_size": 4, "eval_batches": 4, "log_every": 10, "threads": 1, "seed": 7},
}

QUIET = Console(file=open(os.devnull, "w"), width=120)


def tiny_config(out_dir: Path, **overrides: object) -> RunConfig:
    over = {"out_dir": str(out_dir), "log_dir": str(Path(out_dir) / "logs"), **overrides}
    return build_config(None, over, defaults=TINY)


def prepare(out_dir: Path) -> RunConfig:
    """Data and tokenizer for a tiny run in ``out_dir``."""
    cfg = tiny_config(out_dir)
    stages.run_data(cfg, QUIET)
    stages.run_tokenizer(cfg, QUIET)
    return cfg


def fresh_run(prepared: Path, tmp_path: Path, name: str = "run") -> Path:
    """A copy of the prepared run folder ``prepared`` (data, tokenizer) without its checkpoints and logs."""
    dst = tmp_path / name
    shutil.copytree(prepared, dst, ignore=shutil.ignore_patterns("model_*", "logs"))
    return dst


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def codette(*args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would)."""
    proc = subprocess.run([sys.executable, "-m", "codette", *args], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"codette {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def losses(log_dir: Path) -> dict[int, float]:
    """step -> training loss from every metrics JSONL in ``log_dir``."""
    out: dict[int, float] = {}
    for f in sorted(Path(log_dir).glob("metrics_*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["kind"] == "train":
                out[rec["step"]] = rec["loss"]
    return out
