"""The data stage: write the train/val JSONL files, then pack them into token memmaps.

``build_dataset`` writes ``<dir>/train.jsonl``, ``<dir>/val.jsonl`` and ``<dir>/stats.json``; each
line is ``{"messages": [...]}`` (chat) or ``{"text": "..."}`` (plain text). The user's own files are
split by a hash of their content, the synthetic conversations by their template/slot combination.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from codette.config import DataConfig
from codette.data import synthetic
from codette.data.pack import PackStats, pack
from codette.data.sources import Document, iter_documents, read_jsonl_conversations
from codette.errors import CodetteError
from codette.fileio import atomic_open, atomic_write_text
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import render

log = logging.getLogger(__name__)


@dataclass
class BuildStats:
    train: int
    val: int
    synthetic: dict | None
    user_documents: int

    def as_dict(self) -> dict:
        return asdict(self)


def _doc_record(doc: Document) -> dict:
    if doc.messages is not None:
        rec: dict = {"messages": doc.messages}
        if doc.tools:
            rec["tools"] = doc.tools
        return rec
    return {"text": doc.text}


def _is_val_content(record: dict, val_fraction: float) -> bool:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < val_fraction * 10_000


def build_dataset(cfg: DataConfig, out_dir: Path | str) -> BuildStats:
    """Generate and/or collect conversations and write the two JSONL splits atomically."""
    out_dir = Path(out_dir)
    if cfg.errors not in ("strict", "replace"):
        raise CodetteError(f"data.errors must be 'strict' or 'replace', got {cfg.errors!r}")
    if not cfg.synthetic and not cfg.sources:
        raise CodetteError("nothing to build: synthetic data is off and no data.sources were given")
    train_recs: list[dict] = []
    val_recs: list[dict] = []
    syn_stats = None
    if cfg.synthetic:
        tr, va, st = synthetic.generate(cfg.samples, cfg.seed, cfg.val_fraction)
        train_recs += [s.to_json() for s in tr]
        val_recs += [s.to_json() for s in va]
        syn_stats = {**asdict(st), "distinct_ratio": st.distinct_ratio}
    n_user = 0
    for src in cfg.sources:
        for doc in iter_documents(src, cfg.errors):
            rec = _doc_record(doc)
            (val_recs if _is_val_content(rec, cfg.val_fraction) else train_recs).append(rec)
            n_user += 1
    if not val_recs and train_recs:
        val_recs.append(train_recs.pop())  # tiny corpora still get a held-out document
        log.warning("the corpus is tiny: holding out one document for validation")
    for name, recs in (("train", train_recs), ("val", val_recs)):
        with atomic_open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for rec in recs:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    stats = BuildStats(len(train_recs), len(val_recs), syn_stats, n_user)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats.as_dict(), indent=2))
    return stats


def read_split(data_dir: Path | str, name: str) -> Iterator[Document]:
    """Documents of a written split (``train`` or ``val``)."""
    return read_jsonl_conversations(Path(data_dir) / f"{name}.jsonl")


def training_texts(data_dir: Path | str) -> Iterator[str]:
    """Text the tokenizer learns from: the train split, rendered with the chat template."""
    for doc in read_split(data_dir, "train"):
        yield render(doc.messages, doc.tools) if doc.messages is not None else (doc.text or "")


def pack_dataset(data_dir: Path | str, tok: CodetteTokenizer, packed_dir: Path | str,
                 assistant_only: bool = True) -> dict[str, PackStats]:
    """Tokenize both splits once into ``packed_dir``."""
    return {name: pack(read_split(data_dir, name), tok, Path(packed_dir), name, assistant_only)
            for name in ("train", "val")}
