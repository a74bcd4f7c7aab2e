"""Constrained decoding for the GGUF backend: a :class:`~codette.backends.constraints.Constraint` as
llama.cpp's GBNF grammar.

The JSON parts come from llama-cpp-python's JSON-schema converter (``SchemaConverter``). Its grammar
is over characters, not tokens, so the tool-call markers are the text ``<tool_call>``, whichever
tokens spell it. The lazy case is one grammar whose root is free text that never contains
``<tool_call>`` followed, optionally, by the calls: ``root ::= text calls?``. That free text is a
small automaton (:func:`text_avoiding`), one rule per matched prefix of the marker. It costs nothing
while the model writes free text: the backend checks the model's own pick against the grammar and masks
only a step whose pick it refuses (:class:`codette.backends.gguf.Hold`).

The converter skips keywords it cannot express (``minimum`` on an integer, ``uniqueItems``) without a
word, which would let invalid output through; :func:`check_schema` refuses them by name instead. Integer
ranges are the one exception worth having: a small one becomes an ``enum`` of its values. Long length
bounds are the one thing relaxed (see :func:`_cap_repeats`).
"""

from __future__ import annotations

import copy
from typing import Any

from codette.backends.constraints import (Constraint, Kept, UnsupportedSchema, answer_schema, call_schema,
                                          constraint_key, walk)

# What the converter turns into grammar; annotations change nothing about the text.
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
                      "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
                      "minLength", "maxLength", "pattern", "format", "minimum", "maximum"})
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                         "readOnly", "writeOnly", "x-guidance"})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
MAX_RANGE = 1024  # integer values an enum may list
MAX_REPEAT = 256  # the longest bounded string or array a grammar spells out (see _cap_repeats)


def check_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """``schema`` ready for the converter, or :class:`UnsupportedSchema` naming the first keyword llama.cpp's
    grammar cannot express and where it is.

    Ready means: annotations dropped (the converter takes ``{"description": ...}`` for a type it does not
    know), small integer ranges written as enums, and "one of these keys is required" (``anyOf`` branches
    that only list ``required``, as search_files has) spelt out as one object per branch.
    """
    schema = copy.deepcopy(schema)
    for path, node in walk(schema):
        where = f" (at {path})" if path else ""
        for key in [k for k in node if k in ANNOTATIONS]:
            del node[key]
        for key in node:
            if key not in KEYWORDS:
                raise UnsupportedSchema(f"{param}: the grammar cannot express the JSON-schema keyword "
                                        f"{key!r}{where}", param)
        _spell_out_required(node)
        _cap_repeats(node, param, where)
        if "format" in node and node["format"] not in FORMATS:
            raise UnsupportedSchema(f"{param}: the grammar cannot express the string format {node['format']!r}"
                                    f"{where}; it knows {', '.join(sorted(FORMATS))}", param)
        if "minimum" in node or "maximum" in node:
            _range_as_enum(node, param, where)
    return schema


def _spell_out_required(node: dict[str, Any]) -> None:
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if "properties" in node and isinstance(branches, list) and all(
                isinstance(b, dict) and set(b) <= {"required"} | ANNOTATIONS for b in branches):
            base = {k: v for k, v in node.items() if k != key}
            node.clear()
            node["anyOf"] = [{**base, "required": sorted({*base.get("required", []), *b.get("required", [])})}
                             for b in branches]
            return


def _cap_repeats(node: dict[str, Any], param: str, where: str) -> None:
    """The converter spells a bound of n as n nested groups, and llama.cpp refuses (and then crashes on) a
    grammar with about a thousand of them: a ``maxLength`` or ``maxItems`` past :data:`MAX_REPEAT` is left
    out (write_file's content may be a megabyte: no reply gets near it; the agent validates every call)."""
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if isinstance(node.get(low), int) and node[low] > MAX_REPEAT:
            raise UnsupportedSchema(f"{param}: the grammar cannot express {low} above {MAX_REPEAT}{where}", param)
        if isinstance(node.get(high), int) and node[high] > MAX_REPEAT:
            del node[high]


