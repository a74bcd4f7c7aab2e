"""The small types every tool shares: a tool's definition, its result, its two kinds of error, and
the :class:`BoundedRunner` protocol the file parsers are run through.

Two kinds of error, on purpose:

* :class:`ToolError` is a *caller* mistake (unknown tool, arguments that do not match the schema).
  It raises, because the code (or the model's call) must be fixed.
* :class:`ToolFailure` is a tool that ran and could not do its job (file not found, division by
  zero, timeout). The registry turns it into ``ToolResult(ok=False)``: the assistant sees the message
  and must explain it to the user, so it never raises out of :meth:`Toolbox.run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from codette.errors import CodetteError


class ToolError(CodetteError):
    """A call that cannot run as written: unknown tool or invalid arguments (names tool and field)."""


class ToolFailure(Exception):
    """Raised inside a tool when it cannot do its job; becomes ``ToolResult(ok=False)``.

    ``payload`` carries whatever partial result the model should still see (for example the stdout
    of a Python snippet that crashed).
    """

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.payload = dict(payload or {})


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced: ``content`` is the JSON text the model sees as the ``tool`` message."""

    ok: bool
    content: str
    error: str | None = None

    @classmethod
    def success(cls, payload: dict[str, Any]) -> ToolResult:
        return cls(ok=True, content=to_json(payload))

    @classmethod
    def failure(cls, message: str, payload: dict[str, Any] | None = None) -> ToolResult:
        body = dict(payload or {})
        body["error"] = message
        return cls(ok=False, content=to_json(body), error=message)

    @property
    def data(self) -> Any:
        """The content parsed back from JSON (handy in tests and in the data generator)."""
        return json.loads(self.content)


@dataclass
class Tool:
    """One tool: its model-facing name, description and JSON schema, and the function that runs it.

    ``func`` receives the validated arguments as keyword arguments and returns a JSON-serialisable
    dict, or raises :class:`ToolFailure`.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., dict[str, Any]] = field(repr=False)

    def schema(self) -> dict[str, Any]:
        """OpenAI function-calling format, as the chat template's ``tools`` list expects."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class BoundedRunner(Protocol):
    """Where a parser of untrusted bytes runs: a child process bounded in memory and time.

    :class:`codette.tools.bounded.BoundedWorker` is the one the Toolbox makes; the parsers take this
    protocol instead, so they never import the worker (which runs them in its child).
    """

    def call(self, func: Callable[..., dict[str, Any]], data: bytes, what: str, **args: Any) -> dict[str, Any]:
        """``func(data, **args)``'s result; ToolFailure naming ``what`` for its errors, a timeout or a crash."""
        ...


def to_json(payload: Any) -> str:
    """The one JSON encoding of tool results: UTF-8 text kept readable, keys in insertion order."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False)
