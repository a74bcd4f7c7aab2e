"""Tests for codette.tools: every tool really runs, errors are clear, and nothing escapes its limits."""

from __future__ import annotations

import csv
import json
import math
import random
import socket
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codette.errors import CodetteError
from codette.tools import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    FixtureServer,
    KnowledgeBase,
    PythonWorker,
    ToolCall,
    ToolCallParseError,
    Toolbox,
    ToolError,
    format_tool_call,
    format_tool_calls,
    parse_tool_calls,
    run_python_once,
    split_tool_calls,
)
from codette.tools.knowledge import sanitize_query
from codette.tooltable import TOOL_NAMES


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("buy coffee\ncall Newton at noon\n", encoding="utf-8")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("def main():\n    print('hello newton')\n", encoding="utf-8")
    (root / "src" / "util.py").write_text("X = 1\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret newton\n", encoding="utf-8")
    return root


@pytest.fixture()
def tools(ws: Path) -> Toolbox:
    """All eleven tools (execute_python is off by default, so it is enabled here); http_request may
    reach the local fixture servers' ports."""
    with Toolbox(ws, python_timeout=2.0, enabled=TOOL_NAMES, allowed_hosts=["127.0.0.1:*", "localhost:*"]) as tb:
        yield tb


def test_default_toolbox_leaves_execute_python_off(ws: Path):
    with Toolbox(ws) as tb:
        assert "execute_python" not in tb.names() and len(tb.names()) == 10
        with pytest.raises(ToolError, match="unknown tool 'execute_python'"):
            tb.run("execute_python", {"code": "print(1)"})
        r = tb.run("http_request", {"url": "http://127.0.0.1:8000/"})
        assert not r.ok and "no hosts are allowed" in r.error


@pytest.fixture(scope="module")
def server() -> FixtureServer:
    with FixtureServer(clock=lambda: 1_700_000_000.0) as srv:
        yield srv


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any DNS lookup or connection attempt is recorded and fails, proving a refusal needed no network."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", refuse)
    return attempts


# ------------------------------------------------------------------------------------------------
# Tool-call text format
# ------------------------------------------------------------------------------------------------
def test_format_tool_call_exact_text():
    text = format_tool_call("calculator", {"expression": "2 + 2"})
    assert text == '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2 + 2"}}\n</tool_call>'
    assert text.startswith(TOOL_CALL_OPEN) and text.endswith(TOOL_CALL_CLOSE)


def test_format_matches_chat_template_rendering():
    from codette.tokenizer.chat_template import render

    args = {"path": "notes/café.txt", "content": "héllo \"quoted\"\nline 2", "append": True}
    call = ToolCall("write_file", args)
    rendered = render([{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]}])
    assert call.format() in rendered
    two = [call, ToolCall("calculator", {"expression": "1+1"})]
    rendered2 = render([{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in two]}])
    assert format_tool_calls(two) in rendered2


def test_parse_round_trip_unicode_and_nested():
    args = {"query": "naïve café ☕ 日本語", "nested": {"list": [1, 2.5, None, True], "s": "a\"b\\c"}}
    text = format_tool_call("web_search", args)
    assert "日本語" in text  # not \u-escaped
    calls = parse_tool_calls(text)
    assert calls == [ToolCall("web_search", args)]
    assert calls[0].format() == text


def test_parse_multiple_calls_with_prose():
    text = ("Let me check two things.\n" + format_tool_call("calculator", {"expression": "3*7"}) + "\n"
            + format_tool_call("read_file", {"path": "notes.txt"}) + "\nDone.")
    prose, calls = split_tool_calls(text)
    assert [c.name for c in calls] == ["calculator", "read_file"]
    assert calls[1].arguments == {"path": "notes.txt"}
    assert prose == "Let me check two things.\n\n\nDone."
    assert parse_tool_calls("no calls here") == []


def test_parse_accepts_stringified_arguments():
    text = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}</tool_call>'
    calls = parse_tool_calls(text)
    assert calls == [ToolCall("calculator", {"expression": "1+1"})]


