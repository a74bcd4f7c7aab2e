"""Named model sizes, with parameter counts and memory computed, never typed in by hand.

The big presets are named after their real parameter count (codette block style, 32768-token
vocabulary): a test keeps each within 5% of its name. Counts come from the shapes
(:func:`~codette.model.config.count_parameters`, checked against a model built on the meta device), so
listing a 5.3B preset allocates nothing and `codette presets` does not load torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from codette.model.config import ModelConfig, count_parameters, padded_vocab


@dataclass(frozen=True)
class Preset:
    name: str
    nominal_params: float | None  # what the name promises, e.g. 1.3e9; None for CPU presets
    config: dict
    note: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", None, dict(d_model=256, n_layers=6, n_heads=8, max_seq_len=512, vocab_size=4096),
               "the CPU quickstart's preset (docs/RESULTS.md)"),
        Preset("small-cpu", None, dict(d_model=384, n_layers=6, n_heads=6, max_seq_len=512, vocab_size=8192),
               "a better CPU model: an hour or more on a laptop"),
        Preset("1.3b", 1.3e9, dict(d_model=2048, n_layers=24, n_heads=16, max_seq_len=2048, vocab_size=32768),
               "one GPU that holds its training state plus activations"),
        Preset("2.7b", 2.7e9, dict(d_model=2560, n_layers=33, n_heads=20, max_seq_len=2048, vocab_size=32768),
               "one 80 GB GPU, or DDP/FSDP2 over several (docs/SCALING.md)"),
        Preset("5.3b", 5.3e9, dict(d_model=4096, n_layers=26, n_heads=32, max_seq_len=2048, vocab_size=32768),
               "its training state exceeds one 80 GB GPU: FSDP2 over several (docs/SCALING.md)"),
    )
}


def preset_config(name: str, **overrides: object) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values = dict(PRESETS[name].config)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("extra", {})
    values["extra"] = {**values["extra"], "preset": name}
    return ModelConfig(**values)


def resolve_preset(name: str, overrides: dict, vocab_tokens: int | None = None) -> ModelConfig:
    """The model a run asks for: preset ``name``, the non-None ``overrides`` (a config's model section;
    its ``preset`` key is ignored) and an embedding table padded for a tokenizer of ``vocab_tokens``.

    Any problem is a ValueError whose message names the preset or the field (the stages turn it into
    the user's error).
    """
    values = {k: v for k, v in overrides.items() if k != "preset" and v is not None}
    if vocab_tokens is not None:
        values["vocab_size"] = padded_vocab(vocab_tokens)
    try:
        return preset_config(name, **values)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    except ValueError as exc:
        raise ValueError(f"model config: {exc}") from None


# What the trainer keeps per parameter: fp32 weights, fp32 gradients and AdamW's two fp32 moments.
# bf16 autocast does not change it (it runs the matmuls in bf16; the stored state stays fp32).
TRAIN_BYTES_PER_PARAM = 4 + 4 + 4 + 4


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    train_bytes: int  # weights + gradients + AdamW exp_avg and exp_avg_sq, all fp32; activations not included
    gguf_f16_bytes: int  # every tensor at 2 bytes (norms stay F32 in practice: negligible)

    @classmethod
    def of(cls, cfg: ModelConfig) -> "MemoryEstimate":
        n = count_parameters(cfg)
        return cls(params=n, train_bytes=TRAIN_BYTES_PER_PARAM * n, gguf_f16_bytes=2 * n)
