"""How a Codette network maps onto an architecture llama.cpp already implements.

- ``llama`` blocks (RMSNorm + SwiGLU) are exactly GGUF ``llama``. llama.cpp's ``llama`` graph rotates
  *adjacent* pairs of each head (ggml "NORM" rope) while Codette rotates the two *halves* (NeoX /
  Hugging Face), so the rows of Q and K are reordered per head: row ``i`` of half 0 and row ``i`` of
  half 1 become rows ``2i`` and ``2i+1``. Dot products q.k are unchanged by a shared row order, so
  the attention scores are exactly those of the original model.
- ``codette`` blocks (bias-free LayerNorm + GELU(tanh) MLP + NeoX rope) are GGUF ``starcoder2``:
  pre-norm LayerNorm (``LLM_NORM``), sequential GELU MLP (``LLM_FFN_GELU``, ggml's tanh GELU),
  NeoX rope over the full head, 1/sqrt(head_dim) attention scale. Codette has no biases but the
  loader requires the norm, attention-output and MLP biases, so zeros are written for them. The
  q/k/v biases are optional in current llama.cpp (which still consumes them when present) but
  required by older builds, such as those bundled with some Ollama releases: zeros are written for
  them too, so one file loads in both.

- ``llama`` blocks with q/k/v biases (an imported Qwen2, ``qkv_bias``) are GGUF ``qwen2``: the same
  blocks plus ``attn_q/k/v.bias``. llama.cpp's ``qwen2`` graph rotates *halves* (ggml "NEOX" rope, as
  Hugging Face and Codette do), so Q, K and their biases are written as they are, not permuted
  (llama.cpp's own ``convert_hf_to_gguf.py`` likewise permutes Q/K for Llama but not for Qwen2).

With tied embeddings ``output.weight`` is omitted: the graphs fall back to ``token_embd.weight``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gguf
import torch

from codette.errors import CodetteError
from codette.export.source import ExportSource
from codette.model import ModelConfig

T = gguf.MODEL_TENSOR

# Which GGUF architectures can express each block style (first = default).
ARCHES: dict[str, tuple[str, ...]] = {"llama": ("llama",), "codette": ("starcoder2",)}
QKV_BIAS_ARCHES = ("qwen2",)  # llama blocks with q/k/v biases (model_config.qkv_bias)
_ARCH_ENUM = {"llama": gguf.MODEL_ARCH.LLAMA, "starcoder2": gguf.MODEL_ARCH.STARCODER2,
              "qwen2": gguf.MODEL_ARCH.QWEN2}
_DESCRIBE = {"llama": "RMSNorm + SwiGLU", "codette": "LayerNorm + GELU(tanh)"}
_RMS_NORM_ARCHES = ("llama", "qwen2")

# Matmul and embedding weights (quantizable) vs norms and biases (always F32).
WEIGHT, NORM, BIAS = "weight", "norm", "bias"


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of the output file: its GGUF name, numpy-order shape, kind and how to compute it."""

    name: str
    shape: tuple[int, ...]
    kind: str
    load: Callable[[], torch.Tensor]  # float32 tensor of ``shape``; called once, while writing
    source: str | None = None  # the checkpoint tensor it is computed from (None: generated zeros)


def resolve_arch(cfg: ModelConfig, arch: str | None) -> str:
    """The GGUF architecture for ``cfg``; a requested one that cannot express the blocks is an error."""
    allowed = QKV_BIAS_ARCHES if cfg.qkv_bias else ARCHES[cfg.block_style]
    if arch is None or arch == "auto":
        return allowed[0]
    if arch not in _ARCH_ENUM:
        raise CodetteError(f"unknown GGUF architecture {arch!r}; supported: {', '.join(_ARCH_ENUM)}")
    if arch not in allowed:
        what = " with q/k/v biases (model_config.qkv_bias)" if cfg.qkv_bias else ""
        raise CodetteError(
            f"model_config.block_style={cfg.block_style!r} ({_DESCRIBE[cfg.block_style]}){what} cannot be expressed "
            f"by GGUF architecture {arch!r}; use {' or '.join(allowed)}")
    return arch


def _name(kind: gguf.MODEL_TENSOR, suffix: str, bid: int | None = None) -> str:
    base = gguf.TENSOR_NAMES[kind]
    return (base.format(bid=bid) if bid is not None else base) + "." + suffix