@pytest.mark.parametrize("body, needle", [
    ('{"name": "calculator", "arguments": {"expression": "1+1"}', "malformed JSON"),
    ('{"arguments": {}}', "missing 'name'"),
    ('{"name": "", "arguments": {}}', "missing 'name'"),
    ('{"name": "calculator"}', "missing 'arguments'"),
    ('{"name": "calculator", "arguments": [1, 2]}', "must be an object"),
    ('{"name": "calculator", "arguments": "not json"}', "must be an object"),
    ('["calculator", {}]', "expected a JSON object"),
])
def test_parse_errors(body, needle):
    with pytest.raises(ToolCallParseError, match=needle):
        parse_tool_calls(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")


def test_parse_error_names_the_bad_call_and_unclosed_tag():
    good = format_tool_call("calculator", {"expression": "1"})
    with pytest.raises(ToolCallParseError, match="tool call 2"):
        parse_tool_calls(good + "\n<tool_call>{oops}</tool_call>")
    with pytest.raises(ToolCallParseError, match="without"):
        parse_tool_calls(good + '\n<tool_call>\n{"name": "calculator", "argu')


def test_a_closing_tag_inside_a_json_string_is_text():
    """The block ends at the first closing tag outside the call's JSON strings (escaped quotes stay inside):
    a path may hold the text ``</tool_call>``, as a grammar over characters lets a held call write it."""
    text = ('Saving.\n<tool_call>\n{"name": "write_file", "arguments": {"path": "a</tool_call>b.txt", '
            '"content": "say \\"</tool_call>\\" twice"}}\n</tool_call>\nDone.')
    prose, calls = split_tool_calls(text)
    assert calls == [ToolCall("write_file", {"path": "a</tool_call>b.txt", "content": 'say "</tool_call>" twice'})]
    assert prose == "Saving.\n\nDone."
    # a body that is not JSON (an unterminated string) ends at the first closing tag, as before
    with pytest.raises(ToolCallParseError, match="malformed JSON"):
        parse_tool_calls('<tool_call>{"name": "read_file", "arguments": {"path": "a}}</tool_call> tail')


# ------------------------------------------------------------------------------------------------
# Registry: schemas and validation
# ------------------------------------------------------------------------------------------------
def test_schemas_cover_all_eleven_tools(tools: Toolbox):
    schemas = tools.schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOL_NAMES)
    assert len(schemas) == 11
    for s in schemas:
        assert s["type"] == "function"
        assert s["function"]["description"]
        params = s["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
    json.dumps(schemas)  # serialisable for the chat template
    assert [s["function"]["name"] for s in tools.schemas(["calculator", "read_file"])] == ["calculator", "read_file"]


def test_unknown_tool(tools: Toolbox):
    with pytest.raises(ToolError, match=r"unknown tool 'rm_rf'; available: read_file, write_file"):
        tools.run("rm_rf", {})
    result = tools.run_call(ToolCall("rm_rf", {}))
    assert not result.ok and "unknown tool" in result.error and "unknown tool" in result.data["error"]


GOOD_BAD = [
    # tool, good arguments, bad arguments, the field the error must name
    ("read_file", {"path": "a.txt"}, {}, "path"),
    ("read_file", {"path": "a.txt"}, {"path": "a.txt", "mode": "rb"}, "mode"),
    ("write_file", {"path": "a.txt", "content": "x", "append": True}, {"path": "a.txt"}, "content"),
    ("write_file", {"path": "a.txt", "content": "x"}, {"path": "a.txt", "content": 3}, "content"),
    ("list_directory", {}, {"path": 5}, "path"),
    ("list_directory", {"path": ".", "recursive": True}, {"recursive": "yes"}, "recursive"),
    ("search_files", {"pattern": "*.py"}, {"path": "."}, "pattern"),
    ("search_files", {"query": "x", "max_results": 5}, {"query": "x", "max_results": 0}, "max_results"),
    ("execute_python", {"code": "print(1)"}, {"code": ""}, "code"),
    ("execute_python", {"code": "print(1)"}, {"source": "print(1)"}, "code"),
    ("calculator", {"expression": "1+1"}, {"expression": 2}, "expression"),
    ("analyze_data", {"path": "d.csv", "column": "a", "operation": "mean"},
     {"path": "d.csv", "operation": "average"}, "operation"),
    ("query_knowledge_base", {"query": "newton", "top_k": 2}, {"query": "newton", "top_k": 50}, "top_k"),
    ("http_request", {"url": "http://127.0.0.1/x", "method": "POST", "json": {"a": 1}},
     {"url": "http://127.0.0.1/x", "method": "DELETE"}, "method"),
    ("http_request", {"url": "http://127.0.0.1/x", "params": {"q": "a"}},
     {"url": "http://127.0.0.1/x", "params": {"q": ["a"]}}, "params.q"),
    ("web_search", {"query": "tides", "max_results": 3}, {"max_results": 3}, "query"),
    ("analyze_image", {"path": "a.png"}, {"path": ""}, "path"),
]


@pytest.mark.parametrize("name, good, bad, field", GOOD_BAD, ids=[f"{g[0]}-{g[3]}" for g in GOOD_BAD])
def test_validation_good_and_bad(tools: Toolbox, name, good, bad, field):
    assert tools.validate(name, good) == good
    with pytest.raises(ToolError) as info:
        tools.validate(name, bad)
    msg = str(info.value)
    assert f"tool '{name}'" in msg and f"'{field}'" in msg, msg


def test_every_tool_has_a_validation_case():
    assert {g[0] for g in GOOD_BAD} == set(TOOL_NAMES)


def test_validate_accepts_json_string_and_rejects_non_objects(tools: Toolbox):
    assert tools.validate("calculator", '{"expression": "1+2"}') == {"expression": "1+2"}
    with pytest.raises(ToolError, match="not valid JSON"):
        tools.validate("calculator", "{expression")
    with pytest.raises(ToolError, match="must be an object"):
        tools.validate("calculator", ["1+2"])
    with pytest.raises(ToolError, match="missing required argument 'expression'"):
        tools.run("calculator", {})


# ------------------------------------------------------------------------------------------------
# File tools and the workspace boundary
# ------------------------------------------------------------------------------------------------
def test_read_write_round_trip(tools: Toolbox, ws: Path):
    text = "première ligne\nzweite Zeile ✓\n"
    w = tools.run("write_file", {"path": "dir/new.txt", "content": text})
    assert w.ok and w.data == {"path": "dir/new.txt", "bytes_written": len(text.encode()), "created": True,
                               "appended": False}
    assert (ws / "dir" / "new.txt").read_text(encoding="utf-8") == text
    r = tools.run("read_file", {"path": "dir/new.txt"})
    assert r.ok and r.data["content"] == text and r.data["truncated"] is False
    tools.run("write_file", {"path": "dir/new.txt", "content": "more\n", "append": True})
    assert tools.run("read_file", {"path": "dir/new.txt"}).data["content"] == text + "more\n"
    again = tools.run("write_file", {"path": "dir/new.txt", "content": "replaced"})
    assert again.data["created"] is False
    assert (ws / "dir" / "new.txt").read_text() == "replaced"
    # an absolute path inside the workspace is fine
    assert tools.run("read_file", {"path": str(ws / "notes.txt")}).data["content"].startswith("buy coffee")


def test_read_errors_and_truncation(ws: Path):
    tb = Toolbox(ws, max_read_bytes=10)
    (ws / "long.txt").write_text("abcdefghié" + "z" * 100, encoding="utf-8")  # é straddles byte 10
    r = tb.run("read_file", {"path": "long.txt"})
    assert r.ok and r.data["truncated"] is True and r.data["content"] == "abcdefghi"
    assert r.data["size"] == 111 and "first 10 bytes" in r.data["note"]
    missing = tb.run("read_file", {"path": "nope.txt"})
    assert not missing.ok and missing.error == "file 'nope.txt' does not exist"
    assert json.loads(missing.content) == {"error": "file 'nope.txt' does not exist"}
    assert "is a directory" in tb.run("read_file", {"path": "src"}).error
    (ws / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    assert "binary" in tb.run("read_file", {"path": "blob.bin"}).error


@pytest.mark.parametrize("tool, args", [
    ("read_file", {"path": "../outside/secret.txt"}),
    ("read_file", {"path": "src/../../outside/secret.txt"}),
    ("write_file", {"path": "../outside/evil.txt", "content": "x"}),
    ("list_directory", {"path": ".."}),
    ("search_files", {"query": "secret", "path": "../outside"}),
    ("analyze_data", {"path": "../outside/secret.txt"}),
    ("analyze_image", {"path": "../outside/secret.txt"}),
])
def test_dotdot_escapes_refused(tools: Toolbox, ws: Path, tool, args):
    r = tools.run(tool, args)
    assert not r.ok and "outside the workspace" in r.error
    assert not (ws.parent / "outside" / "evil.txt").exists()


def test_absolute_path_outside_refused(tools: Toolbox, ws: Path):
    secret = ws.parent / "outside" / "secret.txt"
    for tool, args in [("read_file", {"path": str(secret)}), ("read_file", {"path": "/etc/passwd"}),
                       ("write_file", {"path": str(secret), "content": "pwned"}),
                       ("list_directory", {"path": "/"})]:
        r = tools.run(tool, args)
        assert not r.ok and "outside the workspace" in r.error, (tool, r)
    assert secret.read_text() == "top secret newton\n"


def test_symlinks_out_refused(tools: Toolbox, ws: Path):
    outside = ws.parent / "outside"
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "link_dir").symlink_to(outside, target_is_directory=True)
    (ws / "dangling").symlink_to(outside / "new.txt")
    for tool, args in [("read_file", {"path": "link_file"}), ("read_file", {"path": "link_dir/secret.txt"}),
                       ("list_directory", {"path": "link_dir"}),
                       ("write_file", {"path": "link_file", "content": "pwned"}),
                       ("write_file", {"path": "dangling", "content": "pwned"}),
                       ("write_file", {"path": "link_dir/x.txt", "content": "pwned"})]:
        r = tools.run(tool, args)
        assert not r.ok and "outside the workspace" in r.error, (tool, args, r)
    assert (outside / "secret.txt").read_text() == "top secret newton\n"
    assert not (outside / "new.txt").exists() and not (outside / "x.txt").exists()
    # search walks the workspace but never reports what lies behind a link out
    found = tools.run("search_files", {"query": "secret"})
    assert found.ok and found.data["matches"] == []
    # no link is followed, not even one that stays inside: a swap could redirect it at any moment
    (ws / "inner").symlink_to(ws / "notes.txt")
    inner = tools.run("read_file", {"path": "inner"})
    assert not inner.ok and "symbolic link" in inner.error


def test_list_directory(tools: Toolbox):
    top = tools.run("list_directory", {})
    assert top.data == {"path": ".", "entries": ["notes.txt", "src/"]}
    rec = tools.run("list_directory", {"path": ".", "recursive": True})
    assert rec.data["entries"] == ["notes.txt", "src/", "src/main.py", "src/util.py"]
    assert tools.run("list_directory", {"path": "src"}).data["entries"] == ["main.py", "util.py"]
    assert "is a file" in tools.run("list_directory", {"path": "notes.txt"}).error
    assert "does not exist" in tools.run("list_directory", {"path": "nope"}).error


def test_search_files(tools: Toolbox):
    by_glob = tools.run("search_files", {"pattern": "*.py"})
    assert by_glob.data["files"] == ["src/main.py", "src/util.py"]
    assert tools.run("search_files", {"pattern": "src/m*.py"}).data["files"] == ["src/main.py"]
    assert tools.run("search_files", {"pattern": "**/*.txt"}).data["files"] == ["notes.txt"]
    assert tools.run("search_files", {"pattern": "*.py", "path": "src"}).data["files"] == ["src/main.py", "src/util.py"]
    by_text = tools.run("search_files", {"query": "NEWTON"})
    assert by_text.data["matches"] == [
        {"path": "notes.txt", "line": 2, "text": "call Newton at noon"},
        {"path": "src/main.py", "line": 2, "text": "print('hello newton')"},
    ]
    both = tools.run("search_files", {"pattern": "*.py", "query": "newton"})
    assert [m["path"] for m in both.data["matches"]] == ["src/main.py"]
    limited = tools.run("search_files", {"query": "newton", "max_results": 1})
    assert len(limited.data["matches"]) == 1 and limited.data["truncated"] is True


# ------------------------------------------------------------------------------------------------
# Calculator
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, expected", [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("2 ** 3 ** 2", 512), ("-2 ** 2", -4), ("(-2) ** 2", 4),
    ("7 / 2", 3.5), ("7 // 2", 3), ("-7 // 2", -4), ("7 % 3", 1), ("10 - 4 - 3", 3), ("2 * -3", -6),
    ("0.1 + 0.2", 0.3), ("sqrt(16) + abs(-3)", 7.0), ("round(pi, 4)", 3.1416), ("log(e)", 1.0),
    ("log(8, 2)", 3.0), ("log10(1000)", 3.0), ("exp(0)", 1.0), ("sin(pi / 2)", 1.0), ("cos(0)", 1.0),
    ("factorial(10)", 3628800), ("max(3, 9, 4)", 9), ("hypot(3, 4)", 5.0), ("2^10", 1024), ("1e3 * 2", 2000.0),
    ("2 ** 100", 2 ** 100), ("floor(-2.5) + ceil(2.1)", 0),
])
def test_calculator_values(tools: Toolbox, expr, expected):
    r = tools.run("calculator", {"expression": expr})
    assert r.ok, r.error
    assert r.data["result"] == expected and type(r.data["result"]) is type(expected)


