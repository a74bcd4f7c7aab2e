"""Run the natural-prompt set through the agent's tool loop on any backend, with the real tools.

Each item gets what a user of the agent gets: the persona's system prompt, the item's tools as the
compact schemas the model is trained on, and :func:`codette.agent.loop.run_turn` (parse, validate,
repair, run, feed back), one turn per user message, the history carried between turns. The tools are
the real :class:`~codette.tools.Toolbox` on a scratch workspace rebuilt from the item's fixture
(files, images, server clock) before the item starts, and kept through its turns so that a file
written in one turn is there in the next. ``http_request`` reaches a local fixture server that calls
and results name as ``http://localhost:8000`` (:mod:`codette.tools.replay`); ``web_search`` uses the
offline pages; ``execute_python`` runs in the per-call sandbox (the model's code is untrusted).

As in the agent, tool calls are held while decoding to the item's tools by their full schemas (a lazy
``tool_choice="auto"``: free text until the model opens ``<tool_call>``), on backends that can hold
them; ``constrain=False`` (``codette eval --natural --no-constrain``) decodes freely, which is what the
model writes on its own. Calls are validated, and repaired, either way.

Besides the natural set's own figures, every reply that opens a ``<tool_call>`` (first tries and
repairs alike) is scored as the probes score a call: ``json_valid`` (every block parses) and
``args_valid`` (every call names an offered tool, with arguments valid under its full schema), and
``finished``: the share of them whose end the local backends' finishing policy wrote, because the model's
own call would not have ended inside the reply's token budget (:mod:`codette.backends.finish`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from codette.agent.loop import LoopConfig, Turn, run_turn
from codette.backends.base import ChatBackend, Chunk, SamplingConfig, collect, reply_text
from codette.errors import CodetteError
from codette.evaluate import natural as nat
from codette.persona import DEFAULT_SYSTEM
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.scoring.stats import proportion
from codette.tools import TOOL_CALL_OPEN, ToolCall, ToolCallParseError, ToolError, ToolResult, split_tool_calls
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


class RecordedReplies:
    """``backend`` as the tool loop sees it, keeping the text of every reply it streams (``texts``) and whether
    the local backends' finishing policy wrote its end to fit the token budget (``finished``, see
    :mod:`codette.backends.finish`; False on backends without one)."""

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.texts: list[str] = []
        self.finished: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        chunks = []
        for chunk in self.backend.stream(messages, tools, sampling):
            chunks.append(chunk)
            yield chunk
        self.texts.append(reply_text(collect(chunks)))
        self.finished.append(getattr(self.backend, "finished_at", None) is not None)


def written_calls(text: str, tools: ItemTools, finished: bool = False) -> dict[str, int] | None:
    """A reply that opens a tool call, scored: ``json_valid`` (every block parses), ``args_valid`` (and every
    call is of an offered tool, with arguments valid under its schema), ``finished`` (the finishing policy,
    not the model, wrote its end to fit the token budget); None for a reply without a call."""
    if TOOL_CALL_OPEN not in text:
        return None
    scored = {"json_valid": 1, "args_valid": 1, "finished": int(finished)}
    try:
        _, calls = split_tool_calls(text)
    except ToolCallParseError:
        return {**scored, "json_valid": 0, "args_valid": 0}
    try:
        for call in calls:
            tools.validate(call.name, call.arguments)
    except ToolError:
        return {**scored, "args_valid": 0}
    return scored


def _loop_config(max_new_tokens: int, constrain: bool = True) -> LoopConfig:
    return LoopConfig(max_rounds=MAX_ROUNDS, repair_tries=REPAIR_TRIES,
                      sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                                              tool_choice="auto" if constrain else None))


def run_item(backend: ChatBackend, item: nat.Item, tools: ItemTools, max_new_tokens: int = MAX_NEW_TOKENS,
             constrain: bool = True) -> dict:
    """One item through the agent loop, scored (see :mod:`codette.evaluate.natural`)."""
    t0 = time.perf_counter()
    cfg = _loop_config(max_new_tokens, constrain)
    tools.prepare(item)
    schemas = [tool_schema(n) for n in item.tools]
    full = tools.toolbox.schemas(item.tools)  # what held calls must match (none: the reply opens no call)
    system = [{"role": "system", "content": DEFAULT_SYSTEM}]
    history: list[dict] = []
    made: list[dict[str, Any]] = []
    attempts = 0
    final, errors = "", []
    replies = RecordedReplies(backend)
    for turn_no, prompt in enumerate(item.turns):
        turn = Turn(system, history, [{"role": "user", "content": prompt}], [], schemas, prompt, [],
                    call_schemas=full)
        response = None
        for event in run_turn(replies, tools, turn, cfg):
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
    written = [w for w in (written_calls(t, tools, f) for t, f in zip(replies.texts, replies.finished))
               if w is not None]
    out: dict[str, Any] = {"id": item.id, "category": item.category, "kind": item.kind, "turns": list(item.turns),
                           "calls": made, "written": written, "final": final}
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
                on_result: Callable[[int, int, dict], None] | None = None,
                constrain: bool = True) -> list[dict]:
    """Every item (default: the packaged set) through ``backend``; ``on_result(i, n, result)`` reports progress."""
    items = nat.load_set().items if items is None else items
    results = []
    with ItemTools() as tools:
        for i, item in enumerate(items):
            r = run_item(backend, item, tools, max_new_tokens, constrain)
            results.append(r)
            if on_result:
                on_result(i, len(items), r)
    return results


def natural_report(backend: ChatBackend, max_new_tokens: int = MAX_NEW_TOKENS,
                   on_result: Callable[[int, int, dict], None] | None = None,
                   constrain: bool = True) -> dict[str, Any]:
    """``eval.json``'s ``natural`` section and the per-item results (popped by the CLI into their own file);
    the section says whether tool calls were held while decoding (``constrained``)."""
    natural_set = nat.load_set()
    log.info("natural-prompt set v%d: %d items, tool calls %s", natural_set.version, len(natural_set.items),
             "held to the tools' schemas" if constrain else "decoded freely")
    results = run_natural(backend, natural_set.items, max_new_tokens, on_result, constrain)
    summary = nat.summarize(results, natural_set.items)
    written = [w for r in results for w in r.get("written", [])]
    for key in ("json_valid", "args_valid", "finished"):  # over the replies that open a call
        summary["figures"][key] = proportion([w[key] for w in written]).as_dict()
    counts = dict(Counter(item.category for item in natural_set.items))
    return {"natural": {"set": {"source": natural_set.source, "version": natural_set.version,
                                "sha256": natural_set.sha256, "items": len(natural_set.items),
                                "by_category": counts}, "constrained": constrain, **summary},
            "natural_results": results}
