"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, never arbitrary pickle.

A training checkpoint is a dict of tensors and plain Python values:
``format``, ``model`` (state dict), ``model_config`` (dict), ``optimizer`` (state dict),
``scheduler`` (dict), ``step``, ``data_position``, ``rng`` (torch, Python and, where CUDA exists,
CUDA states: :func:`codette.rng.rng_state`), ``best_val_loss``, ``best_metric``, ``train_config`` and
``run_config`` (dicts), ``tokenizer_sha256``. Metrics go to the run's metrics JSONL, not here.
Export and evaluation read only ``model`` and ``model_config`` (with ``mmap=True``, so the
optimizer state is never paged in). A run sharded with FSDP2 writes its resumable checkpoints as
folders instead (:mod:`codette.checkpoint.sharded`), and its best and final weights as such files;
:class:`codette.checkpoint.manager.CheckpointManager` is where a run chooses between the two.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from codette.errors import CodetteError
from codette.fileio import atomic_open
from codette.model import CodetteModel, ModelConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # raise when what is saved changes meaning; older files then get a clear error
FORMAT = f"codette-checkpoint-v{FORMAT_VERSION}"
FORMAT_RE = re.compile(r"codette-checkpoint-v(\d+)")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format; anything else would need a pickle loader
NEVER_PICKLE = "Codette loads only tensors and plain values, never pickled Python objects"
STEP_RE = re.compile(r"model_step_(\d+)\.(pt|dcp)$")  # .dcp: a sharded checkpoint folder


def save_checkpoint(state: dict[str, Any], path: Path | str) -> Path:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    state = {"format": FORMAT, **state}
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint safely; every failure is a CodetteError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CodetteError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CodetteError(f"checkpoint {path} is empty (truncated write?)")
    _check_container(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:  # weights_only met a Python object; never suggest loading it
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CodetteError(f"{path} is not a Codette checkpoint: it holds a Python object{what}; "
                           f"{NEVER_PICKLE}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodetteError(f"checkpoint {path} is corrupt or truncated: {first}") from None
    except Exception as exc:
        raise CodetteError(f"checkpoint {path} cannot be loaded safely: {type(exc).__name__}") from None
    _check_format(state, path)
    for key in ("model", "model_config"):
        if key not in state:
            raise CodetteError(f"checkpoint {path} lacks '{key}'")
    return state


def _check_container(path: Path) -> None:
    """Refuse what is not torch's zip format before torch sees it (a legacy torch.save file or a raw
    pickle would otherwise meet the pickle loader, or with mmap a message about mmap)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != ZIP_MAGIC:
        kind = "a Python pickle (legacy torch.save format or pickle.dump)" if head[:1] == b"\x80" else \
            "not a torch checkpoint file"
        raise CodetteError(f"{path} is not a Codette checkpoint: it is {kind}; {NEVER_PICKLE}")
    if not zipfile.is_zipfile(path):
        raise CodetteError(f"checkpoint {path} is corrupt or truncated: its zip directory is missing")


def _check_format(state: Any, path: Path) -> None:
    """The format tag says which version of the layout this is; another version is refused by name."""
    tag = state.get("format") if isinstance(state, dict) else None
    if tag == FORMAT:
        return
    found = FORMAT_RE.fullmatch(tag) if isinstance(tag, str) else None
    if found:
        raise CodetteError(f"checkpoint {path} has format version {found.group(1)}; this version of Codette reads "
                           f"format version {FORMAT_VERSION} (the file was written by another version)")
    raise CodetteError(f"{path} is not a Codette checkpoint (missing format tag {FORMAT!r})")


def model_config_of(state: dict, path: Path | str = "checkpoint") -> ModelConfig:
    try:
        return ModelConfig(**state["model_config"])
    except (TypeError, ValueError) as exc:
        raise CodetteError(f"{path}: invalid model_config: {exc}") from None


def load_model(path: Path | str, device: str | torch.device = "cpu", mmap: bool = True) -> tuple[CodetteModel, dict]:
    """The model of a checkpoint (eval mode) and the checkpoint dict (optimizer untouched if mmapped)."""
    state = load_checkpoint(path, map_location="cpu", mmap=mmap)
    cfg = model_config_of(state, path)
    model = CodetteModel(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CodetteError(f"{path}: weights do not match its model_config: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), state


def step_checkpoints(folder: Path | str) -> list[tuple[int, Path]]:
    """Periodic checkpoints in ``folder`` (files and sharded folders), oldest first."""
    out = []
    for p in Path(folder).glob("model_step_*"):
        m = STEP_RE.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_valid_checkpoint(folder: Path | str) -> Path | None:
    """The resumable checkpoint with the highest step in ``folder``; broken ones are skipped with a warning."""
    from codette.checkpoint.sharded import is_sharded, load_state

    folder = Path(folder)
    candidates = [p for _, p in step_checkpoints(folder)]
    candidates += [p for p in (folder / "model_final.pt", folder / "model_final.dcp") if p.exists()]
    best: tuple[int, Path] | None = None
    for p in candidates:
        try:
            state = load_state(p) if is_sharded(p) else load_checkpoint(p, mmap=True)
        except CodetteError as exc:
            log.warning("skipping %s", exc)
            continue
        step = int(state.get("step", 0))
        resumable = "optimizer" in state or state.get("sharded")
        if resumable and (best is None or step > best[0]):
            best = (step, p)
    return best[1] if best else None


RUN_CHECKPOINTS = ("model_best.pt", "model_final.pt")  # what a run folder stands for, in this order


def run_folder_model(folder: Path | str, gguf: bool = True) -> Path | None:
    """The model file a run folder stands for: ``model_best.pt``, ``model_final.pt`` or the newest
    ``model_step_N.pt``; else, when ``gguf``, its one ``.gguf`` (several are an error). None if it holds none.

    Every verb that names a model (``eval``, ``export``, ``generate``, ``chat``, ``ask``, ``serve``) takes
    a run folder through this, so ``codette_model`` means the same model everywhere.
    """
    folder = Path(folder)
    for name in RUN_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    steps = [p for _, p in step_checkpoints(folder) if p.suffix == ".pt" and p.is_file()]
    if steps:
        return steps[-1]
    if not gguf:
        return None
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise CodetteError(f"{folder} holds {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)}); "
                           f"name one of them")
    return ggufs[0] if ggufs else None


def model_file(path: Path | str, gguf: bool = True) -> Path:
    """``path`` itself, or for a run folder the model file it stands for (:func:`run_folder_model`);
    a folder without one is a one-line error that lists what was looked for."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = run_folder_model(path, gguf)
    if found is None:
        names = [*RUN_CHECKPOINTS, "model_step_N.pt", *([".gguf"] if gguf else [])]
        raise CodetteError(f"{path} holds no model: no {', '.join(names[:-1])} or {names[-1]}")
    return found


def prune_step_checkpoints(folder: Path | str, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints."""
    if keep <= 0:
        return
    for _, p in step_checkpoints(folder)[:-keep]:
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass
