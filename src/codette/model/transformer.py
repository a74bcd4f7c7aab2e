"""The Codette transformer: a decoder-only language model in one readable file.

Two block styles share everything but the norm and the MLP:

- ``codette`` (the original design): pre-norm LayerNorm and a 4x GELU(tanh) MLP.
- ``llama``: pre-norm RMSNorm and a SwiGLU MLP.

Both use rotary position embeddings in the "rotate half" (GPT-NeoX / Hugging Face) convention,
causal attention through ``F.scaled_dot_product_attention``, optional grouped-query attention,
tied input/output embeddings and no biases (``qkv_bias`` adds q/k/v biases, for imported Qwen2
checkpoints: :mod:`codette.checkpoint.hf`). The shape is a :class:`~codette.model.config.ModelConfig`.
This module imports only torch.

A large model can be built without allocating memory: ``with torch.device("meta"): m = CodetteModel(cfg)``,
then ``m.to_empty(device=...)`` and ``m.init_weights()``, which gives the weights the constructor
would have given under the same seed.
"""

from __future__ import annotations

import math
from typing import overload

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from codette.model.config import ModelConfig
from codette.model.loss import IGNORE_INDEX, LMOutput, cross_entropy_sum

SCORED_ROWS = 512  # scored_only pads its rows to a multiple of this: a few shapes, not one per step


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no bias), as in LLaMA."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.block_style == "llama":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=False)


