"""What constrained decoding must produce, worked out once for every backend.

A reply can be held to a JSON answer (any JSON object, or a JSON schema) and its tool calls to the
offered tools: the name one of theirs, the arguments valid under that tool's parameters, written in
the one markup the model is trained on (:mod:`codette.tools.calls`). With ``tool_choice="auto"`` the
calls are *lazy*: the reply is free text (or the JSON answer) until the model opens ``<tool_call>``,
and only then does the grammar hold. ``"required"`` makes the reply calls only, a named tool one call
of that tool.

This module only says *what* is asked (:class:`Constraint`, from a :class:`SamplingConfig` and the
tools); each local backend turns it into its engine's grammar: llguidance for the PyTorch backend
(:mod:`codette.backends.guided`), llama.cpp's GBNF for the GGUF one (:mod:`codette.backends.gbnf`).
HTTP backends pass ``response_format`` and ``tool_choice`` on to their server instead.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from codette.errors import CodetteError


class ConstraintError(CodetteError):
    """A constraint that cannot be had (a ``tool_choice`` naming no offered tool); ``param`` is the request
    field it came from, so a server can answer 400 naming it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class UnsupportedSchema(ConstraintError):
    """A schema (or one of its keywords) the backend's grammar cannot express."""

    def __init__(self, message: str, param: str = "response_format") -> None:
        super().__init__(message, param)


class Function(NamedTuple):
    """An offered tool as the grammar needs it: its name and its arguments' JSON schema."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCalls:
    """Which calls the reply may make: ``required`` means calls only (nothing before them), ``parallel``
    more than one. No ``functions`` (never ``required``): the reply opens no call at all."""

    functions: tuple[Function, ...]
    required: bool
    parallel: bool = True


@dataclass(frozen=True)
class Constraint:
    """The reply's shape: ``answer`` is "json" (any object), a JSON schema or None (free text);
    ``calls`` the calls it may make (None: no call is held to a grammar)."""

    answer: str | dict[str, Any] | None
    calls: ToolCalls | None

    @property
    def param(self) -> str:
        """The request field a schema problem is reported against."""
        return "tools" if self.calls is not None and self.answer is None else "response_format"


def function_of(tool: dict[str, Any]) -> Function:
    """An OpenAI-style tool (``{"type": "function", "function": {...}}``, or the inner object) as a Function."""
    f = tool.get("function", tool)
    name = f.get("name")
    if not isinstance(name, str) or not name:
        raise CodetteError("tools: every tool needs a name")
    params = f.get("parameters")
    return Function(name, params if isinstance(params, dict) else {"type": "object", "properties": {}})


def constraint_for(sampling: Any, tools: list[dict] | None) -> Constraint | None:
    """The constraint ``sampling`` asks for with ``tools`` offered, or None for unconstrained decoding.

    Calls are held to ``sampling.call_schemas`` when set (the agent shows a small model compact schemas
    but validates calls against the full ones), else to the offered tools' own parameters. An empty
    ``call_schemas`` with ``"auto"`` holds the reply to free text that opens no call (an agent with no
    tool enabled); no tools at all (a server's plain chat) leave it free.
    """
    choice = getattr(sampling, "tool_choice", None)
    schemas = getattr(sampling, "call_schemas", None)
    offered = schemas if schemas is not None else tools or []
    calls = None
    if choice not in (None, "none"):
        functions = tuple(function_of(t) for t in offered)
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            functions = tuple(f for f in functions if f.name == name)
            if not functions:
                raise ConstraintError(f"tool_choice: no offered tool is named {name!r}", "tool_choice")
            calls = ToolCalls(functions, required=True, parallel=False)
        elif choice == "required" and not functions:
            raise ConstraintError("tool_choice: 'required' needs tools to call", "tool_choice")
        elif functions or schemas is not None:
            calls = ToolCalls(functions, required=choice == "required",
                              parallel=bool(getattr(sampling, "parallel_tool_calls", True)))
    answer = getattr(sampling, "response_format", None)
    if answer is None and calls is None:
        return None
    return Constraint(answer, calls)


def constraint_key(constraint: Constraint) -> str:
    """``constraint`` as text, equal for equal constraints: what the engines' caches of compiled grammars are
    keyed by (the agent asks for the same constraint every round; a tool table's grammar takes milliseconds
    to compile)."""
    calls = constraint.calls
    return json.dumps([constraint.answer, None if calls is None else [calls.functions, calls.required,
                                                                      calls.parallel]])


V = TypeVar("V")


class Kept(Generic[V]):
    """The engines' compiled grammars, the last ``size`` made (keyed by :func:`constraint_key` or the grammar's
    text): the agent asks for the same constraint every round, and compiling a tool table's grammar takes
    milliseconds, a good part of a short reply, where handing out a copy of a kept one takes microseconds.

    ``copy`` is what a caller gets of a kept value (the value itself when it is never changed; a fresh matcher
    or sampler when decoding advances it), made under the lock, so a value is never dropped while it is
    copied; ``drop`` frees a value pushed out (one the engine allocated outside Python)."""

    def __init__(self, size: int, copy: Callable[[V], V] = lambda value: value,
                 drop: Callable[[V], None] = lambda value: None) -> None:
        self._size, self._copy, self._drop = size, copy, drop
        self._values: dict[str, V] = {}  # the newest last
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], V]) -> V:
        """A copy of the value kept for ``key``, made by ``make()`` (outside the lock) when there is none (an
        error ``make`` raises keeps nothing)."""
        with self._lock:
            value = self._values.pop(key, None)
        if value is None:
            value = make()
        with self._lock:
            other = self._values.pop(key, None)  # made by another thread meanwhile
            if other is not None and other is not value:
                self._drop(other)
            self._values[key] = value
            while len(self._values) > self._size:
                self._drop(self._values.pop(next(iter(self._values))))
            return self._copy(value)

    def clear(self) -> None:
        with self._lock:
            while self._values:
                self._drop(self._values.popitem()[1])


def answer_schema(answer: str | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of the answer: "json" is any JSON object (OpenAI's ``json_object``)."""
    return {"type": "object"} if answer == "json" else closed(answer)


