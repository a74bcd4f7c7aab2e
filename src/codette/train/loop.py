"""The training loop: build, step, evaluate, save, and report what happened.

Checkpoint discipline: a checkpoint written after step ``k`` holds everything the next step depends
on (:meth:`~codette.train.trainer.Trainer.state_dict`), so a run resumed from it produces exactly the
losses of the uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
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

from codette.checkpoint.manager import resume_checkpoint
from codette.config import TrainConfig
from codette.data.loader import reading_plan
from codette.errors import CodetteError, TrainingInterrupted
from codette.fileio import ensure_writable_dir, remove_stale_temporaries
from codette.model import ModelConfig, count_parameters
from codette.model.flops import gpu_bf16_peak, mfu
from codette.train.distributed import World, any_rank, barrier, init_from_env, shutdown, sum_over_ranks
from codette.train.trainer import StepResult, Trainer

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


class _NoMetrics:
    """What a process other than rank 0 writes its records to: nothing (rank 0 logs for the run)."""

    jsonl_path = None
    listener = None

    def write(self, kind: str, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


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
    Started by ``torchrun``, each process trains its share of every batch (see
    :mod:`codette.train.distributed`); only rank 0 logs, shows progress, probes and writes files.
    """
    world, rank_device = init_from_env(cfg.device)
    if not world.main:  # rank 0 speaks for the run
        logging.getLogger("codette").setLevel(logging.WARNING)
    try:
        return _train(cfg, model_cfg, Path(data_dir), Path(out_dir), Path(log_dir), resume, run_config,
                      tokenizer_sha256, console, monitor, world, rank_device)
    finally:
        if world.distributed:
            shutdown()


class _StepReports:
    """Steps applied but not yet read back from the device, and the run's training time and tokens.

    :meth:`flush` is the loop's one host sync; distributed, one all-reduce of the losses, so a NaN on any
    rank stops every rank there. It runs at log steps and before every evaluation or checkpoint, so a
    diverged step is never saved.
    """

    def __init__(self, trainer: Trainer, metrics: MetricsLog | _NoMetrics, progress: Progress, task: Any) -> None:
        self.trainer, self.metrics, self.progress, self.task = trainer, metrics, progress, task
        self.pending: list[StepResult] = []
        self.seconds, self.tokens = 0.0, 0
        self.note = ""  # the last evaluation's copy figures, kept on the progress line
        device = trainer.device
        # MFU against the GPU's known bf16 peak (model/flops.py); None where the device's peak is unknown.
        self.peak = gpu_bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        # A LoRA run's frozen weights skip their weight gradients: its FLOPs count the adapters apart.
        self.n_lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) if trainer.lora else 0

    def add(self, done: StepResult) -> None:
        self.pending.append(done)
        self.seconds += done.seconds
        self.tokens += self.trainer.tokens_per_step

    def flush(self) -> None:
        """Write the pending steps' records; a loss that is not finite stops the run, naming the last good
        checkpoint."""
        if not self.pending:
            return
        t, world = self.trainer, self.trainer.world
        shares = sum_over_ranks(torch.stack([p.shares for p in self.pending]), world).double().cpu().tolist()
        norms = torch.stack([p.grad_norm for p in self.pending]).double().cpu().tolist()
        seconds = sum(p.seconds for p in self.pending)
        tps = t.tokens_per_step * len(self.pending) / seconds if seconds > 0 else 0.0
        done = list(self.pending)
        self.pending.clear()
        for p, micro, grad_norm in zip(done, shares, norms):
            loss = sum(micro)
            if not math.isfinite(loss):
                last = t.checkpoints.latest()
                self.metrics.write("diverged", step=p.step, loss=loss)
                raise CodetteError(
                    f"training loss became {loss} at step {p.step}; stopping. The last good checkpoint is "
                    f"{last or 'none (no checkpoint was saved yet)'}. Lower train.lr or check the data.")
            extra = {"mfu": mfu(tps, t.model_cfg, t.seq_len, self.peak, world.size, self.n_lora)} if self.peak else {}
            self.metrics.write("train", step=p.step, loss=loss, lr=p.lr, grad_norm=grad_norm, tokens_per_second=tps,
                               data_position=p.position, **extra)
        p = done[-1]
        self.progress.update(self.task, info=f"loss {loss:.3f}  lr {p.lr:.2e}  {tps:,.0f} tok/s{self.note}")
        if p.step % t.cfg.log_every == 0 and world.main:
            log.info("step %d loss %.4f lr %.3e grad_norm %.3f %.0f tok/s", p.step, loss, p.lr, grad_norm, tps)


