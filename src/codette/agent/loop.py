"""The tool loop: generate, parse the calls, validate, run them, feed the results back, repeat.

One turn, as a generator of :class:`Event` (text deltas, tool calls and results, repairs) that
ends with a ``done`` event carrying the :class:`~codette.agent.response.Response`:

1. The prompt (system prompt and tool schemas, history, this turn) is fitted to the context
   (:mod:`codette.agent.context`) and streamed from the backend.
2. The reply's calls are read with the one parser (:func:`codette.tools.split_tool_calls`, the
   Hermes ``<tool_call>`` markup, whitespace tolerated) plus any structured ``tool_calls`` an HTTP
   server returned. No call: the reply is the final answer.
3. Every call of the reply is validated (known, enabled tool; arguments that match its JSON
   schema) before any runs, also when decoding was constrained to valid calls (``tool_choice`` in the
   sampling settings: the agent's default), since a backend that cannot constrain ignores it. A malformed
   or invalid call gets a *repair turn*: the reply and a
   ``tool`` message with the error go back to the model, at most ``repair_tries`` times per turn;
   after that the turn ends with the error. Repair exchanges stay out of the returned history.
4. Valid calls run in order through :class:`~codette.tools.Toolbox`; each result is a ``tool``
   message, all of them go back before the model continues. A tool that fails (``ok: false``) is a
   result like any other: the model sees the error and explains it. With a ``confirm`` callable, a
   call that changes files (:data:`codette.tooltable.CHANGES_FILES`) is first put to it, and a refusal
   is that call's error ("the user declined write_file"): the model sees it and goes on.
5. After ``max_rounds`` rounds of calls, a reply that still calls tools ends the turn with an error.

Errors while the turn runs (backend down, context overflow, repairs exhausted, ``max_rounds``)
end it with ``Response.error`` set; the agent is ready for the next prompt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codette.agent import context as ctx
from codette.agent import perspectives as persp
from codette.agent.markup import MarkerFilter, MarkupFilter, strip_markers
from codette.agent.metrics import reply_measures
from codette.agent.response import Response, ToolCallRecord
from codette.backends.base import SamplingConfig
from codette.errors import CodetteError
from codette.tools import Toolbox, ToolCall, ToolCallParseError, ToolError, ToolResult, split_tool_calls
from codette.tools.calls import call_from_object
from codette.tooltable import CHANGES_FILES

log = logging.getLogger(__name__)

REPAIR_HINT = 'Write the call again as <tool_call>\n{"name": <tool name>, "arguments": {...}}\n</tool_call>'

# Asked (tool name, arguments) before a call that changes files runs: True runs it; False, or a
# sentence saying why, refuses it. The agent in a user's folder asks; the server and evaluation pass None.
Confirm = Callable[[str, dict[str, Any]], "bool | str"]


@dataclass
class LoopConfig:
    """The loop's limits and decoding settings (greedy by default, so a turn is reproducible)."""

    max_rounds: int = 5
    repair_tries: int = 2
    reply_reserve: int = 32  # tokens kept free for the reply when fitting the context
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.0))

    def __post_init__(self) -> None:
        if self.max_rounds < 0:
            raise CodetteError(f"max_rounds must be 0 or more, got {self.max_rounds}")
        if self.repair_tries < 0:
            raise CodetteError(f"repair_tries must be 0 or more, got {self.repair_tries}")
        if self.reply_reserve < 1:
            raise CodetteError(f"reply_reserve must be at least 1 token, got {self.reply_reserve}")


@dataclass
class Event:
    """``type``: text | tool_call | tool_result | repair | done; ``data`` depends on it."""

    type: str
    data: dict[str, Any]


class Cancelled(CodetteError):
    """The caller stopped the turn through ``stop`` (an async consumer went away, Ctrl-C in the chat)."""


@dataclass
class Turn:
    """What :func:`run_turn` needs: the fixed prompt parts, the history and this turn's opening messages."""

    system: list[dict]
    history: list[dict]
    opening: list[dict]  # the user's message, then image analyses (call + result) if any
    prelude: list[ToolCallRecord]
    tool_schemas: list[dict]
    prompt: str  # what the user typed (for the measures)
    perspectives: list[str]
    question_type: str | None = None
    # Remove the control markers from the streamed text and Response.text (the agent does, for people);
    # off by default so the evaluation scores the model's own text, markers included.
    hide_markers: bool = False
    # The full schemas of the offered tools, which constrained calls are held to (the prompt shows the
    # compact ones); None leaves the sampling's own (the evaluation's turns, which are not constrained).
    call_schemas: list[dict] | None = None


