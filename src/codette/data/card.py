"""The data card: what a written dataset contains, as JSON and as a PNG chart (``codette data --stats``).

Category shares per split, the length of each sample in tokens (counted with the trained tokenizer
beside the data, or else with a provisional BPE learned on the spot, and the card says which), the
distinct-sample ratio, tool
coverage (calls per tool, failed calls, questions answered without a tool) and, for synthetic data,
the generator's own statistics from ``stats.json``. Lengths are measured on at most
:data:`MAX_LENGTH_SAMPLES` evenly spaced records so the card stays fast at 200,000 samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from codette.tooltable import TOOL_NAMES
from codette.data.split import SPLITS
from codette.errors import CodetteError
from codette.fileio import atomic_open, atomic_write_text
from codette.jsonl import read_jsonl

log = logging.getLogger(__name__)

MAX_LENGTH_SAMPLES = 20_000
NETWORK_NOTE = ("http_request and web_search results are not live: http_request calls went to the toolkit's local "
                "fixture server (shown as http://localhost:8000) and web_search read recorded offline pages "
                "(source 'offline-fixture'); nothing left the machine")
CONTEXT = 512  # the quickstart (tiny preset) context, for "longer than the context" counts (a test checks it)


def _records(path: Path) -> Iterator[dict]:
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise CodetteError(f"{path}:{lineno}: expected a JSON object")
        yield rec


def _dialogue_digest(rec: dict) -> bytes:
    body = rec.get("text") if "messages" not in rec else [m for m in rec["messages"] if m.get("role") != "system"]
    return hashlib.blake2b(json.dumps(body, sort_keys=True, ensure_ascii=False).encode(), digest_size=8).digest()


def _tool_names(rec: dict) -> list[str]:
    names = []
    for m in rec.get("messages") or []:
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", tc) if isinstance(tc, dict) else {}
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names.append(fn["name"])
    return names


PROVISIONAL_VOCAB = 4096  # the quickstart's vocabulary size
PROVISIONAL_TRAIN_CHARS = 4_000_000  # text a provisional tokenizer learns from (a few seconds)


def _sampled_texts(data_dir: Path, step: int) -> Iterator[tuple[str, bool]]:
    """(text, is_chat) of every ``step``-th record of every split: chats rendered with the chat template."""
    from codette.tokenizer.chat_template import render

    i = 0
    for split in SPLITS:
        for rec in _records(data_dir / f"{split}.jsonl"):
            i += 1
            if i % step == 0:
                if "messages" in rec:
                    yield render(rec["messages"], rec.get("tools")), True
                else:
                    yield rec.get("text") or "", False


def _lengths(data_dir: Path, total: int, tokenizer_dir: Path | None) -> tuple[str, list[int]]:
    """(how tokens were counted, token lengths) over an even subsample of all splits.

    With a trained ``tokenizer.json`` beside the data its counts are exact; otherwise a provisional
    byte-level BPE with the quickstart's vocabulary size is learned from (the start of) the same
    subsample, which gives counts close to those of the tokenizer ``codette tokenizer`` would train.
    """
    from codette.tokenizer import CodetteTokenizer

    step = max(1, total // MAX_LENGTH_SAMPLES)
    if tokenizer_dir is not None:
        tok = CodetteTokenizer.load(tokenizer_dir)
        how = f"the tokenizer in {tokenizer_dir} ({len(tok):,} tokens)"
    else:
        def budget() -> Iterator[str]:
            seen = 0
            for text, _ in _sampled_texts(data_dir, step):
                yield text
                seen += len(text)
                if seen >= PROVISIONAL_TRAIN_CHARS:
                    return

        tok = CodetteTokenizer.train(budget(), vocab_size=PROVISIONAL_VOCAB)
        how = (f"a provisional {PROVISIONAL_VOCAB:,}-token BPE learned from these records (no tokenizer.json "
               f"beside the data yet; run `codette tokenizer`, then `codette data --stats` for exact counts)")
    out: list[int] = []
    batch: list[tuple[str, bool]] = []

    def flush() -> None:
        for enc, (_, chat) in zip(tok.tok.encode_batch([t for t, _ in batch], add_special_tokens=False), batch):
            out.append(len(enc.ids) + (0 if chat else 2))  # plain text gets BOS and EOS when packed
        batch.clear()

    for item in _sampled_texts(data_dir, step):
        batch.append(item)
        if len(batch) >= 512:
            flush()
    flush()
    return how, out


def build_card(data_dir: Path | str, tokenizer_dir: Path | str | None = None) -> dict[str, Any]:
    """Statistics of ``data_dir/{train,val,test}.jsonl`` (streamed; lengths on a subsample)."""
    data_dir = Path(data_dir)
    for split in SPLITS:
        if not (data_dir / f"{split}.jsonl").is_file():
            raise CodetteError(f"no {split}.jsonl in {data_dir}; run `codette data` first")
    cats: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
    tools: Counter[str] = Counter()
    digests: set[bytes] = set()
    tool_errors = no_tool = tool_records = 0
    for split in SPLITS:
        for rec in _records(data_dir / f"{split}.jsonl"):
            cats[split][rec.get("category", "user" if "messages" in rec else "text")] += 1
            digests.add(_dialogue_digest(rec))
            names = _tool_names(rec)
            tools.update(names)
            if rec.get("category") == "tools" or names:
                tool_records += 1
                no_tool += not names
                tool_errors += rec.get("tool_ok") is False
    total = sum(sum(c.values()) for c in cats.values())
    if total == 0:
        raise CodetteError(f"{data_dir} holds no records")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.json").is_file() \
        else None
    how, lengths = _lengths(data_dir, total, tok_dir)
    arr = np.asarray(lengths, dtype=np.int64)
    counts, edges = np.histogram(arr, bins=30)
    all_cats = sum(cats.values(), Counter())
    stats_path = data_dir / "stats.json"
    built = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    card: dict[str, Any] = {
        "records": total,
        "splits": {s: sum(c.values()) for s, c in cats.items()},
        "categories": {s: dict(sorted(c.items())) for s, c in cats.items()},
        "shares": {c: n / total for c, n in sorted(all_cats.items())},
        "distinct_ratio": len(digests) / total,
        "length_unit": "tokens",
        "length_note": f"tokens of the rendered chat template (BOS/EOS included for plain text), counted with {how}",
        "length_tokenizer": "trained" if tok_dir is not None else "provisional",
        "length_sampled": len(lengths),
        "length": {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
                   "p90": float(np.percentile(arr, 90)), "p99": float(np.percentile(arr, 99)), "max": int(arr.max()),
                   f"over_{CONTEXT}": int((arr > CONTEXT).sum())},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "tool_coverage": {t: tools.get(t, 0) for t in TOOL_NAMES} | {t: n for t, n in tools.items()
                                                                     if t not in TOOL_NAMES},
        "tools_never_called": [t for t in TOOL_NAMES if not tools.get(t)],
        "tool_records": tool_records,
        "tool_errors": tool_errors,
        "no_tool_answers": no_tool,
        "network_results": NETWORK_NOTE if (tools.get("http_request") or tools.get("web_search")) else None,
        "synthetic": built.get("synthetic"),
        "skipped_bad": built.get("skipped_bad", 0),
        "mix": built.get("mix") or {},
    }
    return card


def plot_card(card: dict[str, Any], path: Path | str) -> None:
    """Three panels: category shares per split, the length histogram, calls per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1, 1.1, 1.1]})
    cats = sorted(card["shares"])
    x = np.arange(len(cats))
    width = 0.8 / len(SPLITS)
    for k, split in enumerate(SPLITS):
        n = max(1, card["splits"][split])
        bars = axes[0].bar(x + (k - (len(SPLITS) - 1) / 2) * width,
                           [100 * card["categories"][split].get(c, 0) / n for c in cats], width,
                           label=f"{split} ({card['splits'][split]:,})")
        axes[0].bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes[0].set_xticks(x, cats, rotation=15)
    axes[0].set_ylabel("% of the split")
    axes[0].margins(y=0.12)
    axes[0].set_title(f"Category shares ({card['records']:,} records)\n"
                      f"distinct-sample ratio {card['distinct_ratio']:.3f}")
    axes[0].legend(loc="upper left", fontsize=8)
    edges, counts = card["histogram"]["edges"], card["histogram"]["counts"]
    axes[1].bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="white")
    length = card["length"]
    axes[1].axvline(length["mean"], color="black", linestyle=":", label=f"mean {length['mean']:,.0f}")
    over = length.get(f"over_{CONTEXT}")
    if over is not None:
        axes[1].axvline(CONTEXT, color="red", linestyle="--", label=f"{CONTEXT}-token context ({over:,} longer)")
    axes[1].legend(fontsize=8)
    axes[1].set_xlabel(f"{card['length_unit']} per sample")
    axes[1].set_ylabel("samples")
    provisional = " (provisional tokenizer)" if card.get("length_tokenizer") == "provisional" else ""
    axes[1].set_title(f"{card['length_unit'].capitalize()} per sample{provisional}\n"
                      f"({card['length_sampled']:,} samples measured)")
    names = list(card["tool_coverage"])
    bars = axes[2].barh(names, [card["tool_coverage"][t] for t in names])
    axes[2].bar_label(bars, fmt="%d", fontsize=8, padding=2)
    axes[2].margins(x=0.15)
    axes[2].invert_yaxis()
    axes[2].set_xlabel("samples calling the tool")
    axes[2].set_title(f"Tool coverage ({sum(1 for t in names if card['tool_coverage'][t])} of {len(names)} called)\n"
                      f"{card['tool_errors']:,} failed calls, {card['no_tool_answers']:,} answered without a tool")
    if card.get("network_results"):
        fig.text(0.5, 0.01, "Note: " + card["network_results"] + ".", ha="center", fontsize=8, wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)


def write_card(data_dir: Path | str, tokenizer_dir: Path | str | None = None) -> dict[str, Any]:
    """Build the card and write ``card.json`` and ``card.png`` beside the data."""
    data_dir = Path(data_dir)
    card = build_card(data_dir, tokenizer_dir)
    atomic_write_text(data_dir / "card.json", json.dumps(card, indent=2))
    plot_card(card, data_dir / "card.png")
    card["files"] = [str(data_dir / "card.json"), str(data_dir / "card.png")]
    return card
