"""Training memory per GPU, from the shape alone: what ``codette presets --fit GPU_GB`` plans with (and
the time: :func:`fit_rows` gives each row's FLOPs per token, :mod:`codette.model.flops`, and its tokens per
second at an achieved FLOP/s the caller assumes).

Plain Python (no torch), so planning a 5.3B run allocates nothing. ``N`` is the parameter count,
``g`` the number of GPUs, ``N_block`` one transformer block's parameters, ``N_root`` the rest
(embedding / tied output projection and the final norm), ``N_mm`` the matrix parameters
(:func:`codette.model.flops.matmul_parameters`). Bytes per GPU:

======================  ===========================  =========================  ============================
column                  one GPU                      DDP (``g`` GPUs)           FSDP2 (``g`` GPUs)
======================  ===========================  =========================  ============================
fp32 master weights     4 N                          4 N                        4 N / g
gradients (fp32)        4 N                          4 N + 4 N (DDP's buckets)  4 N / g
AdamW moments (fp32)    8 N                          8 N                        8 N / g
weight copies           2 N_mm (autocast's casts,    2 N_mm                     2 (N_root + 2 N_block)
                        kept for the backward)                                  + 4 N_block
======================  ===========================  =========================  ============================

FSDP2's bf16 copies are the gathered root unit (not freed between forward and backward), the block
being computed and the one prefetched, and one block's fp32 gradients before their reduce-scatter.
In fp32 (``dtype="fp32"``) there are no bf16 copies; what remains is the q/k/v weights, concatenated
for one matmul and kept for the backward: 4·L·d·(d + 2·d_kv).

Activations, for a micro-batch of ``b`` sequences of ``T`` tokens (``BT = b * T``), ``d`` the width,
``d_kv = n_kv_heads * head_dim``, ``f`` the MLP width, ``a`` the compute bytes (2 in bf16, 4 in fp32)
and ``r`` the residual stream's bytes (4 under autocast, whose residual stream stays fp32; 2 under
FSDP2's bf16 parameters; 4 in fp32). What autograd keeps per block per token:

- each norm: its input (r·d) and the next matmul's input (a·d); RMSNorm also keeps x·rsqrt (r·d);
- attention: the q/k/v product a·(d + 2·d_kv), the rotated q and k a·(d + d_kv) and the attention
  output a·d (the flash kernel keeps no T x T matrix, and its output's reshape is a view);
- MLP: 2·a·f for GELU (up-projection and GELU output), 4·a·f for SwiGLU (gate, its SiLU, up, product).

Plus one more norm (the final one) and the head: the logits (a·V), the fp32 log-probabilities the loss
keeps (4·V) and, at the start of the backward, their gradient and the fp32 logits' gradient (4·V each).
With activation checkpointing, each block keeps only its input (r·d per token) and one block's
activations exist at a time, recomputed during the backward (``train.activation_checkpointing``). A test checks the per-block estimate against
the tensors torch actually saves for the backward on the CPU (``saved_tensors_hooks``), and against
``torch.cuda.max_memory_allocated`` where a GPU is present.

LoRA (``lora_rank`` ``R``, ``train.lora_rank``): the base weights stay (fp32, ``4 N``) but get no gradients
and no moments; the adapters, ``N_lora = L · R · Σ (in + out)`` over the adapted projections of a block
(:func:`lora_parameters`), take ``4 + 4 + 8`` bytes each (weights, gradients, moments), and their bf16 casts
``2 N_lora`` join autocast's copies (in fp32 no q/k/v weights are concatenated once one of them is adapted).
Activations are the full run's: the frozen weights still pass gradients back to their inputs (measured on
small blocks, what autograd keeps differs by -7% to +18%). LoRA runs are never sharded (FSDP2 rows: none).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from codette.model.config import ModelConfig, count_parameters
from codette.model.flops import matmul_parameters, model_flops_per_token

MODES = ("single", "ddp", "fsdp")
GIB = 2**30
USABLE_FRACTION = 0.9  # of the GPU's memory: the CUDA context, the allocator's fragmentation, workspaces


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU for training ``cfg`` in one mode; activations for ``batch`` x ``seq_len``."""

    mode: str
    gpus: int
    batch: int
    seq_len: int
    weights: int
    grads: int
    adamw: int
    weight_copies: int  # bf16 casts or gathered units; in fp32 the concatenated q/k/v weights
    activations: int
    activations_checkpointed: int
    trainable: int  # parameters with gradients and AdamW moments (all of them, or a LoRA run's adapters)

    @property
    def state(self) -> int:
        """Everything but the activations."""
        return self.weights + self.grads + self.adamw + self.weight_copies

    def total(self, checkpointing: bool = False) -> int:
        return self.state + (self.activations_checkpointed if checkpointing else self.activations)


def block_parameters(cfg: ModelConfig) -> int:
    """One transformer block's parameters (two norms, attention, MLP)."""
    return (count_parameters(cfg) - cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
            - cfg.d_model) // cfg.n_layers


