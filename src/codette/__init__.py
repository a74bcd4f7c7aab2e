"""Codette: train a small multi-perspective, tool-calling language model and deploy it locally.

``from codette import MultimodalCodette`` imports the agent on first use (PEP 562), so a plain
``import codette`` stays cheap and loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"MultimodalCodette": "codette.agent", "Response": "codette.agent"}
__all__ = ["MultimodalCodette", "Response", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'codette' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
