"""The Ollama Modelfile: parsed by Ollama's rules, and its Go template renders what our Jinja template does.

Ollama itself cannot run here, so this file carries two small stand-ins, written from Ollama's
documentation and source: the Modelfile parser's state machine (``parser/parser.go``) and a renderer
for the subset of Go ``text/template`` the template uses (``if``/``else if``/``range``, variables,
``eq ne and or not len slice gt json``, trim markers). Conversations are presented the way Ollama's
server presents them: system messages stay in ``.Messages`` and are also joined into ``.System``; the
Modelfile's SYSTEM is prepended when a conversation has none; tool-call arguments are objects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from codette.export.modelfile import DEFAULT_SYSTEM, GO_TEMPLATE, render_modelfile
from codette.tokenizer import render

# ---- Ollama's Modelfile parser (state machine of parser/parser.go) ----------------------------------


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs exactly as Ollama's ParseFile would produce them."""
    def step(r: str, state: str) -> tuple[str, str]:
        if state == "nil":
            return ("comment", "") if r == "#" else ("nil", "") if r in " \t\r\n" else ("name", r)
        if state == "name":
            if r.isascii() and r.isalpha():
                return "name", r
            if r in " \t":
                return "value", ""
            raise ValueError(f"invalid command character {r!r}")
        if state == "value":
            return ("nil", r) if r in " \t\r\n" else ("value", r)
        if state in ("parameter", "message"):
            if r.isascii() and (r.isalnum() or (r == "_" and state == "parameter")):
                return state, r
            if r in " \t":
                return "value", ""
            raise ValueError("unexpected EOF")
        return ("nil", "") if r in "\r\n" else ("comment", "")

    commands: list[tuple[str, str]] = []
    state, buf, name, role = "nil", "", "", ""
    for r in text:
        nxt, out = step(r, state)
        if nxt != state:
            if state == "name":
                s = buf.lower()
                assert s in {"from", "license", "template", "system", "adapter", "parameter", "message"}, s
                name = "model" if s == "from" else s
                nxt = {"parameter": "parameter", "message": "message"}.get(s, nxt)
            elif state == "parameter":
                name = buf
            elif state == "message":
                role = buf
            elif state == "value":
                value, ok = _unquote(buf.strip())
                if not ok or r in " \t":
                    buf += out
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buf, state = "", nxt
        if out and (out.isprintable() or out == " "):
            buf += out
    if state == "value":
        value, ok = _unquote(buf.strip())
        assert ok, "unterminated value"
        commands.append((name, value))
    else:
        assert state in ("nil", "comment"), f"ends inside {state}"
    return commands


# ---- a Go text/template subset ----------------------------------------------------------------------
@dataclass
class Node:
    kind: str  # text | action | if | range
    text: str = ""
    pipe: list = field(default_factory=list)  # parsed command (list of operands)
    branches: list = field(default_factory=list)  # if: [(pipe, nodes)], range: [(pipe, nodes)]
    else_nodes: list = field(default_factory=list)
    range_vars: list = field(default_factory=list)


_TOKEN = re.compile(
    r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|-?\d+|:=|,'  # parentheses, strings, integers, declarations
    r"|\$?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"  # functions, $var, $var.Field
    r"|\$(?:\.[A-Za-z_]\w*)*"  # $ and $.Field
    r"|\.(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?)"  # . and .Field.Field
)


def _tokens(src: str) -> list[str]:
    out, i = [], 0
    while i < len(src):
        m = _TOKEN.match(src, i)
        if not m:
            if src[i:].strip():
                raise SyntaxError(f"cannot parse {src[i:]!r}")
            break
        out.append(m.group(1))
        i = m.end()
    return out


def _parse_command(toks: list[str]) -> list:
    """Operands: ('str', s) ('int', n) ('field', names) ('var', name, names) ('fn', name) ('sub', cmd)."""
    out, i = [], 0
    while i < len(toks):
        t = toks[i]
        if t == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                j += 1
            out.append(("sub", _parse_command(toks[i + 1:j - 1])))
            i = j
            continue
        if t.startswith('"'):
            out.append(("str", json.loads(t)))
        elif re.fullmatch(r"-?\d+", t):
            out.append(("int", int(t)))
        elif t.startswith("."):
            out.append(("field", [p for p in t.split(".") if p]))
        elif t.startswith("$"):
            head, *rest = t.split(".")
            out.append(("var", head, rest))
        else:
            out.append(("fn", t))
        i += 1
    return out


