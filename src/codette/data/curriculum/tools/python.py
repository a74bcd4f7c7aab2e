"""Python requests: small computations, the user's own snippets, and snippets that raise."""

from __future__ import annotations

import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.tools.base import Scenario, pick, quote
from codette.data.curriculum.tools.names import LINES, WORDS

# How people hand over their own snippet ``{c}`` (also the copy documents' wording, codette.data.copydocs).
RUN_PROMPTS = ["Run this Python code: {c}", "What does this print? {c}", "Execute: {c}"]


def _py_task(rng: random.Random) -> tuple[str, str, str]:
    """(code, what it computes, kind) for a small computation."""
    kind = rng.choice(["sum", "squares", "factorial", "fib", "primes", "reverse", "sort", "count", "vowels"])
    n = rng.randint(3, 60)
    word = rng.choice(WORDS + [w.split()[-1] for w in LINES])
    if kind == "sum":
        return f"print(sum(range(1, {n + 1})))", f"the sum of the numbers from 1 to {n}", kind
    if kind == "squares":
        return f"print(sum(i * i for i in range(1, {n + 1})))", f"the sum of the squares from 1 to {n}", kind
    if kind == "factorial":
        n = min(n, 20)
        return f"import math; print(math.factorial({n}))", f"the factorial of {n}", kind
    if kind == "fib":
        return f"print(round(((1 + 5 ** 0.5) / 2) ** {min(n, 70)} / 5 ** 0.5))", f"Fibonacci number {min(n, 70)}", kind
    if kind == "primes":
        n = n * 5
        return (f"print(sum(all(k % d for d in range(2, k)) for k in range(2, {n})))",
                f"how many primes are below {n}", kind)
    if kind == "reverse":
        return f"print({word!r}[::-1])", f"{quote(word)} reversed", kind
    if kind == "sort":
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
        return f"print(sorted({nums}))", f"the numbers {nums} in ascending order", kind
    if kind == "count":
        ch = rng.choice(sorted(set(word)))
        return f"print({word!r}.count({ch!r}))", f"how often {quote(ch)} occurs in {quote(word)}", kind
    return (f"print(sum(1 for c in {word!r} if c in 'aeiou'))", f"how many vowels {quote(word)} has", kind)


def _py_bug(rng: random.Random) -> tuple[str, str, str]:
    """(code, explanation, kind) for a snippet that raises."""
    kind = rng.choice(["value", "zero", "name", "index", "type"])
    word, n = rng.choice(WORDS), rng.randint(1, 99)
    if kind == "value":
        return f"print(int({word!r}))", f"{quote(word)} is not a number, so int() cannot convert it.", kind
    if kind == "zero":
        return f"print({n} / 0)", "dividing by zero is undefined; check the divisor.", kind
    if kind == "name":
        var = rng.choice(["total", "result", "count", "answer"])
        return f"print({var})", f"the name {quote(var)} was never defined; assign it before printing it.", kind
    if kind == "index":
        k = rng.randint(3, 9)
        return (f"print([1, 2, 3][{k}])",
                f"the list has only 3 items, so index {k} is out of range (valid indexes are 0 to 2).", kind)
    return f"print({word!r} + {n})", "a string and a number cannot be added; convert the number with str() first.", kind


def execute_python(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    if rng.random() < mix.call_error:
        code, why, kind = _py_bug(rng)
        pi, prompt = pick(rng, RUN_PROMPTS)

        def answer(data: Any, ok: bool) -> str:
            if ok:
                return f"It printed {data['stdout'].strip()}."
            last = [ln for ln in data["stderr"].strip().splitlines() if ln.strip()][-1].strip()
            return f"The code failed with {last}. In plain words: {why}"
        return Scenario("execute_python", f"bug-{kind}-{pi}", prompt.format(c=code), "execute_python",
                        {"code": code}, {}, answer, ())
    if rng.random() < 0.25:
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        op = rng.choice(["*", "+", "-", "//", "%"])
        code = f"print({a} {op} {b})"
        pi, prompt = pick(rng, RUN_PROMPTS)

        def answer_user(data: Any, ok: bool) -> str:
            return f"It printed {data['stdout'].strip()}." if ok else f"The code failed: {data['error']}."
        return Scenario("execute_python", f"user-{pi}", prompt.format(c=code), "execute_python", {"code": code}, {},
                        answer_user, ())
    code, what, kind = _py_task(rng)
    pi, prompt = pick(rng, ["Use Python to find {w}.", "Run some Python to compute {w}.", "Write and run code for {w}.",
                            "Can you work out {w} with Python?"])
    ai = rng.randrange(2)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return f"The program failed: {data['error']}."
        out = data["stdout"].strip()
        return [f"The program printed {out}, so {what} is {out}.", f"Python says {what} is {out}."][ai]

    return Scenario("execute_python", f"task-{kind}-{pi}-{ai}", prompt.format(w=what), "execute_python",
                    {"code": code}, {}, answer, ())
