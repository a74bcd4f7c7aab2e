"""One training run's state and what it does: a step, an evaluation, and the state a checkpoint holds.

Why a class: everything the next step depends on (weights, AdamW moments, step, data position, RNG
states, the best evaluation so far) lives here, and :meth:`Trainer.state_dict` /
:meth:`Trainer.load_state_dict` are the one place it is gathered and restored, so a checkpoint written
after step ``k`` resumes to exactly the losses of the uninterrupted run. How the state is laid out on
disk (one file, or FSDP2's shards) is :class:`~codette.checkpoint.manager.CheckpointManager`'s business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codette.checkpoint.manager import CheckpointManager, init_weights
from codette.config import TrainConfig
from codette.data.loader import BatchSampler, BestFitSampler
from codette.data.pack import PackedSplit
from codette.errors import CodetteError
from codette.evaluate import evaluate_lm
from codette.model import CodetteModel, ModelConfig, count_parameters
from codette.rng import rng_state, set_rng_state
from codette.train.device import autocast_for, pick_device, resolve_dtype
from codette.train.distributed import (
    World,
    choose_strategy,
    ddp_wrap,
    fsdp_shard,
    local_value,
    no_sync_for,
    share_rng_state,
    uses_fsdp_autocast,
)
from codette.train.schedule import build_optimizer, lr_at
from codette.train.selection import BestTracker, needs_probes
from codette.train.step import accumulate_gradients, micro_batch_positions

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """A step applied but not yet read back from the device (the loop reads several at once)."""

    step: int
    lr: float
    position: int
    shares: torch.Tensor  # the micro-batches' shares of the step loss
    grad_norm: torch.Tensor
    seconds: float


def build_model(model_cfg: ModelConfig, device: torch.device, strategy: str, precision: str, world: World,
                weights: dict[str, torch.Tensor] | None = None) -> CodetteModel:
    """The model on ``device`` with its seeded initial weights, or ``weights`` (``--init-from``) when given;
    FSDP2-sharded for ``fsdp``.

    Sharded, it is built on the meta device (no process holds it whole on the GPU); rank 0 builds the
    weights on its CPU exactly as one process would and they are scattered from there, so every run
    starts from the same weights whatever its layout.
    """
    if strategy != "fsdp":
        model = CodetteModel(model_cfg).to(device)
        if weights is not None:
            model.load_state_dict(weights)
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = {} if not world.main else weights if weights is not None else CodetteModel(model_cfg).state_dict()
    with torch.device("meta"):
        model = CodetteModel(model_cfg)
    fsdp_shard(model, device, precision)
    model.to_empty(device=device)
    model.rotary.reset_parameters()  # not in the state dict (a non-persistent buffer)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    share_rng_state(world)  # only rank 0 drew the weights: all ranks continue from its random state
    return model


class Trainer:
    """The model, its optimizer, the batches and the run's counters, on one process of ``world``.

    ``init_from`` (a checkpoint, a run folder or a local Hugging Face model folder:
    :func:`~codette.checkpoint.manager.init_weights`) replaces the seeded initial weights and nothing else: the
    optimizer, schedule, step and data position start new. With ``train.lora_rank`` those weights are frozen
    and peft's LoRA adapters train on them (:mod:`codette.train.lora`): the optimizer holds the adapters only.
    ``monitor`` (a :class:`codette.evaluate.training.TrainingMonitor`) adds behavioral figures to each
    evaluation where the run can probe (rank 0 of an unsharded run).
    """

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out_dir: Path, *,
                 world: World = World(), device: torch.device | None = None, monitor: Any | None = None,
                 init_from: str | Path | None = None, run_config: dict | None = None,
                 tokenizer_sha256: str | None = None) -> None:
        self.cfg, self.model_cfg, self.world = cfg, model_cfg, world
        self.run_config, self.tokenizer_sha256 = run_config or {}, tokenizer_sha256 or ""
        self.device = device or pick_device(cfg.device)
        self.precision = resolve_dtype(self.device, cfg.dtype)
        self.seq_len = cfg.seq_len or model_cfg.max_seq_len
        if self.seq_len > model_cfg.max_seq_len:
            raise CodetteError(f"train.seq_len={self.seq_len} exceeds the model's context "
                               f"max_seq_len={model_cfg.max_seq_len}")
        self.strategy = choose_strategy(cfg.parallel, count_parameters(model_cfg), world)
        if cfg.lora_rank:
            from codette.train.lora import require_peft

            require_peft(cfg)  # before any weights are read
            if self.strategy == "fsdp":  # a few adapters: DDP's copies of them cost nothing
                if cfg.parallel == "fsdp":
                    raise CodetteError("train.parallel=fsdp: a LoRA run (train.lora_rank) is not sharded; use ddp "
                                       "or auto")
                self.strategy = "ddp"
        sharded = self.strategy == "fsdp"
        # FSDP2's mixed-precision policy computes in bf16 on CUDA by itself; elsewhere autocast does it.
        self.autocast = contextlib.nullcontext() if sharded and uses_fsdp_autocast(self.device, self.precision) \
            else autocast_for(self.device, self.precision)
        self.probing = self._probing(monitor)

        self.train_split, self.val_split = PackedSplit(data_dir, "train"), PackedSplit(data_dir, "val")
        vocab_needed = int(self.train_split.meta["vocab_size"])
        if vocab_needed > model_cfg.vocab_size:
            raise CodetteError(f"the data uses {vocab_needed} token ids but the model has only "
                               f"{model_cfg.vocab_size} rows")
        # Stream packing reads chat in windows that start where conversations start, plain text at random
        # offsets; best-fit packs whole documents of either kind into each window.
        self.plain_text = self.train_split.plain_text
        self.sampler: BatchSampler | BestFitSampler = (
            BestFitSampler(self.train_split, self.seq_len, cfg.seed) if cfg.packing == "bestfit" else
            BatchSampler(self.train_split, self.seq_len, cfg.seed, aligned=not self.plain_text,
                         random_offsets=self.plain_text))
        self.val_sampler = BatchSampler(self.val_split, self.seq_len, cfg.seed)
        self.per_step = cfg.batch_size * cfg.grad_accum * world.size  # sequences of one optimizer step, all ranks
        self.tokens_per_step = self.per_step * self.seq_len

        weights, self.init_source = None, None  # init_source: the file --init-from read, for the log
        if init_from and (world.main or not sharded):  # sharded, rank 0 reads them and scatters them
            self.init_source, weights = init_weights(init_from, model_cfg, tokenizer_sha256)
            log.info("starting from the weights of %s (new optimizer and schedule, step 0)", self.init_source)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = build_model(model_cfg, self.device, self.strategy, self.precision, world, weights)
        self.lora = None  # a LoRA run's adapters (codette.train.lora); resuming, the checkpoint names the base
        if cfg.lora_rank:
            from codette.train.lora import inject

            self.lora = inject(self.model, cfg, self.init_source)
        # Only trainable parameters (a LoRA run: the adapters) are optimised.
        # Fused AdamW (one kernel over all parameters) on CUDA and the CPU: on the CPU torch's per-tensor
        # AdamW took 328 ms of a 7.2 s step at 42M parameters against 58 ms fused (benchmarks/train_throughput.py).
        self.optimizer = build_optimizer(self.model, cfg, fused=self.device.type in ("cuda", "cpu") and not sharded)
        self.checkpoints = CheckpointManager(out_dir, self.model, self.optimizer, sharded=sharded, main=world.main,
                                             keep=cfg.keep_checkpoints, lora=self.lora)
        self.step, self.position, self.best_val = 0, 0, math.inf
        self.best = BestTracker(cfg.best_metric)
        self.train_model: torch.nn.Module = self.model  # DDP's wrapper once wrap() ran
        self.no_sync = None

    def _probing(self, monitor: Any | None) -> Any | None:
        """The monitor where this process runs the probes: rank 0 of an unsharded run (a sharded one holds no
        whole model to generate with)."""
        sharded = self.strategy == "fsdp"
        if sharded and monitor is not None and needs_probes(self.cfg.best_metric):
            raise CodetteError(f"train.best_metric={self.cfg.best_metric!r} needs behavioral probes, which a sharded "
                               f"(train.parallel=fsdp) run does not run; use val_loss, perplexity or token_accuracy")
        if self.world.main and not sharded:
            return monitor
        if monitor is not None and self.world.main and monitor.probes:
            log.warning("behavioral probes are not run in a sharded (fsdp) run; evaluate the final checkpoint")
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: the run's counters, RNG states and configs, then the weights and
        AdamW state in the checkpoint manager's layout."""
        cfg = self.cfg
        return {
            "model_config": dataclasses.asdict(self.model_cfg),
            "scheduler": {"kind": "warmup_cosine", "step": self.step, "lr": lr_at(max(self.step - 1, 0), cfg),
                          "warmup_steps": cfg.warmup_steps, "max_steps": cfg.max_steps},
            "step": self.step, "data_position": self.position, "rng": rng_state(), "best_val_loss": self.best_val,
            "best_metric": self.best.state(), "world_size": self.world.size,
            "train_config": dataclasses.asdict(cfg), "run_config": self.run_config,
            "tokenizer_sha256": self.tokenizer_sha256,
            **self.checkpoints.weights(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (:meth:`CheckpointManager.load`): the next step is the one after it."""
        self.checkpoints.load_weights(state)
        saved = state.get("train_config", {}).get("packing", "stream")
        if saved != self.cfg.packing:  # the data position then names other windows than the run read so far
            log.warning("the checkpoint was trained with train.packing=%r, this run reads %r windows from its data "
                        "position on", saved, self.cfg.packing)
        self.step, self.position = int(state["step"]), int(state["data_position"])
        self.best_val = float(state.get("best_val_loss", math.inf))
        self.best = BestTracker(self.cfg.best_metric, state.get("best_metric"), self.best_val)
        set_rng_state(state["rng"])

    def wrap(self) -> None:
        """Activation checkpointing, torch.compile and DDP's wrapper: after any checkpoint is loaded, so
        DDP's first broadcast sends the loaded weights."""
        self.model.activation_checkpointing = self.cfg.activation_checkpointing
        if self.cfg.compile:  # per block, as torchtitan does; state_dict keys have no _orig_mod prefix
            self.model.compile_blocks()
        self.train_model = ddp_wrap(self.model, self.device) if self.strategy == "ddp" else self.model
        self.no_sync = no_sync_for(self.strategy, self.train_model)
        self.model.train()

    def train_step(self) -> StepResult:
        """One optimizer step over ``batch_size x grad_accum`` sequences per process; nothing is read back."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # ``position`` only advances once the step is applied, so a checkpoint taken on
        # Ctrl-C mid-step resumes at the start of that step.
        micro_batches = [self.sampler.batch(p, cfg.batch_size) for p in micro_batch_positions(
            self.position, cfg.batch_size, cfg.grad_accum, self.world.size, self.world.rank)]
        step_targets = max(self.sampler.count_targets(self.position, self.per_step), 1)
        shares = accumulate_gradients(self.train_model, micro_batches, step_targets, self.device, self.autocast,
                                      self.world.size, self.no_sync)
        grad_norm = local_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position += self.per_step
        return StepResult(self.step, lr, self.position, shares, grad_norm.detach(), time.perf_counter() - t0)

    def evaluate(self, train_seconds: float) -> dict[str, Any]:
        """Held-out loss, perplexity and token accuracy on the val split, and the monitor's copy and behavioral
        figures where this process probes (the probes' budget is a share of ``train_seconds``)."""
        # The model itself, never DDP's wrapper: it adds nothing to a forward pass.
        m = evaluate_lm(self.model, self.val_sampler.sequential(self.cfg.batch_size, self.cfg.eval_batches),
                        self.device, self.autocast)
        record = {"val_loss": m.val_loss, "perplexity": m.perplexity, "token_accuracy": m.token_accuracy,
                  "val_tokens": m.tokens}
        if self.probing is not None:
            record.update(self.probing.on_eval(self.model, self.step, train_seconds, self.autocast))
        return record

    def is_best(self, record: dict[str, Any]) -> bool:
        """Note evaluation ``record``; True when it is the best so far by ``train.best_metric``."""
        self.best_val = min(self.best_val, record["val_loss"])
        return self.best.update(record)