def block_activation_bytes(cfg: ModelConfig, tokens: int, a: int, r: int) -> int:
    """What autograd keeps for one block's backward over ``tokens`` tokens (see the module docstring)."""
    d, kv, f = cfg.d_model, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim
    llama = cfg.block_style == "llama"
    norm = r * d + a * d + (r * d if llama else 0)
    attention = a * (d + 2 * kv) + a * (d + kv) + a * d
    mlp = (4 if llama else 2) * a * f
    return tokens * (2 * norm + attention + mlp)


def head_activation_bytes(cfg: ModelConfig, tokens: int, a: int, r: int) -> int:
    """The final norm and the loss's peak at the start of the backward (logits, log-probs, two gradients)."""
    d, v = cfg.d_model, cfg.vocab_size
    norm = r * d + a * d + (r * d if cfg.block_style == "llama" else 0)
    return tokens * (norm + a * v + 3 * 4 * v)


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of one block (no ``gate_proj`` in codette blocks)."""
    d, q, kv, f = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "gate_proj": (d, f),
              "up_proj": (d, f), "down_proj": (f, d)}
    if cfg.block_style != "llama":
        del shapes["gate_proj"]
    return shapes


def lora_parameters(cfg: ModelConfig, rank: int, targets: list[str] | tuple[str, ...] | None = None) -> int:
    """The adapters' parameters: ``A`` (rank x in) and ``B`` (out x rank) per adapted projection and block;
    ``targets`` None: every projection the blocks have."""
    shapes = projection_shapes(cfg)
    targets = list(shapes) if targets is None else list(targets)
    absent = [t for t in targets if t not in shapes]
    if absent:
        raise ValueError(f"LoRA target {absent[0]!r} is not a projection of {cfg.block_style} blocks "
                         f"({', '.join(shapes)})")
    return cfg.n_layers * rank * sum(sum(shapes[t]) for t in targets)


def plan(cfg: ModelConfig, mode: str = "single", gpus: int = 1, batch: int = 1, seq_len: int | None = None,
         dtype: str = "bf16", lora_rank: int = 0,
         lora_targets: list[str] | tuple[str, ...] | None = None) -> MemoryPlan:
    """The :class:`MemoryPlan` of training ``cfg`` with micro-batches of ``batch`` x ``seq_len`` tokens
    (LoRA adapters of rank ``lora_rank`` on ``lora_targets`` when it is not 0)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype must be bf16 or fp32, got {dtype!r}")
    if gpus < 1 or (mode == "single" and gpus != 1):
        raise ValueError(f"gpus must be 1 for mode single and >= 1 otherwise, got {gpus}")
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
    if lora_rank and mode == "fsdp":
        raise ValueError("a LoRA run is not sharded (train.parallel=fsdp refuses it); plan it with ddp")
    seq_len = seq_len or cfg.max_seq_len
    n, n_block = count_parameters(cfg), block_parameters(cfg)
    n_root = n - cfg.n_layers * n_block
    n_lora = lora_parameters(cfg, lora_rank, lora_targets) if lora_rank else 0
    trained = n_lora if lora_rank else n
    shard = gpus if mode == "fsdp" else 1
    bf16 = dtype == "bf16"
    adapted = set(projection_shapes(cfg) if lora_targets is None else lora_targets) if lora_rank else set()
    if not bf16:  # the concatenated q/k/v weights, unless an adapter wraps one of them (then each is applied alone)
        fused = not adapted & {"q_proj", "k_proj", "v_proj"}
        copies = 4 * cfg.n_layers * cfg.d_model * (cfg.d_model + 2 * cfg.kv_heads * cfg.head_dim) if fused else 0
    elif mode == "fsdp":
        copies = 2 * (n_root + 2 * n_block) + 4 * n_block
    else:
        copies = 2 * matmul_parameters(cfg) + 2 * n_lora
    a = 2 if bf16 else 4
    r = 2 if bf16 and mode == "fsdp" else 4
    tokens = batch * seq_len
    blocks = cfg.n_layers * block_activation_bytes(cfg, tokens, a, r)
    head = head_activation_bytes(cfg, tokens, a, r)
    checkpointed = cfg.n_layers * r * cfg.d_model * tokens + block_activation_bytes(cfg, tokens, a, r)
    return MemoryPlan(mode=mode, gpus=gpus, batch=batch, seq_len=seq_len, weights=4 * (n + n_lora) // shard,
                      grads=4 * trained // shard + (4 * trained if mode == "ddp" else 0), adamw=8 * trained // shard,
                      weight_copies=copies, activations=blocks + head, activations_checkpointed=checkpointed + head,
                      trainable=trained)


@dataclass(frozen=True)
class Fit:
    """The largest micro-batch that fits at the longest sequence that fits (batch 0: nothing fits)."""

    plan: MemoryPlan  # at batch 1 x the longest sequence tried
    batch: int
    seq_len: int
    batch_checkpointed: int
    seq_len_checkpointed: int


