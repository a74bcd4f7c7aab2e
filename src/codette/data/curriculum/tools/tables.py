"""Table requests: one statistic or a summary of a CSV column, and columns that do not exist."""

from __future__ import annotations

import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.common import cap, fmt, join_words
from codette.data.curriculum.tools.base import Scenario, pick, quote
from codette.data.curriculum.tools.names import LABELS, TABLES, stem


_OPS = {"mean": ("average", "the average"), "max": ("highest", "the highest"), "min": ("lowest", "the lowest"),
        "sum": ("total", "the total"), "median": ("median", "the median")}
# How people ask about column ``{c}`` of table ``{f}``: a summary, or the statistic ``{w}`` (also the copy
# documents' wording, codette.data.copydocs).
SUMMARY_PROMPTS = ["Summarise the {c} column of {f}.", "Give me statistics for {c} in {f}.",
                   "Describe the {c} values in {f}."]
STAT_PROMPTS = ["What is the {w} {c} in {f}?", "Find the {w} {c} in {f}.", "Using {f}, what is the {w} {c}?"]


def analyze_data(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    fname, label, cols = rng.choice(TABLES)
    if rng.random() < 0.75:  # the same kind of table under a composed name
        fname = stem(rng) + ".csv"
    n = rng.randint(3, 7)
    labels = LABELS[label][:n]
    data_rows = [[rng.randint(1, 300) for _ in cols] for _ in labels]
    csv = ",".join([label, *cols]) + "\n" + "".join(
        ",".join([lab, *map(str, row)]) + "\n" for lab, row in zip(labels, data_rows))
    col = rng.choice(cols)
    kind = rng.choice(["op", "op", "op", "summary"] + (["missing"] if rng.random() < 3 * mix.call_error else []))
    if kind == "missing":
        col = rng.choice([c for _, _, cs in TABLES for c in cs if c not in cols])
    op = rng.choice(list(_OPS))
    if kind == "summary":
        pi, prompt = pick(rng, SUMMARY_PROMPTS)
        args: dict[str, Any] = {"path": fname, "column": col}
    else:
        pi, prompt = pick(rng, STAT_PROMPTS)
        args = {"path": fname, "column": col, "operation": op}
    prompt = prompt.format(c=col, f=fname, w=_OPS[op][0])

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"{fname} has no column named {quote(col)}; its columns are {join_words([label, *cols])}. "
                    f"Did you mean one of {join_words(cols)}?")
        if kind == "summary":
            std = data["std"]
            return (f"{cap(col)} in {fname}: {data['count']} values, mean {fmt(data['mean'])}, min {data['min']}, "
                    f"max {data['max']}, median {fmt(data['median'])}"
                    + (f" and standard deviation {fmt(std)}." if std is not None else "."))
        r = data["result"]
        return f"{cap(_OPS[op][1])} {col} in {fname} is {fmt(r) if isinstance(r, float) else r} ({data['rows']} rows)."

    return Scenario("analyze_data", f"{kind}-{pi}", prompt, "analyze_data", args, {"files": {fname: csv}}, answer,
                    (op if kind != "summary" else "",))
