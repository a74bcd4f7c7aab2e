"""The Ollama Modelfile: parsed by Ollama's rules, and its Go template renders what our Jinja template does.

Ollama itself cannot run here. The template is rendered by Go's own ``text/template``
(``tests/go_template/main.go``, built once per session with the system's ``go``), given the data
Ollama gives it: its ``json``/``currentDate``/... functions, ``missingkey=zero``, messages collated as
Ollama collates them (system messages joined into ``.System`` and kept in ``.Messages``, runs of one
role merged), its message, tool-call and tool types. The Modelfile's SYSTEM is prepended when a
conversation has none, and tool-call arguments are objects, as Ollama's server does. The Modelfile
parser is a stand-in written from Ollama's ``parser/parser.go`` state machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codette.cli.main import app
from codette.errors import CodetteError
from codette.export.modelfile import DEFAULT_SYSTEM, GO_TEMPLATE, render_modelfile
from codette.tooltable import TOOL_NAMES, tool_schema
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


# ---- Go's text/template, with Ollama's data and functions (tests/go_template/main.go) ----------------
GO_PROGRAM = Path(__file__).parent / "go_template" / "main.go"


def go_env(root: Path) -> dict[str, str]:
    """An offline, self-contained Go: caches under ``root``, no module proxy, no toolchain download."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOCACHE=str(root / "cache"), GOPATH=str(root / "path"), GOFLAGS="", GOPROXY="off",
               GOTOOLCHAIN="local", GOTELEMETRY="off", CGO_ENABLED="0")
    return env


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """Build the renderer once per session; returns ``render(template, messages, tools) -> dict``."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain (`go`) is not installed: the Modelfile's TEMPLATE is checked with Go's own "
                    "text/template; `make test` installs it (Debian package golang-go)", pytrace=False)
    root = tmp_path_factory.mktemp("go")
    binary = root / "go_template"
    proc = subprocess.run([go, "build", "-o", str(binary), GO_PROGRAM.name], cwd=GO_PROGRAM.parent,
                          env=go_env(root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"building {GO_PROGRAM} failed:\n{proc.stderr}"

    def run(template: str, messages: list[dict], tools: list[dict] | None = None) -> dict:
        request = json.dumps({"template": template, "messages": messages, "tools": tools})
        out = subprocess.run([str(binary)], input=request, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run


def ollama_request(messages: list[dict], default_system: str | None) -> list[dict]:
    """The messages as Ollama's /api/chat holds them: the Modelfile's SYSTEM first when the conversation
    has none, content a string, tool-call arguments a JSON object (its OpenAI endpoint parses the string)."""
    if default_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}] + messages
    out = []
    for m in messages:
        calls = []
        for tc in m.get("tool_calls") or []:
            f = tc.get("function", tc)
            args = json.loads(f["arguments"]) if isinstance(f["arguments"], str) else f["arguments"]
            calls.append({"function": {"name": f["name"], "arguments": args}})
        out.append({"role": m["role"], "content": m.get("content") or "", **({"tool_calls": calls} if calls else {})})
    return out


def jinja_json_pieces(messages: list[dict]) -> list[str]:
    """The JSON texts the Jinja template writes, in the order it writes them: each tool call's
    arguments (a string verbatim, an object through ``tojson``). Tools are signature lines, not JSON."""
    pieces = []
    for m in messages:
        for tc in m.get("tool_calls") or []:
            args = tc.get("function", tc)["arguments"]
            pieces.append(args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))
    return pieces


def with_go_json(text: str, ours: list[str], theirs: list[str]) -> str:
    """``text`` with each JSON piece of ``ours`` (in order of appearance) replaced by Go's spelling."""
    out, pos = [], 0
    for a, b in zip(ours, theirs, strict=True):
        at = text.index(a, pos)
        out += [text[pos:at], b]
        pos = at + len(a)
    return "".join(out) + text[pos:]


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
    # What other clients send: types as lists and anyOf, integer, no type, keys out of order.
    "client schema types": ([{"role": "user", "content": "x"}], [{"type": "function", "function": {
        "name": "lookup", "description": "Find a record.", "parameters": {"type": "object", "properties": {
            "zeta": {"type": ["string", "null"]}, "alpha": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "mid": {}, "flags": {"type": "array", "items": {"type": "string"}}, "opts": {"type": "object"}}}}},
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]),
    "assistant prefill": ([{"role": "user", "content": "Count to three."},
                           {"role": "assistant", "content": "One, two"}], None),
}


PERSONA_TOOLS = [tool_schema(name, required=True) for name in TOOL_NAMES]
CASES["persona tools, call and result"] = (
    [{"role": "user", "content": "Append hi to notes.txt"},
     {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
         "name": "write_file", "arguments": {"path": "notes.txt", "content": "hi <b> & \"q\"", "append": True}}}]},
     {"role": "tool", "content": '{"ok": true}'}, {"role": "assistant", "content": "Appended."},
     {"role": "user", "content": "And 2**10?"}], PERSONA_TOOLS)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("default_system", [None, DEFAULT_SYSTEM])
