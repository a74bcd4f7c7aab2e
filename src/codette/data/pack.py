"""Tokenize documents once into packed token and loss-mask files read through ``np.memmap``.

Layout of a split ``<name>``: ``<name>.bin`` (uint16 when the vocabulary fits, else uint32),
``<name>.mask.bin`` (uint8: 1 where the token is a training target) and ``<name>.json`` (dtype,
counts). Files are streamed in chunks and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codette.errors import CodetteError
from codette.fileio import atomic_open, atomic_write_text
from codette.tokenizer import CodetteTokenizer

if TYPE_CHECKING:  # readers of a packed split (train, evaluate) need not load the source readers
    from codette.data.sources import Document


@dataclass
class PackStats:
    documents: int
    tokens: int
    target_tokens: int
    chat_documents: int = 0  # the rest are plain text: training reads a text-only split at random offsets


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def encode_document(doc: Document, tok: CodetteTokenizer, assistant_only: bool = True) -> tuple[list[int], list[int]]:
    """Ids and target mask of one document; chat loss covers assistant turns unless told otherwise."""
    if doc.messages is not None:
        ids, mask = tok.encode_chat(doc.messages, doc.tools)
        if not assistant_only:
            mask = [1] * len(ids)
        return ids + [tok.eos_id], mask + [0]
    ids = [tok.bos_id, *tok.encode(doc.text or ""), tok.eos_id]
    return ids, [1] * len(ids)


def pack(docs: Iterable[Document], tok: CodetteTokenizer, out_dir: Path, name: str,
         assistant_only: bool = True, chunk_tokens: int = 1 << 20) -> PackStats:
    """Stream ``docs`` into ``out_dir/<name>.bin`` + mask; returns counts."""
    dtype = token_dtype(len(tok))
    out_dir = Path(out_dir)
    stats = PackStats(0, 0, 0)
    buf_ids: list[int] = []
    buf_mask: list[int] = []
    buf_starts: list[int] = []
    with atomic_open(out_dir / f"{name}.bin") as fids, atomic_open(out_dir / f"{name}.mask.bin") as fmask, \
            atomic_open(out_dir / f"{name}.docs.bin") as fdocs:
        def flush() -> None:
            fids.write(np.asarray(buf_ids, dtype=dtype).tobytes())
            fmask.write(np.asarray(buf_mask, dtype=np.uint8).tobytes())
            fdocs.write(np.asarray(buf_starts, dtype=np.int64).tobytes())
            buf_ids.clear()
            buf_mask.clear()
            buf_starts.clear()

        for doc in docs:
            ids, mask = encode_document(doc, tok, assistant_only)
            buf_starts.append(stats.tokens)
            buf_ids.extend(ids)
            buf_mask.extend(mask)
            stats.documents += 1
            stats.chat_documents += doc.messages is not None
            stats.tokens += len(ids)
            stats.target_tokens += sum(mask)
            if len(buf_ids) >= chunk_tokens:
                flush()
        flush()
        if stats.tokens == 0:
            raise CodetteError(f"no tokens to write for split {name!r}: the corpus is empty")
    meta = {"dtype": dtype.name, "tokens": stats.tokens, "documents": stats.documents,
            "target_tokens": stats.target_tokens, "chat_documents": stats.chat_documents, "vocab_size": len(tok)}
    atomic_write_text(out_dir / f"{name}.json", json.dumps(meta, indent=2))
    return stats


class PackedSplit:
    """Read-only view of a packed split; ``tokens`` and ``mask`` are memory-mapped."""

    def __init__(self, folder: Path | str, name: str) -> None:
        folder = Path(folder)
        meta_path = folder / f"{name}.json"
        if not meta_path.is_file():
            raise CodetteError(f"no packed split at {meta_path}; run `codette data` first")
        self.meta = json.loads(meta_path.read_text())
        dtype = np.dtype(self.meta["dtype"])
        n = int(self.meta["tokens"])
        for suffix, size in ((".bin", dtype.itemsize), (".mask.bin", 1)):
            p = folder / f"{name}{suffix}"
            if not p.is_file() or os.path.getsize(p) != n * size:
                raise CodetteError(f"{p} is missing or truncated (expected {n * size} bytes)")
        self.tokens = np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r", shape=(n,))
        self.mask = np.memmap(folder / f"{name}.mask.bin", dtype=np.uint8, mode="r", shape=(n,))
        self.name = name
        # Where each document starts (written since document-aligned training windows; older packs lack it).
        docs = folder / f"{name}.docs.bin"
        n_docs = int(self.meta.get("documents", 0))
        self.doc_starts: np.ndarray | None = None
        if docs.is_file():
            if os.path.getsize(docs) != n_docs * 8 or n_docs == 0:
                raise CodetteError(f"{docs} is truncated or does not match {meta_path} "
                                   f"(expected {n_docs * 8} bytes); delete the packed folder to re-pack")
            self.doc_starts = np.memmap(docs, dtype=np.int64, mode="r", shape=(n_docs,))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def plain_text(self) -> bool:
        """Whether every document is plain text (no chat), as recorded when packing; older packs say nothing
        and count as chat."""
        return self.meta.get("chat_documents", self.meta.get("documents")) == 0

    def num_blocks(self, seq_len: int) -> int:
        return (len(self.tokens) - 1) // seq_len