def structured_calls(raw: list[dict[str, Any]], first_index: int) -> list[ToolCall]:
    """Structured ``tool_calls`` from an HTTP server as parsed calls (arguments may be JSON text)."""
    return [call_from_object(tc, i, arguments_required=False) for i, tc in enumerate(raw, first_index)]


def _counter(backend: Any) -> ctx.Counter | None:
    count = getattr(backend, "count_tokens", None)
    limit = getattr(backend, "context_length", None)
    return count if callable(count) and isinstance(limit, int) and limit > 0 else None


def run_turn(backend: Any, toolbox: Toolbox, turn: Turn, cfg: LoopConfig,
             stop: threading.Event | None = None, confirm: Confirm | None = None) -> Iterator[Event]:
    """One turn of the conversation (see the module docstring); the last event is ``done``."""
    t0 = time.perf_counter()
    count = _counter(backend)
    current = list(turn.opening)  # this turn's messages as the model sees them (repairs included)
    kept = list(turn.opening)  # this turn's messages for the history (repairs left out)
    records = list(turn.prelude)
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    gen_seconds = 0.0
    first_token: float | None = None
    model_calls = rounds = repairs = dropped = 0
    text, error = "", None
    tools = turn.tool_schemas or None
    sampling = cfg.sampling
    if turn.call_schemas is not None and sampling.tool_choice not in (None, "none"):
        sampling = dataclasses.replace(sampling, call_schemas=turn.call_schemas)
    while True:
        _check(stop)
        try:
            if count is not None:
                messages, dropped_now = ctx.fit(turn.system, turn.history, current, tools, count,
                                                backend.context_length, cfg.reply_reserve)
                dropped = max(dropped, dropped_now)
            else:
                messages = turn.system + turn.history + current
        except CodetteError as exc:
            error = str(exc)
            break
        if dropped:
            log.debug("context: dropped the %d oldest history turn(s)", dropped)
        filt = MarkupFilter()
        marks = MarkerFilter() if turn.hide_markers else None
        pieces: list[str] = []
        raw_calls: list[dict] = []
        usage: tuple[int | None, int | None] = (None, None)
        started = time.perf_counter()
        stream = backend.stream(messages, tools, sampling)
        try:
            for chunk in stream:
                _check(stop)
                if chunk.text and first_token is None:
                    first_token = time.perf_counter() - t0
                pieces.append(chunk.text)
                raw_calls.extend(chunk.tool_calls)
                if chunk.prompt_tokens is not None or chunk.completion_tokens is not None:
                    usage = (chunk.prompt_tokens, chunk.completion_tokens)
                shown = filt.feed(chunk.text)
                if marks is not None:
                    shown = marks.feed(shown)
                if shown:
                    yield Event("text", {"text": shown, "round": rounds + 1})
        except (Cancelled, GeneratorExit):  # stopped (Ctrl-C, a deadline) or the consumer left
            close = getattr(stream, "close", None)
            if callable(close):  # the backend stops generating now, not when the iterator is collected
                close()
            raise
        except CodetteError as exc:
            error = str(exc)
            log.debug("backend %s failed: %s", getattr(backend, "name", "?"), exc)
            break
        tail = filt.flush()
        if marks is not None:
            tail = marks.feed(tail) + marks.flush()
        if tail:
            yield Event("text", {"text": tail, "round": rounds + 1})
        gen_seconds += time.perf_counter() - started
        model_calls += 1
        prompt_tokens = None if prompt_tokens is None or usage[0] is None else prompt_tokens + usage[0]
        completion_tokens = None if completion_tokens is None or usage[1] is None else completion_tokens + usage[1]
        raw = "".join(pieces)
        log.debug("model reply %d: %r", model_calls, raw)
        try:
            prose, calls = split_tool_calls(raw)
            calls += structured_calls(raw_calls, len(calls))
            for call in calls:
                toolbox.validate(call.name, call.arguments)
        except (ToolCallParseError, ToolError) as exc:
            repairs += 1
            prose = _prose(raw)
            if repairs > cfg.repair_tries:
                text = prose
                error = f"the model's tool call is still invalid after {cfg.repair_tries} repair tries: {exc}"
                log.debug("%s", error)
                break
            log.debug("repair %d/%d: %s", repairs, cfg.repair_tries, exc)
            yield Event("repair", {"error": str(exc), "try": repairs})
            current += [{"role": "assistant", "content": raw.strip() or "(empty)"},
                        {"role": "tool", "content": ToolResult.failure(f"{exc}. {REPAIR_HINT}").content}]
            continue
        if not calls:
            text = raw.strip()
            break
        if rounds >= cfg.max_rounds:
            text = prose
            error = (f"max_rounds ({cfg.max_rounds}) reached: the model still asked for "
                     f"{', '.join(c.name for c in calls)}")
            log.debug("%s", error)
            break
        rounds += 1
        call_msg = {"role": "assistant", "content": prose or None, "tool_calls": [c.to_openai() for c in calls]}
        results = []
        for call in calls:
            _check(stop)
            yield Event("tool_call", {"name": call.name, "arguments": call.arguments, "round": rounds})
            record = run_call(toolbox, call, rounds, confirm)
            records.append(record)
            log.debug("round %d: %s(%s) -> ok=%s in %.3f s", rounds, call.name, json.dumps(call.arguments),
                     record.ok, record.seconds)
            yield Event("tool_result", {"name": call.name, "ok": record.ok, "result": record.result,
                                        "seconds": record.seconds, "round": rounds})
            results.append({"role": "tool", "content": record.result})
        current += [call_msg, *results]
        kept += [call_msg, *results]
    if text:
        kept.append({"role": "assistant", "content": text})
    previous = next((m.get("content") or "" for m in reversed(turn.history) if m.get("role") == "assistant"), "")
    found = persp.split_answer(text, turn.perspectives) if turn.perspectives else None
    metrics: dict[str, Any] = {
        "prompt_tokens": prompt_tokens if model_calls else None,
        "completion_tokens": completion_tokens if model_calls else None,
        "latency_s": time.perf_counter() - t0,
        "first_token_s": first_token,
        "generation_s": gen_seconds,
        "tokens_per_s": (completion_tokens / gen_seconds) if completion_tokens and gen_seconds > 0 else None,
        "tool_rounds": rounds,
        "model_calls": model_calls,
        "repairs": repairs,
        "dropped_turns": dropped,
        **reply_measures(text, turn.prompt, turn.perspectives, found["parts"] if found else None,
                         turn.question_type, previous),
    }
    clean, markers = strip_markers(text)
    response = Response(text=clean.strip() if turn.hide_markers else text, tool_calls=records, perspectives=found,
                        metrics=metrics, messages=kept, error=error, model=describe(backend), markers=markers)
    yield Event("done", {"response": response})


