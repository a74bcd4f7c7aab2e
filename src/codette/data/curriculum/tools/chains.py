"""Two calls in one conversation: a follow-up turn that refers back to a result, or a chain inside one turn
(a folder listed, then its file read; a column summed, then the total multiplied)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from codette.data.curriculum.common import Sample, assistant, fmt, fmt_big, join_words, user
from codette.data.curriculum.tools.base import call, calls_sample, pick, quote, tool_msg
from codette.data.curriculum.tools.names import LABELS, TABLES, file_name, file_names, folder_name, stem, text_file
from codette.data.curriculum.toolrun import ToolRunner


FOLLOWUPS = [("Now double it.", "{r} * 2"), ("And times 3?", "{r} * 3"), ("now add 10 to that", "{r} + 10"),
             ("What is half of that?", "{r} / 2"), ("Subtract 7 from the result.", "{r} - 7"),
             ("and squared?", "{r} ** 2"), ("Divide that by 4.", "{r} / 4"), ("plus 100?", "{r} + 100")]


def result_text(r: Any) -> str:
    return str(r) if isinstance(r, int) else fmt(r)


def followup(rng: random.Random, runner: ToolRunner) -> Sample:
    """A calculation, then a follow-up that refers back to its result ("now double it")."""
    a, b, op = rng.randint(2, 9999), rng.randint(2, 999), rng.choice(["+", "-", "*"])
    expr = f"{a} {op} {b}"
    pi, prompt = pick(rng, ["What is {e}?", "Calculate {e}.", "{e} = ?", "how much is {e}", "Work out {e}, please."])
    first = runner.run({}, "calculator", {"expression": expr})
    r1 = json.loads(first.content)["result"]
    fi, (ask, template) = pick(rng, FOLLOWUPS)  # type: ignore[arg-type]
    expr2 = template.format(r=result_text(r1))
    second = runner.run({}, "calculator", {"expression": expr2})
    r2 = json.loads(second.content)["result"]
    turns = [user(prompt.format(e=expr)), call("calculator", {"expression": expr}), tool_msg(first.content),
             assistant(f"{expr} = {fmt_big(r1) if isinstance(r1, float) else r1}."), user(ask),
             call("calculator", {"expression": expr2}), tool_msg(second.content),
             assistant(f"{expr2} = {fmt_big(r2) if isinstance(r2, float) else r2}.")]
    return calls_sample(rng, "followup", f"{pi}-{fi}", turns,
                        [("calculator", {"expression": expr}, first.content),
                         ("calculator", {"expression": expr2}, second.content)], {})


def list_then_read(rng: random.Random, runner: ToolRunner) -> Sample:
    """Two calls in one turn: list a folder, then read the one file it holds."""
    folder, name = folder_name(rng), file_name(rng)
    path = f"{folder}/{name}"
    setup = {"files": {path: text_file(rng), **{f: text_file(rng, 1) for f in file_names(rng, rng.randint(0, 2))}}}
    pi, prompt = pick(rng, ["Read the file in the {d} folder.", "What does the file in {d} say?",
                            "open whatever file is in {d}", "There is one file in {d}; what is in it?",
                            "Show me the contents of the file inside {d}."])
    listed = runner.run(setup, "list_directory", {"path": folder})
    read = runner.run(setup, "read_file", {"path": path})
    lines = [ln for ln in json.loads(read.content)["content"].splitlines() if ln.strip()]
    answer = f"The {folder} folder holds {name}, which says: {join_words([quote(ln) for ln in lines])}."
    turns = [user(prompt.format(d=folder)), call("list_directory", {"path": folder}), tool_msg(listed.content),
             call("read_file", {"path": path}), tool_msg(read.content), assistant(answer)]
    return calls_sample(rng, "list_then_read", str(pi), turns,
                        [("list_directory", {"path": folder}, listed.content),
                         ("read_file", {"path": path}, read.content)], setup)


def table_then_calculate(rng: random.Random, runner: ToolRunner) -> Sample:
    """Two calls in one turn: a column's total from a table, then arithmetic on it."""
    fname, label, cols = rng.choice(TABLES)
    fname = stem(rng) + ".csv"
    labels = LABELS[label][: rng.randint(3, 6)]
    col = rng.choice(cols)
    csv = ",".join([label, *cols]) + "\n" + "".join(
        ",".join([lab, *(str(rng.randint(1, 300)) for _ in cols)]) + "\n" for lab in labels)
    setup = {"files": {fname: csv}}
    k = rng.choice([2, 3, 4, 10, 12])
    pi, prompt = pick(rng, ["What is the total {c} in {f} times {k}?", "Add up {c} in {f} and multiply by {k}.",
                            "sum the {c} column of {f}, then x{k}"])
    stats = runner.run(setup, "analyze_data", {"path": fname, "column": col, "operation": "sum"})
    total = json.loads(stats.content)["result"]
    expr = f"{result_text(total)} * {k}"
    calc = runner.run({}, "calculator", {"expression": expr})
    r = json.loads(calc.content)["result"]
    turns = [user(prompt.format(c=col, f=fname, k=k)),
             call("analyze_data", {"path": fname, "column": col, "operation": "sum"}), tool_msg(stats.content),
             call("calculator", {"expression": expr}), tool_msg(calc.content),
             assistant(f"The total {col} in {fname} is {result_text(total)}, and {expr} = {result_text(r)}.")]
    return calls_sample(rng, "table_then_calculate", f"{pi}-{k}", turns,
                        [("analyze_data", {"path": fname, "column": col, "operation": "sum"}, stats.content),
                         ("calculator", {"expression": expr}, calc.content)], setup)


CHAINS: dict[str, Callable[[random.Random, ToolRunner], Sample]] = {
    "followup": followup, "list_then_read": list_then_read, "table_then_calculate": table_then_calculate}