def parse_go_template(src: str) -> list[Node]:
    parts = re.split(r"({{.*?}})", src, flags=re.S)
    items: list[tuple[str, str]] = []
    for p in parts:
        if p.startswith("{{"):
            body = p[2:-2]
            if body.startswith("- "):
                body = body[2:]
                if items and items[-1][0] == "text":
                    items[-1] = ("text", items[-1][1].rstrip())
            trim_right = body.endswith(" -")
            if trim_right:
                body = body[:-2]
            items.append(("action", body.strip()))
            if trim_right:
                items.append(("trim", ""))
        elif p:
            if items and items[-1][0] == "trim":
                items[-1] = ("text", p.lstrip())
            else:
                items.append(("text", p))
    items = [it for it in items if it[0] != "trim"]
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[Node], str]:
        nonlocal pos
        nodes: list[Node] = []
        while pos < len(items):
            kind, body = items[pos]
            pos += 1
            if kind == "text":
                nodes.append(Node("text", text=body))
                continue
            word = body.split(None, 1)[0] if body else ""
            if word in ("end", "else") and word in stop:
                return nodes, body
            if word == "if":
                node = Node("if")
                cond = _parse_command(_tokens(body[2:]))
                while True:
                    inner, term = block(("end", "else"))
                    node.branches.append((cond, inner))
                    if term == "end":
                        break
                    if term.startswith("else if"):
                        cond = _parse_command(_tokens(term[len("else if"):]))
                        continue
                    node.else_nodes, _ = block(("end",))
                    break
                nodes.append(node)
            elif word == "range":
                rest = body[5:].strip()
                node = Node("range")
                if ":=" in rest:
                    names, rest = rest.split(":=", 1)
                    node.range_vars = [v.strip() for v in names.split(",")]
                inner, term = block(("end", "else"))
                node.branches = [(_parse_command(_tokens(rest)), inner)]
                if term == "else":
                    node.else_nodes, _ = block(("end",))
                nodes.append(node)
            else:
                nodes.append(Node("action", pipe=_parse_command(_tokens(body))))
        if stop:
            raise SyntaxError("missing {{ end }}")
        return nodes, ""

    nodes, _ = block(())
    return nodes


