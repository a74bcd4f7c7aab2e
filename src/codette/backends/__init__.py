"""Where replies come from: a PyTorch checkpoint here; GGUF and HTTP backends share the interface."""

from codette.backends.base import ChatBackend
from codette.backends.local import LocalBackend

__all__ = ["ChatBackend", "LocalBackend"]