def run_call(toolbox: Toolbox, call: ToolCall, round_no: int, confirm: Confirm | None = None) -> ToolCallRecord:
    """Execute one validated call and time it; a tool's failure (or the user's refusal) is a result."""
    started = time.perf_counter()
    refused = refusal(confirm, call)
    result = ToolResult.failure(refused) if refused else toolbox.run_call(call)
    return ToolCallRecord(call.name, dict(call.arguments), result.content, result.ok,
                          time.perf_counter() - started, round_no, result.error)


def refusal(confirm: Confirm | None, call: ToolCall) -> str | None:
    """Why ``call`` may not run, or None. Only calls that change files are put to ``confirm``."""
    if confirm is None or call.name not in CHANGES_FILES:
        return None
    try:
        answer = confirm(call.name, dict(call.arguments))
    except Exception as exc:  # asking failed: the safe answer is no, and the turn goes on
        log.warning("could not ask about %s: %s", call.name, exc)
        return f"could not ask the user about {call.name} ({type(exc).__name__}); it did not run"
    if answer is True:
        return None
    if isinstance(answer, str) and answer.strip():
        return " ".join(answer.split())
    return f"the user declined {call.name}"


def _check(stop: threading.Event | None) -> None:
    """Stop the turn where it stands (between tokens, before a model call or a tool) once ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise Cancelled("the turn was cancelled")


def _prose(raw: str) -> str:
    """The reply without tool-call markup, even when the markup is broken."""
    filt = MarkupFilter()
    return (filt.feed(raw) + filt.flush()).strip()


def describe(backend: Any) -> str:
    """``name:where`` for a backend (its file, URL or model name)."""
    name = str(getattr(backend, "name", type(backend).__name__))
    for attr in ("path", "url", "model"):
        where = getattr(backend, attr, None)
        if isinstance(where, (str, Path)):
            return f"{name}:{where}"
    return name
