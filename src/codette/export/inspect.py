"""Read back a GGUF file (with gguf-py's reader): metadata with arrays summarised, and the tensor table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from codette.errors import CodetteError

ARRAY_PREVIEW = 5
STRING_PREVIEW = 120


@dataclass
class TensorRow:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 = row length first), as llama.cpp prints it
    type: str
    n_bytes: int


@dataclass
class GGUFSummary:
    path: Path
    n_bytes: int
    metadata: list[tuple[str, str, str]]  # key, value type, value (arrays summarised)
    tensors: list[TensorRow]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= STRING_PREVIEW else text[: STRING_PREVIEW - 3] + "..."


def _describe(field: gguf.ReaderField) -> tuple[str, str]:
    """(type, value) of one metadata field; arrays become ``[first few, ...] (n items)``."""
    if not field.types:
        return "?", ""
    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        n = len(field.data)
        items = field.contents(slice(0, ARRAY_PREVIEW))
        shown = ", ".join(_short(v) for v in items)
        more = ", ..." if n > ARRAY_PREVIEW else ""
        return f"[{sub.name}]", f"[{shown}{more}] ({n} items)"
    return main.name, _short(field.contents())


def read_gguf(path: Path | str) -> GGUFSummary:
    """Summarise ``path``; a missing or malformed file is a CodetteError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CodetteError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf-py raises ValueError, struct errors, etc. on bad files
        raise CodetteError(f"{path} is not a readable GGUF file: {type(exc).__name__}: {exc}") from None
    metadata = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # header pseudo-fields (version, counts)
            continue
        vtype, value = _describe(field)
        metadata.append((key, vtype, value))
    tensors = [TensorRow(t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes))
               for t in reader.tensors]
    return GGUFSummary(path=path, n_bytes=path.stat().st_size, metadata=metadata, tensors=tensors)