@pytest.mark.parametrize("expr, needle", [
    ("__import__('os')", "not allowed"),
    ("__import__('os').system('echo pwned')", "not allowed"),
    ("(1).__class__", "attribute access is not allowed"),
    ("math.pi", "attribute access is not allowed"),
    ("os.system('ls')", "not allowed"),
    ("x + 1", "unknown name 'x'"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("'abc' * 3", "only numbers"),
    ("True + 1", "only numbers"),
    ("[1, 2][0]", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("1 if 2 else 3", "not allowed"),
    ("1 << 5", "not allowed"),
    ("2 ** 10 ** 10", "too large"),
    ("10 ** 1000 * 10 ** 1000", "too large"),
    ("9 ** 9 ** 9", "too large"),
    ("factorial(100000)", "too large"),
    ("1.5 ** 100000", "too large"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("sqrt(-1)", "invalid calculation"),
    ("(-8) ** 0.5", "not a real number"),
    ("sqrt", "is a function"),
    ("2 +", "cannot parse"),
    ("sqrt(x=4)", "positional"),
])
def test_calculator_refusals(tools: Toolbox, expr, needle):
    start = time.monotonic()
    r = tools.run("calculator", {"expression": expr})
    assert time.monotonic() - start < 1.0
    assert not r.ok and needle in r.error, r


# ------------------------------------------------------------------------------------------------
# execute_python: one-shot and the persistent worker
# ------------------------------------------------------------------------------------------------
def test_execute_python_stdout_and_cwd(tools: Toolbox, ws: Path):
    r = tools.run("execute_python", {"code": "import os\nprint(sum(range(11)))\nprint(os.getcwd())\n"
                                             "open('made.txt', 'w').write('hi')"})
    assert r.ok, r.content
    assert r.data["stdout"] == f"55\n{ws.resolve()}\n" and r.data["exit_code"] == 0 and r.data["stderr"] == ""
    assert (ws / "made.txt").read_text() == "hi"


def test_execute_python_exception_and_exit_code(tools: Toolbox):
    r = tools.run("execute_python", {"code": "print('before')\n1/0"})
    assert not r.ok and r.data["stdout"] == "before\n" and r.data["exit_code"] == 1
    assert "ZeroDivisionError: division by zero" in r.data["stderr"] and "ZeroDivisionError" in r.error
    assert 'File "<string>", line 2' in r.data["stderr"]
    r = tools.run("execute_python", {"code": "import sys; sys.exit(3)"})
    assert not r.ok and r.data["exit_code"] == 3 and "status 3" in r.error


def test_execute_python_timeout_kills_infinite_loop(ws: Path):
    tb = Toolbox(ws, python_timeout=1.0, enabled=TOOL_NAMES)
    start = time.monotonic()
    r = tb.run("execute_python", {"code": "print('start', flush=True)\nwhile True:\n    pass"})
    elapsed = time.monotonic() - start
    assert not r.ok and r.data["timed_out"] is True and r.data["exit_code"] is None
    assert "timed out after 1 s" in r.error and r.data["stdout"] == "start\n"
    assert elapsed < 2.5, elapsed


def test_cpu_limit_signal_is_reported_as_a_timeout():
    # CPU-bound code can meet the soft CPU limit (SIGXCPU) before the wall-clock deadline; on a busy
    # machine either comes first, and both must read the same to the caller.
    import signal as _signal
    from codette.tools.python_exec import ExecutionResult
    r = ExecutionResult("start\n", "", -_signal.SIGXCPU)
    assert r.timed_out is True and r.exit_code is None and not r.ok
    assert r.error_message(1.0) == "execution timed out after 1 s and was stopped"
    assert ExecutionResult("", "", -_signal.SIGKILL).timed_out is False


def test_execute_python_memory_limit(ws: Path):
    r = run_python_once("x = bytearray(1024 ** 3)\nprint('allocated')", ws, memory_mb=256)
    assert r.exit_code == 1 and "MemoryError" in r.stderr and r.stdout == ""


def test_execute_python_output_truncated(tools: Toolbox):
    r = tools.run("execute_python", {"code": "print('x' * 100000)"})
    assert r.ok and len(r.data["stdout"]) < 9000 and "output truncated" in r.data["stdout"]


WORKER_SNIPPETS = [
    "print('hello')",
    "import math\nprint(math.factorial(12))",
    "print(__name__, [k for k in globals() if not k.startswith('__')])",
    "import sys\nprint('err', file=sys.stderr)\nprint('out')",
    "x = [1, 2\n",  # syntax error
    "def f():\n    raise ValueError('bad value')\nf()",
    "import sys\nsys.exit(4)",
    "import sys\nsys.exit('fatal message')",
    "import os\nprint(os.path.basename(os.getcwd()))",
    "print('é ☕ 日本')",
    "x = bytearray(1024 ** 3)",
]


def test_worker_matches_one_shot(ws: Path):
    with PythonWorker(ws, timeout_s=2.0) as worker:
        for code in WORKER_SNIPPETS:
            once = run_python_once(code, ws, timeout_s=2.0)
            pooled = worker.run(code)
            assert (pooled.stdout, pooled.stderr, pooled.exit_code) == (once.stdout, once.stderr, once.exit_code), code


def test_worker_fresh_globals_and_state_reset(ws: Path):
    with PythonWorker(ws, timeout_s=2.0) as worker:
        assert worker.run("x = 41\nimport os\nos.chdir('/')\nimport sys\nsys.path.append('/nowhere')").ok
        r = worker.run("print(x)")
        assert r.exit_code == 1 and "NameError: name 'x' is not defined" in r.stderr
        r = worker.run("import os, sys\nprint(os.getcwd())\nprint('/nowhere' in sys.path)")
        assert r.stdout == f"{ws.resolve()}\nFalse\n"


def test_worker_survives_timeout_and_crash(ws: Path):
    with PythonWorker(ws, timeout_s=1.0) as worker:
        assert worker.run("print(1)").stdout == "1\n"
        pid = worker.pid
        start = time.monotonic()
        r = worker.run("while True:\n    pass")
        assert r.timed_out and r.exit_code is None and time.monotonic() - start < 2.5
        after = worker.run("print(2)")
        assert after.ok and after.stdout == "2\n" and worker.pid != pid and worker.restarts == 1
        crash = worker.run("import os\nos._exit(9)")
        assert crash.exit_code == 9 and not crash.timed_out
        assert worker.run("print(3)").stdout == "3\n" and worker.restarts == 2


def test_toolbox_persistent_python_same_results(ws: Path):
    codes = ["print(6 * 7)", "1/0", "import sys; sys.exit(2)", "print(open('notes.txt').read().split()[0])"]
    with Toolbox(ws, python_timeout=2.0, enabled=TOOL_NAMES) as once_tb, \
            Toolbox(ws, python_timeout=2.0, persistent_python=True, enabled=TOOL_NAMES) as tb:
        for code in codes:
            a, b = once_tb.run("execute_python", {"code": code}), tb.run("execute_python", {"code": code})
            assert (a.ok, a.content, a.error) == (b.ok, b.content, b.error), code
        assert tb._worker is not None
    assert tb._worker is None  # closed by the context manager


# ------------------------------------------------------------------------------------------------
# analyze_data
# ------------------------------------------------------------------------------------------------
def _make_table(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(57):
        rows.append({"city": rng.choice(["Oslo", "Lima", "Pune"]), "temp": round(rng.uniform(-10, 35), 3),
                     "visits": rng.randint(0, 1000), "rain": "" if i % 9 == 0 else round(rng.gauss(5, 2), 2)})
    return rows


def _expected(values: list[float]) -> dict:
    return {"count": len(values), "mean": round(statistics.mean(values), 6), "std": round(statistics.stdev(values), 6),
            "min": min(values), "max": max(values), "median": round(statistics.median(values), 6)}


def test_analyze_data_csv_matches_direct_computation(tools: Toolbox, ws: Path):
    rows = _make_table()
    with open(ws / "weather.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["city", "temp", "visits", "rain"])
        writer.writeheader()
        writer.writerows(rows)
    r = tools.run("analyze_data", {"path": "weather.csv"})
    assert r.ok, r.error
    d = r.data
    assert d["format"] == "csv" and d["rows"] == 57 and d["columns"] == ["city", "temp", "visits", "rain"]
    assert set(d["numeric"]) == {"temp", "visits", "rain"}  # "city" is text
    for col in ("temp", "visits", "rain"):
        values = [row[col] for row in rows if row[col] != ""]
        assert d["numeric"][col] == _expected(values)
        arr = np.array(values, dtype=float)
        got = d["numeric"][col]
        assert got["mean"] == pytest.approx(arr.mean(), abs=1e-6)
        assert got["std"] == pytest.approx(arr.std(ddof=1), abs=1e-6)
        assert got["median"] == pytest.approx(np.median(arr), abs=1e-6)
    assert d["numeric"]["rain"]["count"] == 57 - 7  # blanks are missing, not zero
    one = tools.run("analyze_data", {"path": "weather.csv", "column": "visits"}).data
    assert one["column"] == "visits" and one["mean"] == _expected([r["visits"] for r in rows])["mean"]
    total = tools.run("analyze_data", {"path": "weather.csv", "column": "visits", "operation": "sum"}).data
    assert total["result"] == sum(r["visits"] for r in rows) and isinstance(total["result"], int)
    temps = [r["temp"] for r in rows]
    for op, value in [("max", max(temps)), ("min", min(temps)), ("count", 57),
                      ("median", round(statistics.median(temps), 6)), ("sum", round(math.fsum(temps), 6))]:
        args = {"path": "weather.csv", "column": "temp", "operation": op}
        assert tools.run("analyze_data", args).data["result"] == value, op
    # exactly reproducible: the same file gives byte-identical content
    assert tools.run("analyze_data", {"path": "weather.csv"}).content == r.content


def test_analyze_data_json_and_jsonl(tools: Toolbox, ws: Path):
    rows = _make_table(seed=3)
    records = [{k: (None if v == "" else v) for k, v in row.items()} for row in rows]
    (ws / "data.json").write_text(json.dumps(records), encoding="utf-8")
    (ws / "data.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    for name, fmt in [("data.json", "json"), ("data.jsonl", "jsonl")]:
        d = tools.run("analyze_data", {"path": name}).data
        assert d["format"] == fmt and d["rows"] == len(rows)
        temps = [r["temp"] for r in rows]
        assert d["numeric"]["temp"] == _expected(temps)
        assert d["numeric"]["temp"]["mean"] == pytest.approx(float(np.mean(temps)), abs=1e-6)
    r = tools.run("analyze_data", {"path": "data.json", "column": "rain", "operation": "mean"})
    assert r.data["result"] == round(statistics.mean([x["rain"] for x in records if x["rain"] is not None]), 6)


def test_analyze_data_errors(tools: Toolbox, ws: Path):
    (ws / "t.csv").write_text("name,score\nada,3\nben,x\n", encoding="utf-8")
    assert "column 'nope' not found; columns are: name, score" == tools.run(
        "analyze_data", {"path": "t.csv", "column": "nope"}).error
    assert "not numeric" in tools.run("analyze_data", {"path": "t.csv", "column": "score"}).error
    assert "needs a 'column'" in tools.run("analyze_data", {"path": "t.csv", "operation": "mean"}).error
    assert "does not exist" in tools.run("analyze_data", {"path": "missing.csv"}).error
    (ws / "bad.json").write_text("[1, 2, 3]", encoding="utf-8")
    assert "list of records" in tools.run("analyze_data", {"path": "bad.json"}).error


# ------------------------------------------------------------------------------------------------
# Knowledge base
# ------------------------------------------------------------------------------------------------
def test_knowledge_base_finds_newton(tools: Toolbox):
    r = tools.run("query_knowledge_base", {"query": "newton perspective"})
    assert r.ok
    assert r.data["results"][0]["title"] == "Perspective: newton"
    assert "cause and effect" in r.data["results"][0]["snippet"]
    r = tools.run("query_knowledge_base", {"query": "which tools can Codette call?", "top_k": 1})
    assert r.data["results"][0]["title"] == "Codette's tools"
    r = tools.run("query_knowledge_base", {"query": "bias_mitigation"})
    assert r.data["results"][0]["title"] == "Perspective: bias_mitigation"


def test_knowledge_base_covers_eleven_perspectives():
    kb = KnowledgeBase.default()
    for p in ["newton", "davinci", "human_intuition", "quantum_computing", "philosophical", "neural_network",
              "bias_mitigation", "psychological", "copilot", "mathematical", "symbolic"]:
        assert any(hit["title"] == f"Perspective: {p}" for hit in kb.search(p, 5)), p
    assert kb.search("is Codette a small language model")[0]["title"] == "What Codette is"
    assert kb.search("can Codette remember past conversations")[0]["title"] == "Codette's limits"


@pytest.mark.parametrize("query", [
    'newton"', '"newton', "newton)", "(newton", "newton AND", "AND", "OR newton NOT", "newton*", "*",
    "NEAR(newton davinci)", "title:newton", "newton - davinci", "newton's laws", "^newton", "{newton}",
    "newton + \"quantum\" (AND) OR NOT *",
])
def test_knowledge_base_survives_fts_syntax(tools: Toolbox, query):
    r = tools.run("query_knowledge_base", {"query": query})
    if sanitize_query(query) is None:
        assert not r.ok and "no words" in r.error
    else:
        assert r.ok, r.error
        assert isinstance(r.data["results"], list)


def test_knowledge_base_from_entries_and_folder(tmp_path: Path, ws: Path):
    kb = KnowledgeBase([("Pendulums", "A pendulum's period depends on its length."), ("Bees", "Bees dance.")])
    assert len(kb) == 2 and kb.search("pendulum length")[0]["title"] == "Pendulums"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Lighthouses\nA lighthouse warns ships with a rotating beam.\n")
    (docs / "b.txt").write_text("Glaciers move slowly downhill under their own weight.\n")
    kb2 = KnowledgeBase.from_folder(docs)
    hit = kb2.search("rotating beam")[0]
    assert hit["title"] == "Lighthouses" and hit["source"] == "a.md"
    assert kb2.search("glaciers")[0]["title"] == "b"
    tb = Toolbox(ws, knowledge_base=kb2)
    assert tb.run("query_knowledge_base", {"query": "ships"}).data["results"][0]["title"] == "Lighthouses"


# ------------------------------------------------------------------------------------------------
# http_request, web_search and the fixture server
# ------------------------------------------------------------------------------------------------
def test_http_request_against_fixture_server(tools: Toolbox, server: FixtureServer):
    r = tools.run("http_request", {"url": server.url("/weather"), "params": {"city": "Oslo"}})
    assert r.ok, r.error
    assert r.data["status"] == 200 and r.data["json"]["city"] == "Oslo"
    assert r.data["headers"]["content-type"].startswith("application/json")
    again = tools.run("http_request", {"url": server.url("/weather?city=Oslo")})
    assert again.data["json"] == r.data["json"]  # deterministic fixture data
    t = tools.run("http_request", {"url": server.url("/time")})
    assert t.data["json"] == {"utc": "2023-11-14T22:13:20Z", "unix": 1700000000}
    post = tools.run("http_request", {"url": server.url("/echo"), "method": "POST", "json": {"msg": "héllo"}})
    assert post.data["json"] == {"method": "POST", "args": {}, "json": {"msg": "héllo"}}
    local = tools.run("http_request", {"url": f"http://localhost:{server.port}/echo?a=1"})
    assert local.data["json"]["args"] == {"a": "1"}
    missing = tools.run("http_request", {"url": server.url("/nope")})
    assert not missing.ok and "HTTP 404" in missing.error and missing.data["status"] == 404


@pytest.mark.parametrize("url", [
    "http://example.com/", "https://example.com/path?q=1", "http://169.254.169.254/latest/meta-data",
    "http://127.0.0.2:8080/", "http://localhost.example.com/", "http://[::1]/",
])
def test_http_request_refuses_other_hosts_without_network(tools: Toolbox, no_network: list[str], url):
    r = tools.run("http_request", {"url": url})
    assert not r.ok and r.error.startswith("host not allowed")
    assert no_network == []


@pytest.mark.parametrize("url, needle", [("file:///etc/passwd", "scheme"), ("ftp://127.0.0.1/x", "scheme"),
                                         ("not a url", "scheme")])
def test_http_request_refuses_other_schemes(tools: Toolbox, no_network: list[str], url, needle):
    r = tools.run("http_request", {"url": url})
    assert not r.ok and needle in r.error and no_network == []


def test_http_request_timeout(ws: Path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection but never answers
    try:
        tb = Toolbox(ws, http_timeout=0.3, allowed_hosts=[f"127.0.0.1:{listener.getsockname()[1]}"])
        start = time.monotonic()
        r = tb.run("http_request", {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/"})
        assert not r.ok and "timed out" in r.error and time.monotonic() - start < 2
    finally:
        listener.close()


def test_web_search_offline(tools: Toolbox, no_network: list[str]):
    r = tools.run("web_search", {"query": "how do solar panels work"})
    assert r.ok and r.data["source"] == "offline-fixture"
    assert r.data["results"][0]["title"] == "How solar panels work"
    assert set(r.data["results"][0]) == {"title", "url", "snippet"}
    r2 = tools.run("web_search", {"query": "GGUF llama.cpp", "max_results": 2})
    assert {x["title"] for x in r2.data["results"]} == {"GGUF file format", "llama.cpp"}
    assert tools.run("web_search", {"query": "zzqx unknownword"}).data["results"] == []
    assert no_network == []


def test_web_search_endpoint(ws: Path, server: FixtureServer):
    tb = Toolbox(ws, search_endpoint=server.url("/search"))
    r = tb.run("web_search", {"query": "why is the sky blue", "max_results": 3})
    assert r.ok and r.data["source"] == "endpoint"
    assert r.data["results"][0]["title"] == "Why the sky is blue: Rayleigh scattering"
    with pytest.raises(CodetteError, match="use an http or https URL"):
        Toolbox(ws, search_endpoint="ftp://search.example.com/api")
    # the configured endpoint is admitted for web_search only, not for http_request
    assert "no hosts are allowed" in tb.run("http_request", {"url": server.url("/time")}).error


def test_fixture_server_endpoints(server: FixtureServer):
    with httpx.Client(trust_env=False) as client:
        assert client.get(server.url("/weather")).status_code == 400
        w1 = client.get(server.url("/weather"), params={"city": "Lima"}).json()
        assert w1 == client.get(server.url("/weather"), params={"city": "lima "}).json() | {"city": "Lima"}
        s = client.get(server.url("/search"), params={"q": "tides moon", "n": 1}).json()
        assert [x["title"] for x in s["results"]] == ["Tides"]


# ------------------------------------------------------------------------------------------------
# analyze_image
# ------------------------------------------------------------------------------------------------
def test_analyze_image_solid_red(tools: Toolbox, ws: Path):
    Image.new("RGB", (40, 30), (255, 0, 0)).save(ws / "red.png")
    r = tools.run("analyze_image", {"path": "red.png"})
    assert r.ok, r.error
    d = r.data
    assert (d["format"], d["width"], d["height"], d["mode"]) == ("PNG", 40, 30, "RGB")
    assert d["mean_color"] == [255.0, 0.0, 0.0]
    assert d["dominant_color"] == [255, 0, 0] and d["dominant_hex"] == "#ff0000" and d["dominant_name"] == "red"
    assert d["grayscale"] is False


def test_analyze_image_grayscale_and_mixed(tools: Toolbox, ws: Path):
    Image.linear_gradient("L").resize((64, 64)).save(ws / "grad.png")
    g = tools.run("analyze_image", {"path": "grad.png"}).data
    assert g["mode"] == "L" and g["grayscale"] is True and g["bands"] == ["L"]
    Image.new("RGB", (20, 20), (90, 90, 90)).save(ws / "gray.jpg", quality=95)
    j = tools.run("analyze_image", {"path": "gray.jpg"}).data
    assert j["format"] == "JPEG" and j["grayscale"] is True and j["dominant_name"] == "gray"
    img = Image.new("RGB", (100, 100), (0, 0, 255))
    img.paste((0, 200, 0), (0, 0, 50, 50))  # a quarter green, the rest blue
    img.save(ws / "mix.png")
    m = tools.run("analyze_image", {"path": "mix.png"}).data
    assert m["dominant_color"] == [0, 0, 255] and m["grayscale"] is False
    assert m["mean_color"] == [0.0, 50.0, 191.25]
    (ws / "fake.png").write_text("not an image")
    bad = tools.run("analyze_image", {"path": "fake.png"})
    assert not bad.ok and "not an image" in bad.error


def test_sandbox_binds_a_python_under_tmp_after_its_own_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A venv or checkout under /tmp (a CI clone) must stay visible: its bind comes after the sandbox's /tmp tmpfs."""
    import sys

    from codette.tools import sandbox

    venv = Path("/tmp") / tmp_path.name / "venv"
    monkeypatch.setattr(sys, "prefix", str(venv))
    args = sandbox.build_args("bwrap", tmp_path / "ws", None, 3, 4, 1.0, 64, 8, 4, 1 << 20)
    tmpfs = next(i for i in range(len(args) - 1) if args[i] == "--tmpfs" and args[i + 1] == "/tmp")
    bind = next(i for i in range(len(args) - 2) if args[i] == "--ro-bind" and args[i + 1] == str(venv))
    assert tmpfs < bind, "the Python prefix under /tmp would be hidden by the sandbox's empty /tmp"
    assert args.index(str(venv.parent)) < bind  # its parent folder is made inside the sandbox's /tmp
