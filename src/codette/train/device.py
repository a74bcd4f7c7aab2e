"""Device and precision choice: CUDA, then Apple MPS, then CPU; bf16 autocast where the hardware has bf16.

``auto`` depends on the machine (a CPU with AVX512-BF16 or AMX trains in bf16, an AVX2-only CPU in
fp32), so the environment variable ``CODETTE_DTYPE`` (``fp32`` or ``bf16``) can make that choice
explicit: it decides what ``auto`` means, for a whole test suite or a benchmark, on any machine. A
config that names ``fp32`` or ``bf16`` is never overridden.
"""

from __future__ import annotations

import contextlib
import os

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


DTYPE_ENV = "CODETTE_DTYPE"


def forced_dtype() -> str | None:
    """``CODETTE_DTYPE`` when set (``fp32`` or ``bf16``): what ``auto`` resolves to on every machine."""
    value = os.environ.get(DTYPE_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("fp32", "bf16"):
        raise CodetteError(f"environment variable {DTYPE_ENV}={value!r}: expected fp32 or bf16 (or unset)")
    return value


def resolve_dtype(device: torch.device, dtype: str = "auto") -> str:
    """``auto`` -> ``$CODETTE_DTYPE`` if set, else ``bf16`` where the hardware has it (weights and
    optimizer stay fp32), else ``fp32``."""
    if dtype == "auto":
        return forced_dtype() or ("bf16" if native_bf16(device) else "fp32")
    if dtype in ("fp32", "bf16"):
        return dtype
    raise CodetteError(f"unknown dtype {dtype!r}; use auto, fp32 or bf16")


def autocast_for(device: torch.device, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """The autocast context for :func:`resolve_dtype`'s choice: bf16 autocast or plain fp32."""
    if resolve_dtype(device, dtype) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
