"""Device and precision choice: CUDA, then Apple MPS, then CPU; bf16 autocast on CUDA."""

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


def autocast_for(device: torch.device, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (weights and optimizer stay fp32); plain fp32 elsewhere unless asked."""
    if dtype == "fp32" or (dtype == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if dtype in ("auto", "bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise CodetteError(f"unknown dtype {dtype!r}; use auto, fp32 or bf16")
