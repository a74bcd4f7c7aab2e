"""The model's text as OpenAI chat-completion objects: tool-call markup parsed, stop sequences applied.
The reply helpers (:class:`Collected`, :class:`Shown`, :func:`whole_reply`) serve Ollama's routes too.

A reply is the model's raw text. With tools offered (and ``tool_choice`` not ``none``), its Hermes
``<tool_call>`` blocks become structured ``tool_calls`` (ids ``call_...``, arguments as JSON text, as
OpenAI sends them) and the prose around them is the ``content``. A block that does not parse is left
in ``content`` as the model wrote it, so the client sees what happened. ``stop`` sequences end the
reply where the first one begins, and are not part of it (OpenAI's rule).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from codette.agent.markup import MarkerFilter, MarkupFilter, partial_tail, strip_markers
from codette.tools import ToolCallParseError, split_tool_calls
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_BLOCKS = re.compile(re.escape(TOOL_CALL_OPEN) + r".*?(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)


def sse(obj: Any) -> str:
    """One server-sent event carrying ``obj`` as JSON (OpenAI's streaming wire format)."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class StopScan:
    """Cut streamed text at the first stop sequence; text that may begin one is held back."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = list(stops or [])
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return buf[: min(hits)]
        keep = max(partial_tail(buf, s) for s in self.stops)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return "" if self.stopped else rest


class Collected:
    """A reply as its pieces arrive: text after the stop scan, structured calls, the token counts."""

    def __init__(self, stops: list[str] | None) -> None:
        self.scan = StopScan(stops)
        self.parts: list[str] = []
        self.structured: list[dict[str, Any]] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.reason: str | None = None

    def add(self, piece: Any) -> str:
        """Take one backend ``Chunk``; returns its text that is now final (held-back stop prefixes aside)."""
        text = self.scan.feed(piece.text)
        self.parts.append(text)
        self.structured.extend(piece.tool_calls)
        if piece.prompt_tokens is not None:
            self.prompt_tokens = piece.prompt_tokens
        if piece.completion_tokens is not None:
            self.completion_tokens = piece.completion_tokens
        self.reason = piece.finish_reason or self.reason
        return text

    @property
    def stopped(self) -> bool:
        return self.scan.stopped

    def end(self) -> str:
        """The reply has ended: the held-back tail, now final."""
        tail = self.scan.flush()
        self.parts.append(tail)
        return tail

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def calls(self, tools_on: bool, text: str | None = None) -> tuple[str | None, list[dict[str, Any]]]:
        """``(content, tool_calls)``: the markup's calls, then any structured ones a backend returned."""
        content, calls = split_reply(self.text if text is None else text, tools_on)
        return content, calls + structured_calls(self.structured)

    def finish(self, calls: list[dict[str, Any]]) -> str:
        return finish_reason(calls, self.reason, self.stopped)

    def usage(self) -> dict[str, int] | None:
        return usage(self.prompt_tokens, self.completion_tokens)


def whole_reply(reply: Collected, tools_on: bool, raw: bool,
                strip: bool = True) -> tuple[str | None, list[dict[str, Any]]]:
    """``(content, tool_calls)`` of a reply that has ended, content without the control markers unless
    ``raw`` (they are the model's, not the reader's), and without surrounding blanks when ``strip``."""
    content, calls = reply.calls(tools_on, reply.text.strip() if strip else reply.text)
    if content and not raw:
        content = strip_markers(content)[0].strip()
    return content, calls


class Shown:
    """A streamed reply as a reader sees it, whatever the wire format (OpenAI's events, Ollama's lines):
    stop sequences applied, tool-call markup held back while tools are on, control markers left out
    unless ``raw``. A marker or tag split across pieces is held until it is whole."""

    def __init__(self, stops: list[str] | None, tools_on: bool, raw: bool) -> None:
        self.reply = Collected(stops)
        self.tools_on = tools_on
        self._hide = MarkupFilter() if tools_on else None
        self._marks = None if raw else MarkerFilter()

    def add(self, piece: Any) -> str:
        """Take one backend ``Chunk``; returns the text to show now (maybe empty)."""
        return self._show(self.reply.add(piece), final=False)

    @property
    def stopped(self) -> bool:
        return self.reply.stopped

    def end(self) -> tuple[str, list[dict[str, Any]]]:
        """The reply has ended: ``(text still to show, tool_calls)``; markup that did not parse is shown
        as written, so nothing is silently dropped."""
        shown = self._show(self.reply.end(), final=True)
        _, calls = self.reply.calls(self.tools_on)
        if self.tools_on and not calls:
            shown += hidden_blocks(self.reply.text)
        return shown, calls

    def _show(self, text: str, final: bool) -> str:
        if self._hide:
            text = self._hide.feed(text) + (self._hide.flush() if final else "")
        if self._marks:
            text = self._marks.feed(text) + (self._marks.flush() if final else "")
        return text


def structured_calls(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Structured calls a backend returned (an upstream HTTP server) in OpenAI's wire form."""
    out = []
    for tc in raw:
        args = tc.get("arguments", {})
        out.append({"id": new_id("call_"), "type": "function",
                    "function": {"name": tc.get("name", ""),
                                 "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}})
    return out


def split_reply(text: str, tools_on: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """``(content, tool_calls)`` of a whole reply, in OpenAI's message form."""
    if not tools_on or TOOL_CALL_OPEN not in text:
        return text, []
    try:
        prose, calls = split_tool_calls(text)
    except ToolCallParseError:
        return text, []
    wire = [{"id": new_id("call_"), "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}} for c in calls]
    return (prose or None), wire


def hidden_blocks(text: str) -> str:
    """The ``<tool_call>`` blocks of ``text`` (what a streamed reply held back), for a reply whose calls
    did not parse."""
    return "".join(_BLOCKS.findall(text))


def finish_reason(calls: list[dict[str, Any]], backend_reason: str | None, stopped: bool) -> str:
    if calls:
        return "tool_calls"
    if stopped:
        return "stop"
    return "length" if backend_reason == "length" else "stop"


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int] | None:
    if prompt_tokens is None or completion_tokens is None:
        return None
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, content: str | None, calls: list[dict[str, Any]], reason: str,
               use: dict[str, int] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
            "usage": use}


def chunk(cid: str, model: str, delta: dict[str, Any] | None, reason: str | None = None,
          use: dict[str, int] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk (no choices)."""
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model, "choices": []}
    if delta is not None:
        out["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
    if use is not None:
        out["usage"] = use
    return out


def call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each call as a ``tool_calls`` delta (whole: the calls are known once the reply has ended)."""
    return [{"tool_calls": [{"index": i, **c}]} for i, c in enumerate(calls)]
