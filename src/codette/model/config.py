"""The network's shape: :class:`ModelConfig`, its block styles and the vocabulary padding.

Plain Python (no torch), so reading a config, a preset or its parameter count (``codette presets``)
does not load torch; :mod:`codette.model.transformer` builds the network from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BLOCK_STYLES = ("codette", "llama")


@dataclass
class ModelConfig:
    """Everything that defines the network's shape. Saved inside every checkpoint."""

    vocab_size: int = 32768  # rows of the embedding table (already padded, see ``padded_vocab``)
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: same as n_heads (multi-head attention)
    d_ff: int | None = None  # None: 4*d_model (codette) or SwiGLU 8/3*d_model rounded (llama)
    max_seq_len: int = 512
    block_style: str = "codette"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_embeddings: bool = True
    qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2 checkpoints); Codette's own models have none
    init_std: float = 0.02
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. preset name); not used by the net

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Fail early with the name of the offending field."""
        if self.block_style not in BLOCK_STYLES:
            raise ValueError(f"block_style must be one of {BLOCK_STYLES}, got {self.block_style!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.head_dim % 2:
            raise ValueError(f"head size d_model/n_heads = {self.head_dim} must be even for rotary embeddings")
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.block_style == "llama":
            return 256 * math.ceil(int(8 * self.d_model / 3) / 256)
        return 4 * self.d_model


def padded_vocab(n_tokens: int, multiple: int = 64) -> int:
    """Embedding rows for a tokenizer of ``n_tokens``: rounded up so matmuls stay aligned."""
    return multiple * math.ceil(n_tokens / multiple)


def count_parameters(cfg: ModelConfig) -> int:
    """Unique parameters of the network ``cfg`` describes (a tied embedding counts once), from the shapes.

    Embedding, per block two norm scales, the q/k/v/o projections (and the q/k/v biases with
    ``qkv_bias``) and the MLP (up and down, plus the gate for SwiGLU), the final norm, and an output
    projection unless tied. A test checks it against a model built on the meta device.
    """
    d, attn = cfg.d_model, cfg.n_heads * cfg.head_dim
    kv = cfg.kv_heads * cfg.head_dim
    mlp = (3 if cfg.block_style == "llama" else 2) * d * cfg.ffn_dim
    biases = attn + 2 * kv if cfg.qkv_bias else 0
    block = 2 * d + (2 * d * attn + 2 * d * kv) + biases + mlp
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return cfg.vocab_size * d + cfg.n_layers * block + d + head
