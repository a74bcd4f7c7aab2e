"""The network: config, presets, forward pass, loss and sampling. Imports only torch.

Names are imported on first use (PEP 562): :mod:`codette.model.config` and the presets are plain
Python, so reading a preset or a parameter count (``codette presets``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codette.model.config import BLOCK_STYLES, ModelConfig, count_parameters, padded_vocab
    from codette.model.generate import generate_tokens
    from codette.model.loss import IGNORE_INDEX, LMOutput, cross_entropy_sum
    from codette.model.presets import PRESETS, MemoryEstimate, preset_config
    from codette.model.transformer import CodetteModel, KVCache

_WHERE = {
    **dict.fromkeys(["BLOCK_STYLES", "ModelConfig", "count_parameters", "padded_vocab"], "config"),
    "generate_tokens": "generate",
    **dict.fromkeys(["IGNORE_INDEX", "LMOutput", "cross_entropy_sum"], "loss"),
    **dict.fromkeys(["PRESETS", "MemoryEstimate", "preset_config"], "presets"),
    **dict.fromkeys(["CodetteModel", "KVCache"], "transformer"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'codette.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"codette.model.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