def largest_fit(cfg: ModelConfig, budget_bytes: float, mode: str, gpus: int, dtype: str = "bf16",
                checkpointing: bool = False, max_batch: int = 1024, lora_rank: int = 0,
                lora_targets: list[str] | tuple[str, ...] | None = None) -> tuple[int, int]:
    """(batch, seq_len): the longest power-of-two fraction of the context that fits at batch 1, then the
    largest power-of-two batch at that length; (0, 0) when not even the training state fits."""
    def total(batch: int, seq: int) -> int:
        return plan(cfg, mode, gpus, batch, seq, dtype, lora_rank, lora_targets).total(checkpointing)

    seq = cfg.max_seq_len
    while seq >= 64 and total(1, seq) > budget_bytes:
        seq //= 2
    if seq < 64:
        return 0, 0
    batch = 1
    while batch * 2 <= max_batch and total(batch * 2, seq) <= budget_bytes:
        batch *= 2
    return batch, seq


def fit(cfg: ModelConfig, gpu_gb: float, mode: str, gpus: int, dtype: str = "bf16", lora_rank: int = 0,
        lora_targets: list[str] | tuple[str, ...] | None = None) -> Fit:
    """What fits on GPUs of ``gpu_gb`` GiB (of which :data:`USABLE_FRACTION` is planned with)."""
    budget = gpu_gb * GIB * USABLE_FRACTION
    lora = {"lora_rank": lora_rank, "lora_targets": lora_targets}
    b, t = largest_fit(cfg, budget, mode, gpus, dtype, **lora)
    bc, tc = largest_fit(cfg, budget, mode, gpus, dtype, checkpointing=True, **lora)
    return Fit(plan(cfg, mode, gpus, 1, cfg.max_seq_len, dtype, **lora), b, t, bc, tc)


def fit_rows(gpu_gb: float, gpus: int = 1, dtype: str = "bf16", block_style: str = "codette",
             model: ModelConfig | None = None, lora_rank: int = 0,
             lora_targets: list[str] | tuple[str, ...] | None = None, seq_len: int | None = None,
             achieved_flops: float | None = None) -> list[dict]:
    """One row per preset (or only ``model``, e.g. a Hugging Face config) and mode (one GPU, or DDP and
    FSDP2 on ``gpus``): bytes per GPU and what fits; with ``lora_rank``, a LoRA row after each full one
    (LoRA is never sharded: no FSDP2 row).

    ``batch`` 0 means not even batch 1 at 64 tokens fits. Activations are per sequence of the model's
    context (``act_per_seq``, ``act_per_seq_checkpointed``), cut to ``seq_len`` when given (a fine-tuning run's
    ``model.max_seq_len``: RoPE has no learned positions).

    Time: ``flops_per_token`` is the training FLOPs per token of windows of that length
    (:func:`codette.model.flops.model_flops_per_token`, a LoRA row's with its adapters). With
    ``achieved_flops`` (FLOP/s one device sustains: its peak times an assumed MFU), ``tokens_per_s`` is
    ``gpus * achieved_flops / flops_per_token`` (communication not counted) and ``hours_per_100m_tokens``
    the time 10^8 training tokens take at that rate; None without it.
    """
    from codette.model.presets import PRESETS, preset_config

    if not gpu_gb > 0:
        raise ValueError(f"--fit must be the GPU's memory in GB (> 0), got {gpu_gb}")
    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {gpus}")
    if lora_rank < 0:
        raise ValueError(f"--lora-rank must be >= 0, got {lora_rank}")
    if achieved_flops is not None and not achieved_flops > 0:
        raise ValueError(f"the achieved FLOP/s must be > 0, got {achieved_flops}")
    models = [(str(model.extra.get("preset") or "custom"), model)] if model is not None else \
        [(name, preset_config(name, block_style=block_style)) for name in PRESETS]
    if seq_len is not None:
        models = [(name, dataclasses.replace(cfg, max_seq_len=min(cfg.max_seq_len, seq_len))) for name, cfg in models]
    rows = []
    for name, cfg in models:
        for mode in (("single",) if gpus == 1 else ("ddp", "fsdp")):
            for rank in (0, lora_rank) if lora_rank else (0,):
                if rank and mode == "fsdp":
                    continue
                f = fit(cfg, gpu_gb, mode, gpus, dtype, rank, lora_targets if rank else None)
                p = f.plan
                per_token = model_flops_per_token(cfg, cfg.max_seq_len, p.trainable if rank else 0)
                rate = gpus * achieved_flops / per_token if achieved_flops else None
                rows.append({"preset": name, "mode": mode, "gpus": gpus, "dtype": dtype,
                             "params": count_parameters(cfg), "lora_rank": rank, "trainable": p.trainable,
                             "weights": p.weights, "grads": p.grads, "adamw": p.adamw,
                             "weight_copies": p.weight_copies, "act_per_seq": p.activations,
                             "act_per_seq_checkpointed": p.activations_checkpointed, "seq_len_max": cfg.max_seq_len,
                             "batch": f.batch, "seq_len": f.seq_len, "batch_checkpointed": f.batch_checkpointed,
                             "seq_len_checkpointed": f.seq_len_checkpointed, "flops_per_token": per_token,
                             "tokens_per_s": rate, "hours_per_100m_tokens": 1e8 / rate / 3600 if rate else None})
    return rows
