"""A training run's checkpoints: what to write, where, and in which layout.

Why a manager: a run's state is one dict (:meth:`codette.train.trainer.Trainer.state_dict`), but an FSDP2
run holds only its shards of the weights and AdamW moments, so it writes them as a DCP folder
(:mod:`codette.checkpoint.sharded`) where one process writes a single file. The trainer asks for "a step
checkpoint", "the best", "the final one" and "the newest valid one"; the layout is decided here, once.

Also here: which checkpoint ``--resume`` means, and the weights ``--init-from`` starts a new run from (a
Codette checkpoint or run folder, or a local Hugging Face model folder: :mod:`codette.checkpoint.hf`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from codette.checkpoint import (
    RUN_CHECKPOINTS,
    latest_valid_checkpoint,
    load_checkpoint,
    model_config_of,
    model_file,
    prune_step_checkpoints,
    run_folder_model,
    save_checkpoint,
)
from codette.checkpoint import sharded as dcp_files
from codette.checkpoint.hf import grow_vocab, hf_tokenizer_size, is_hf_folder, load_hf_weights, read_hf_config
from codette.errors import CodetteError
from codette.model import ModelConfig

log = logging.getLogger(__name__)

# What must agree for weights to mean the same in another run: config key -> the ModelConfig attribute
# compared (the effective value: ``n_kv_heads`` None is ``n_heads``, ``d_ff`` None the style's width). The
# context (``max_seq_len``: RoPE has no learned positions), dropout and the init scale may differ.
ARCHITECTURE = {"vocab_size": "vocab_size", "d_model": "d_model", "n_layers": "n_layers", "n_heads": "n_heads",
                "n_kv_heads": "kv_heads", "d_ff": "ffn_dim", "block_style": "block_style", "rope_theta": "rope_theta",
                "norm_eps": "norm_eps", "tie_embeddings": "tie_embeddings", "qkv_bias": "qkv_bias"}


class CheckpointManager:
    """Writes and reads one run's checkpoints in ``folder``: single files, or ``.dcp`` folders when ``sharded``.

    ``main`` is the process that writes single files (every process takes part in a sharded write); ``keep``
    is how many periodic checkpoints :meth:`prune` leaves.
    """

    def __init__(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 sharded: bool = False, main: bool = True, keep: int = 0) -> None:
        self.folder, self.model, self.optimizer = Path(folder), model, optimizer
        self.sharded, self.main, self.keep = sharded, main, keep

    def weights(self) -> dict[str, Any]:
        """``model`` and ``optimizer`` state as this layout saves them: whole, or this process's shards."""
        if self.sharded:
            return dcp_files.sharded_weights(self.model, self.optimizer)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_weights(self, state: dict[str, Any]) -> None:
        """The inverse of :meth:`weights`, from a state :meth:`load` returned."""
        if self.sharded:
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
        state = load_checkpoint(path, map_location=next(self.model.parameters()).device)
        _check_same_model(model_config_of(state, path), model_cfg, path)
        if "optimizer" not in state:
            raise CodetteError(f"{path} holds weights only (no optimizer state); it cannot be resumed")
        return state


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


def init_weights(source: str | Path, model_cfg: ModelConfig, tokenizer_sha256: str | None) -> tuple[Path, dict]:
    """The weights ``--init-from`` names (a checkpoint file, a sharded ``.dcp`` folder, a run folder or a
    local Hugging Face model folder) and the file they came from; a one-line error when their architecture
    or vocabulary is not this run's.

    Only the weights are read: the new run gets its own optimizer, schedule, step and data position.
    """
    path = Path(source)
    if not path.exists():
        raise CodetteError(f"--init-from {path}: no such checkpoint file or run folder")
    if path.is_dir() and not dcp_files.is_sharded(path) and run_folder_model(path, gguf=False) is None:
        if not is_hf_folder(path):
            raise CodetteError(f"--init-from {path} holds no model: no {', '.join(RUN_CHECKPOINTS)} or "
                               f"model_step_N.pt, and no config.json of a Hugging Face model")
        return path, _hf_weights(path, model_cfg)
    if dcp_files.is_sharded(path):
        state, weights = dcp_files.read_weights(path)
    else:
        path = model_file(path, gguf=False)
        if path.suffix != ".pt":
            raise CodetteError(f"--init-from {path}: not a checkpoint (.pt), sharded checkpoint (.dcp) or run folder")
        state = load_checkpoint(path, mmap=True)
        weights = state["model"]
    saved = model_config_of(state, path)
    for key, attr in ARCHITECTURE.items():
        there, here = getattr(saved, attr), getattr(model_cfg, attr)
        if there != here:
            hint = " (embedding rows: another tokenizer; use the tokenizer.json of its run)" \
                if key == "vocab_size" else ""
            raise CodetteError(f"--init-from {path}: {key} {there} != {here} in this config{hint}")
    theirs = state.get("tokenizer_sha256") or ""
    if theirs and tokenizer_sha256 and theirs != tokenizer_sha256:
        raise CodetteError(f"--init-from {path}: it was trained with another tokenizer (tokenizer.json sha256 "
                           f"{theirs[:12]} != {tokenizer_sha256[:12]} here); use the tokenizer.json of its run")
    return path, weights


def _hf_weights(folder: Path, model_cfg: ModelConfig) -> dict:
    """The weights of Hugging Face folder ``folder`` for a run of ``model_cfg``: its shape must be the
    folder's (:func:`~codette.checkpoint.hf.read_hf_config`), except a larger embedding: the base model's
    tokenizer plus the special tokens Codette adds (:mod:`codette.tokenizer.hf`). Those tokens take the ids
    from the base tokenizer's size on, so every row from there (new rows, and padding rows the table already
    had, as Qwen2's) is set to the mean of the base tokenizer's rows (:func:`~codette.checkpoint.hf.grow_vocab`)."""
    theirs = read_hf_config(folder)
    for key, attr in ARCHITECTURE.items():
        there, here = getattr(theirs, attr), getattr(model_cfg, attr)
        if there != here and not (key == "vocab_size" and here > there):
            hint = " (embedding rows: the run's tokenizer has fewer tokens than the base model's)" \
                if key == "vocab_size" else " (the run's model shape must be the base model's: read_hf_config)"
            raise CodetteError(f"--init-from {folder}: {key} {there} != {here} in this config{hint}")
    weights = load_hf_weights(folder, theirs)
    base = hf_tokenizer_size(folder) or theirs.vocab_size  # rows past the base tokenizer: padding, never trained
    if model_cfg.vocab_size > theirs.vocab_size or base < theirs.vocab_size:
        weights, _ = grow_vocab(weights, theirs, model_cfg.vocab_size, new_rows=range(base, theirs.vocab_size),
                                mean_of=base)
        log.info("--init-from %s: embedding rows %d.. of %d set to the mean of the base tokenizer's %d rows", folder,
                 min(base, theirs.vocab_size), model_cfg.vocab_size, base)
    return weights
