"""The network: config, presets, forward pass and sampling. Imports only torch."""

from codette.model.generate import SamplingConfig, generate_tokens
from codette.model.loss import IGNORE_INDEX, LMOutput, cross_entropy_sum
from codette.model.presets import PRESETS, MemoryEstimate, count_parameters, preset_config
from codette.model.transformer import BLOCK_STYLES, CodetteModel, KVCache, ModelConfig, padded_vocab

__all__ = [
    "BLOCK_STYLES",
    "IGNORE_INDEX",
    "PRESETS",
    "CodetteModel",
    "KVCache",
    "LMOutput",
    "MemoryEstimate",
    "ModelConfig",
    "SamplingConfig",
    "count_parameters",
    "cross_entropy_sum",
    "generate_tokens",
    "padded_vocab",
    "preset_config",
]