class Rotary(nn.Module):
    """Rotary position embedding, rotate-half convention; cos/sin tables are cached buffers."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)compute the tables in fp64 on the CPU, then store them (fp32) wherever the buffers live.

        Not persistent, so never in a checkpoint: after ``to_empty`` they must be rebuilt.
        """
        if self.cos.is_meta:
            return
        cpu = torch.device("cpu")
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=cpu)
                                         / self.head_dim))
        freqs = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64, device=cpu), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        with torch.no_grad():
            self.cos.copy_(emb.cos().float())
            self.sin.copy_(emb.sin().float())

    def forward(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Rotate ``x`` of shape (B, T, H, D) for absolute positions offset .. offset+T-1.

        rotate_half(x) * sin is written as [x2, x1] * [-sin1, sin2]: the same products (negation is
        exact), one pass over ``x`` fewer. Queries and keys come in one tensor (one call per layer).
        """
        t, half = x.shape[1], self.head_dim // 2
        cos = self.cos[offset : offset + t, None].to(x.dtype)
        sin = self.sin[offset : offset + t, None].to(x.dtype)
        signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([x2, x1], dim=-1) * signed_sin


class KVCache:
    """Per-layer key/value buffers for incremental decoding; ``length`` is the filled prefix."""

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, cfg.kv_heads, cfg.max_seq_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        bias = cfg.qkv_bias  # Qwen2 checkpoints; never the output projection
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, rotary: Rotary, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        b, t, _ = x.shape
        cfg = self.cfg
        h, kv = cfg.n_heads, cfg.kv_heads
        modules = (self.q_proj, self.k_proj, self.v_proj)
        # One matmul for q, k and v (the weights are concatenated: small next to the activations), unless
        # decoding one token (concatenating would cost as much as the product itself) or a projection is
        # wrapped (peft's LoRA layers add their adapters in their own forward: their weight alone is the base's).
        if t > 1 and all(type(m) is nn.Linear for m in modules):
            biases = [m.bias for m in modules] if cfg.qkv_bias else None
            qkv = F.linear(x, torch.cat([m.weight for m in modules]), torch.cat(biases) if biases else None)
        else:
            qkv = torch.cat([m(x) for m in modules], dim=-1)
        # split, not slicing: its backward is one concatenation, where each slice's would fill a zero
        # tensor the size of the whole product and add the three up.
        qk, v = qkv.view(b, t, h + 2 * kv, cfg.head_dim).split([h + kv, kv], dim=2)
        offset = cache.length if cache is not None else 0
        q, k = (z.transpose(1, 2) for z in rotary(qk, offset).split([h, kv], dim=2))
        v = v.transpose(1, 2)
        if cache is not None:
            cache.k[layer][:, :, offset : offset + t] = k
            cache.v[layer][:, :, offset : offset + t] = v
            k = cache.k[layer][:, :, : offset + t]
            v = cache.v[layer][:, :, : offset + t]
        dropout = cfg.dropout if self.training else 0.0
        # GQA without copying the keys: SDPA maps query head h to key head h // (n_heads / kv_heads).
        gqa = cfg.kv_heads != cfg.n_heads
        if offset == 0 or t == 1:
            # A fresh sequence is plain causal; one new token may see the whole cache: no mask at all.
            # (No explicit mask here, so the flash kernel stays usable on CUDA.)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=offset == 0 and t > 1, dropout_p=dropout,
                                               enable_gqa=gqa)
        else:
            # A chunk after a cached prefix: query i (absolute position offset+i) may see keys 0..offset+i.
            # is_causal would align the mask to the top-left corner, which is wrong here.
            mask = torch.ones(t, offset + t, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(b, t, cfg.n_heads * cfg.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    """GELU(tanh) 2-layer MLP for ``codette``; SwiGLU (gate * up, then down) for ``llama``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.swiglu = cfg.block_style == "llama"
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        if self.swiglu:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rotary: Rotary, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), rotary, cache, layer))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class CodetteModel(nn.Module):
    """Token embedding -> N blocks -> final norm -> tied output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.rotary = Rotary(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # Training option, not part of the architecture: recompute each block's activations in the
        # backward pass instead of keeping them (less memory, about a third more compute).
        self.activation_checkpointing = False
        self._training_blocks: list[nn.Module] | None = None  # compile_blocks(); a plain list: no state_dict keys
        self._codette_init()

    def compile_blocks(self) -> None:
        """torch.compile each block for the training forward (and its backward) only.

        The compiled callables wrap the same block modules, so parameters, hooks and ``state_dict`` keys
        are the eager model's (no ``_orig_mod`` prefix). Evaluation and decoding, whose cache and lengths
        change from call to call and would recompile, stay eager.
        """
        self._training_blocks = [torch.compile(block) for block in self.blocks]

    def init_weights(self) -> None:
        """Initialise a model built on the meta device and moved with ``to_empty``: RoPE tables and weights.

        Under the same seed this gives exactly the constructor's weights: it first re-runs every
        submodule's own initialiser in construction order (which is what the constructor's draws
        were, so the random stream lines up), then Codette's. ``to_empty`` unties shared
        parameters, so the output projection is tied to the embedding again first.
        """
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self._codette_init()

    @torch.no_grad()
    def _codette_init(self) -> None:
        self.apply(self._init_module)
        # GPT-2 style: scale residual output projections by depth so activations stay O(1).
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers))

    def _init_module(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:  # q/k/v with qkv_bias
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Unique parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    @overload
    def forward(self, idx: torch.Tensor, targets: None = None, cache: KVCache | None = None, *,
                last_only: bool = False, scored_only: bool = False) -> torch.Tensor: ...

    @overload
    def forward(self, idx: torch.Tensor, targets: torch.Tensor, cache: KVCache | None = None, *,
                last_only: bool = False, scored_only: bool = False) -> LMOutput: ...

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None, *,
                last_only: bool = False, scored_only: bool = False) -> torch.Tensor | LMOutput:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T); with ``cache``, positions continue from it.

        With ``targets`` (B, T; ``IGNORE_INDEX`` where not scored) the result is an :class:`LMOutput`:
        the logits, the summed cross-entropy and the number of scored targets (see
        :mod:`codette.model.loss`). ``last_only`` projects only the last position (B, 1, vocab), which
        is all that decoding needs. ``scored_only`` (training) projects only the positions whose target is
        scored, so the logits are (N, vocab) for the N scored targets, then rows of ignored targets up to a
        multiple of :data:`SCORED_ROWS`: the output layer and the softmax are the largest cost after the
        blocks at a small width, and a chat window scores about a third of its tokens. The loss is the
        same sum over the same targets.
        """
        t = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + t > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence length {start + t} exceeds the model's context max_seq_len={self.cfg.max_seq_len}"
            )
        x = self.embed(idx)
        compiled = self._training_blocks is not None and self.training and cache is None
        for i, block in enumerate(self._training_blocks if compiled else self.blocks):
            if self.activation_checkpointing and cache is None and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, self.rotary, None, i, use_reentrant=False)
            else:
                x = block(x, self.rotary, cache, i)
        if cache is not None:
            cache.length += t
        if last_only:
            if targets is not None:
                raise ValueError("last_only is for decoding; a loss needs the logits of every position")
            x = x[:, -1:]
        if targets is not None and scored_only:
            keep = targets != IGNORE_INDEX
            x, targets = x[keep], targets[keep]
            # Rows padded to a multiple of SCORED_ROWS (ignored targets): a new row count every step would
            # make the CPU's matmul library build and cache kernels for each shape, and memory grows by GBs.
            pad = -len(targets) % SCORED_ROWS
            if pad:
                x = torch.cat([x, x.new_zeros(pad, x.shape[-1])])
                targets = torch.cat([targets, targets.new_full((pad,), IGNORE_INDEX)])
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return LMOutput(logits, *cross_entropy_sum(logits, targets))

    def new_cache(self, batch: int = 1) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg, batch, p.device, p.dtype)
