"""Run the natural-prompt set through the agent's tool loop on any backend, with the real tools.

Each item gets what a user of the agent gets: the persona's system prompt, the item's tools as the
compact schemas the model is trained on, and :func:`codette.agent.loop.run_turn` (parse, validate,
repair, run, feed back), one turn per user message, the history carried between turns. The tools are
the real :class:`~codette.tools.Toolbox` on a scratch workspace rebuilt from the item's fixture
(files, images, server clock) before the item starts, and kept through its turns so that a file
written in one turn is there in the next. ``http_request`` reaches a local fixture server that calls
and results name as ``http://localhost:8000`` (:mod:`codette.tools.replay`); ``web_search`` uses the
offline pages; ``execute_python`` runs in the per-call sandbox (the model's code is untrusted).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from codette.agent.loop import LoopConfig, Turn, run_turn
from codette.backends.base import ChatBackend, SamplingConfig
from codette.errors import CodetteError
from codette.evaluate import natural as nat
from codette.persona import DEFAULT_SYSTEM
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.tools import ToolCall, ToolError, ToolResult
from codette.tools.replay import ReplayWorkspace
from codette.tooltable import tool_schema

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 128  # as the behavioral probes
MAX_ROUNDS = 4  # enough for a parallel request made one call per reply
REPAIR_TRIES = 1


class ItemTools(ReplayWorkspace):
    """The loop's toolbox for one item at a time: only the item's tools, on its fixture workspace.

    It answers the two calls :func:`~codette.agent.loop.run_turn` makes (``validate``, ``run_call``)
    and maps the canonical fixture address to the local server, as the replay does.
    """

    def __init__(self) -> None:
        super().__init__(persistent_python=False)
        self.offered: tuple[str, ...] = ()

    def prepare(self, item: nat.Item) -> None:
        """An empty workspace holding the item's fixture; only its tools are offered."""
        with self._lock:
            self._reset()
            self._materialize(item.setup)
        self.offered = item.tools

    def names(self) -> list[str]:
        return list(self.offered)

    def _check_offered(self, name: str) -> None:
        if name not in self.offered:
            raise ToolError(f"unknown tool '{name}'; available: {', '.join(self.offered) or 'none'}")

    def validate(self, name: str, arguments: Mapping[str, Any] | str) -> dict[str, Any]:
        self._check_offered(name)
        return self.toolbox.validate(name, arguments)

    def run_call(self, call: ToolCall) -> ToolResult:
        try:
            self._check_offered(call.name)
        except ToolError as exc:
            return ToolResult.failure(str(exc))
        with self._lock:
            if call.name == "http_request":
                self._real_base()
            args = self._localize(copy.deepcopy(dict(call.arguments)))
            return self._canonical(self.toolbox.run_call(ToolCall(call.name, args)))

    def file_text(self, rel: str) -> str | None:
        """A workspace file's text after the run (None when it is missing or unreadable)."""
        try:
            return (self.ws / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None


def _loop_config(max_new_tokens: int) -> LoopConfig:
    return LoopConfig(max_rounds=MAX_ROUNDS, repair_tries=REPAIR_TRIES,
                      sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0))


def run_item(backend: ChatBackend, item: nat.Item, tools: ItemTools, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """One item through the agent loop, scored (see :mod:`codette.evaluate.natural`)."""
    t0 = time.perf_counter()
    cfg = _loop_config(max_new_tokens)
    tools.prepare(item)
    schemas = [tool_schema(n) for n in item.tools]
    system = [{"role": "system", "content": DEFAULT_SYSTEM}]
    history: list[dict] = []
    made: list[dict[str, Any]] = []
    attempts = 0
    final, errors = "", []
    for turn_no, prompt in enumerate(item.turns):
        turn = Turn(system, history, [{"role": "user", "content": prompt}], [], schemas, prompt, [])
        response = None
        for event in run_turn(backend, tools, turn, cfg):
            if event.type in ("tool_call", "repair"):
                attempts += 1
            elif event.type == "done":
                response = event.data["response"]
        if response is None:  # pragma: no cover - run_turn always ends with done
            raise CodetteError(f"natural item {item.id}: the turn ended without a response")
        made += [{"name": c.name, "arguments": c.arguments, "ok": c.ok, "result": c.result, "turn": turn_no}
                 for c in response.tool_calls]
        if response.error:
            errors.append(f"turn {turn_no + 1}: {response.error}")
        history = history + response.messages
        final = response.text
    out: dict[str, Any] = {"id": item.id, "category": item.category, "kind": item.kind, "turns": list(item.turns),
                           "calls": made, "final": final}
    if errors:
        out["error"] = "; ".join(errors)
    if item.kind == "tool":
        files = {p: tools.file_text(p) for p in item.state}
        out["score"] = nat.score_tool_item(item, made, final, files)
    elif item.kind == "abstain":
        out["score"] = {"abstained": int(attempts == 0)}
    elif item.kind == "identity":
        reference = {"yes": "Yes.", "no": "No."}.get(item.polarity or "", "")
        out["score"] = idm.score_identity(final, item.qtype or "identity", reference).as_dict()
    else:
        out["score"] = pm.score_perspective(final, item.perspective or "", item.turns[-1]).as_dict()
    out["seconds"] = time.perf_counter() - t0
    return out


def run_natural(backend: ChatBackend, items: tuple[nat.Item, ...] | None = None,
                max_new_tokens: int = MAX_NEW_TOKENS,
                on_result: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """Every item (default: the packaged set) through ``backend``; ``on_result(i, n, result)`` reports progress."""
    items = nat.load_set().items if items is None else items
    results = []
    with ItemTools() as tools:
        for i, item in enumerate(items):
            r = run_item(backend, item, tools, max_new_tokens)
            results.append(r)
            if on_result:
                on_result(i, len(items), r)
    return results


def natural_report(backend: ChatBackend, max_new_tokens: int = MAX_NEW_TOKENS,
                   on_result: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """``eval.json``'s ``natural`` section and the per-item results (popped by the CLI into their own file)."""
    natural_set = nat.load_set()
    log.info("natural-prompt set v%d: %d items", natural_set.version, len(natural_set.items))
    results = run_natural(backend, natural_set.items, max_new_tokens, on_result)
    summary = nat.summarize(results, natural_set.items)
    counts = dict(Counter(item.category for item in natural_set.items))
    return {"natural": {"set": {"source": natural_set.source, "version": natural_set.version,
                                "sha256": natural_set.sha256, "items": len(natural_set.items),
                                "by_category": counts}, **summary},
            "natural_results": results}
