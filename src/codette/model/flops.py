"""Training FLOPs per token and model FLOPs utilisation (MFU), from the shape alone (plain Python, no torch).

One formula for the whole project (the throughput benchmark, the training metrics), the one of the
PaLM paper (appendix B) and nanoGPT's ``estimate_mfu``::

    flops_per_token = 6 * N + 12 * L * T * d_attn

- ``N``: the parameters that take part in a matrix multiply for every token: all of them but the
  input embedding table (a lookup, not a matmul) and the norm scales. A tied embedding counts
  once, as the output projection it also is. Forward is 2 FLOPs per such weight per token, backward
  twice that, hence 6.
- ``12 * L * T * d_attn``: attention's two matmuls (Q·Kᵀ and weights·V), 2·T·d_attn FLOPs each per
  token and layer forward, times 3 for forward plus backward. ``T`` is the training window length,
  ``d_attn = n_heads * head_dim``. Counted in full as in PaLM, although a causal kernel can skip
  half of it, so an MFU figure here is comparable with the published ones.

Element-wise work (norms, rotary, GELU, softmax, AdamW) is not counted: MFU measures useful matmul
work against the hardware's matmul peak.
"""

from __future__ import annotations

from codette.model.config import ModelConfig, count_parameters

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' spec sheets, in FLOP/s. Matched in order
# against ``torch.cuda.get_device_name()``, so the more specific names come first.
GPU_BF16_PEAK: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("MI300X", 1307e12),
)


def matmul_parameters(cfg: ModelConfig) -> int:
    """``N`` of the formula: every weight multiplied per token (the input embedding only when tied)."""
    d = cfg.d_model
    norms = (2 * cfg.n_layers + 1) * d
    embed_lookup = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return count_parameters(cfg) - norms - embed_lookup


def flops_per_token(n_matmul: int, n_layers: int, d_attn: int, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token: ``6 * n_matmul + 12 * n_layers * seq_len * d_attn``."""
    return 6.0 * n_matmul + 12.0 * n_layers * seq_len * d_attn


def model_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """:func:`flops_per_token` of model ``cfg`` trained on windows of ``seq_len`` (default: its context)."""
    return flops_per_token(matmul_parameters(cfg), cfg.n_layers, cfg.n_heads * cfg.head_dim,
                           seq_len or cfg.max_seq_len)


def gpu_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of a GPU named like ``torch.cuda.get_device_name()``; None if unknown."""
    for key, peak in GPU_BF16_PEAK:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(tokens_per_second: float, cfg: ModelConfig, seq_len: int | None, peak_flops: float,
        devices: int = 1) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over ``devices`` x ``peak_flops``."""
    return tokens_per_second * model_flops_per_token(cfg, seq_len) / (peak_flops * devices)
