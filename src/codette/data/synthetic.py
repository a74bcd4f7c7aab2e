"""Synthetic Codette conversations (data v2): perspectives, tools, identity, mixed reasoning.

The curriculum modules (:mod:`codette.data.curriculum`) compose each sample from a template and slot
values chosen by a seeded RNG; tool samples run real tools. A sample's *key* is its (category,
template, slot values) combination; samples are deduplicated by key, and the train/val/test split is
a hash of the key (:mod:`codette.data.split`), so a held-out conversation is a combination that never
occurs in training.

:func:`iter_samples` streams samples in a shuffled category schedule (what ``codette data`` writes,
so 200,000 samples never sit in memory at once); :func:`generate` collects them into lists.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from codette.config import ToolMixConfig
from codette.data.curriculum.common import SYSTEM_PROMPTS, Sample, digest64
from codette.data.curriculum.identity import consciousness_sample
from codette.data.curriculum.mixed import mixed_sample
from codette.data.curriculum.perspectives import perspective_sample, pick_perspective
from codette.data.curriculum.rough import roughen
from codette.data.curriculum.styles import STYLES
from codette.data.curriculum.toolrun import ToolRunner
from codette.data.curriculum.tools.dispatch import pick_tool, tool_sample
from codette.data.curriculum.tools.lists import tools_for
from codette.data.split import split_of
from codette.persona import PERSPECTIVES
from codette.errors import CodetteError

log = logging.getLogger(__name__)

__all__ = ["CATEGORY_SHARES", "PERSPECTIVES", "STYLES", "SYSTEM_PROMPTS", "DatasetStats", "Sample",
           "StatsCollector", "generate", "iter_samples"]

CATEGORY_SHARES = {"perspectives": 0.30, "tools": 0.25, "consciousness": 0.25, "mixed": 0.20}


def _dialogue_text(s: Sample) -> str:
    """The conversation without its system prompt, for counting truly different samples."""
    return json.dumps([m for m in s.messages if m["role"] != "system"], ensure_ascii=False, sort_keys=True)


def _said(s: Sample) -> str:
    """What the user and the assistant say (contents and tool calls): no two samples may share it, so a
    validation conversation can never be a training one with only a different tool result or setup."""
    return json.dumps([{k: m.get(k) for k in ("role", "content", "tool_calls")}
                       for m in s.messages if m["role"] in ("user", "assistant")], ensure_ascii=False, sort_keys=True)


@dataclass
class DatasetStats:
    requested: int
    generated: int
    distinct: int
    train: int
    val: int
    test: int
    shares: dict[str, float]
    overlap: int  # keys that occur in more than one split: 0 by construction, measured anyway
    distinct_texts: int  # conversations whose user+assistant text differs from every other one
    tool_calls: dict[str, int] = field(default_factory=dict)  # tool -> samples calling it ("none": no call)
    tool_errors: int = 0  # samples whose tool call failed and whose answer explains why

    @property
    def distinct_ratio(self) -> float:
        """Distinct conversation texts / samples (1.0 = no two samples say the same thing)."""
        return self.distinct_texts / max(1, self.distinct)


class StatsCollector:
    """Accumulates :class:`DatasetStats` while samples stream past (fingerprints, not texts, are kept)."""

    def __init__(self, requested: int, shares: dict[str, float], val_fraction: float, test_fraction: float) -> None:
        self.requested, self.shares = requested, shares
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.generated = 0
        self.categories: Counter[str] = Counter()
        self.tools: Counter[str] = Counter()
        self.tool_errors = 0
        self.keys: dict[str, set[int]] = {"train": set(), "val": set(), "test": set()}
        self.texts: set[int] = set()

    def add(self, s: Sample) -> str:
        """Record ``s``; returns its split (``train``, ``val`` or ``test``)."""
        split = split_of(s.key, self.val_fraction, self.test_fraction)
        self.keys[split].add(digest64(s.key))
        self.texts.add(digest64(_dialogue_text(s)))
        self.categories[s.category] += 1
        if s.category == "tools":
            self.tools[s.meta.get("tool") or ("chain" if s.meta.get("chain") else "none")] += 1
            self.tool_errors += s.meta.get("tool_ok") is False
        return split

    def stats(self) -> DatasetStats:
        total = sum(self.categories.values())
        tr, va, te = self.keys["train"], self.keys["val"], self.keys["test"]
        return DatasetStats(
            requested=self.requested, generated=self.generated, distinct=total, train=len(tr), val=len(va),
            test=len(te), shares={c: self.categories[c] / max(1, total) for c in self.shares},
            overlap=len((tr & va) | (tr & te) | (va & te)), distinct_texts=len(self.texts),
            tool_calls=dict(sorted(self.tools.items())), tool_errors=self.tool_errors)


# A duplicate is redrawn with the same kind (tool, or perspective) this many times before another
# kind is picked: without it, kinds with fewer distinct combinations would lose their share to the
# others as N grows (at 200,000 samples web_search and query_knowledge_base fell from 8% to 2% of
# the tool conversations).
STICKY_REDRAWS = 25


def _pick_kind(cat: str, rng: random.Random, mix: ToolMixConfig) -> str | None:
    if cat == "tools":
        return pick_tool(rng, mix)
    if cat == "perspectives":
        return pick_perspective(rng)
    return None


# Share of the other categories' conversations shown with a tool list (no call is made): the agent
# and `codette serve` send their tools with every question, identity and perspective ones included.
TOOLS_SHOWN_SHARE = 0.3


def _draw(cat: str, rng: random.Random, runner: ToolRunner, mix: ToolMixConfig, kind: str | None = None) -> Sample:
    if cat == "tools":
        return roughen(tool_sample(rng, runner, mix, kind))
    if cat == "perspectives":
        sample = perspective_sample(rng, kind)
    else:
        sample = {"consciousness": consciousness_sample, "mixed": mixed_sample}[cat](rng)
    if sample.tools is None and rng.random() < TOOLS_SHOWN_SHARE:
        sample.tools = tools_for(rng, None, mix)
    return roughen(sample)


def check_shares(shares: dict) -> dict[str, float]:
    """Category shares as floats; unknown categories, non-numbers and sums other than 1 are errors."""
    unknown = sorted(set(shares) - set(CATEGORY_SHARES))
    if unknown:
        raise CodetteError(f"unknown data category {unknown[0]!r} in data.shares; categories: "
                           f"{', '.join(CATEGORY_SHARES)}")
    out: dict[str, float] = {}
    for k, v in shares.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise CodetteError(f"data.shares.{k} must be a non-negative number, got {v!r}")
        out[k] = float(v)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise CodetteError(f"data.shares must sum to 1, got {sum(out.values()):.3f}")
    return out


def iter_samples(n: int, seed: int = 0, shares: dict[str, float] | None = None, runner: ToolRunner | None = None,
                 collector: StatsCollector | None = None,
                 tool_mix: ToolMixConfig | None = None) -> Iterator[Sample]:
    """``n`` distinct conversations in the configured category shares, in a shuffled order.

    Categories follow an exact quota schedule (shuffled, not sampled), so shares are exact up to
    rounding. A candidate whose key already exists is redrawn, first with the same tool or perspective
    (:data:`STICKY_REDRAWS` times) so that the mix inside a category holds at large N; when the
    template space of a category is too small for its quota the error says so instead of looping
    forever. Tool samples run their
    tools in ``runner`` (a scratch workspace is made and removed when none is given); ``tool_mix`` is the
    mixture inside the tool conversations (default: :class:`~codette.config.ToolMixConfig`'s).
    """
    shares = check_shares(shares or CATEGORY_SHARES)
    mix = tool_mix or ToolMixConfig()
    if n <= 0:
        raise CodetteError("number of samples must be positive")
    rng = random.Random(seed)
    quotas = {c: int(round(n * s)) for c, s in shares.items()}
    quotas[max(quotas, key=lambda c: shares[c])] += n - sum(quotas.values())
    schedule = [c for c, q in quotas.items() for _ in range(q)]
    rng.shuffle(schedule)
    seen: set[int] = set()
    misses: Counter[str] = Counter()
    made: Counter[str] = Counter()
    own_runner = runner is None
    runner = runner or ToolRunner(cache=True)
    try:
        for i, cat in enumerate(schedule):
            kind, tries = _pick_kind(cat, rng, mix), 0
            while True:
                if tries == STICKY_REDRAWS:  # this kind looks exhausted: let another one fill the slot
                    kind, tries = _pick_kind(cat, rng, mix), 0
                tries += 1
                s = _draw(cat, rng, runner, mix, kind)
                if collector is not None:
                    collector.generated += 1
                k, d = digest64(s.key), digest64(_said(s))
                if k not in seen and d not in seen:
                    break
                misses[cat] += 1
                if misses[cat] > 50 * quotas[cat] + 1000:
                    raise CodetteError(f"category {cat!r} ran out of distinct combinations after {made[cat]} "
                                       f"samples; ask for fewer samples (asked {n})")
            seen.update((k, d))
            made[cat] += 1
            if (i + 1) % 20000 == 0:
                log.info("generated %d of %d conversations", i + 1, n)
            yield s
    finally:
        if own_runner:
            runner.close()


def generate(n: int, seed: int = 0, val_fraction: float = 0.1, shares: dict[str, float] | None = None,
             runner: ToolRunner | None = None, test_fraction: float = 0.0,
             tool_mix: ToolMixConfig | None = None) -> tuple[list[Sample], list[Sample], DatasetStats]:
    """:func:`iter_samples` collected into the train and val splits by key, with the dataset statistics.

    ``codette data`` also writes a test split; here ``test_fraction`` is 0 unless asked for, and the
    samples of a test split are counted in the statistics but in neither list.
    """
    shares = check_shares(shares or CATEGORY_SHARES)
    collector = StatsCollector(n, shares, val_fraction, test_fraction)
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for s in iter_samples(n, seed, shares, runner, collector, tool_mix):
        out[collector.add(s)].append(s)
    return out["train"], out["val"], collector.stats()
