"""Deployment formats: GGUF (llama.cpp, Ollama) with a Modelfile, and Hugging Face folders.

Nothing here imports the training code: exporting needs only the checkpoint's weights, its config
and the tokenizer files beside it. Names are imported on first use (:mod:`codette.lazy`), so
reading a GGUF (:func:`read_gguf`) never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codette.lazy import lazy_exports

if TYPE_CHECKING:
    from codette.export.gguf_export import DEFAULT_QUANT, QUANT_TYPES, GGUFExport, export_gguf
    from codette.export.hf_export import HF_DTYPES, HFExport, export_hf
    from codette.export.inspect import GGUFSummary, read_gguf

__all__ = ["DEFAULT_QUANT", "HF_DTYPES", "QUANT_TYPES", "GGUFExport", "GGUFSummary", "HFExport", "export_gguf",
           "export_hf", "read_gguf"]

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["DEFAULT_QUANT", "QUANT_TYPES", "GGUFExport", "export_gguf"], "codette.export.gguf_export"),
    **dict.fromkeys(["HF_DTYPES", "HFExport", "export_hf"], "codette.export.hf_export"),
    **dict.fromkeys(["GGUFSummary", "read_gguf"], "codette.export.inspect"),
})
