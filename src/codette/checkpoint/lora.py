"""A LoRA run's checkpoints on disk: its adapters in a small safetensors file, its base by path and fingerprint.

A LoRA run (``train.lora_rank``, :mod:`codette.train.lora`) trains rank-``r`` adapters on frozen base weights
(``train.init_from``: a Codette checkpoint or a Hugging Face folder). Its checkpoints never copy the base:

- ``model_step_N.pt`` (and ``model_best.pt``, ``model_final.pt``) hold everything else a resume needs (the
  adapters' AdamW moments, step, RNG, configs) and, under ``lora``, the :data:`META_KEYS`: ``rank``, ``alpha``,
  ``targets``, ``base`` (the base's absolute path), ``base_fingerprint`` (:func:`fingerprint`), ``adapters``
  (the file name below) and ``adapters_sha256``;
- ``model_step_N.lora.safetensors`` beside it holds the adapters, named as peft saves them
  (``blocks.0.attn.q_proj.lora_A.weight``: ``(r, in)``; ``...lora_B.weight``: ``(out, r)``), with the same
  metadata in its header, so the file describes itself.

The adapters are written first, then the ``.pt`` (each atomically); the ``.pt`` names the adapters by their
SHA-256, so a pair that does not belong together (a write interrupted between the two) is refused, never mixed.

:func:`merge` is peft's merge as state-dict arithmetic (``LoraLayer.get_delta_weight``: ``W + (alpha / r) B A``),
computed in fp32: what :func:`codette.checkpoint.load_checkpoint` returns as a LoRA checkpoint's ``model``,
so evaluation, chat and export read a LoRA run like any other and need no peft.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from codette.errors import CodetteError
from codette.fileio import atomic_open

FORMAT = "codette-lora-v1"
SUFFIX = ".lora.safetensors"
META_KEYS = ("rank", "alpha", "targets", "base", "base_fingerprint")
_A, _B = ".lora_A.weight", ".lora_B.weight"
# The fingerprint reads this many evenly spaced chunks of this size from each file (all of a small file).
_CHUNKS, _CHUNK = 16, 1 << 16


def adapters_path(checkpoint: Path | str) -> Path:
    """``model_step_N.pt`` -> ``model_step_N.lora.safetensors`` (beside it)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def _base_files(path: Path) -> list[Path]:
    """The files that make base ``path`` what it is: the file itself, a Hugging Face folder's config, weights
    and tokenizer (its README and the like may change), or every file of a sharded checkpoint folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CodetteError(f"the LoRA base {path} is gone: the adapters were trained on it; put it back there")
    from codette.checkpoint.hf import CONFIG_JSON, SAFETENSORS_INDEX, safetensors_files

    if (path / CONFIG_JSON).is_file():
        extra = [path / n for n in (CONFIG_JSON, SAFETENSORS_INDEX, "tokenizer.json") if (path / n).is_file()]
        return sorted(set(extra) | set(safetensors_files(path)))
    return sorted(p for p in path.rglob("*") if p.is_file())


def fingerprint(path: Path | str) -> str:
    """A cheap SHA-256 of base ``path``: for each of its files, its name, its size and 16 chunks of 64 KiB
    spread over it (the whole file when smaller). Any rewrite of a base (other weights of the same shapes
    differ everywhere, and a new save differs in size or header) changes it; it reads at most 1 MiB a file."""
    path = Path(path)
    h = hashlib.sha256()
    for file in _base_files(path):
        size = file.stat().st_size
        h.update(f"{file.relative_to(path) if file != path else file.name}\0{size}\0".encode())
        with open(file, "rb") as fh:
            if size <= _CHUNKS * _CHUNK:
                h.update(fh.read())
                continue
            for i in range(_CHUNKS):
                fh.seek(i * (size - _CHUNK) // (_CHUNKS - 1))
                h.update(fh.read(_CHUNK))
    return h.hexdigest()


def check_base(meta: dict[str, Any], checkpoint: Path | str) -> Path:
    """The base a LoRA checkpoint was trained on, refused by one line when it is gone or has changed."""
    base = Path(meta["base"])
    if not base.exists():
        raise CodetteError(f"{checkpoint}: its LoRA base {base} is gone (the adapters were trained on it; the "
                           f"checkpoint does not copy it); put it back there")
    found = fingerprint(base)
    if found != meta["base_fingerprint"]:
        raise CodetteError(f"{checkpoint}: its LoRA base {base} has changed since the adapters were trained on it "
                           f"(fingerprint {found[:12]} != {meta['base_fingerprint'][:12]}); the adapters "
                           f"only fit the weights they were trained on")
    return base


def save_adapters(checkpoint: Path, adapters: dict[str, torch.Tensor], meta: dict[str, Any],
                  step: int | None = None) -> dict[str, Any]:
    """Write ``adapters`` beside ``checkpoint`` (atomically) and return the ``lora`` entry of the checkpoint:
    ``meta`` plus the file's name and SHA-256."""
    from safetensors.torch import save

    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"LoRA metadata lacks {missing}")
    header = {"format": FORMAT, **{k: json.dumps(meta[k]) for k in META_KEYS}, "step": json.dumps(step)}
    blob = save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in adapters.items()}, metadata=header)
    path = adapters_path(checkpoint)
    with atomic_open(path, "wb") as fh:
        fh.write(blob)
    return {**{k: meta[k] for k in META_KEYS}, "adapters": path.name,
            "adapters_sha256": hashlib.sha256(blob).hexdigest()}


