"""What every tool conversation is made of: a scenario, the call and tool messages, one- and several-call samples."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.common import Sample, assistant, user, with_agent_system
from codette.data.curriculum.tools.lists import tools_for
from codette.data.curriculum.toolrun import ToolRunner
from codette.tooltable import DEFAULT_TOOLS, tool_schema

# Openings of a one-call request (part of the sample's key).
LEADS = ["", "", "", "", "Hi! ", "Please help: ", "Quick one: ", "Hey Codette! ", "One more task. "]


class Scenario:
    """What one tool conversation needs before the call runs; ``answer`` turns the result into text."""

    def __init__(self, name: str, variant: str, prompt: str, tool: str, arguments: dict[str, Any],
                 setup: dict[str, Any], answer: Callable[[Any, bool], str], slots: tuple) -> None:
        self.name, self.variant, self.prompt, self.tool = name, variant, prompt, tool
        self.arguments, self.setup, self.answer, self.slots = arguments, setup, answer, slots


# A scenario family's maker: one scenario of its tool, with the share of calls that fail from the mix.
MakeScenario = Callable[[random.Random, ToolMixConfig], Scenario]


def call(name: str, arguments: dict[str, Any]) -> dict:
    """The assistant's message that calls ``name`` (OpenAI ``tool_calls``, rendered as Hermes by the template)."""
    return {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def tool_msg(content: str) -> dict:
    return {"role": "tool", "content": content}


def quote(text: str) -> str:
    return f'"{text}"'


def pick(rng: random.Random, options: list[str]) -> tuple[int, str]:
    """An option and its index (the index goes into the sample's key)."""
    i = rng.randrange(len(options))
    return i, options[i]


def first_sentence(text: str) -> str:
    """The first sentence of a knowledge-base or search snippet, as an answer quotes it."""
    text = text.replace(" … ", " ").strip(" …")
    m = re.search(r"^(.{30,}?[.;])(\s|$)", text)
    s = m.group(1) if m else text
    return s.rstrip(";") + ("" if s.endswith(".") else ".")


def build(rng: random.Random, runner: ToolRunner, sc: Scenario, mix: ToolMixConfig) -> Sample:
    """One request, its call, the real result and the answer written from it."""
    li = rng.randrange(len(LEADS))
    result = runner.run(sc.setup, sc.tool, sc.arguments)
    answer = sc.answer(json.loads(result.content), result.ok)
    msgs = with_agent_system(rng, [user(LEADS[li] + sc.prompt), call(sc.tool, sc.arguments),
                                   tool_msg(result.content), assistant(answer)])
    meta = {"tool": sc.tool, "tool_arguments": sc.arguments, "expected_result": result.content,
            "tool_ok": result.ok, "setup": sc.setup, "scenario": sc.name}
    slots = (li, json.dumps(sc.setup, sort_keys=True), json.dumps(sc.arguments, sort_keys=True), *sc.slots)
    return Sample("tools", f"{sc.name}-{sc.variant}", slots, msgs, meta, tools=tools_for(rng, sc.tool, mix))


def calls_sample(rng: random.Random, name: str, variant: str, turns: list[dict],
                 calls: list[tuple], setup: dict[str, Any], tools: list[dict] | None = None) -> Sample:
    """A conversation with several calls; ``meta`` lists them all (``chain``), and carries no single
    reference call, so the one-call probes leave it to the natural set's multi-turn items. A call is
    (tool, arguments, result) or, when each call has its own workspace, (tool, arguments, result, setup).
    ``tools``: the list shown (default: the agent's default tools)."""
    meta = {"tool": None, "tool_arguments": None, "expected_result": None, "tool_ok": None, "setup": setup,
            "scenario": name, "chain": [{"tool": c[0], "arguments": c[1], "result": c[2],
                                         **({"setup": c[3]} if len(c) > 3 else {})} for c in calls]}
    msgs = with_agent_system(rng, turns)
    return Sample("tools", f"{name}-{variant}", (json.dumps(setup, sort_keys=True),
                                                 json.dumps([list(c[:2]) for c in calls], sort_keys=True)),
                  msgs, meta, tools=tools or [tool_schema(t) for t in DEFAULT_TOOLS])
