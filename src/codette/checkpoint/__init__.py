"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, never arbitrary pickle.

A training checkpoint is a dict of tensors and plain Python values:
``format``, ``model`` (state dict), ``model_config`` (dict), ``optimizer`` (state dict),
``scheduler`` (dict), ``step``, ``data_position``, ``rng`` (torch, Python and, where CUDA exists,
CUDA states: :func:`codette.rng.rng_state`), ``best_val_loss``, ``best_metric``, ``train_config`` and
``run_config`` (dicts), ``tokenizer_sha256``. Metrics go to the run's metrics JSONL, not here.
A LoRA run's checkpoint holds no ``model`` on disk but a ``lora`` entry naming its adapters file and its base
(:mod:`codette.checkpoint.lora`); :func:`load_checkpoint` returns its ``model`` merged (or, for a resume, the
adapters), so every reader takes it like any other.
Export and evaluation read only ``model`` and ``model_config`` (with ``mmap=True``, so the
optimizer state is never paged in). A run sharded with FSDP2 writes its resumable checkpoints as
folders instead (:mod:`codette.checkpoint.sharded`), and its best and final weights as such files;
:class:`codette.checkpoint.manager.CheckpointManager` is where a run chooses between the two.
"""

from __future__ import annotations

import contextlib
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
LORA = "lora"  # a LoRA run's entry: its adapters file and base (codette.checkpoint.lora)


def save_checkpoint(state: dict[str, Any], path: Path | str) -> Path:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename.

    A LoRA run's state (a ``lora`` entry, :mod:`codette.checkpoint.lora`) has its adapters as ``model``: they
    are written beside it first (``<stem>.lora.safetensors``) and the file keeps only their name and SHA-256.
    """
    path = Path(path)
    state = {"format": FORMAT, **state}
    if LORA in state:
        from codette.checkpoint import lora

        adapters = state.pop("model")
        state[LORA] = lora.save_adapters(path, adapters, state[LORA], state.get("step"))
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu", mmap: bool = False,
                    merge_lora: bool = True) -> dict:
    """Load a checkpoint safely; every failure is a CodetteError naming the file.

    A LoRA checkpoint's ``model`` is its base merged with its adapters (the base is read from where the run
    found it, and refused if it changed); with ``merge_lora=False`` it is the adapters alone (a resume, or
    a look at the step and optimizer that needs no base).
    """
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
    if isinstance(state.get(LORA), dict) and "model_config" in state:
        state["model"] = _lora_model(state, path, merge_lora)
        if not merge_lora and map_location is not None:
            state["model"] = {k: v.to(map_location) for k, v in state["model"].items()}
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


def _lora_model(state: dict, path: Path, merged: bool) -> dict[str, torch.Tensor]:
    """A LoRA checkpoint's adapters, or its base merged with them (:mod:`codette.checkpoint.lora`)."""
    from codette.checkpoint import lora

    meta = state[LORA]
    missing = [k for k in (*lora.META_KEYS, "adapters", "adapters_sha256") if k not in meta]
    if missing:
        raise CodetteError(f"checkpoint {path}: its 'lora' entry lacks '{missing[0]}'")
    adapters = lora.load_adapters(path, meta)
    if not merged:
        return adapters
    base = lora.check_base(meta, path)
    _, weights = init_weights(base, model_config_of(state, path), None)
    return lora.merge(weights, adapters, meta["rank"], meta["alpha"], lora.adapters_path(path))


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
            state = load_state(p) if is_sharded(p) else load_checkpoint(p, mmap=True, merge_lora=False)
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
    """Delete all but the newest ``keep`` periodic checkpoints (a LoRA checkpoint's adapters file too)."""
    from codette.checkpoint.lora import adapters_path

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
        if p.suffix == ".pt":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(adapters_path(p))


# What must agree for weights to mean the same in another run: config key -> the ModelConfig attribute
# compared (the effective value: ``n_kv_heads`` None is ``n_heads``, ``d_ff`` None the style's width). The
# context (``max_seq_len``: RoPE has no learned positions), dropout and the init scale may differ.
ARCHITECTURE = {"vocab_size": "vocab_size", "d_model": "d_model", "n_layers": "n_layers", "n_heads": "n_heads",
                "n_kv_heads": "kv_heads", "d_ff": "ffn_dim", "block_style": "block_style", "rope_theta": "rope_theta",
                "norm_eps": "norm_eps", "tie_embeddings": "tie_embeddings", "qkv_bias": "qkv_bias"}


def init_weights(source: str | Path, model_cfg: ModelConfig, tokenizer_sha256: str | None) -> tuple[Path, dict]:
    """The weights ``--init-from`` names (a checkpoint file, a sharded ``.dcp`` folder, a run folder or a
    local Hugging Face model folder) and the file they came from; a one-line error when their architecture
    or vocabulary is not this run's. A LoRA checkpoint gives its merged weights.

    Only the weights are read: the new run gets its own optimizer, schedule, step and data position.
    (Here, not in :mod:`codette.checkpoint.manager`, because a LoRA checkpoint's base is read with it.)
    """
    from codette.checkpoint import sharded as dcp_files
    from codette.checkpoint.hf import is_hf_folder

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
    from codette.checkpoint.hf import grow_vocab, hf_tokenizer_size, load_hf_weights, read_hf_config

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
