"""The sample chats ``codette eval`` and the quickstart print, as a user would meet them, each checked.

Every prompt goes through the agent's tool loop (:func:`codette.agent.loop.run_turn`) with the
persona's system prompt and the agent's default tools, on a real toolbox in a scratch workspace,
greedy. A chat is ``right`` when its check holds:

* ``identity``: the identity score of :mod:`codette.scoring.identity` is 1 (the facts asked for, no
  contradiction);
* ``perspective``: the reply is in the asked perspective (marker and style, :mod:`codette.scoring.perspective`);
* ``calculator``: the model called ``calculator`` with the request's expression and the reply states
  its result;
* ``several``: at least two perspectives marked in the reply, and no tool called.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codette.agent.loop import LoopConfig, Turn, run_turn
from codette.backends.base import ChatBackend, SamplingConfig
from codette.errors import CodetteError
from codette.persona import DEFAULT_SYSTEM, PERSPECTIVE_MARK
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.tools import Toolbox
from codette.tooltable import DEFAULT_TOOLS, tool_schema


@dataclass(frozen=True)
class Showcase:
    prompt: str
    check: str  # identity | perspective | calculator | several
    expected: str = ""  # the perspective, or the calculator's expression


SHOWCASE = [
    Showcase("Who are you?", "identity"),
    Showcase("Explain a lighthouse from the Newton perspective.", "perspective", "newton"),
    Showcase("What is 144 * 12?", "calculator", "144 * 12"),
    Showcase("Think about a thunderstorm from several perspectives.", "several"),
]
_MARKED = re.compile(re.escape(PERSPECTIVE_MARK) + r"\s*([a-z_]+)")


def _number(text: str) -> str:
    return text.replace(",", "")


def verdict(case: Showcase, reply: str, calls: list[dict[str, Any]]) -> tuple[bool, str]:
    """(right, why) for one chat."""
    if case.check == "identity":
        s = idm.score_identity(reply, "identity", "")
        return bool(s.score), "identity facts present" if s.score else f"missing {s.missing or s.contradictions}"
    if case.check == "perspective":
        s = pm.score_perspective(reply, case.expected, case.prompt)
        return bool(s.adherent), f"marker {s.marker}, style {s.style}"
    if case.check == "calculator":
        call = next((c for c in calls if c["name"] == "calculator"), None)
        if call is None:
            return False, "no calculator call"
        if call["arguments"].get("expression", "").replace(" ", "") != case.expected.replace(" ", ""):
            return False, f"calculator called with {call['arguments']}"
        try:
            result = str(json.loads(call["result"]).get("result", ""))
        except (ValueError, AttributeError):
            result = ""
        return (bool(result) and result in _number(reply)), f"result {result or 'missing'}"
    marked = set(_MARKED.findall(reply))
    if calls:
        return False, f"called {calls[0]['name']}"
    return len(marked) >= 2, f"perspectives marked: {', '.join(sorted(marked)) or 'none'}"


def sample_chats(backend: ChatBackend, samples: int, max_new_tokens: int = 96,
                 on_result: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """The first ``samples`` showcase chats: reply, the calls made, and the verdict; ``on_result(i, n, chat)``
    after each."""
    names = list(DEFAULT_TOOLS)  # as the agent offers them: execute_python off
    cfg = LoopConfig(max_rounds=3, repair_tries=1,
                     sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0))
    chats = []
    with tempfile.TemporaryDirectory(prefix="codette-showcase-") as ws, \
            Toolbox(Path(ws), enabled=names) as toolbox:
        schemas = [tool_schema(n) for n in names]
        cases = SHOWCASE[:samples]
        for i, case in enumerate(cases):
            chats.append(_chat(backend, toolbox, schemas, cfg, case))
            if on_result:
                on_result(i, len(cases), chats[-1])
    return chats


def _chat(backend: ChatBackend, toolbox: Toolbox, schemas: list[dict], cfg: LoopConfig, case: Showcase) -> dict:
    """One showcase case through the tool loop: the reply, the calls made and the verdict."""
    turn = Turn([{"role": "system", "content": DEFAULT_SYSTEM}], [],
                [{"role": "user", "content": case.prompt}], [], schemas, case.prompt, [])
    response = None
    try:
        for event in run_turn(backend, toolbox, turn, cfg):
            if event.type == "done":
                response = event.data["response"]
    except CodetteError as exc:
        return {"user": case.prompt, "assistant": f"(no reply: {exc})", "tool_calls": [],
                "check": case.check, "right": False, "why": str(exc)}
    calls = [{"name": c.name, "arguments": c.arguments, "ok": c.ok, "result": c.result}
             for c in (response.tool_calls if response else [])]
    reply = (response.text if response else "") or (response.error if response and response.error else "")
    right, why = verdict(case, reply, calls)
    return {"user": case.prompt, "assistant": reply, "tool_calls": calls,
            "check": case.check, "right": right, "why": why}
