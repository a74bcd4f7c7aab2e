"""Deployment formats: GGUF (llama.cpp, Ollama) with a Modelfile, and Hugging Face folders.

Nothing here imports the training code: exporting needs only the checkpoint's weights, its config
and the tokenizer files beside it.
"""

from codette.export.gguf_export import DEFAULT_QUANT, QUANT_TYPES, GGUFExport, export_gguf
from codette.export.hf_export import HF_DTYPES, HFExport, export_hf
from codette.export.inspect import GGUFSummary, read_gguf

__all__ = ["DEFAULT_QUANT", "HF_DTYPES", "QUANT_TYPES", "GGUFExport", "GGUFSummary", "HFExport", "export_gguf",
           "export_hf", "read_gguf"]
