"""The training loop.

Checkpoint discipline: a checkpoint written after step ``k`` holds everything the next step depends
on (weights, AdamW moments, schedule, data position, RNG states), so a run resumed from it
produces exactly the losses of the uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from codette.checkpoint import (
    latest_valid_checkpoint,
    load_checkpoint,
    model_config_of,
    prune_step_checkpoints,
    save_checkpoint,
)
from codette.config import TrainConfig
from codette.data.loader import BatchSampler
from codette.data.pack import PackedSplit
from codette.errors import CodetteError, TrainingInterrupted
from codette.evaluate import evaluate_lm
from codette.evaluate.selection import BestTracker
from codette.fileio import ensure_writable_dir, remove_stale_temporaries
from codette.model import CodetteModel, ModelConfig
from codette.rng import rng_state, set_rng_state
from codette.train.device import autocast_for, pick_device, resolve_dtype
from codette.train.schedule import build_optimizer, lr_at
from codette.train.step import accumulate_gradients

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    final_checkpoint: Path | None
    best_checkpoint: Path | None
    best_val_loss: float
    last_eval: dict = field(default_factory=dict)
    train_tokens_per_second: float = 0.0
    train_seconds: float = 0.0
    metrics_path: Path | None = None


@dataclass
class _Pending:
    """A step applied but not yet read back from the device (see ``flush`` in :func:`train`)."""

    step: int
    lr: float
    position: int
    shares: torch.Tensor  # the micro-batches' shares of the step loss
    grad_norm: torch.Tensor
    seconds: float


class MetricsLog:
    """A human-readable log file and a JSONL file with one record per event."""

    def __init__(self, log_dir: Path) -> None:
        ensure_writable_dir(log_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.jsonl_path = log_dir / f"metrics_{stamp}.jsonl"
        self.log_path = log_dir / f"training_{stamp}.log"
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._handler = _LogFile(self.log_path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.listener: Any = None  # optional callable(record), e.g. a TensorBoard writer
        logging.getLogger("codette").addHandler(self._handler)
        logging.getLogger("codette").setLevel(logging.INFO)

    def write(self, kind: str, **values: Any) -> None:
        record = {"kind": kind, "time": time.time(), **values}
        try:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        except OSError as exc:
            raise CodetteError(f"cannot write {self.jsonl_path}: {exc.strerror or exc}; the checkpoints already "
                               f"saved are intact (resume with --resume auto once there is space)") from None
        if self.listener is not None:
            self.listener(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full disk was already reported by write()
            self._jsonl.close()
        logging.getLogger("codette").removeHandler(self._handler)
        self._handler.close()


class _LogFile(logging.FileHandler):
    """The human-readable log: a failed write (disk full) stops it with one line, not a traceback per message."""

    def handleError(self, record: logging.LogRecord) -> None:
        logging.getLogger("codette").removeHandler(self)
        sys.stderr.write(f"warning: cannot write {self.baseFilename} any more; the log file stops here\n")


class StopFlag:
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: finishing the current step, then saving a checkpoint (Ctrl-C again to abort now)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _resolve_resume(resume: str | None, out_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == "auto":
        found = latest_valid_checkpoint(out_dir)
        if found is None:
            log.info("--resume auto: no valid checkpoint in %s, starting fresh", out_dir)
        return found
    return Path(resume)


def _check_same_model(saved: ModelConfig, ours: ModelConfig, path: Path) -> None:
    a, b = dataclasses.asdict(saved), dataclasses.asdict(ours)
    a.pop("extra", None)
    b.pop("extra", None)
    diff = [k for k in a if a[k] != b.get(k)]
    if diff:
        k = diff[0]
        raise CodetteError(f"cannot resume from {path}: model {k}={a[k]!r} there but {b[k]!r} in this run")


@contextlib.contextmanager
def _no_stray_torch_cache() -> Iterator[None]:
    """Building an optimizer makes torch create an empty ``torchinductor_<user>`` cache folder in $TMPDIR,
    even without torch.compile; remove it again when this run made it and left it empty."""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("torchinductor_*"))
    try:
        yield
    finally:
        for folder in set(tmp.glob("torchinductor_*")) - before:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a cache that torch.compile filled stays


@_no_stray_torch_cache()
def train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    data_dir: Path,
    out_dir: Path,
    log_dir: Path,
    resume: str | None = None,
    run_config: dict | None = None,
    tokenizer_sha256: str | None = None,
    console: Console | None = None,
    monitor: Any | None = None,
) -> TrainResult:
    """Train from scratch or resume; returns where the checkpoints are and what was measured.

    ``monitor`` (a :class:`codette.evaluate.training.TrainingMonitor`) adds behavioral figures to each
    evaluation and sees every metrics record; ``train.best_metric`` picks the best checkpoint.
    """
    out_dir, data_dir, log_dir = Path(out_dir), Path(data_dir), Path(log_dir)
    ensure_writable_dir(out_dir)
    remove_stale_temporaries(out_dir)  # left by a run killed while writing a checkpoint
    console = console or Console(stderr=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = resolve_dtype(device, cfg.dtype)
    autocast = autocast_for(device, precision)
    seq_len = cfg.seq_len or model_cfg.max_seq_len
    if seq_len > model_cfg.max_seq_len:
        raise CodetteError(f"train.seq_len={seq_len} exceeds the model's context max_seq_len={model_cfg.max_seq_len}")

    train_split, val_split = PackedSplit(data_dir, "train"), PackedSplit(data_dir, "val")
    vocab_needed = int(train_split.meta["vocab_size"])
    if vocab_needed > model_cfg.vocab_size:
        raise CodetteError(f"the data uses {vocab_needed} token ids but the model has only {model_cfg.vocab_size} rows")
    # Chat is read in windows that start where conversations start; plain text at random offsets.
    text = train_split.plain_text
    sampler = BatchSampler(train_split, seq_len, cfg.seed, aligned=not text, random_offsets=text)
    val_sampler = BatchSampler(val_split, seq_len, cfg.seed)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = CodetteModel(model_cfg).to(device)
    optimizer = build_optimizer(model, cfg, fused=device.type == "cuda")
    step, position, best_val = 0, 0, math.inf
    best = BestTracker(cfg.best_metric)

    resume_path = _resolve_resume(resume, out_dir)
    if resume_path is not None:
        state = load_checkpoint(resume_path, map_location=device)
        _check_same_model(model_config_of(state, resume_path), model_cfg, resume_path)
        if "optimizer" not in state:
            raise CodetteError(f"{resume_path} holds weights only (no optimizer state); it cannot be resumed")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, position = int(state["step"]), int(state["data_position"])
        best_val = float(state.get("best_val_loss", math.inf))
        best = BestTracker(cfg.best_metric, state.get("best_metric"), best_val)
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d (data position %d)", resume_path, step, position)
        if step >= cfg.max_steps:
            log.info("checkpoint is already at max_steps=%d", cfg.max_steps)

    train_model: torch.nn.Module = torch.compile(model) if cfg.compile else model
    metrics = MetricsLog(log_dir)
    metrics.listener = monitor.on_record if monitor is not None else None
    n_params = model.num_parameters()
    log.info("model %s: %d parameters, device %s (%s), seq_len %d, batch %dx%d",
             model_cfg.extra.get("preset", "custom"), n_params, device, precision, seq_len, cfg.batch_size,
             cfg.grad_accum)
    metrics.write("start", step=step, params=n_params, device=str(device), precision=precision, seq_len=seq_len,
                  train_tokens=len(train_split), val_tokens=len(val_split), resumed_from=str(resume_path or ""),
                  windows="random offsets" if text else "document-aligned")

    def snapshot(path: Path) -> Path:
        return save_checkpoint({
            "model": model.state_dict(), "model_config": dataclasses.asdict(model_cfg),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "warmup_cosine", "step": step, "lr": lr_at(max(step - 1, 0), cfg),
                          "warmup_steps": cfg.warmup_steps, "max_steps": cfg.max_steps},
            "step": step, "data_position": position, "rng": rng_state(), "best_val_loss": best_val,
            "best_metric": best.state(),
            "train_config": dataclasses.asdict(cfg), "run_config": run_config or {},
            "tokenizer_sha256": tokenizer_sha256 or "",
        }, path)

    def run_eval() -> dict:
        m = evaluate_lm(train_model, val_sampler.sequential(cfg.batch_size, cfg.eval_batches), device, autocast)
        return {"val_loss": m.val_loss, "perplexity": m.perplexity, "token_accuracy": m.token_accuracy,
                "val_tokens": m.tokens}

    tokens_per_step = cfg.batch_size * cfg.grad_accum * seq_len
    result = TrainResult(steps=step, final_checkpoint=None, best_checkpoint=None, best_val_loss=best_val,
                         metrics_path=metrics.jsonl_path)
    train_time, train_tokens = 0.0, 0
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    pending: list[_Pending] = []

    def flush() -> None:
        """Read the steps since the last flush back from the device (the loop's one host sync), write their
        records, and stop if a loss is not finite. Runs at log steps and before every evaluation or checkpoint,
        so a diverged step is never saved."""
        if not pending:
            return
        shares = torch.stack([p.shares for p in pending]).double().cpu().tolist()
        norms = torch.stack([p.grad_norm for p in pending]).double().cpu().tolist()
        seconds = sum(p.seconds for p in pending)
        tps = tokens_per_step * len(pending) / seconds if seconds > 0 else 0.0
        done = list(pending)
        pending.clear()
        for p, micro, grad_norm in zip(done, shares, norms):
            loss = sum(micro)
            if not math.isfinite(loss):
                last = latest_valid_checkpoint(out_dir)
                metrics.write("diverged", step=p.step, loss=loss)
                raise CodetteError(
                    f"training loss became {loss} at step {p.step}; stopping. The last good checkpoint is "
                    f"{last or 'none (no checkpoint was saved yet)'}. Lower train.lr or check the data.")
            metrics.write("train", step=p.step, loss=loss, lr=p.lr, grad_norm=grad_norm, tokens_per_second=tps,
                          data_position=p.position)
        p = done[-1]
        progress.update(task, info=f"loss {loss:.3f}  lr {p.lr:.2e}  {tps:,.0f} tok/s")
        if p.step % cfg.log_every == 0:
            log.info("step %d loss %.4f lr %.3e grad_norm %.3f %.0f tok/s", p.step, loss, p.lr, grad_norm, tps)

    model.train()
    stop = StopFlag()
    try:
        with progress, stop:
            task = progress.add_task("train", total=cfg.max_steps, completed=step, info="")
            while step < cfg.max_steps:
                if stop.requested:
                    raise KeyboardInterrupt
                t0 = time.perf_counter()
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # ``position`` only advances once the step is applied, so a checkpoint taken on
                # Ctrl-C mid-step resumes at the start of that step.
                micro_batches = [sampler.batch(position + micro * cfg.batch_size, cfg.batch_size)
                                 for micro in range(cfg.grad_accum)]
                step_targets = max(sampler.count_targets(position, cfg.batch_size * cfg.grad_accum), 1)
                shares = accumulate_gradients(train_model, micro_batches, step_targets, device, autocast)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += cfg.batch_size * cfg.grad_accum
                dt = time.perf_counter() - t0
                train_time += dt
                train_tokens += tokens_per_step
                pending.append(_Pending(step, lr, position, shares, grad_norm.detach(), dt))
                progress.update(task, completed=step)
                evaluating = step % cfg.eval_every == 0 or step == cfg.max_steps
                saving = step % cfg.save_every == 0 and step < cfg.max_steps
                if step % cfg.log_every == 0 or evaluating or saving or step == cfg.max_steps:
                    flush()
                if evaluating:
                    ev = run_eval()
                    if monitor is not None:
                        ev.update(monitor.on_eval(model, step, train_time))
                    result.last_eval = ev
                    metrics.write("eval", step=step, **ev)
                    log.info("step %d val_loss %.4f ppl %.2f acc %.4f", step, ev["val_loss"], ev["perplexity"],
                             ev["token_accuracy"])
                    best_val = min(best_val, ev["val_loss"])
                    if best.update(ev):
                        result.best_checkpoint = snapshot(out_dir / "model_best.pt")
                if saving:
                    snapshot(out_dir / f"model_step_{step}.pt")
                    prune_step_checkpoints(out_dir, cfg.keep_checkpoints)
            result.final_checkpoint = snapshot(out_dir / "model_final.pt")
    except KeyboardInterrupt:
        flush()  # a diverged step since the last flush is reported, not saved
        path = snapshot(out_dir / f"model_step_{step}.pt")
        metrics.write("interrupted", step=step, checkpoint=str(path))
        raise TrainingInterrupted(f"interrupted at step {step}; saved {path}. Continue with --resume auto") from None
    finally:
        metrics.close()
        if monitor is not None:
            monitor.close()
    result.steps = step
    result.best_val_loss = best_val
    if (out_dir / "model_best.pt").is_file():
        result.best_checkpoint = out_dir / "model_best.pt"
    result.train_seconds = train_time
    result.train_tokens_per_second = train_tokens / train_time if train_time > 0 else 0.0
    return result
