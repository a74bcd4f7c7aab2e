"""Device and precision choice: CUDA, then Apple MPS, then CPU; bf16 autocast where the hardware has bf16."""

from __future__ import annotations

import contextlib

import torch

from codette.errors import CodetteError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CodetteError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise CodetteError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix multiplies run in hardware: CUDA GPUs that support bf16, CPUs with AVX512-BF16
    or AMX. Elsewhere bf16 is emulated and slower than fp32, so ``auto`` keeps fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so probed defensively
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_dtype(device: torch.device, dtype: str = "auto") -> str:
    """``auto`` -> ``bf16`` where the hardware has it (weights and optimizer stay fp32), else ``fp32``."""
    if dtype == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if dtype in ("fp32", "bf16"):
        return dtype
    raise CodetteError(f"unknown dtype {dtype!r}; use auto, fp32 or bf16")


def autocast_for(device: torch.device, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """The autocast context for :func:`resolve_dtype`'s choice: bf16 autocast or plain fp32."""
    if resolve_dtype(device, dtype) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
