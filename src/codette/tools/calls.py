"""The one tool-call text format (Hermes style) the model writes and the runtime parses.

A call is ``<tool_call>\\n{"name": "...", "arguments": {...}}\\n</tool_call>``. The JSON is written
exactly as the chat template (:mod:`codette.tokenizer.chat_template`) renders an assistant's
``tool_calls``: ``json.dumps`` with default separators, no ASCII escaping and no key sorting, so a
parsed-then-formatted call is byte-identical to the training text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from codette.errors import CodetteError
from codette.tools import limits

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

MAX_CALL_CHARS = 2 * 1024 * 1024   # one call's JSON
MAX_CALL_DEPTH = 32
MAX_TEXT_CHARS = 8 * 1024 * 1024   # a whole reply parsed for calls


class ToolCallParseError(CodetteError):
    """The model wrote a tool call that cannot be executed (bad JSON, no name, arguments not an object)."""


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: the tool's name and its arguments object."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The message-level form (``tool_calls`` entry) the chat template renders back to text."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def format(self) -> str:
        return format_tool_call(self.name, self.arguments)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """One call as the model writes it (identical to the chat template's rendering)."""
    if not isinstance(name, str) or not name:
        raise ToolCallParseError("a tool call needs a non-empty string name")
    if not isinstance(arguments, dict):
        raise ToolCallParseError(f"tool call '{name}': arguments must be an object, got {type(arguments).__name__}")
    return format_tool_call_text(name, _dumps(arguments))


def format_tool_call_text(name: str, arguments_json: str) -> str:
    """The call block with ``arguments_json`` written as given, unchecked: how a server's call whose
    arguments are not an object is passed on, so that the parser, not the writer, reports it."""
    return f"{TOOL_CALL_OPEN}\n{{\"name\": {_dumps(name)}, \"arguments\": {arguments_json}}}\n{TOOL_CALL_CLOSE}"


def format_tool_calls(calls: Iterable[ToolCall]) -> str:
    """Several calls in one assistant turn, separated by a newline as the chat template does."""
    return "\n".join(c.format() for c in calls)


def _parse_block(body: str, index: int) -> ToolCall:
    try:
        obj = limits.loads(body, MAX_CALL_CHARS, MAX_CALL_DEPTH)
    except limits.JSONLimitError as exc:
        raise ToolCallParseError(f"tool call {index + 1}: malformed JSON ({exc})") from None
    return call_from_object(obj, index)


def call_from_object(obj: Any, index: int, arguments_required: bool = True) -> ToolCall:
    """A decoded call (``{"name": ..., "arguments": ...}``) checked into a :class:`ToolCall`.

    Shared by the markup parser and by structured ``tool_calls`` from HTTP servers, so both get the
    same checks and the same length and depth limits on stringified arguments. Servers may leave
    ``arguments`` out or send ``""`` for a call without arguments (``arguments_required=False``).
    """
    where = f"tool call {index + 1}"
    if not isinstance(obj, dict):
        raise ToolCallParseError(
            f"{where}: expected a JSON object with 'name' and 'arguments', got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallParseError(f"{where}: missing 'name' (a non-empty string)")
    if "arguments" not in obj and arguments_required:
        raise ToolCallParseError(f"{where} ('{name}'): missing 'arguments' (use {{}} for none)")
    args = obj.get("arguments", {})
    if isinstance(args, str) and not arguments_required and not args.strip():
        args = {}
    elif isinstance(args, str):
        # OpenAI-style stringified arguments; accept them only when they decode to an object.
        try:
            args = limits.loads(args, MAX_CALL_CHARS, MAX_CALL_DEPTH)
        except limits.JSONLimitError:
            raise ToolCallParseError(f"{where} ('{name}'): 'arguments' must be an object, got a string") from None
    if not isinstance(args, dict):
        raise ToolCallParseError(f"{where} ('{name}'): 'arguments' must be an object, got {type(args).__name__}")
    return ToolCall(name=name, arguments=args)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>`` block in ``text``, in order; an empty list when there is none.

    Raises :class:`ToolCallParseError` for a malformed block or an opening tag without its closing
    tag (a generation cut short), so the caller can tell the model what went wrong.
    """
    return split_tool_calls(text)[1]


# What matters to where a call's JSON ends: an escape (two characters), a quote, a closing tag.
_BODY_TOKENS = re.compile(r'\\.|"|' + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


def _close_after(text: str, start: int) -> int:
    """Where the block whose body starts at ``start`` is closed: the first closing tag outside the body's
    JSON strings (a string may hold the text ``</tool_call>``, as a grammar over characters allows), looked
    for up to the next opening tag; else, as a body that is not JSON has no strings to tell, the first
    closing tag after ``start`` (-1 when there is none). The first search covers each stretch between two
    opening tags once, so a reply is still scanned in linear time."""
    first = text.find(TOOL_CALL_CLOSE, start)
    stop = text.find(TOOL_CALL_OPEN, start)
    in_string = False
    for match in _BODY_TOKENS.finditer(text, start, len(text) if stop < 0 else stop):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif token == TOOL_CALL_CLOSE and not in_string:
            return match.start()
    return first


def _blocks(text: str) -> tuple[list[str], str, bool]:
    """The bodies of the complete ``<tool_call>`` blocks, the text around them, and whether an opening
    tag was left without its closing one.

    A forward scan, linear in ``len(text)`` (see :func:`_close_after`): a lazy regex for the blocks
    rescans the rest of the reply from every opening tag that has no closing tag after it (quadratic time).
    """
    bodies: list[str] = []
    rest: list[str] = []
    pos = 0
    while (start := text.find(TOOL_CALL_OPEN, pos)) >= 0:
        end = _close_after(text, start + len(TOOL_CALL_OPEN))
        if end < 0:  # no later opening tag can be closed either
            break
        rest.append(text[pos:start])
        bodies.append(text[start + len(TOOL_CALL_OPEN):end])
        pos = end + len(TOOL_CALL_CLOSE)
    rest.append(text[pos:])
    return bodies, "".join(rest), start >= 0


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """The assistant's prose (calls removed, whitespace trimmed) and its parsed calls (see :func:`parse_tool_calls`)."""
    if len(text) > MAX_TEXT_CHARS:
        raise ToolCallParseError(f"the reply is longer than {MAX_TEXT_CHARS} characters; no tool call was read")
    bodies, rest, unclosed = _blocks(text)
    calls = [_parse_block(body.strip(), i) for i, body in enumerate(bodies)]
    if unclosed:
        raise ToolCallParseError(f"tool call {len(calls) + 1}: '{TOOL_CALL_OPEN}' without '{TOOL_CALL_CLOSE}'")
    return rest.strip(), calls
