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
from codette.checkpoint.sharded import SUFFIX as SHARDED_SUFFIX
from codette.checkpoint.sharded import full_model_state, is_sharded, load_sharded, save_sharded
from codette.checkpoint.sharded import load_state as load_sharded_state
from codette.config import TrainConfig
from codette.model.flops import gpu_bf16_peak, mfu
from codette.data.loader import BatchSampler
from codette.data.pack import PackedSplit
from codette.errors import CodetteError, TrainingInterrupted
from codette.evaluate import evaluate_lm
from codette.evaluate.selection import BestTracker, needs_probes
from codette.fileio import ensure_writable_dir, remove_stale_temporaries
from codette.model import CodetteModel, ModelConfig, count_parameters
from codette.rng import rng_state, set_rng_state
from codette.train.device import autocast_for, pick_device, resolve_dtype
from codette.train.distributed import (
    World,
    any_rank,
    barrier,
    choose_strategy,
    ddp_wrap,
    fsdp_shard,
    init_from_env,
    local_value,
    no_sync_for,
    share_rng_state,
    shutdown,
    sum_over_ranks,
    uses_fsdp_autocast,
)
from codette.train.schedule import build_optimizer, lr_at
from codette.train.step import accumulate_gradients, micro_batch_positions

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


class _NoMetrics:
    """What a process other than rank 0 writes its records to: nothing (rank 0 logs for the run)."""

    jsonl_path = None
    listener = None

    def write(self, kind: str, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _build_model(model_cfg: ModelConfig, device: torch.device, strategy: str, precision: str,
                 world: World) -> CodetteModel:
    """The model with its seeded initial weights, on ``device``: FSDP2-sharded for ``fsdp``.

    Sharded, it is built on the meta device (no process holds it whole on the GPU); rank 0 builds the
    weights on its CPU exactly as one process would and they are scattered from there, so every run
    starts from the same weights whatever its layout.
    """
    if strategy != "fsdp":
        return CodetteModel(model_cfg).to(device)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = CodetteModel(model_cfg).state_dict() if world.main else {}
    with torch.device("meta"):
        model = CodetteModel(model_cfg)
    fsdp_shard(model, device, precision)
    model.to_empty(device=device)
    model.rotary.reset_parameters()  # not in the state dict (a non-persistent buffer)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    share_rng_state(world)  # only rank 0 drew the weights: all ranks continue from its random state
    return model


def _load_resume(path: Path, model: CodetteModel, optimizer: torch.optim.Optimizer, model_cfg: ModelConfig,
                 strategy: str, device: torch.device) -> dict:
    """Weights and optimizer state from checkpoint ``path`` into ``model``; returns the rest of it."""
    if strategy == "fsdp":
        if not is_sharded(path):
            raise CodetteError(f"cannot resume from {path}: a train.parallel=fsdp run resumes from a sharded "
                               f"checkpoint folder (model_step_N.dcp)")
        _check_same_model(model_config_of(load_sharded_state(path), path), model_cfg, path)
        return load_sharded(model, optimizer, path)
    if is_sharded(path):
        raise CodetteError(f"cannot resume from {path}: it is a sharded (FSDP) checkpoint; resume it under "
                           f"torchrun with train.parallel=fsdp")
    state = load_checkpoint(path, map_location=device)
    _check_same_model(model_config_of(state, path), model_cfg, path)
    if "optimizer" not in state:
        raise CodetteError(f"{path} holds weights only (no optimizer state); it cannot be resumed")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


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
    device = rank_device or pick_device(cfg.device)
    precision = resolve_dtype(device, cfg.dtype)
    seq_len = cfg.seq_len or model_cfg.max_seq_len
    if seq_len > model_cfg.max_seq_len:
        raise CodetteError(f"train.seq_len={seq_len} exceeds the model's context max_seq_len={model_cfg.max_seq_len}")
    strategy = choose_strategy(cfg.parallel, count_parameters(model_cfg), world)
    # FSDP2's mixed-precision policy computes in bf16 on CUDA by itself; elsewhere autocast does it.
    autocast = contextlib.nullcontext() if strategy == "fsdp" and uses_fsdp_autocast(device, precision) \
        else autocast_for(device, precision)
    if strategy == "fsdp" and monitor is not None and needs_probes(cfg.best_metric):
        raise CodetteError(f"train.best_metric={cfg.best_metric!r} needs behavioral probes, which a sharded "
                           f"(train.parallel=fsdp) run does not run; use val_loss, perplexity or token_accuracy")
    if not world.main or strategy == "fsdp":
        if monitor is not None and world.main and monitor.probes:
            log.warning("behavioral probes are not run in a sharded (fsdp) run; evaluate the final checkpoint")
        probing = None
    else:
        probing = monitor

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
    model = _build_model(model_cfg, device, strategy, precision, world)
    # Fused AdamW (one kernel over all parameters) on CUDA and the CPU: on the CPU torch's per-tensor
    # AdamW took 328 ms of a 7.2 s step at 42M parameters against 58 ms fused (benchmarks/train_throughput.py).
    optimizer = build_optimizer(model, cfg, fused=device.type in ("cuda", "cpu") and strategy != "fsdp")
    step, position, best_val = 0, 0, math.inf
    best = BestTracker(cfg.best_metric)

    resume_path = _resolve_resume(resume, out_dir)
    if resume_path is not None:
        state = _load_resume(resume_path, model, optimizer, model_cfg, strategy, device)
        step, position = int(state["step"]), int(state["data_position"])
        best_val = float(state.get("best_val_loss", math.inf))
        best = BestTracker(cfg.best_metric, state.get("best_metric"), best_val)
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d (data position %d)", resume_path, step, position)
        if step >= cfg.max_steps:
            log.info("checkpoint is already at max_steps=%d", cfg.max_steps)

    model.activation_checkpointing = cfg.activation_checkpointing
    if cfg.compile:  # per block, as torchtitan does: in place, so state_dict keys have no _orig_mod prefix
        for block in model.blocks:
            block.compile()
    wrapped: torch.nn.Module = ddp_wrap(model, device) if strategy == "ddp" else model
    no_sync = no_sync_for(strategy, wrapped)
    train_model: torch.nn.Module = wrapped
    eval_model = train_model if strategy == "none" else model  # DDP's wrapper adds nothing to a forward pass
    metrics: MetricsLog | _NoMetrics = MetricsLog(log_dir) if world.main else _NoMetrics()
    metrics.listener = monitor.on_record if monitor is not None and world.main else None
    n_params = count_parameters(model_cfg)
    per_step = cfg.batch_size * cfg.grad_accum * world.size  # sequences of one optimizer step, all ranks
    log.info("model %s: %d parameters, device %s (%s), seq_len %d, batch %dx%dx%d (%s)",
             model_cfg.extra.get("preset", "custom"), n_params, device, precision, seq_len, cfg.batch_size,
             cfg.grad_accum, world.size, strategy if world.distributed else "one process")
    metrics.write("start", step=step, params=n_params, device=str(device), precision=precision, seq_len=seq_len,
                  train_tokens=len(train_split), val_tokens=len(val_split), resumed_from=str(resume_path or ""),
                  windows="random offsets" if text else "document-aligned", world_size=world.size,
                  parallel=strategy)

    def train_state() -> dict:
        return {
            "model_config": dataclasses.asdict(model_cfg),
            "scheduler": {"kind": "warmup_cosine", "step": step, "lr": lr_at(max(step - 1, 0), cfg),
                          "warmup_steps": cfg.warmup_steps, "max_steps": cfg.max_steps},
            "step": step, "data_position": position, "rng": rng_state(), "best_val_loss": best_val,
            "best_metric": best.state(), "world_size": world.size,
            "train_config": dataclasses.asdict(cfg), "run_config": run_config or {},
            "tokenizer_sha256": tokenizer_sha256 or "",
        }

    def snapshot(path: Path, resumable: bool = True) -> Path:
        """A single-file checkpoint at ``path``; sharded (FSDP2), a ``.dcp`` folder when ``resumable``
        and the consolidated weights in ``path`` when not (best) or at the end (final)."""
        if strategy == "fsdp":
            if resumable:
                saved = save_sharded(model, optimizer, train_state(), path.with_suffix(SHARDED_SUFFIX), world.main)
                if path.name != "model_final.pt":
                    return saved
            weights = full_model_state(model)
            if world.main:
                save_checkpoint({**train_state(), "model": weights}, path)
            barrier(world)
            return path
        if world.main:
            save_checkpoint({**train_state(), "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                            path)
        return path

    def run_eval() -> dict:
        m = evaluate_lm(eval_model, val_sampler.sequential(cfg.batch_size, cfg.eval_batches), device, autocast)
        return {"val_loss": m.val_loss, "perplexity": m.perplexity, "token_accuracy": m.token_accuracy,
                "val_tokens": m.tokens}

    tokens_per_step = per_step * seq_len
    # MFU against the GPU's known bf16 peak (model/flops.py); None where the device's peak is unknown.
    peak = gpu_bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    result = TrainResult(steps=step, final_checkpoint=None, best_checkpoint=None, best_val_loss=best_val,
                         metrics_path=metrics.jsonl_path)
    train_time, train_tokens = 0.0, 0
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, disable=not world.main,
    )
    pending: list[_Pending] = []

    def flush() -> None:
        """Read the steps since the last flush back from the device (the loop's one host sync; distributed,
        one all-reduce of the losses, so a NaN on any rank stops every rank here), write their records, and
        stop if a loss is not finite. Runs at log steps and before every evaluation or checkpoint, so a
        diverged step is never saved."""
        if not pending:
            return
        shares = sum_over_ranks(torch.stack([p.shares for p in pending]), world).double().cpu().tolist()
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
            extra = {"mfu": mfu(tps, model_cfg, seq_len, peak, world.size)} if peak else {}
            metrics.write("train", step=p.step, loss=loss, lr=p.lr, grad_norm=grad_norm, tokens_per_second=tps,
                          data_position=p.position, **extra)
        p = done[-1]
        progress.update(task, info=f"loss {loss:.3f}  lr {p.lr:.2e}  {tps:,.0f} tok/s")
        if p.step % cfg.log_every == 0 and world.main:
            log.info("step %d loss %.4f lr %.3e grad_norm %.3f %.0f tok/s", p.step, loss, p.lr, grad_norm, tps)

    model.train()
    stop = StopFlag()
    stopping_together = not world.distributed  # distributed, a stop is agreed on at a flush (else no save)
    try:
        with progress, stop:
            task = progress.add_task("train", total=cfg.max_steps, completed=step, info="")
            while step < cfg.max_steps:
                if stop.requested and not world.distributed:
                    raise KeyboardInterrupt
                t0 = time.perf_counter()
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # ``position`` only advances once the step is applied, so a checkpoint taken on
                # Ctrl-C mid-step resumes at the start of that step.
                micro_batches = [sampler.batch(p, cfg.batch_size) for p in micro_batch_positions(
                    position, cfg.batch_size, cfg.grad_accum, world.size, world.rank)]
                step_targets = max(sampler.count_targets(position, per_step), 1)
                shares = accumulate_gradients(train_model, micro_batches, step_targets, device, autocast,
                                              world.size, no_sync)
                grad_norm = local_value(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += per_step
                dt = time.perf_counter() - t0
                train_time += dt
                train_tokens += tokens_per_step
                pending.append(_Pending(step, lr, position, shares, grad_norm.detach(), dt))
                progress.update(task, completed=step)
                evaluating = step % cfg.eval_every == 0 or step == cfg.max_steps
                saving = step % cfg.save_every == 0 and step < cfg.max_steps
                if step % cfg.log_every == 0 or evaluating or saving or step == cfg.max_steps:
                    flush()
                    if world.distributed and any_rank(stop.requested, world, device):
                        stopping_together = True
                        raise KeyboardInterrupt
                if evaluating:
                    ev = run_eval()
                    if probing is not None:
                        ev.update(probing.on_eval(model, step, train_time))
                    result.last_eval = ev
                    metrics.write("eval", step=step, **ev)
                    if world.main:
                        log.info("step %d val_loss %.4f ppl %.2f acc %.4f", step, ev["val_loss"], ev["perplexity"],
                                 ev["token_accuracy"])
                    best_val = min(best_val, ev["val_loss"])
                    if best.update(ev):
                        result.best_checkpoint = snapshot(out_dir / "model_best.pt", resumable=False)
                if saving:
                    snapshot(out_dir / f"model_step_{step}.pt")
                    if world.main:
                        prune_step_checkpoints(out_dir, cfg.keep_checkpoints)
            result.final_checkpoint = snapshot(out_dir / "model_final.pt")
    except KeyboardInterrupt:
        if not stopping_together:  # one rank was stopped alone: the others cannot join in a checkpoint
            last = latest_valid_checkpoint(out_dir)
            raise TrainingInterrupted(f"interrupted at step {step} without a checkpoint; the last one is "
                                      f"{last or 'none'}. Continue with --resume auto") from None
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
