"""The data stage: write the train/val JSONL files, then pack them into token memmaps.

``build_dataset`` writes ``<dir>/train.jsonl``, ``<dir>/val.jsonl`` and ``<dir>/stats.json``; each
line is ``{"messages": [...]}`` (chat) or ``{"text": "..."}`` (plain text). The user's own files are
split by a hash of their content, the synthetic conversations by their template/slot combination.
Both are streamed straight into the (atomically renamed) split files, so a corpus of any size and
200,000 synthetic conversations never sit in memory at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from codette.config import DataConfig
from codette.data import synthetic
from codette.data.mix import SYNTHETIC, parse_mix, selection, take, target_counts
from codette.data.pack import PackStats, pack
from codette.data.sources import Document, ReadReport, iter_documents, read_jsonl_conversations
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
    skipped_bad: int = 0  # bad JSONL lines / dataset rows skipped with skip_bad
    skipped_examples: list[str] = field(default_factory=list)
    mix: dict[str, float] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)  # source -> {"available": n, "used": k}

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


class _SplitWriter:
    """Writes records to the two split files; the last train record is held back one step so that a
    corpus too small to put anything in val can still give it one held-out document."""

    def __init__(self, train: IO[str], val: IO[str]) -> None:
        self.files = {"train": train, "val": val}
        self.counts = {"train": 0, "val": 0}
        self._held: str | None = None

    def write(self, rec: dict, split: str) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        if split == "train":
            if self._held is not None:
                self.files["train"].write(self._held)
                self.counts["train"] += 1
            self._held = line
        else:
            self.files["val"].write(line)
            self.counts["val"] += 1

    def close(self) -> None:
        """Flush the held record (into val when val would otherwise be empty)."""
        if self._held is not None:
            if self.counts["val"] == 0:
                log.warning("the corpus is tiny: holding out one document for validation")
                self.files["val"].write(self._held)
                self.counts["val"] += 1
            else:
                self.files["train"].write(self._held)
                self.counts["train"] += 1
            self._held = None


def _plan(cfg: DataConfig) -> tuple[dict[str, float], list[str], int]:
    """(mix, user sources, synthetic count) after checking that the options agree."""
    mix = parse_mix(cfg.mix)
    if not mix:
        return {}, list(cfg.sources), cfg.samples if cfg.synthetic else 0
    extra = [s for s in cfg.sources if s not in mix]
    if extra:
        raise CodetteError(f"source {extra[0]} has no ratio in --mix; give every source one "
                           f"(e.g. --mix synthetic=0.5,{extra[0]}=0.5)")
    if mix.get(SYNTHETIC, 0) > 0 and not cfg.synthetic:
        raise CodetteError("--mix gives the synthetic data a ratio, but synthetic data is turned off (--no-synthetic)")
    counts = target_counts(mix, cfg.samples)
    return mix, [k for k in mix if k != SYNTHETIC], counts.get(SYNTHETIC, 0)


def _count(src: str, cfg: DataConfig, report: ReadReport) -> int:
    return sum(1 for _ in iter_documents(src, cfg.errors, cfg.skip_bad, report))


def build_dataset(cfg: DataConfig, out_dir: Path | str) -> BuildStats:
    """Generate and/or collect conversations and write the two JSONL splits atomically."""
    out_dir = Path(out_dir)
    mix, sources, n_syn = _plan(cfg)
    if not n_syn and not sources:
        raise CodetteError("nothing to build: synthetic data is off and no data.sources were given")
    shares = synthetic.check_shares(dict(cfg.shares)) if cfg.shares else synthetic.CATEGORY_SHARES
    report = ReadReport()
    syn_stats = None
    n_user = 0
    per_source: dict[str, dict] = {}
    with atomic_open(out_dir / "train.jsonl", "w", encoding="utf-8") as ftr, \
            atomic_open(out_dir / "val.jsonl", "w", encoding="utf-8") as fva:
        out = _SplitWriter(ftr, fva)
        if n_syn:
            collector = synthetic.StatsCollector(n_syn, shares, cfg.val_fraction)
            for s in synthetic.iter_samples(n_syn, cfg.seed, shares, collector=collector):
                out.write(s.to_json(), "val" if collector.add(s) else "train")
            st = collector.stats()
            syn_stats = {**asdict(st), "distinct_ratio": st.distinct_ratio}
        targets = target_counts(mix, cfg.samples) if mix else {}
        for src in sources:
            docs: Iterator[Document]
            if mix:
                available = _count(src, cfg, report)
                picks = selection(available, targets[src], cfg.seed, src)
                docs = take(iter_documents(src, cfg.errors, cfg.skip_bad, ReadReport()), picks)
            else:
                docs = iter_documents(src, cfg.errors, cfg.skip_bad, report)
                available = None
            used = 0
            for doc in docs:
                rec = _doc_record(doc)
                out.write(rec, "val" if _is_val_content(rec, cfg.val_fraction) else "train")
                used += 1
            per_source[src] = {"available": used if available is None else available, "used": used}
            n_user += used
        out.close()
    if report.skipped:
        log.warning("skipped %d bad record%s (--skip-bad)", report.skipped, "s" if report.skipped != 1 else "")
    stats = BuildStats(out.counts["train"], out.counts["val"], syn_stats, n_user, report.skipped,
                       report.examples, mix, per_source)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats.as_dict(), indent=2))
    return stats


def read_split(data_dir: Path | str, name: str) -> Iterator[Document]:
    """Documents of a written split (``train`` or ``val``); a split the build left empty has none."""
    path = Path(data_dir) / f"{name}.jsonl"
    if path.is_file() and path.stat().st_size == 0:
        return iter(())
    return read_jsonl_conversations(path)


def training_texts(data_dir: Path | str) -> Iterator[str]:
    """Text the tokenizer learns from: the train split, rendered with the chat template."""
    for doc in read_split(data_dir, "train"):
        yield render(doc.messages, doc.tools) if doc.messages is not None else (doc.text or "")


def pack_dataset(data_dir: Path | str, tok: CodetteTokenizer, packed_dir: Path | str,
                 assistant_only: bool = True) -> dict[str, PackStats]:
    """Tokenize both splits once into ``packed_dir``."""
    return {name: pack(read_split(data_dir, name), tok, Path(packed_dir), name, assistant_only)
            for name in ("train", "val")}