def load_adapters(checkpoint: Path | str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapters a LoRA checkpoint names, checked against its SHA-256 and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(checkpoint).with_name(str(meta.get("adapters", "")))
    if not meta.get("adapters") or not path.is_file():
        raise CodetteError(f"{checkpoint} is a LoRA checkpoint but its adapters file {path.name} is missing "
                           f"(copy it with the checkpoint)")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("adapters_sha256"):
        raise CodetteError(f"{path} is not the adapters file of {Path(checkpoint).name} (sha256 differs: another "
                           f"save replaced it, or the write was interrupted); use another checkpoint")
    try:
        adapters = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CodetteError(f"{path} is not a readable safetensors file: {exc}") from None
    rank = meta["rank"]
    for name, t in adapters.items():
        if not name.endswith((_A, _B)) or t.dim() != 2 or (t.shape[0] if name.endswith(_A) else t.shape[1]) != rank:
            raise CodetteError(f"{path}: tensor '{name}' (shape {list(t.shape)}) is not a rank-{rank} LoRA adapter")
    return adapters


def merge(base: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor], rank: int, alpha: float,
          where: Path | str = "adapters") -> dict[str, torch.Tensor]:
    """``base`` with every adapted weight replaced by ``W + (alpha / rank) B A`` in fp32, peft's merge
    (``LoraLayer.get_delta_weight``) as state-dict arithmetic. Other tensors are ``base``'s own."""
    scale = alpha / rank
    out = dict(base)
    modules = sorted({k[: -len(_A)] for k in adapters if k.endswith(_A)} | {k[: -len(_B)] for k in adapters
                                                                            if k.endswith(_B)})
    for module in modules:
        key = module + ".weight"
        a, b = adapters.get(module + _A), adapters.get(module + _B)
        if a is None or b is None:
            raise CodetteError(f"{where}: '{module}' has only one of lora_A and lora_B")
        w = base.get(key)
        if w is None or tuple(w.shape) != (b.shape[0], a.shape[1]):
            got = "no such weight" if w is None else f"shape {list(w.shape)}"
            raise CodetteError(f"{where}: adapter '{module}' ({b.shape[0]} x {a.shape[1]}) does not fit the base "
                               f"({key}: {got})")
        out[key] = w.to(torch.float32) + scale * (b.to(torch.float32) @ a.to(torch.float32))
    return out