def copy_note(ev: dict[str, Any]) -> str:
    """The copy monitor's figures for the progress line and the eval log line ('' without them)."""
    if not ev.get("copy_n"):
        return ""
    return f"  copy {ev['copy_exact']:.0%} of {ev['copy_n']} (tokens {ev['copy_token_acc']:.0%})"


def _build(cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out_dir: Path, resume: str | None,
           run_config: dict | None, tokenizer_sha256: str | None, monitor: Any | None, world: World,
           rank_device: torch.device | None) -> tuple[Trainer, Path | None]:
    """The trainer, fresh, from ``train.init_from``'s weights, or resumed; and the checkpoint it resumed from.

    A resumed run continues its own checkpoint: ``train.init_from`` only sets the weights a new run starts
    with, so the same command with ``--resume auto`` continues a run that was started from them.
    """
    resume_path = resume_checkpoint(resume, out_dir)
    if resume_path is not None and cfg.init_from:
        log.info("resuming from %s: train.init_from (%s) is not used, it only starts a new run", resume_path,
                 cfg.init_from)
    trainer = Trainer(cfg, model_cfg, data_dir, out_dir, world=world, device=rank_device, monitor=monitor,
                      init_from=cfg.init_from if resume_path is None else None, run_config=run_config,
                      tokenizer_sha256=tokenizer_sha256)
    if resume_path is not None:
        trainer.load_state_dict(trainer.checkpoints.load(resume_path, model_cfg))
        log.info("resumed from %s at step %d (data position %d)", resume_path, trainer.step, trainer.position)
        if trainer.step >= cfg.max_steps:
            log.info("checkpoint is already at max_steps=%d", cfg.max_steps)
    trainer.wrap()
    return trainer, resume_path


def _announce(trainer: Trainer, metrics: MetricsLog | _NoMetrics, resume_path: Path | None) -> None:
    """The run's first log line and ``start`` record: what trains, where, and from what."""
    cfg, model_cfg, world = trainer.cfg, trainer.model_cfg, trainer.world
    n_params = count_parameters(model_cfg)
    log.info("model %s: %d parameters, device %s (%s), seq_len %d, batch %dx%dx%d (%s)",
             model_cfg.extra.get("preset", "custom"), n_params, trainer.device, trainer.precision, trainer.seq_len,
             cfg.batch_size, cfg.grad_accum, world.size, trainer.strategy if world.distributed else "one process")
    plan = reading_plan(trainer.sampler, cfg.max_steps, trainer.per_step)
    log.info("packing %s: %d steps read %s tokens of the %s distinct train tokens, %.2f times each (%.2f epochs of "
             "%d windows, %.1f%% padding)", cfg.packing, cfg.max_steps, f"{plan['processed_tokens']:,}",
             f"{plan['distinct_tokens']:,}", plan["processed_to_distinct"], plan["epochs"], plan["windows_per_epoch"],
             100 * plan["padding_fraction"])
    windows = "best-fit" if cfg.packing == "bestfit" else "random offsets" if trainer.plain_text else "document-aligned"
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    lora = {}
    if trainer.lora is not None:
        lora = {"lora": trainer.lora.meta}
        log.info("LoRA rank %d on %s: %s trainable parameters, base %s", cfg.lora_rank, ",".join(trainer.lora.targets),
                 f"{trainable:,}", trainer.lora.base)
    metrics.write("start", step=trainer.step, params=n_params, trainable=trainable, **lora, device=str(trainer.device),
                  precision=trainer.precision, seq_len=trainer.seq_len, train_tokens=len(trainer.train_split),
                  val_tokens=len(trainer.val_split),
                  resumed_from=str(resume_path or ""), init_from=str(trainer.init_source or ""),
                  windows=windows, packing=cfg.packing, world_size=world.size, parallel=trainer.strategy, **plan)


