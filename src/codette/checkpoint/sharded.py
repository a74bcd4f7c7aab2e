"""Sharded checkpoints of an FSDP2 run (``torch.distributed.checkpoint``) and their consolidation.

A sharded checkpoint is a folder ``model_step_<N>.dcp`` (or ``model_final.dcp``): DCP's ``.metadata``
and one shard file per process holding ``model`` and ``optimizer``, plus :data:`STATE_FILE`, a
single-file checkpoint (see :mod:`codette.checkpoint`) with everything else a resumed step depends on
(step, data position, RNG states, configs) and ``sharded: True`` instead of weights. No process ever
holds the whole model to write it, and a run may resume on another number of processes.

The folder is written under a temporary name and renamed when every process has finished, so a kill
mid-write leaves the previous checkpoints as they were. :func:`consolidate` turns one into the plain
single-file checkpoint that evaluation and export read, without a process group.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from codette.errors import CodetteError
from codette.fileio import TMP_SUFFIX, temp_prefix

log = logging.getLogger(__name__)

SUFFIX = ".dcp"
STATE_FILE = "train_state.pt"
METADATA = ".metadata"  # written by DCP last, once every shard is complete


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_sharded(path: Path | str) -> bool:
    return Path(path).suffix == SUFFIX and Path(path).is_dir()


def sharded_weights(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``model`` and ``optimizer`` of an FSDP2 run as this process's shards, keyed by parameter name (not
    by position, as ``optimizer.state_dict()`` is), so a checkpoint loads on another number of processes."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd}


def set_sharded_weights(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Put what :func:`sharded_weights` returned (and :func:`load_sharded` filled) back into the run."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def save_sharded(state: dict[str, Any], path: Path, main: bool) -> Path:
    """Write a sharded checkpoint (collective: every process calls this): ``state["model"]`` and
    ``state["optimizer"]`` (:func:`sharded_weights`) as DCP shards, the rest as the state file.
    ``main`` is the process that writes the state file and renames."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    from codette.checkpoint import save_checkpoint

    names = [temp_prefix(path) + "shards" + TMP_SUFFIX]  # rank 0's pid, so a dead run's folder is recognised
    dist.broadcast_object_list(names, src=0)
    tmp = path.parent / names[0]
    dcp.save({"model": state["model"], "optimizer": state["optimizer"]}, checkpoint_id=str(tmp))
    if main:
        rest = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
        save_checkpoint({**rest, "sharded": True, "model": {}}, tmp / STATE_FILE)
        old = path.parent / (temp_prefix(path) + "old" + TMP_SUFFIX)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()  # nobody reads or prunes the folder before it is in place
    return path


def load_state(path: Path | str) -> dict:
    """The train state of a sharded checkpoint (no weights); a CodetteError names the folder if broken."""
    from codette.checkpoint import load_checkpoint

    path = Path(path)
    if not (path / METADATA).is_file():
        raise CodetteError(f"sharded checkpoint {path} is incomplete (no {METADATA}; was its write killed?)")
    state = load_checkpoint(path / STATE_FILE)
    if not state.get("sharded"):
        raise CodetteError(f"{path / STATE_FILE} is not the state of a sharded checkpoint")
    return state


def load_sharded(path: Path | str, shards: dict[str, Any]) -> dict:
    """Read sharded checkpoint ``path`` into ``shards`` (:func:`sharded_weights` of the run, filled in
    place; collective); returns the whole state, weights included."""
    import torch.distributed.checkpoint as dcp

    state = load_state(path)
    try:
        dcp.load({"model": shards["model"], "optimizer": shards["optimizer"]}, checkpoint_id=str(path))
    except Exception as exc:  # DCP reports a missing or misshapen shard as a CheckpointException
        raise CodetteError(f"cannot load sharded checkpoint {path}: {_first_line(exc)}") from None
    return {**state, "model": shards["model"], "optimizer": shards["optimizer"]}


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights gathered on rank 0's CPU (collective; other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def read_weights(path: Path | str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The train state and the whole model's weights of sharded checkpoint ``path``, read by one process
    without a process group or GPU (no optimizer state)."""
    import torch.distributed.checkpoint as dcp

    from codette.checkpoint import model_config_of
    from codette.model import CodetteModel

    path = Path(path)
    state = load_state(path)
    cfg = model_config_of(state, path / STATE_FILE)
    with torch.device("meta"):
        shapes = CodetteModel(cfg).state_dict()
    weights = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({"model": weights}, checkpoint_id=str(path), no_dist=True)
    except Exception as exc:
        raise CodetteError(f"cannot read the weights of sharded checkpoint {path}: {_first_line(exc)}") from None
    if cfg.tie_embeddings and "lm_head.weight" in weights:
        weights["lm_head.weight"] = weights["embed.weight"]  # one tensor, as the model holds it
    return state, weights


def consolidate(path: Path | str, out: Path | str) -> Path:
    """Write the single-file checkpoint of sharded checkpoint ``path`` to ``out`` (weights, configs and
    step; no optimizer state): what ``codette eval`` and ``codette export`` read. One process, no GPU."""
    from codette.checkpoint import save_checkpoint

    state, weights = read_weights(path)
    keep = {k: v for k, v in state.items() if k not in ("format", "sharded", "model", "optimizer")}
    return save_checkpoint({**keep, "model": weights}, out)