def _range_as_enum(node: dict[str, Any], param: str, where: str) -> None:
    low, high = node.get("minimum"), node.get("maximum")
    small = (node.get("type") == "integer" and isinstance(low, int) and isinstance(high, int)
             and 0 <= high - low < MAX_RANGE)
    if not small:
        raise UnsupportedSchema(f"{param}: the grammar can express 'minimum' and 'maximum' only together, on an "
                                f"integer, over at most {MAX_RANGE} values{where}", param)
    for key in ("type", "minimum", "maximum"):
        del node[key]
    node["enum"] = list(range(low, high + 1))


def text_avoiding(word: str, name: str) -> list[str]:
    """GBNF rules ``name-0`` .. for any text that never contains ``word``; rule k is "the text so far ends
    with the first k characters of ``word``", and the text may end in every one of them."""

    def step(k: int, char: str) -> int:  # the longest end of word[:k] + char that begins word
        text = word[:k] + char
        return next(n for n in range(min(len(text), len(word)), -1, -1) if text.endswith(word[:n]))

    chars = sorted(set(word))
    rules = []
    for k in range(len(word)):
        options, named = ['""'], []
        for char in chars:
            j = step(k, char)
            if j > 0:
                named.append(char)
                if j < len(word):  # j == len(word) would complete the word: no option
                    options.append(f'"{_escape(char)}" {name}-{j}')
        options.append(f"[^{''.join(_escape(c, '-^]') for c in named)}] {name}-0")
        rules.append(f"{name}-{k} ::= " + " | ".join(options))
    return rules


def _escape(char: str, more: str = "") -> str:
    return f"\\{char}" if char in '"\\' + more else char


_KEPT: Kept[str] = Kept(32)


def gbnf_grammar(constraint: Constraint) -> str:
    """The GBNF grammar (root rule ``root``) of ``constraint``. The agent asks for the same one every round,
    and converting the whole tool table takes a noticeable part of a second, so the last few are kept."""
    return _KEPT.get(constraint_key(constraint), lambda: _build(constraint))


def _build(constraint: Constraint) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN  # here: codette.tools loads every tool

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    rules: list[str] = []
    if constraint.answer is not None:
        answer = _visit(converter, answer_schema(constraint.answer), "answer", "response_format")
    calls = constraint.calls
    if calls is not None and calls.functions:
        body = _visit(converter, call_schema(calls.functions), "call-body", "tools")
        more = ' ("\\n" tc-call)*' if calls.parallel else ""
        rules += [f'tc-call ::= "{TOOL_CALL_OPEN}\\n" {body} "\\n{TOOL_CALL_CLOSE}"', f"tc-calls ::= tc-call{more}"]
    if calls is None or (not calls.functions and constraint.answer is not None):
        root = answer
    elif not calls.functions:  # no tool to call: text that never opens a call
        root = "tc-text-0"
        rules += text_avoiding(TOOL_CALL_OPEN, "tc-text")
    elif calls.required:
        root = "tc-calls"
    elif constraint.answer is not None:
        root = f"{answer} | tc-calls"
    else:
        root = "tc-text-0 tc-calls?"
        rules += text_avoiding(TOOL_CALL_OPEN, "tc-text")
    return "\n".join([f"root ::= {root}", _strict_strings(converter.format_grammar()), *rules])


# A JSON string's characters (RFC 8259): control characters only escaped. llama-cpp-python's converter lets
# raw ones through (a newline inside a path), which ``json.loads`` refuses; llama.cpp's own converter and
# llguidance exclude them as here.
JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def _strict_strings(grammar: str) -> str:
    lines = grammar.splitlines()
    return "\n".join(JSON_CHAR if line.startswith("char ::= ") else line for line in lines)


def _visit(converter: Any, schema: dict[str, Any], name: str, param: str) -> str:
    schema = check_schema(schema, param)
    try:
        return converter.visit(converter.resolve_refs(schema, name), name)
    except Exception as exc:  # noqa: BLE001 - the converter asserts and raises plain errors on what it cannot read
        raise UnsupportedSchema(f"{param}: the grammar cannot express this schema ({type(exc).__name__}: {exc})",
                                param) from None