def call_schema(functions: tuple[Function, ...]) -> dict[str, Any]:
    """The JSON schema of one call's body, ``{"name": ..., "arguments": {...}}``, over ``functions``."""
    options = []
    for i, f in enumerate(functions):
        where = "#/properties/arguments" if len(functions) == 1 else f"#/anyOf/{i}/properties/arguments"
        options.append({"type": "object", "properties": {"name": {"const": f.name},
                                                         "arguments": closed(f.parameters, where)},
                        "required": ["name", "arguments"], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


def closed(schema: dict[str, Any], at: str = "#") -> dict[str, Any]:
    """A copy of ``schema`` whose objects take no keys beyond their ``properties`` unless it says so, with
    local ``$ref``s moved to where the copy sits (``at``).

    JSON Schema lets an object without ``additionalProperties`` carry any other key; a model held to that
    can invent keys until its token limit. A closed object is still valid under the schema, is what
    OpenAI's strict mode asks for, and is what llama.cpp's converter does anyway, so both engines agree.
    """
    out = copy.deepcopy(schema)
    for _, node in walk(out):
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        ref = node.get("$ref")
        if at != "#" and isinstance(ref, str) and ref.startswith("#/"):
            node["$ref"] = at + ref[1:]
    return out


# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_MAP = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (sub)schema of ``schema`` with its path (``properties.tags.items``), the root first.

    It follows the keywords that hold schemas, so a property that happens to be called ``properties``
    is a name, not a keyword.
    """
    stack = [(path, schema)]
    while stack:
        where, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield where, node
        children: list[tuple[str, Any]] = []
        for key in _ONE:
            if isinstance(node.get(key), dict):
                children.append((key, node[key]))
        for key in _LIST:
            if isinstance(node.get(key), list):
                children += [(f"{key}.{i}", sub) for i, sub in enumerate(node[key])]
        for key in _MAP:
            if isinstance(node.get(key), dict):
                children += [(f"{key}.{name}", sub) for name, sub in node[key].items()]
        stack.extend((f"{where}.{rel}" if where else rel, sub) for rel, sub in reversed(children))
