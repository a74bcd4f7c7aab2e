"""What every exporter reads: the weights of a checkpoint (memory-mapped), its config and its tokenizer.

The checkpoint is opened with ``torch.load(mmap=True, weights_only=True)``: only the pages of the
tensors an exporter touches are read, so the optimizer state (twice the size of the weights) never
enters memory. Shapes are checked against the config before anything is written, so a mismatched
checkpoint fails with the name of the offending tensor instead of producing a broken file.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codette.checkpoint import load_checkpoint, model_config_of
from codette.errors import CodetteError
from codette.model import ModelConfig
from codette.tokenizer import CodetteTokenizer

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ExportSource:
    """A checkpoint ready to be converted: weights stay memory-mapped until an exporter reads them."""

    path: Path
    cfg: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: CodetteTokenizer
    step: int | None
    mapped: list[tuple[int, int]] = field(default_factory=list)  # address ranges mapping the checkpoint file

    @property
    def preset(self) -> str:
        """Preset name for file names (``custom`` when the config carries none)."""
        name = str((self.cfg.extra or {}).get("preset") or "custom")
        return _SAFE_NAME.sub("_", name).strip("._") or "custom"

    def tensor(self, name: str) -> torch.Tensor:
        """One weight as float32 (a zero-copy view when the checkpoint already stores float32)."""
        t = self.weights[name]
        return t if t.dtype == torch.float32 else t.to(torch.float32)

    def release(self, name: str) -> None:
        """Drop the resident file pages of a tensor already converted, so peak memory stays near one tensor.

        The checkpoint is mapped privately and never written, so ``MADV_DONTNEED`` only discards clean
        page-cache copies (a later read would fault them back in from the file). Only whole pages inside
        a mapping of the checkpoint file itself are touched; anywhere else this does nothing.
        """
        if not self.mapped or _madvise is None:
            return
        storage = self.weights[name].untyped_storage()
        page = mmap.PAGESIZE
        start = -(-storage.data_ptr() // page) * page
        end = (storage.data_ptr() + storage.nbytes()) // page * page
        if end > start and any(lo <= start and end <= hi for lo, hi in self.mapped):
            _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


_MADV_DONTNEED = 4  # Linux
try:
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _madvise = None


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that map ``path`` (from /proc/self/maps; empty elsewhere)."""
    target = str(path.resolve())
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].rstrip("\n") == target:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:
        return []
    return ranges


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes the config implies (mirrors :class:`CodetteModel`; tied embeddings
    still list ``lm_head.weight``, as ``state_dict()`` does). Computed, not built: building even a
    meta-device model costs seconds of one-off torch imports."""
    d, ff, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (v, d)}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        shapes.update({
            p + "attn_norm.weight": (d,), p + "attn.q_proj.weight": (q, d), p + "attn.k_proj.weight": (kv, d),
            p + "attn.v_proj.weight": (kv, d), p + "attn.o_proj.weight": (d, q), p + "mlp_norm.weight": (d,),
            p + "mlp.up_proj.weight": (ff, d), p + "mlp.down_proj.weight": (d, ff),
        })
        if cfg.block_style == "llama":
            shapes[p + "mlp.gate_proj.weight"] = (ff, d)
        if cfg.qkv_bias:
            shapes.update({p + "attn.q_proj.bias": (q,), p + "attn.k_proj.bias": (kv,), p + "attn.v_proj.bias": (kv,)})
    shapes.update({"norm.weight": (d,), "lm_head.weight": (v, d)})
    return shapes


def check_weights(weights: dict[str, torch.Tensor], cfg: ModelConfig, path: Path) -> None:
    """Every tensor the config needs is present with the right shape, and nothing else is there."""
    want = expected_shapes(cfg)
    missing = [k for k in want if k not in weights]
    if missing:
        raise CodetteError(f"{path}: weights lack tensor '{missing[0]}' required by its model_config "
                           f"(block_style={cfg.block_style!r}); {len(missing)} missing in all")
    extra = [k for k in weights if k not in want]
    if extra:
        raise CodetteError(f"{path}: tensor '{extra[0]}' is not part of a {cfg.block_style!r}-style Codette model "
                           "(the exporters cannot express it)")
    for k, shape in want.items():
        got = tuple(weights[k].shape)
        if got != shape:
            raise CodetteError(f"{path}: tensor '{k}' has shape {list(got)}, model_config implies {list(shape)}")
        if not weights[k].is_floating_point():
            raise CodetteError(f"{path}: tensor '{k}' has dtype {weights[k].dtype}, expected a float type")


def open_checkpoint(path: Path | str) -> ExportSource:
    """Open ``path`` for export: memory-mapped weights, validated config, and the tokenizer beside it."""
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu", mmap=True)
    cfg = model_config_of(state, path)
    weights = state["model"]
    if not isinstance(weights, dict):
        raise CodetteError(f"{path}: 'model' is not a state dict")
    check_weights(weights, cfg, path)
    tokenizer = CodetteTokenizer.load(path.parent)
    if len(tokenizer) > cfg.vocab_size:
        raise CodetteError(f"{path.parent / 'tokenizer.json'} has {len(tokenizer)} tokens but the model has only "
                           f"{cfg.vocab_size} embedding rows (model_config.vocab_size); wrong tokenizer?")
    step = state.get("step")
    log.info("export source %s: %s-style, %d layers x %d, vocab %d (%d tokens), step %s", path, cfg.block_style,
             cfg.n_layers, cfg.d_model, cfg.vocab_size, len(tokenizer), step)
    return ExportSource(path=path, cfg=cfg, weights=weights, tokenizer=tokenizer,
                        step=int(step) if isinstance(step, int) else None, mapped=file_mappings(path))
