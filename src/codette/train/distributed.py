"""Data-parallel training under ``torchrun``: the process group, the device, and PyTorch's own wrappers.

``torchrun --nproc_per_node=N -m codette train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
:func:`init_from_env` turns them into a process group (NCCL on CUDA, Gloo on the CPU) and one device
per process. The model is then wrapped by PyTorch, never by a layer of ours:

- ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel`, a full copy of the model per process.
- ``fsdp``: FSDP2, ``torch.distributed.fsdp.fully_shard`` on every transformer block and then on the
  whole model, so weights, gradients and AdamW moments are split over the processes. On CUDA with
  bf16 its :class:`MixedPrecisionPolicy` computes in bf16 and reduces gradients in fp32.
- ``auto``: FSDP2 from :data:`FSDP_AUTO_PARAMS` parameters on, DDP below.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here is used and training runs as one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import ContextManager

import torch
import torch.distributed as dist

from codette.errors import CodetteError

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp", "fsdp")
FSDP_AUTO_PARAMS = 500_000_000  # a 1.3B model's fp32 weights + AdamW state (21 GB) no longer fit one GPU well
TIMEOUT = timedelta(minutes=30)  # a rank that stops answering (killed, hung) ends the others after this


@dataclass(frozen=True)
class World:
    """Where this process stands: ``size`` processes in all, this one is ``rank`` (``local_rank`` on its node)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that logs, shows progress, runs probes and writes single-file checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise CodetteError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def world_from_env() -> World:
    """The layout torchrun announced in the environment (one process when it did not)."""
    size = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise CodetteError(f"environment: RANK={rank} does not fit WORLD_SIZE={size}")
    return World(size, rank, local)


def init_from_env(device_name: str = "auto") -> tuple[World, torch.device | None]:
    """Join the process group torchrun set up; returns the world and this rank's device.

    The device is None for a single process (the caller picks it as before). Distributed, ``auto``
    and ``cuda`` use GPU ``LOCAL_RANK`` with NCCL; ``cpu`` (or no CUDA) uses the CPU with Gloo.
    """
    world = world_from_env()
    if not world.distributed:
        return world, None
    if device_name == "mps":
        raise CodetteError("train.device 'mps' cannot be used with torchrun (no distributed backend for MPS); "
                           "use cuda or cpu")
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise CodetteError("device 'cuda' requested but CUDA is not available")
    if use_cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise CodetteError(f"LOCAL_RANK={world.local_rank} but this node has {torch.cuda.device_count()} "
                               f"GPU(s); start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        kwargs = {"device_id": device} if use_cuda else {}
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT, **kwargs)
    log.info("rank %d of %d (local rank %d) on %s, backend %s", world.rank, world.size, world.local_rank, device,
             dist.get_backend())
    return world, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def choose_strategy(requested: str, n_params: int, world: World) -> str:
    """``none`` for one process, else ``ddp`` or ``fsdp`` (``auto``: by :data:`FSDP_AUTO_PARAMS`)."""
    if requested not in STRATEGIES:
        raise CodetteError(f"unknown train.parallel {requested!r}; use {' | '.join(STRATEGIES)}")
    if not world.distributed:
        return "none"
    if requested == "auto":
        return "fsdp" if n_params >= FSDP_AUTO_PARAMS else "ddp"
    return requested


def fsdp_shard(model: torch.nn.Module, device: torch.device, precision: str) -> None:
    """FSDP2 in place: each transformer block is one unit (gathered for its forward, freed after), the
    rest (embedding, tied output projection, final norm) the root unit. bf16 compute with fp32 gradient
    reduction on CUDA; elsewhere autocast stays in charge, as on one process."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if device.type == "cuda" and precision == "bf16":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)


def uses_fsdp_autocast(device: torch.device, precision: str) -> bool:
    """Whether FSDP's mixed-precision policy replaces autocast (CUDA + bf16)."""
    return device.type == "cuda" and precision == "bf16"


def ddp_wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # The only buffers are the RoPE tables, the same on every rank: nothing to broadcast each step
    # (newer torch names the option forward_sync_buffers and deprecates broadcast_buffers).
    name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{name: False})


def no_sync_for(strategy: str, wrapped: torch.nn.Module) -> Callable[[], ContextManager] | None:
    """A context that keeps gradients local during the micro-batches before a step's last one, so each
    step reduces them once: DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``."""
    if strategy == "ddp":
        return wrapped.no_sync

    if strategy == "fsdp":
        @contextlib.contextmanager
        def fsdp_no_sync() -> Iterator[None]:
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)
        return fsdp_no_sync
    return None


def sum_over_ranks(t: torch.Tensor, world: World) -> torch.Tensor:
    """``t`` summed over every process (itself when alone); a NaN on any rank reaches all of them."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` is set on any process (a Ctrl-C seen by one stops all at the same step)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return bool(t.item() > 0)


def share_rng_state(world: World) -> None:
    """Give every process rank 0's random state (torch and Python), so they draw alike from here on."""
    if not world.distributed:
        return
    from codette.rng import rng_state, set_rng_state

    state = [rng_state() if world.main else None]
    dist.broadcast_object_list(state, src=0)
    set_rng_state(state[0])


def local_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor for a DTensor (FSDP2's gradient norm is one, replicated on every rank)."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