def rope_halves_to_pairs(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder Q/K rows (of a matrix or a bias) from rotate-half layout to llama.cpp's interleaved pairs, per head."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, -1).transpose(1, 2).reshape(w.shape)


def plan_tensors(src: ExportSource, arch: str) -> list[TensorPlan]:
    """Every tensor the architecture consumes, in llama.cpp's usual order, and nothing else."""
    cfg = src.cfg
    d, ff, vocab = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    starcoder2, pairs = arch == "starcoder2", arch == "llama"  # only llama's graph rotates adjacent pairs
    plans: list[TensorPlan] = []

    def add(kind: gguf.MODEL_TENSOR, bid: int | None, shape: tuple[int, ...], what: str, key: str,
            rope_heads: int | None = None, suffix: str = "weight") -> None:
        if rope_heads is not None and pairs:
            load: Callable[[], torch.Tensor] = lambda: rope_halves_to_pairs(src.tensor(key), rope_heads)  # noqa: E731
        else:
            load = lambda: src.tensor(key)  # noqa: E731
        plans.append(TensorPlan(_name(kind, suffix, bid), shape, what, load, key))

    def zero_bias(kind: gguf.MODEL_TENSOR, bid: int | None, n: int) -> None:
        if starcoder2:  # starcoder2 requires these; Codette has none, so they are zeros
            plans.append(TensorPlan(_name(kind, "bias", bid), (n,), BIAS, lambda: torch.zeros(n)))

    def qkv_bias(kind: gguf.MODEL_TENSOR, bid: int, n: int, key: str, rope_heads: int | None) -> None:
        if cfg.qkv_bias:  # qwen2: the model's own biases (not rotated by it: no permutation, see above)
            add(kind, bid, (n,), BIAS, key, rope_heads=rope_heads, suffix="bias")
        else:
            zero_bias(kind, bid, n)

    add(T.TOKEN_EMBD, None, (vocab, d), WEIGHT, "embed.weight")
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        add(T.ATTN_NORM, i, (d,), NORM, p + "attn_norm.weight")
        zero_bias(T.ATTN_NORM, i, d)
        add(T.ATTN_Q, i, (q_rows, d), WEIGHT, p + "attn.q_proj.weight", rope_heads=cfg.n_heads)
        add(T.ATTN_K, i, (kv_rows, d), WEIGHT, p + "attn.k_proj.weight", rope_heads=cfg.kv_heads)
        add(T.ATTN_V, i, (kv_rows, d), WEIGHT, p + "attn.v_proj.weight")
        qkv_bias(T.ATTN_Q, i, q_rows, p + "attn.q_proj.bias", cfg.n_heads)
        qkv_bias(T.ATTN_K, i, kv_rows, p + "attn.k_proj.bias", cfg.kv_heads)
        qkv_bias(T.ATTN_V, i, kv_rows, p + "attn.v_proj.bias", None)
        add(T.ATTN_OUT, i, (d, q_rows), WEIGHT, p + "attn.o_proj.weight")
        zero_bias(T.ATTN_OUT, i, d)
        add(T.FFN_NORM, i, (d,), NORM, p + "mlp_norm.weight")
        zero_bias(T.FFN_NORM, i, d)
        if not starcoder2:
            add(T.FFN_GATE, i, (ff, d), WEIGHT, p + "mlp.gate_proj.weight")
        add(T.FFN_UP, i, (ff, d), WEIGHT, p + "mlp.up_proj.weight")
        zero_bias(T.FFN_UP, i, ff)
        add(T.FFN_DOWN, i, (d, ff), WEIGHT, p + "mlp.down_proj.weight")
        zero_bias(T.FFN_DOWN, i, d)
    add(T.OUTPUT_NORM, None, (d,), NORM, "norm.weight")
    zero_bias(T.OUTPUT_NORM, None, d)
    if not cfg.tie_embeddings:
        add(T.OUTPUT, None, (vocab, d), WEIGHT, "lm_head.weight")
    _check_known(plans, arch)
    return plans


def _check_known(plans: list[TensorPlan], arch: str) -> None:
    """Guard against typos: every name must belong to a tensor kind gguf-py lists for ``arch``."""
    known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[_ARCH_ENUM[arch]]}
    for p in plans:
        base = p.name.rsplit(".", 1)[0]
        generic = base if not base.startswith("blk.") else "blk.{bid}." + base.split(".", 2)[2]
        if generic not in known:  # pragma: no cover - a programming error, not a user error
            raise AssertionError(f"{p.name} is not a {arch} tensor")


def add_arch_metadata(writer: gguf.GGUFWriter, arch: str, cfg: ModelConfig) -> None:
    """Hyperparameters llama.cpp reads for ``arch`` (norm epsilon key differs: LayerNorm vs RMSNorm)."""
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.ffn_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_theta))
    writer.add_rope_dimension_count(cfg.head_dim)
    if arch in _RMS_NORM_ARCHES:
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
    else:
        writer.add_layer_norm_eps(float(cfg.norm_eps))
