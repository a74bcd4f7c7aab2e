"""Questions that need no tool, asked while tools are offered: greetings, thanks, which tool or what a tool does,
parity, comparing two numbers, repeating a line. They are answered directly."""

from __future__ import annotations

import random

from codette.config import ToolMixConfig
from codette.data.curriculum.common import NAMES, Sample, assistant, cap, user, with_agent_system
from codette.data.curriculum.tools.base import pick
from codette.data.curriculum.tools.lists import tools_for
from codette.data.curriculum.tools.names import LINES
from codette.tooltable import SPECS, TOOL_NAMES


def no_tool(rng: random.Random, mix: ToolMixConfig) -> Sample:
    """A question that needs no tool, asked while tools are available; answered directly."""
    kind = rng.choice(["greet", "thanks", "which", "parity", "repeat", "what", "compare"])
    name = rng.choice(NAMES)
    if kind == "greet":
        pi, prompt = pick(rng, ["Hi, I'm {n}!", "Hello! My name is {n}.", "Good morning, I'm {n}.",
                                "Hey there, {n} here.", "Good evening! I am {n}."])
        prompt = prompt.format(n=name)
        text = f"Hello, {name}! I'm Codette. No tool is needed to say hello; what can I do for you?"
        slots: tuple = (name,)
    elif kind == "thanks":
        pi, prompt = pick(rng, ["Thanks, {n} here, that helped!", "Thank you! - {n}", "Great, thanks a lot. ({n})"])
        prompt = prompt.format(n=name)
        text = f"You're welcome, {name}! Ask me anytime."
        slots = (name,)
    elif kind == "which":
        t = rng.choice(TOOL_NAMES)
        pi, prompt = pick(rng, ["Which tool would you use to {p}?", "If I asked you to {p}, which tool would you pick?"])
        prompt = prompt.format(p=SPECS[t].purpose.replace("my local", "your local"))
        text = f"I would use {t}. You only asked which one, so I am not calling it now."
        slots = (t,)
    elif kind == "what":
        t = rng.choice(TOOL_NAMES)
        pi, prompt = pick(rng, ["What does your {t} tool do?", "Explain the {t} tool."])
        prompt = prompt.format(t=t)
        text = f"{t} lets me {SPECS[t].purpose}. I call it when a question needs it."
        slots = (t,)
    elif kind == "parity":
        n = rng.randint(1, 100000)
        pi, prompt = pick(rng, ["Is {n} even or odd?", "Is {n} an even number?"])
        prompt = prompt.format(n=n)
        text = (f"{n} is {'even' if n % 2 == 0 else 'odd'}: its last digit is {n % 10}. No tool is needed for that.")
        slots = (n,)
    elif kind == "compare":
        a, b = rng.sample(range(1, 10000), 2)
        pi, prompt = pick(rng, ["Which is larger, {a} or {b}?", "Is {a} bigger than {b}?",
                                "Which number is smaller: {a} or {b}?"])
        prompt = prompt.format(a=a, b=b)
        big, small = max(a, b), min(a, b)
        if pi == 1:
            verdict = f"Yes, {a} is larger than {b}." if a > b else f"No, {a} is smaller than {b}."
        else:
            verdict = f"{small} is smaller than {big}." if pi == 2 else f"{big} is larger than {small}."
        text = verdict + " Comparing two numbers needs no tool."
        slots = (a, b)
    else:
        line = rng.choice(LINES)
        pi, prompt = pick(rng, ["Repeat after me: {l}", "Say this back to me: {l}"])
        prompt = prompt.format(l=line)
        text = f"{cap(line)}."
        slots = (line,)
    msgs = with_agent_system(rng, [user(prompt), assistant(text)])
    meta = {"tool": None, "tool_arguments": None, "expected_result": None, "tool_ok": None, "setup": {},
            "scenario": f"no_tool_{kind}"}
    return Sample("tools", f"none-{kind}-{pi}", slots, msgs, meta, tools=tools_for(rng, None, mix))
