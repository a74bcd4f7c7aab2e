"""A training run's checkpoints: what to write, where, and in which layout.

Why a manager: a run's state is one dict (:meth:`codette.train.trainer.Trainer.state_dict`), but an FSDP2
run holds only its shards of the weights and AdamW moments, so it writes them as a DCP folder
(:mod:`codette.checkpoint.sharded`) where one process writes a single file. The trainer asks for "a step
checkpoint", "the best", "the final one" and "the newest valid one"; the layout is decided here, once.

Also here: which checkpoint ``--resume`` means, and the weights ``--init-from`` starts a new run from (a
Codette checkpoint or run folder, or a local Hugging Face model folder: :mod:`codette.checkpoint.hf`;
:func:`~codette.checkpoint.init_weights`). A LoRA run's checkpoints hold its adapters and their optimizer
state only, and name its base (:mod:`codette.checkpoint.lora`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from codette.checkpoint import (
    ARCHITECTURE,
    LORA,
    init_weights,
    latest_valid_checkpoint,
    load_checkpoint,
    model_config_of,
    prune_step_checkpoints,
    save_checkpoint,
)
from codette.checkpoint import sharded as dcp_files
from codette.errors import CodetteError
from codette.model import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURE", "CheckpointManager", "init_weights", "resume_checkpoint"]  # init_weights: the trainer's


class CheckpointManager:
    """Writes and reads one run's checkpoints in ``folder``: single files, or ``.dcp`` folders when ``sharded``.

    ``main`` is the process that writes single files (every process takes part in a sharded write); ``keep``
    is how many periodic checkpoints :meth:`prune` leaves. ``lora`` is a LoRA run's adapters
    (:class:`codette.train.lora.LoraAdapters`: ``meta``, ``state(model)``, ``load(model, state)``): then
    ``model`` is the adapters alone, saved beside the checkpoint, and ``lora`` names the base.
    """

    def __init__(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 sharded: bool = False, main: bool = True, keep: int = 0, lora: Any | None = None) -> None:
        self.folder, self.model, self.optimizer = Path(folder), model, optimizer
        self.sharded, self.main, self.keep, self.lora = sharded, main, keep, lora

    def weights(self) -> dict[str, Any]:
        """``model`` and ``optimizer`` state as this layout saves them: whole, or this process's shards
        (a LoRA run: the adapters, their optimizer state, and the ``lora`` entry naming the base)."""
        if self.lora is not None:
            return {"model": self.lora.state(self.model), "optimizer": self.optimizer.state_dict(),
                    LORA: dict(self.lora.meta)}
        if self.sharded:
            return dcp_files.sharded_weights(self.model, self.optimizer)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_weights(self, state: dict[str, Any]) -> None:
        """The inverse of :meth:`weights`, from a state :meth:`load` returned."""
        if self.lora is not None:  # the base weights from where the run found them, then the adapters
            self.lora.load(self.model, state)
            self.optimizer.load_state_dict(state["optimizer"])
        elif self.sharded:
            dcp_files.set_sharded_weights(self.model, self.optimizer, state)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])

    def save_step(self, state: dict[str, Any]) -> Path:
        """``model_step_N``: resumable (``.pt``, or ``.dcp`` sharded); see :meth:`prune`."""
        return self._save(self.folder / f"model_step_{state['step']}.pt", state, resumable=True, whole=False)

    def save_best(self, state: dict[str, Any]) -> Path:
        """``model_best.pt``, the file evaluation and export read (sharded: the gathered weights, no optimizer)."""
        return self._save(self.folder / "model_best.pt", state, resumable=False, whole=True)

    def save_final(self, state: dict[str, Any]) -> Path:
        """``model_final.pt``; sharded, also ``model_final.dcp`` to resume or continue from."""
        return self._save(self.folder / "model_final.pt", state, resumable=True, whole=True)

    def _save(self, path: Path, state: dict[str, Any], resumable: bool, whole: bool) -> Path:
        if not self.sharded:
            if self.main:
                save_checkpoint(state, path)
            return path
        if resumable:
            saved = dcp_files.save_sharded(state, path.with_suffix(dcp_files.SUFFIX), self.main)
            if not whole:
                return saved
        weights = dcp_files.full_model_state(self.model)  # collective: every process gathers
        if self.main:
            rest = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
            save_checkpoint({**rest, "model": weights}, path)
        torch.distributed.barrier()  # nobody reads the file before it is in place
        return path

    def prune(self) -> None:
        """Delete all but the newest ``keep`` periodic checkpoints (the main process does it)."""
        if self.main:
            prune_step_checkpoints(self.folder, self.keep)

    def latest(self) -> Path | None:
        """The newest valid resumable checkpoint in the folder, of either layout."""
        return latest_valid_checkpoint(self.folder)

    def load(self, path: Path, model_cfg: ModelConfig) -> dict[str, Any]:
        """Checkpoint ``path`` as a state dict for :meth:`~codette.train.trainer.Trainer.load_state_dict`;
        refused when its layout is not this run's or its model is not ``model_cfg``."""
        if self.sharded:
            if not dcp_files.is_sharded(path):
                raise CodetteError(f"cannot resume from {path}: a train.parallel=fsdp run resumes from a sharded "
                                   f"checkpoint folder (model_step_N.dcp)")
            _check_same_model(model_config_of(dcp_files.load_state(path), path), model_cfg, path)
            return dcp_files.load_sharded(path, self.weights())
        if dcp_files.is_sharded(path):
            raise CodetteError(f"cannot resume from {path}: it is a sharded (FSDP) checkpoint; resume it under "
                               f"torchrun with train.parallel=fsdp")
        state = load_checkpoint(path, map_location=next(self.model.parameters()).device, merge_lora=False)
        _check_same_model(model_config_of(state, path), model_cfg, path)
        if "optimizer" not in state:
            raise CodetteError(f"{path} holds weights only (no optimizer state); it cannot be resumed")
        self._check_same_lora(state.get(LORA), path)  # the base is checked as it is read (LoraAdapters.load)
        return state

    def _check_same_lora(self, saved: dict | None, path: Path) -> None:
        """A LoRA checkpoint resumes only a LoRA run with the same rank, alpha and targets, and a full one only
        a full one."""
        ours = self.lora.meta if self.lora is not None else None
        if saved is None and ours is not None:
            raise CodetteError(f"cannot resume from {path}: it is a full fine-tuning checkpoint, this run trains LoRA "
                               f"adapters (train.lora_rank={ours['rank']}); start a LoRA run from it with --init-from")
        if saved is not None and ours is None:
            raise CodetteError(f"cannot resume from {path}: it is a LoRA checkpoint (rank {saved.get('rank')}); "
                               f"resume it with the same train.lora_rank, lora_alpha and lora_targets")
        for key in ("rank", "alpha", "targets") if saved is not None else ():
            if saved.get(key) != ours[key]:
                raise CodetteError(f"cannot resume from {path}: train.lora_{key}={saved.get(key)!r} there but "
                                   f"{ours[key]!r} in this run")


def _check_same_model(saved: ModelConfig, ours: ModelConfig, path: Path) -> None:
    a, b = dataclasses.asdict(saved), dataclasses.asdict(ours)
    a.pop("extra", None)
    b.pop("extra", None)
    diff = [k for k in a if a[k] != b.get(k)]
    if diff:
        k = diff[0]
        raise CodetteError(f"cannot resume from {path}: model {k}={a[k]!r} there but {b[k]!r} in this run")


def resume_checkpoint(resume: str | None, folder: Path) -> Path | None:
    """What ``--resume`` names: ``auto`` is the newest valid checkpoint in ``folder`` (None: start fresh)."""
    if not resume:
        return None
    if resume == "auto":
        found = latest_valid_checkpoint(folder)
        if found is None:
            log.info("--resume auto: no valid checkpoint in %s, starting fresh", folder)
        return found
    return Path(resume)
