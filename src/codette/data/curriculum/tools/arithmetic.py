"""Calculator requests: arithmetic, percentages, roots, powers, and expressions the calculator refuses."""

from __future__ import annotations

import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.common import fmt, fmt_big
from codette.data.curriculum.tools.base import Scenario, pick

# How people ask for an expression ``{e}`` (also the copy documents' wording, codette.data.copydocs).
CALC_PROMPTS = ["What is {e}?", "Calculate {e}.", "Can you compute {e}?", "Please work out {e}.", "How much is {e}?",
                "Use the calculator for {e}."]


def calculator(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    kind = rng.choice(["binary", "binary", "chain", "percent", "sqrt", "power", "error"])
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 50)
    if kind == "binary":
        op = rng.choice(["+", "-", "*", "/"])
        expr = f"{a} {op} {b}"
        pi, prompt = pick(rng, CALC_PROMPTS)
    elif kind == "chain":
        expr = rng.choice([f"({a} + {b}) * {c}", f"{a} * {b} - {c}", f"({a} - {b}) / {c}", f"{a} + {b} * {c}"])
        pi, prompt = pick(rng, ["What is {e}?", "Calculate {e}.", "Evaluate {e} for me."])
    elif kind == "percent":
        p = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 75])
        expr = f"{a} * {p} / 100"
        pi, prompt = pick(rng, [f"What is {p}% of {a}?", f"How much is {p} percent of {a}?"])
    elif kind == "sqrt":
        expr = f"sqrt({a})"
        pi, prompt = pick(rng, [f"What is the square root of {a}?", f"Compute sqrt({a})."])
    elif kind == "power":
        k = rng.randint(2, 6)
        a = rng.randint(2, 40)
        expr = f"{a} ** {k}"
        pi, prompt = pick(rng, [f"What is {a} to the power of {k}?", f"Calculate {a}^{k}."])
    else:
        expr = rng.choice([f"{a} / ({b} - {b})", f"sqrt(-{a})", f"log(0)", f"{a} % 0"])
        pi, prompt = pick(rng, ["What is {e}?", "Calculate {e}."])
    prompt = prompt.replace("{e}", expr)
    ai = rng.randrange(3)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not compute {expr}: the calculator reports \"{data['error']}\". "
                    + ("Division by zero is undefined, so please check the divisor." if "zero" in data["error"]
                       else "The expression is outside the function's domain, so there is no real result."))
        r = data["result"]
        if isinstance(r, int):
            rs, approx = (f"{r:,}" if abs(r) >= 10000 else str(r)), ""
        else:
            rs, approx = fmt_big(r), ("about " if abs(float(fmt(r)) - r) > 1e-9 else "")
        first = f"{expr} is about {rs}." if approx else f"{expr} = {rs}."
        return [first, f"The result is {approx}{rs}.", f"The calculator gives {approx}{rs}."][ai]

    return Scenario("calculator", f"{kind}-{pi}-{ai}", prompt, "calculator", {"expression": expr}, {}, answer,
                    (kind,))
