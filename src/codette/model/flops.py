"""Training FLOPs per token and model FLOPs utilisation (MFU), from the shape alone (plain Python; only
:func:`matmul_peak`, which measures a device, imports torch, when it is called).

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

A LoRA run (``train.lora_rank``, adapters with ``N_lora`` parameters on the frozen base)::

    lora_flops_per_token = 4 * N + 6 * N_lora + 12 * L * T * d_attn

- ``4 * N``: a frozen weight still takes part in the forward (2 FLOPs per weight per token) and passes
  the gradient back to its input (2 more), but no gradient of its own is computed (the last 2 of a
  full run's 6).
- ``6 * N_lora``: each adapter (``x A^T``, then ``B^T``) is trained like any weight.
- attention's ``12 * L * T * d_attn`` is unchanged: its matmuls have no weights.

Not subtracted: the matmuls before the first adapter pass no gradient back either, their input (from
the frozen embedding) needing none: with q/k/v adapted, the first block's q/k/v projections and their
adapters' ``A`` (2·d·(d + 2·d_kv) + 6·d·R FLOPs per token, ``R`` the rank; a test checks this count
against torch's), a small part of one block's work.
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


def lora_flops_per_token(n_matmul: int, n_lora: int, n_layers: int, d_attn: int, seq_len: int) -> float:
    """Training FLOPs per token of LoRA adapters with ``n_lora`` parameters on a frozen base of ``n_matmul``
    matrix weights: ``4 * n_matmul + 6 * n_lora + 12 * n_layers * seq_len * d_attn``."""
    return 4.0 * n_matmul + 6.0 * n_lora + 12.0 * n_layers * seq_len * d_attn


def model_flops_per_token(cfg: ModelConfig, seq_len: int | None = None, n_lora: int = 0) -> float:
    """:func:`flops_per_token` of model ``cfg`` trained on windows of ``seq_len`` (default: its context); with
    ``n_lora`` > 0, :func:`lora_flops_per_token` of adapters with that many parameters
    (:func:`codette.model.memory.lora_parameters`) on the frozen ``cfg``."""
    shape = (cfg.n_layers, cfg.n_heads * cfg.head_dim, seq_len or cfg.max_seq_len)
    if n_lora < 0:
        raise ValueError(f"n_lora must be >= 0, got {n_lora}")
    if n_lora:
        return lora_flops_per_token(matmul_parameters(cfg), n_lora, *shape)
    return flops_per_token(matmul_parameters(cfg), *shape)


def gpu_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of a GPU named like ``torch.cuda.get_device_name()``; None if unknown."""
    for key, peak in GPU_BF16_PEAK:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(tokens_per_second: float, cfg: ModelConfig, seq_len: int | None, peak_flops: float,
        devices: int = 1, n_lora: int = 0) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over ``devices`` x ``peak_flops`` (a LoRA run's
    FLOPs with ``n_lora`` adapter parameters, see :func:`model_flops_per_token`)."""
    return tokens_per_second * model_flops_per_token(cfg, seq_len, n_lora) / (peak_flops * devices)


def matmul_peak(device: object = "cpu", dtype: object = "fp32", n: int = 2048, reps: int = 5) -> float:
    """Measured matmul FLOP/s of ``device``: the fastest of ``reps`` ``n`` x ``n`` matmuls (2·n³ FLOPs
    each) after one warm-up, in ``dtype`` ("fp32", "bf16" or a ``torch.dtype``), with torch's threads as set.
    The CPU's "peak" of ``codette presets --fit --cpu``; it takes a second or two on a small CPU."""
    import time

    import torch

    names = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if isinstance(dtype, str) and dtype not in names:
        raise ValueError(f"dtype must be fp32 or bf16, got {dtype!r}")
    dt = names[dtype] if isinstance(dtype, str) else dtype
    dev = torch.device(device)  # type: ignore[call-overload]
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    best = float("inf")
    for i in range(reps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        torch.mm(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best
