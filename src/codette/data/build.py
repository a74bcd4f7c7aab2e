"""The data stage: write the train/val/test JSONL files, then pack them into token memmaps.

``build_dataset`` writes ``<dir>/{train,val,test}.jsonl`` and ``<dir>/stats.json``; each line is
``{"messages": [...]}`` (chat) or ``{"text": "..."}`` (plain text). The user's own files are split by
a hash of their content, the synthetic conversations by their template/slot combination
(:mod:`codette.data.split`): val selects the best checkpoint, test is only for the final report.
Both are streamed straight into the (atomically renamed) split files, so a corpus of any size and
200,000 synthetic conversations never sit in memory at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from codette.config import DataConfig
from codette.data import copydocs, synthetic
from codette.data.mix import COPY, SYNTHETIC, parse_mix, selection, take, target_counts
from codette.data.pack import PackedSplit, PackStats, pack
from codette.data.sources import Document, ReadReport, iter_documents, read_jsonl_conversations
from codette.data.split import HELD_OUT, SPLITS, split_of
from codette.errors import CodetteError
from codette.fileio import atomic_open, atomic_write_text, file_sha256, remove_stale_temporaries
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import TOKENIZER_FILE
from codette.tokenizer.chat_template import render

log = logging.getLogger(__name__)


@dataclass
class BuildStats:
    train: int
    val: int
    test: int
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


def _content_split(record: dict, cfg: DataConfig) -> str:
    return split_of(json.dumps(record, sort_keys=True, ensure_ascii=False), cfg.val_fraction, cfg.test_fraction)


class _SplitWriter:
    """Writes records to the three split files; the last two train records are held back so that a
    corpus too small to put anything in val or test can still give each one held-out document."""

    def __init__(self, files: dict[str, IO[str]]) -> None:
        self.files = files
        self.counts = {name: 0 for name in SPLITS}
        self._held: list[str] = []

    def _put(self, line: str, split: str) -> None:
        self.files[split].write(line)
        self.counts[split] += 1

    def write(self, rec: dict, split: str) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        if split == "train":
            self._held.append(line)
            if len(self._held) > len(HELD_OUT):
                self._put(self._held.pop(0), "train")
        else:
            self._put(line, split)

    def close(self) -> None:
        """Flush the held records: one into each held-out split that would otherwise be empty, the rest to train."""
        for split in HELD_OUT:
            if self._held and self.counts[split] == 0:
                log.warning("the corpus is tiny: holding out one document for the %s split", split)
                self._put(self._held.pop(), split)
        for line in self._held:
            self._put(line, "train")
        self._held = []


def _plan(cfg: DataConfig) -> tuple[dict[str, float], list[str], int, int]:
    """(mix, user sources, synthetic count, copy-document count) after checking that the options agree."""
    mix = parse_mix(cfg.mix)
    if not mix:
        return {}, list(cfg.sources), cfg.samples if cfg.synthetic else 0, cfg.copy_docs
    if cfg.copy_docs:
        raise CodetteError("data.copy_docs (--copy-docs) cannot be combined with --mix; give the copy documents "
                           "a ratio in the mix instead (e.g. --mix synthetic=0.8,copy=0.2)")
    extra = [s for s in cfg.sources if s not in mix]
    if extra:
        raise CodetteError(f"source {extra[0]} has no ratio in --mix; give every source one "
                           f"(e.g. --mix synthetic=0.5,{extra[0]}=0.5)")
    if mix.get(SYNTHETIC, 0) > 0 and not cfg.synthetic:
        raise CodetteError("--mix gives the synthetic data a ratio, but synthetic data is turned off (--no-synthetic)")
    counts = target_counts(mix, cfg.samples)
    return mix, [k for k in mix if k not in (SYNTHETIC, COPY)], counts.get(SYNTHETIC, 0), counts.get(COPY, 0)


def _count(src: str, cfg: DataConfig, report: ReadReport) -> int:
    return sum(1 for _ in iter_documents(src, cfg.errors, cfg.skip_bad, report))


def build_dataset(cfg: DataConfig, out_dir: Path | str) -> BuildStats:
    """Generate and/or collect conversations and write the three JSONL splits atomically.

    Data that leaves a split empty (a corpus of a document or two) is an error, and the files of an
    earlier build are left as they were.
    """
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir)  # left by a build that was killed while writing
    mix, sources, n_syn, n_copy = _plan(cfg)
    if not n_syn and not sources and not n_copy:
        raise CodetteError("nothing to build: synthetic data is off and no data.sources were given")
    shares = synthetic.check_shares(dict(cfg.shares)) if cfg.shares else synthetic.CATEGORY_SHARES
    report = ReadReport()
    syn_stats = None
    n_user = 0
    per_source: dict[str, dict] = {}
    with atomic_open(out_dir / "train.jsonl", "w", encoding="utf-8") as ftr, \
            atomic_open(out_dir / "val.jsonl", "w", encoding="utf-8") as fva, \
            atomic_open(out_dir / "test.jsonl", "w", encoding="utf-8") as fte:
        out = _SplitWriter({"train": ftr, "val": fva, "test": fte})
        if n_syn:
            collector = synthetic.StatsCollector(n_syn, shares, cfg.val_fraction, cfg.test_fraction)
            for s in synthetic.iter_samples(n_syn, cfg.seed, shares, collector=collector, tool_mix=cfg.tool_mix):
                out.write(s.to_json(), collector.add(s))
            st = collector.stats()
            syn_stats = {**asdict(st), "distinct_ratio": st.distinct_ratio}
        if n_copy:  # plain text learned on every token, split by content like the user's documents
            log.info("writing %d copy documents (every call runs for real: about 50 documents a second)", n_copy)
            for rec in copydocs.iter_copy_records(n_copy, cfg.seed, repeat_share=cfg.copy_repeat):
                out.write(rec, _content_split(rec, cfg))
            per_source[COPY] = {"available": n_copy, "used": n_copy}
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
                out.write(rec, _content_split(rec, cfg))
                used += 1
            per_source[src] = {"available": used if available is None else available, "used": used}
            n_user += used
        out.close()
        empty = [name for name in SPLITS if out.counts[name] == 0]
        if empty:  # raised inside the with: no split file is replaced
            raise CodetteError(f"the data has {sum(out.counts.values())} document(s), too few to fill the train, "
                               f"val and test splits ({', '.join(empty)} would be empty); add documents or "
                               f"synthetic samples")
    if report.skipped:
        log.warning("skipped %d bad record%s (--skip-bad)", report.skipped, "s" if report.skipped != 1 else "")
    stats = BuildStats(out.counts["train"], out.counts["val"], out.counts["test"], syn_stats, n_user,
                       report.skipped, report.examples, mix, per_source)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats.as_dict(), indent=2))
    return stats


def read_split(data_dir: Path | str, name: str) -> Iterator[Document]:
    """Documents of a written split (``train``, ``val`` or ``test``)."""
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.exists():  # the step that writes it, not just "not found"
        raise CodetteError(f"no {name} split at {path}; run `codette data` first")
    if path.is_file() and path.stat().st_size == 0:
        return iter(())
    return read_jsonl_conversations(path)


def training_texts(data_dir: Path | str) -> Iterator[str]:
    """Text the tokenizer learns from: the train split, rendered with the chat template."""
    for doc in read_split(data_dir, "train"):
        yield render(doc.messages, doc.tools) if doc.messages is not None else (doc.text or "")


def pack_dataset(data_dir: Path | str, tok: CodetteTokenizer, packed_dir: Path | str,
                 assistant_only: bool = True) -> dict[str, PackStats]:
    """Tokenize every split once into ``packed_dir``."""
    remove_stale_temporaries(Path(packed_dir))  # left by a packing that was killed
    return {name: pack(read_split(data_dir, name), tok, Path(packed_dir), name, assistant_only)
            for name in SPLITS}


def ensure_packed(out_dir: Path | str, tok: CodetteTokenizer, assistant_only: bool = True) -> Path:
    """``<out_dir>/packed`` from ``<out_dir>/data``, packed again unless an intact packing of the same
    tokenizer and masking is there (``packed/source.json`` records both)."""
    out_dir = Path(out_dir)
    packed = out_dir / "packed"
    stamp = packed / "source.json"
    want = {"tokenizer_sha256": file_sha256(out_dir / TOKENIZER_FILE), "assistant_only": assistant_only}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        try:
            for split in SPLITS:
                PackedSplit(packed, split)
            return packed
        except CodetteError:
            pass
    pack_dataset(out_dir / "data", tok, packed, assistant_only)
    atomic_write_text(stamp, json.dumps(want))
    return packed
