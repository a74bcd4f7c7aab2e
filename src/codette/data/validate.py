"""Checking one chat record (a JSONL line, a dataset row) before it becomes training data.

A record is ``{"messages": [...], "tools": [...]?}`` or ``{"text": "..."}``. Beyond roles and
content (:func:`codette.tokenizer.chat_template.validate_messages`), OpenAI-style ``tool_calls``
are checked: every call needs a function name and an arguments object (or a JSON string holding
one), and when the record declares ``tools`` a call must name one of them and match its parameter
schema; a record that declares none may only call Codette's own tools (:mod:`codette.tools`), with
arguments that match their schemas. A ``tool`` message must answer a tool call. Every error names where (``file:line``) and what.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from codette.errors import CodetteError
from codette.tokenizer.chat_template import validate_messages
from codette.tooltable import SPECS


def _tool_name(tool: Any, where: str, i: int) -> tuple[str, dict | None]:
    """(name, parameters schema or None) of a declared tool in OpenAI (``function``) or bare form."""
    if not isinstance(tool, dict):
        raise CodetteError(f"{where}: tools[{i}] must be an object, got {type(tool).__name__}")
    fn = tool.get("function", tool)
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        raise CodetteError(f"{where}: tools[{i}] has no function name")
    params = fn.get("parameters")
    return name, params if isinstance(params, dict) else None


def declared_tools(tools: Any, where: str) -> dict[str, dict | None]:
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise CodetteError(f"{where}: 'tools' must be a list of tool schemas")
    return dict(_tool_name(t, where, i) for i, t in enumerate(tools))


def call_arguments(call: Any, where: str) -> tuple[str, dict]:
    """(name, arguments dict) of one ``tool_calls`` entry; arguments may be a JSON string (OpenAI)."""
    if not isinstance(call, dict):
        raise CodetteError(f"{where}: must be an object, got {type(call).__name__}")
    fn = call.get("function", call)
    if not isinstance(fn, dict):
        raise CodetteError(f"{where}: 'function' must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise CodetteError(f"{where}: missing function name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise CodetteError(f"{where} ({name}): arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise CodetteError(f"{where} ({name}): arguments must be a JSON object, got {type(args).__name__}")
    return name, args


def _codette_schemas() -> dict[str, dict]:
    return {name: spec.parameters for name, spec in SPECS.items()}


def validate_tool_calls(messages: list[dict], tools: Any, where: str) -> None:
    declared = declared_tools(tools, where)
    builtin = None if declared else _codette_schemas()
    pending = 0  # tool calls not yet answered by a tool message
    for i, m in enumerate(messages):
        calls = m.get("tool_calls")
        if calls is not None:
            if m["role"] != "assistant":
                raise CodetteError(f"{where}: message {i} ({m['role']}) has tool_calls; only assistant messages may")
            if not isinstance(calls, list) or not calls:
                raise CodetteError(f"{where}: message {i} tool_calls must be a non-empty list")
            for j, call in enumerate(calls):
                cw = f"{where}: message {i} tool call {j + 1}"
                name, args = call_arguments(call, cw)
                if declared and name not in declared:
                    raise CodetteError(f"{cw} calls unknown tool {name!r}; declared tools: {', '.join(declared)}")
                if builtin is not None and name not in builtin:
                    raise CodetteError(f"{cw} calls unknown tool {name!r}: the record declares no 'tools' and "
                                       f"Codette has no such tool ({', '.join(builtin)}); add the tool's schema "
                                       f"to the record's 'tools'")
                schema = declared.get(name) if builtin is None else builtin[name]
                if schema:
                    try:
                        err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
                    except jsonschema.exceptions.SchemaError as exc:
                        raise CodetteError(f"{where}: tool {name!r} has an invalid parameters schema: "
                                           f"{exc.message}") from None
                    if err is not None:
                        field = ".".join(str(p) for p in err.absolute_path) or "(arguments)"
                        raise CodetteError(f"{cw} ({name}): argument {field}: {err.message}")
            pending = len(calls)
        elif m["role"] == "tool":
            if pending <= 0:
                raise CodetteError(f"{where}: message {i} is a tool result without a preceding tool call")
            pending -= 1
        elif m["role"] in ("user", "assistant"):
            pending = 0


def validate_record(obj: Any, where: str) -> dict:
    """The record if it is valid chat (or text) data; CodetteError naming ``where`` otherwise."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str) and "messages" not in obj:
        if not obj["text"].strip():
            raise CodetteError(f"{where}: 'text' is empty")
        return obj
    if not isinstance(obj, dict) or "messages" not in obj:
        raise CodetteError(f"{where}: expected an object with a 'messages' list (or a 'text' string)")
    validate_messages(obj["messages"], where)
    validate_tool_calls(obj["messages"], obj.get("tools"), where)
    if not any(m["role"] == "assistant" for m in obj["messages"]):
        raise CodetteError(f"{where}: conversation has no assistant turn, so there is nothing to learn")
    return obj