def go_json(value: Any) -> str:
    """encoding/json.Marshal: compact, with <, > and & escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def truthy(v: Any) -> bool:
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) or (hasattr(v, "__len__") and not len(v)))


def _lookup(value: Any, names: list[str]) -> Any:
    for n in names:
        if not isinstance(value, dict) or n not in value:
            raise KeyError(f"no field {n} in {value!r}")
        value = value[n]
    return value


def render_go(nodes: list[Node], dot: Any, scope: list[dict]) -> str:
    def operand(op, args_left=None):
        kind = op[0]
        if kind == "str" or kind == "int":
            return op[1]
        if kind == "field":
            return _lookup(dot, op[1])
        if kind == "var":
            for frame in reversed(scope):
                if op[1] in frame:
                    return _lookup(frame[op[1]], op[2])
            raise KeyError(op[1])
        if kind == "sub":
            return call(op[1])
        raise SyntaxError(op)

    def call(cmd):
        if cmd[0][0] != "fn":
            assert len(cmd) == 1, cmd
            return operand(cmd[0])
        fn, args = cmd[0][1], cmd[1:]
        if fn == "and":
            for a in args:
                v = operand(a)
                if not truthy(v):
                    return v
            return v
        if fn == "or":
            for a in args:
                v = operand(a)
                if truthy(v):
                    return v
            return v
        vals = [operand(a) for a in args]
        funcs = {
            "eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b, "not": lambda a: not truthy(a),
            "len": len, "gt": lambda a, b: a > b, "lt": lambda a, b: a < b, "json": go_json,
            "slice": lambda x, i=0, j=None: x[i:j], "index": lambda x, i: x[i],
        }
        return funcs[fn](*vals)

    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            v = call(node.pipe)
            out.append(str(v).lower() if isinstance(v, bool) else str(v))
        elif node.kind == "if":
            for cond, inner in node.branches:
                if truthy(call(cond)):
                    out.append(render_go(inner, dot, scope))
                    break
            else:
                out.append(render_go(node.else_nodes, dot, scope))
        elif node.kind == "range":
            cond, inner = node.branches[0]
            seq = call(cond)
            if not truthy(seq):
                out.append(render_go(node.else_nodes, dot, scope))
            for i, item in enumerate(seq or []):
                frame = {}
                if len(node.range_vars) == 2:
                    frame = {node.range_vars[0]: i, node.range_vars[1]: item}
                elif node.range_vars:
                    frame = {node.range_vars[0]: item}
                out.append(render_go(inner, item, scope + [frame]))
    return "".join(out)


def ollama_tag(nodes: list[Node]) -> str:
    """Ollama's tools.parseTag: first non-blank text inside the ``if`` that tests a ``.ToolCalls`` field."""
    def find_if(ns):
        for n in ns:
            if n.kind == "if":
                for cond, inner in n.branches:
                    if any(op[0] == "field" and "ToolCalls" in op[1] for op in cond):
                        return inner
                    found = find_if(inner)
                    if found is not None:
                        return found
                found = find_if(n.else_nodes)
                if found is not None:
                    return found
            elif n.kind == "range":
                found = find_if(n.branches[0][1])
                if found is not None:
                    return found
        return None

    def first_text(ns):
        for n in ns:
            if n.kind == "text":
                if n.text.strip():
                    return n.text
                continue
            if n.kind in ("if", "range"):
                for _, inner in n.branches:
                    t = first_text(inner)
                    if t is not None:
                        return t
                return first_text(n.else_nodes)
            if n.kind == "action":
                return None
        return None

    body = find_if(nodes)
    text = first_text(body) if body is not None else None
    tag = (text or "").split("{", 1)[0].strip()
    return tag or "{"


# ---- Ollama's view of a conversation -----------------------------------------------------------------
def ollama_values(messages: list[dict], tools: list[dict] | None, default_system: str | None) -> dict:
    if default_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}] + messages
    msgs = []
    for m in messages:
        calls = []
        for tc in m.get("tool_calls") or []:
            f = tc.get("function", tc)
            args = json.loads(f["arguments"]) if isinstance(f["arguments"], str) else f["arguments"]
            calls.append({"Function": {"Name": f["name"], "Arguments": args}})
        msgs.append({"Role": m["role"], "Content": m.get("content") or "", "ToolCalls": calls})
    system = "\n\n".join(m["Content"] for m in msgs if m["Role"] == "system")
    return {"System": system, "Messages": msgs, "Tools": tools or [], "Response": ""}, messages


def normalize_json_lines(text: str) -> str:
    """Replace every line that is a JSON object by its canonical form (whitespace and key order)."""
    out = []
    for line in text.split("\n"):
        try:
            obj = json.loads(line) if line.startswith("{") else None
        except json.JSONDecodeError:
            obj = None
        out.append(json.dumps(obj, sort_keys=True) if isinstance(obj, dict) else line)
    return "\n".join(out)


TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression like 2*(3+4).",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "the expression"}},
                   "required": ["expression"]}}},
         {"type": "function", "function": {"name": "read_file", "description": "Read a text file.", "parameters": {
             "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}
CASES = {
    "user only": ([{"role": "user", "content": "Who are you?"}], None),
    "system + multi-turn": ([{"role": "system", "content": "You are Codette, be brief."},
                             {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Ünïcödé 漢字 😀\n\n  spaced <tool_call>"}], None),
    "tools offered": ([{"role": "user", "content": "What is 6*7?"}], TOOLS),
    "tools + system": ([{"role": "system", "content": "Use tools."}, {"role": "user", "content": "6*7?"}], TOOLS),
    "tool call, no content": ([{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "",
                                                                     "tool_calls": [CALL]},
                               {"role": "tool", "content": '{"result": 42}'}], TOOLS),
    "tool call with content, two calls": (
        [{"role": "user", "content": "two sums"},
         {"role": "assistant", "content": "Calling twice.",
          "tool_calls": [CALL, {"type": "function", "function": {"name": "read_file",
                                                                  "arguments": '{"path": "notes.txt"}'}}]},
         {"role": "tool", "content": '{"result": 42}'}, {"role": "tool", "content": '{"text": "hi"}'},
         {"role": "assistant", "content": "Done: 42 and hi."}, {"role": "user", "content": "thanks"}], TOOLS),
    "assistant prefill": ([{"role": "user", "content": "Count to three."},
                           {"role": "assistant", "content": "One, two"}], None),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("default_system", [None, DEFAULT_SYSTEM])
def test_go_template_renders_like_the_jinja_template(case, default_system) -> None:
    messages, tools = CASES[case]
    values, with_system = ollama_values(messages, tools, default_system)
    go = render_go(parse_go_template(GO_TEMPLATE), values, [{"$": values}])
    if messages[-1]["role"] == "assistant":  # Ollama continues a final assistant message: left open
        jinja = render(with_system, tools, add_generation_prompt=False)
        assert jinja.endswith("<|im_end|>\n")
        jinja = jinja[: -len("<|im_end|>\n")]
    else:
        jinja = render(with_system, tools, add_generation_prompt=True)
    uses_json = bool(tools) or any(m.get("tool_calls") for m in messages)
    if not uses_json:
        assert go == jinja
    else:  # Go's json is compact, ours has ", " and ": " -- the same JSON values, line by line
        assert go != jinja
        assert normalize_json_lines(go) == normalize_json_lines(jinja)
        assert go.count("\n") == jinja.count("\n")


def test_tool_call_tag_is_what_ollama_will_parse() -> None:
    assert ollama_tag(parse_go_template(GO_TEMPLATE)) == "<tool_call>"


def test_go_renderer_follows_go_semantics() -> None:
    """The stand-in itself: trim markers, else-if chains, and/or values, range with index."""
    tpl = ('{{- if .A }}a{{ else if and .B .C }}bc{{ else }}none{{ end -}}  |'
           '{{ range $i, $x := .L }}{{ $i }}={{ $x }},{{ end }}|{{ or .A "dflt" }}|{{ len (slice .L 1) }}')
    assert render_go(parse_go_template(tpl), {"A": "", "B": 1, "C": [1], "L": ["p", "q"]}, [{}]) == "bc|0=p,1=q,|dflt|1"
    assert render_go(parse_go_template("x {{- .A -}} y"), {"A": "!"}, [{}]) == "x!y"
    assert go_json({"a": 1, "b": "<x>"}) == '{"a":1,"b":"\\u003cx\\u003e"}'


def test_modelfile_parses_by_ollamas_rules() -> None:
    text = render_modelfile("codette_tiny-q8_0.gguf", num_ctx=512)
    commands = parse_modelfile(text)
    assert commands[0] == ("model", "./codette_tiny-q8_0.gguf")
    as_dict: dict[str, list[str]] = {}
    for name, arg in commands:
        as_dict.setdefault(name, []).append(arg)
    assert as_dict["template"] == [GO_TEMPLATE]
    assert as_dict["system"] == [DEFAULT_SYSTEM]
    assert as_dict["stop"] == ["<|im_end|>", "<eos>"]
    assert as_dict["num_ctx"] == ["512"] and float(as_dict["temperature"][0]) == pytest.approx(0.7)
    assert set(as_dict) == {"model", "template", "system", "stop", "temperature", "num_ctx"}
    assert "You are Codette" in DEFAULT_SYSTEM


def test_modelfile_refuses_values_it_cannot_quote() -> None:
    from codette.errors import CodetteError

    with pytest.raises(CodetteError, match="three double quotes"):
        render_modelfile("x.gguf", 128, system='say """hi"""')
    custom = parse_modelfile(render_modelfile("x.gguf", 128, system='Line one.\nA "quoted" word.'))
    assert ("system", 'Line one.\nA "quoted" word.') in custom
