"""Where replies come from: a PyTorch checkpoint here; GGUF and HTTP backends share the interface.

Names are imported on first use (:mod:`codette.lazy`): a client of an HTTP server reads
:mod:`codette.backends.openai` or :mod:`codette.backends.ollama` without loading the local backend's torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codette.lazy import lazy_exports

if TYPE_CHECKING:
    from codette.backends.base import ChatBackend, SamplingConfig
    from codette.backends.local import LocalBackend

__all__ = ["ChatBackend", "LocalBackend", "SamplingConfig"]

__getattr__, __dir__ = lazy_exports(__name__, {"ChatBackend": "codette.backends.base",
                                               "LocalBackend": "codette.backends.local",
                                               "SamplingConfig": "codette.backends.base"})