def _train(cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out_dir: Path, log_dir: Path,
           resume: str | None, run_config: dict | None, tokenizer_sha256: str | None, console: Console | None,
           monitor: Any | None, world: World, rank_device: torch.device | None) -> TrainResult:
    ensure_writable_dir(out_dir)
    if world.main:
        remove_stale_temporaries(out_dir)  # left by a run killed while writing a checkpoint
    barrier(world)
    console = console or Console(stderr=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    trainer, resume_path = _build(cfg, model_cfg, data_dir, out_dir, resume, run_config, tokenizer_sha256, monitor,
                                  world, rank_device)
    checkpoints = trainer.checkpoints
    metrics: MetricsLog | _NoMetrics = MetricsLog(log_dir) if world.main else _NoMetrics()
    metrics.listener = monitor.on_record if monitor is not None and world.main else None
    _announce(trainer, metrics, resume_path)
    result = TrainResult(steps=trainer.step, final_checkpoint=None, best_checkpoint=None,
                         best_val_loss=trainer.best_val, metrics_path=metrics.jsonl_path)
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, disable=not world.main,
    )
    reports = _StepReports(trainer, metrics, progress,
                           progress.add_task("train", total=cfg.max_steps, completed=trainer.step, info=""))
    stop = StopFlag()
    stopping_together = not world.distributed  # distributed, a stop is agreed on at a flush (else no save)
    try:
        with progress, stop:
            while trainer.step < cfg.max_steps:
                if stop.requested and not world.distributed:
                    raise KeyboardInterrupt
                # Step.
                reports.add(trainer.train_step())
                step = trainer.step
                progress.update(reports.task, completed=step)
                evaluating = step % cfg.eval_every == 0 or step == cfg.max_steps
                saving = step % cfg.save_every == 0 and step < cfg.max_steps
                if step % cfg.log_every == 0 or evaluating or saving or step == cfg.max_steps:
                    reports.flush()
                    if world.distributed and any_rank(stop.requested, world, trainer.device):
                        stopping_together = True
                        raise KeyboardInterrupt
                # Evaluate.
                if evaluating:
                    ev = trainer.evaluate(reports.seconds)
                    result.last_eval = ev
                    metrics.write("eval", step=step, **ev)
                    reports.note = copy_note(ev)
                    if world.main:
                        log.info("step %d val_loss %.4f ppl %.2f acc %.4f%s", step, ev["val_loss"], ev["perplexity"],
                                 ev["token_accuracy"], reports.note)
                    if trainer.is_best(ev):
                        result.best_checkpoint = checkpoints.save_best(trainer.state_dict())
                # Save.
                if saving:
                    checkpoints.save_step(trainer.state_dict())
                    checkpoints.prune()
            result.final_checkpoint = checkpoints.save_final(trainer.state_dict())
    except KeyboardInterrupt:
        if not stopping_together:  # one rank was stopped alone: the others cannot join in a checkpoint
            last = checkpoints.latest()
            raise TrainingInterrupted(f"interrupted at step {trainer.step} without a checkpoint; the last one is "
                                      f"{last or 'none'}. Continue with --resume auto") from None
        reports.flush()  # a diverged step since the last flush is reported, not saved
        path = checkpoints.save_step(trainer.state_dict())
        metrics.write("interrupted", step=trainer.step, checkpoint=str(path))
        raise TrainingInterrupted(f"interrupted at step {trainer.step}; saved {path}. "
                                  f"Continue with --resume auto") from None
    finally:
        metrics.close()
        if monitor is not None:
            monitor.close()
    result.steps = trainer.step
    result.best_val_loss = trainer.best_val
    if (out_dir / "model_best.pt").is_file():
        result.best_checkpoint = out_dir / "model_best.pt"
    result.train_seconds = reports.seconds
    result.train_tokens_per_second = reports.tokens / reports.seconds if reports.seconds > 0 else 0.0
    return result