def test_go_template_renders_like_the_jinja_template(go_render, case, default_system) -> None:
    """Byte for byte, tool signatures included, except the tool calls' JSON arguments: Go's ``json``
    writes them compact, with sorted object keys and ``<>&`` escaped; those are checked to be the same
    values."""
    messages, tools = CASES[case]
    request = ollama_request(messages, default_system)
    go = go_render(GO_TEMPLATE, request, tools)
    with_system = messages if request[0]["role"] == messages[0]["role"] else [request[0]] + messages
    if messages[-1]["role"] == "assistant":  # Ollama continues a final assistant message: left open
        jinja = render(with_system, tools, add_generation_prompt=False)
        assert jinja.endswith("<|im_end|>\n")
        jinja = jinja[: -len("<|im_end|>\n")]
    else:
        jinja = render(with_system, tools, add_generation_prompt=True)
    ours = jinja_json_pieces(messages)
    theirs = [a for calls in go["arguments_json"] for a in calls or []]
    assert len(theirs) == len(ours)
    for a, b in zip(ours, theirs, strict=True):
        assert json.loads(a) == json.loads(b), "Ollama's types lose or change part of a tool or its arguments"
    assert go["prompt"] == with_go_json(jinja, ours, theirs)
    if not ours:
        assert go["prompt"] == jinja
    assert go["prompt"].count("<tool_call>") == jinja.count("<tool_call>")


def test_tool_call_tag_is_what_ollama_will_parse(go_render) -> None:
    assert go_render(GO_TEMPLATE, [{"role": "user", "content": "hi"}])["tool_call_tag"] == "<tool_call>"


def test_ollama_merges_consecutive_messages_of_one_role(go_render) -> None:
    """Ollama joins two user messages in a row into one (tool results stay apart): the model then sees
    what the Jinja template renders for the joined message."""
    msgs = [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
    go = go_render(GO_TEMPLATE, ollama_request(msgs, None))["prompt"]
    assert go == render([{"role": "user", "content": "first\n\nsecond"}], add_generation_prompt=True)
    assert go != render(msgs, add_generation_prompt=True)


def test_go_renderer_is_go_with_ollamas_functions(go_render) -> None:
    """The harness itself: Go semantics (trim markers, missing keys), Go's JSON and the collated .System."""
    tpl = ('{{- if .Tools }}tools{{ else if .System }}[{{ .System }}]{{ end -}}  |{{ .Nope }}|'
           '{{ range $i, $m := .Messages }}{{ $i }}={{ .Role }},{{ end }}|{{ json .System }}|'
           '{{ len (slice .Messages 1) }}')
    msgs = [{"role": "system", "content": "a<b&c"}, {"role": "user", "content": "u"},
            {"role": "system", "content": "z"}]
    out = go_render(tpl, msgs)["prompt"]
    assert out == '[a<b&c\n\nz]|<no value>|0=system,1=user,2=system,|"a\\u003cb\\u0026c\\n\\nz"|2'
    with pytest.raises(AssertionError, match="function \"nope\" not defined"):
        go_render("{{ nope }}", msgs)
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


# ---- a second quantisation of a model keeps the first one's Modelfile ----------------------------------
@pytest.mark.slow
def test_a_second_quantisation_keeps_the_first_modelfile(run_folder: Path, tmp_path: Path) -> None:
    from codette.export import export_gguf

    ck = run_folder / "model_best.pt"
    first = export_gguf(ck, tmp_path, "f16")
    assert first.modelfile == tmp_path / "Modelfile" and first.modelfile_kept is None
    before = first.modelfile.read_bytes()
    res = CliRunner().invoke(app, ["export", str(run_folder), "--quant", "q8_0", "-o", str(tmp_path)],
                             terminal_width=300)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "Modelfile").read_bytes() == before  # still the F16 file's
    second = (tmp_path / "Modelfile.q8_0").read_text()
    assert "FROM ./codette_tiny-q8_0.gguf" in second and f"PARAMETER num_ctx {first.context_length}" in second
    assert "#   ollama create codette:q8_0 -f Modelfile.q8_0 && ollama run codette:q8_0" in second
    output = " ".join(res.output.split())
    assert f"Modelfile: {tmp_path / 'Modelfile.q8_0'} ({tmp_path / 'Modelfile'} is codette_tiny-f16.gguf's" in output
    assert "ollama create codette:q8_0 -f Modelfile.q8_0" in output
    # the same quantisation again is refused without --force, and --force never touches the F16 Modelfile
    with pytest.raises(CodetteError, match="codette_tiny-q8_0.gguf already exists; pass --force"):
        export_gguf(ck, tmp_path, "q8_0")
    again = export_gguf(ck, tmp_path, "q8_0", force=True)
    assert again.modelfile == tmp_path / "Modelfile.q8_0" and (tmp_path / "Modelfile").read_bytes() == before
    # the F16 export again rewrites its own Modelfile
    assert export_gguf(ck, tmp_path, "f16", force=True).modelfile == tmp_path / "Modelfile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "Modelfile.q8_0", "codette_tiny-f16.gguf",
                                                         "codette_tiny-q8_0.gguf"]
