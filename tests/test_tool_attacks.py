"""Attacks on the tools, as an untrusted model (or a prompt injection steering it) would write them.

Every case runs through :meth:`Toolbox.run` (or the tool-call parser) and checks three things: the
attack had no effect outside its bounds, it was answered with a short one-line tool error, and the
same Toolbox still serves a normal call afterwards. Loops and bombs are bounded by count and time.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from codette.tools import Toolbox, ToolCallParseError, ToolError, parse_tool_calls
from codette.tools.bounded import BoundedWorker
from codette.tools.files import Workspace
from codette.tools.registry import BOUNDED_OPERATIONS
from codette.tools.sandbox import _ARCHES, _apply
from codette.tooltable import TOOL_NAMES

SECRET = "top secret: the launch code is 0000"
PY_TIMEOUT = 2.0
QUOTES = '"' + '\\"' * (1024 * 1024 - 1)  # '"\\"\\"...' unterminated: 2 MiB - 1 characters, inside every length limit


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------------
@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("buy coffee\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    return root


@pytest.fixture()
def outside(ws: Path) -> Path:
    return ws.parent / "outside"


class EvilHandler(BaseHTTPRequestHandler):
    """A local server that misbehaves on purpose."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def _head(self, status: int, ctype: str, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        try:
            if path == "/ok":
                body = json.dumps({"host_header": self.headers.get("Host")}).encode()
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            elif path == "/redirect":
                self._head(302, "text/plain", 0, {"Location": "http://169.254.169.254/latest/meta-data"})
            elif path == "/big":  # 200 MB, streamed
                self._head(200, "text/plain", 200 * 1024 * 1024)
                chunk = b"x" * (1 << 20)
                for _ in range(200):
                    self.wfile.write(chunk)
            elif path == "/gzip":
                body = self.server.gzip_bomb  # type: ignore[attr-defined]
                self._head(200, "text/plain", len(body), {"Content-Encoding": "gzip"})
                self.wfile.write(body)
            elif path == "/slow":  # one byte at a time, each well inside a per-read timeout
                self._head(200, "text/plain", 100)
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif path == "/deep":
                body = b"[" * 100_000
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            elif path == "/bigint":
                body = b'{"n": ' + b"9" * 5000 + b"}"
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            elif path == "/search-huge":
                items = [{"title": "t" * 50_000, "url": "u" * 50_000, "snippet": "s" * 50_000} for _ in range(4)]
                body = json.dumps({"results": items}).encode()
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            elif path in ("/quotes", "/quotes-2m"):  # an unterminated string of escaped quotes, as JSON
                body = QUOTES.encode() if path == "/quotes-2m" else b'"' + b'\\"' * (128 * 1024 - 1)
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            elif path == "/search-long":
                items = [{"title": f"r{i}", "url": f"http://x/{i}", "snippet": "s" * 5000} for i in range(10)]
                body = json.dumps({"results": items}).encode()
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            else:
                self._head(404, "text/plain", 0)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def evil():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), EvilHandler)
    srv.daemon_threads = True
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    srv.gzip_bomb = b"".join([*(comp.compress(zeros) for _ in range(300)), comp.flush()])  # 300 MiB inflated
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def tb(ws: Path, evil) -> Toolbox:
    port = evil.server_address[1]
    with Toolbox(ws, enabled=TOOL_NAMES, python_timeout=PY_TIMEOUT, http_timeout=1.0,
                 allowed_hosts=[f"127.0.0.1:{port}"], search_endpoint=f"http://127.0.0.1:{port}/search-huge") as box:
        yield box


def blocked(result, needle: str = "") -> str:
    """The attack ended in a short, one-line tool error (containing ``needle``)."""
    assert not result.ok, result.content[:300]
    assert result.error and "\n" not in result.error and len(result.error) < 400, result.error
    assert needle.lower() in result.error.lower(), result.error
    return result.error


def still_works(tb: Toolbox, python: bool = False) -> None:
    r = tb.run("read_file", {"path": "notes.txt"})
    assert r.ok and r.data["content"] == "buy coffee\n", r.content
    if python:
        p = tb.run("execute_python", {"code": "print(6 * 7)"})
        assert p.ok and p.data["stdout"] == "42\n", p.content


def py(tb: Toolbox, code: str):
    return tb.run("execute_python", {"code": code})


def survivors(marker: str) -> list[int]:
    """Host processes whose command line carries ``marker`` (checked through /proc after the call)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2


def swapper(a: Path, b: Path, stop: threading.Event, limit: int = 200_000) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE) until told to stop."""
    AT_FDCWD = -100
    for _ in range(limit):
        if stop.is_set():
            return
        _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)


def race(tb: Toolbox, swap: tuple[Path, Path], call, max_calls: int = 1500, max_s: float = 1.5) -> list:
    stop = threading.Event()
    t = threading.Thread(target=swapper, args=(*swap, stop), daemon=True)
    t.start()
    results, end = [], time.monotonic() + max_s
    try:
        for _ in range(max_calls):
            results.append(call())
            if time.monotonic() > end:
                break
    finally:
        stop.set()
        t.join()
    return results


# ------------------------------------------------------------------------------------------------
# File tools: the check/open race, hard links, FIFOs, devices, /proc, quotas
# ------------------------------------------------------------------------------------------------
def test_race_read_swapped_with_outside_symlink(tb: Toolbox, ws: Path, outside: Path):
    (ws / "race").write_text("inside", encoding="utf-8")
    (ws / "race_alt").symlink_to(outside / "secret.txt")
    results = race(tb, (ws / "race", ws / "race_alt"), lambda: tb.run("read_file", {"path": "race"}))
    assert len(results) > 50
    assert not any(SECRET in r.content for r in results)
    for r in results:
        if not r.ok:
            blocked(r, "symbolic link")
    assert any(not r.ok for r in results), "the swapper never won a round: the race was not exercised"
    still_works(tb)


def test_race_read_with_the_component_walk(tb: Toolbox, ws: Path, outside: Path, monkeypatch):
    # Kernels without openat2 take the walk: one name at a time, O_NOFOLLOW, each folder opened first.
    from codette.tools import safeopen
    monkeypatch.setattr(safeopen, "_has_openat2", False)
    (ws / "d").mkdir()
    (ws / "d" / "race").write_text("inside", encoding="utf-8")
    (ws / "d_alt").symlink_to(outside, target_is_directory=True)
    (ws / "race").write_text("inside", encoding="utf-8")
    (ws / "race_alt").symlink_to(outside / "secret.txt")
    results = race(tb, (ws / "race", ws / "race_alt"), lambda: tb.run("read_file", {"path": "race"}), max_s=0.7)
    results += race(tb, (ws / "d", ws / "d_alt"), lambda: tb.run("read_file", {"path": "d/secret.txt"}), max_s=0.7)
    assert not any(SECRET in r.content for r in results)
    for r in results:
        if not r.ok:
            assert "symbolic link" in r.error or "does not exist" in r.error, r.error
    still_works(tb)


def test_race_write_swapped_with_outside_symlink(tb: Toolbox, ws: Path, outside: Path):
    (ws / "race").write_text("inside", encoding="utf-8")
    (ws / "race_alt").symlink_to(outside / "victim.txt")
    results = race(tb, (ws / "race", ws / "race_alt"),
                   lambda: tb.run("write_file", {"path": "race", "content": "pwned"}), max_calls=800)
    assert not (outside / "victim.txt").exists()
    assert (outside / "secret.txt").read_text() == SECRET
    for r in results:
        if not r.ok:
            blocked(r, "symbolic link")
    still_works(tb)


def test_race_folder_swapped_with_outside_folder(tb: Toolbox, ws: Path, outside: Path):
    (ws / "d").mkdir()
    (ws / "d" / "secret.txt").write_text("inside copy", encoding="utf-8")
    (ws / "d_alt").symlink_to(outside, target_is_directory=True)
    results = race(tb, (ws / "d", ws / "d_alt"), lambda: tb.run("read_file", {"path": "d/secret.txt"}))
    assert not any(SECRET in r.content for r in results)
    for r in results:
        if not r.ok:
            assert "symbolic link" in r.error or "does not exist" in r.error, r.error
    still_works(tb)


def test_race_search_swapped_with_outside_folder(tb: Toolbox, ws: Path, outside: Path):
    (ws / "d").mkdir()
    (ws / "d_alt").symlink_to(outside, target_is_directory=True)
    results = race(tb, (ws / "d", ws / "d_alt"), lambda: tb.run("search_files", {"query": "launch"}), max_calls=300)
    assert not any(SECRET in r.content for r in results)
    still_works(tb)


def test_race_started_from_execute_python_cannot_outlive_it(tb: Toolbox, ws: Path, outside: Path):
    # The old escape: a detached swapper started by a snippet, then read_file in a loop.
    code = ("import os, ctypes, time\nlibc = ctypes.CDLL(None)\nopen('race', 'w').write('inside')\n"
            "os.symlink('/etc/shadow', 'race_alt')\n"
            "if os.fork() == 0:\n    os.setsid()\n    while True:\n"
            "        libc.renameat2(-100, b'race', -100, b'race_alt', 2)\n")
    blocked(py(tb, code), "background process")
    assert not any(p.is_symlink() for p in ws.iterdir())  # links made in the sandbox never come back
    for _ in range(100):
        for name in ("race", "race_alt"):  # whichever name held the regular file when the swapper was killed
            r = tb.run("read_file", {"path": name})
            assert (r.ok and r.data["content"] == "inside") or "does not exist" in r.error, r.content
    still_works(tb, python=True)


def test_hard_link_read_refused(tb: Toolbox, ws: Path, outside: Path):
    os.link(outside / "secret.txt", ws / "hl.txt")
    assert SECRET not in blocked(tb.run("read_file", {"path": "hl.txt"}), "hard links")
    still_works(tb)


def test_hard_link_overwrite_refused(tb: Toolbox, ws: Path, outside: Path):
    os.link(outside / "secret.txt", ws / "hl.txt")
    blocked(tb.run("write_file", {"path": "hl.txt", "content": "pwned"}), "hard links")
    assert (outside / "secret.txt").read_text() == SECRET
    still_works(tb)


def test_hard_link_append_refused(tb: Toolbox, ws: Path, outside: Path):
    os.link(outside / "secret.txt", ws / "hl.txt")
    blocked(tb.run("write_file", {"path": "hl.txt", "content": "pwned", "append": True}), "hard links")
    assert (outside / "secret.txt").read_text() == SECRET
    still_works(tb)


def test_hard_link_analyze_data_refused(tb: Toolbox, ws: Path, outside: Path):
    (outside / "t.csv").write_text("a,b\n1,2\n")
    os.link(outside / "t.csv", ws / "t.csv")
    blocked(tb.run("analyze_data", {"path": "t.csv"}), "hard links")
    still_works(tb)


def test_hard_link_skipped_by_search(tb: Toolbox, ws: Path, outside: Path):
    os.link(outside / "secret.txt", ws / "hl.txt")
    r = tb.run("search_files", {"query": "launch code"})
    assert r.ok and r.data["matches"] == []
    still_works(tb)


def test_hard_link_not_copied_into_sandbox(tb: Toolbox, ws: Path, outside: Path):
    os.link(outside / "secret.txt", ws / "hl.txt")
    assert SECRET not in blocked(py(tb, "print(open('hl.txt').read())"), "FileNotFoundError")
    still_works(tb, python=True)


@pytest.mark.parametrize("tool, args", [
    ("read_file", {"path": "fifo"}),
    ("write_file", {"path": "fifo", "content": "x"}),
    ("write_file", {"path": "fifo", "content": "x", "append": True}),
    ("analyze_data", {"path": "fifo"}),
    ("analyze_image", {"path": "fifo"}),
], ids=["read", "write", "append", "analyze_data", "analyze_image"])
def test_fifo_does_not_hang(tb: Toolbox, ws: Path, tool, args):
    os.mkfifo(ws / "fifo")
    start = time.monotonic()
    blocked(tb.run(tool, args), "FIFO")
    assert time.monotonic() - start < 2
    still_works(tb)


def test_fifo_skipped_by_search(tb: Toolbox, ws: Path):
    os.mkfifo(ws / "fifo")
    start = time.monotonic()
    r = tb.run("search_files", {"query": "coffee"})
    assert r.ok and [m["path"] for m in r.data["matches"]] == ["notes.txt"] and time.monotonic() - start < 2
    still_works(tb)


def test_device_file_refused(tb: Toolbox, ws: Path):
    os.mknod(ws / "zero", 0o666 | 0o020000, os.makedev(1, 5))  # /dev/zero: reading it never ends
    blocked(tb.run("read_file", {"path": "zero"}), "device file")
    still_works(tb)


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/1/root/etc/shadow", "/dev/zero", "/etc/shadow",
                                  "../outside/secret.txt", "notes.txt/../../outside/secret.txt"])
def test_outside_paths_refused(tb: Toolbox, path):
    blocked(tb.run("read_file", {"path": path}), "outside the workspace")
    still_works(tb)


@pytest.mark.parametrize("target", ["/proc/self", "/etc", "/"], ids=["proc", "etc", "root"])
def test_symlink_to_system_folder_refused(tb: Toolbox, ws: Path, target):
    (ws / "sys").symlink_to(target, target_is_directory=True)
    blocked(tb.run("read_file", {"path": "sys/environ" if "proc" in target else "sys/passwd"}), "symbolic link")
    blocked(tb.run("list_directory", {"path": "sys"}), "symbolic link")
    still_works(tb)


def test_workspace_write_quota(ws: Path):
    tb = Toolbox(ws, workspace_quota_bytes=1000)
    assert tb.run("write_file", {"path": "a.txt", "content": "x" * 600}).ok
    blocked(tb.run("write_file", {"path": "b.txt", "content": "x" * 600}), "quota")
    assert not (ws / "b.txt").exists()
    still_works(tb)


def test_write_quota_is_per_folder_not_per_toolbox(ws: Path):
    """codette serve makes a Toolbox per request: toolboxes on one folder share its quota, from any thread."""
    first = Toolbox(ws, workspace_quota_bytes=1000)
    (ws.parent / "link").symlink_to(ws, target_is_directory=True)
    second = Toolbox(ws.parent / "link", workspace_quota_bytes=1000)  # another path to the same folder
    assert first.run("write_file", {"path": "a.txt", "content": "x" * 600}).ok
    blocked(second.run("write_file", {"path": "b.txt", "content": "x" * 600}), "quota")
    assert not (ws / "b.txt").exists()
    # Many writers at once: exactly as many fit as the quota holds, never more.
    results: list[bool] = []
    boxes = [Toolbox(ws, workspace_quota_bytes=1000) for _ in range(8)]
    threads = [threading.Thread(target=lambda b=b, i=i: results.append(
        b.run("write_file", {"path": f"t{i}.txt", "content": "y" * 100}).ok)) for i, b in enumerate(boxes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 4 + [True] * 4  # 600 + 4 * 100 = 1000
    assert first.workspace.written_bytes == second.workspace.written_bytes == 1000
    other = Toolbox(ws.parent / "elsewhere", workspace_quota_bytes=1000)  # another folder has its own quota
    assert other.run("write_file", {"path": "a.txt", "content": "x" * 600}).ok


def test_per_call_write_cap(tb: Toolbox, ws: Path):
    blocked(tb.run("write_file", {"path": "big.txt", "content": "😀" * 600_000}), "larger than")
    assert not (ws / "big.txt").exists()
    still_works(tb)


# ------------------------------------------------------------------------------------------------
# execute_python: isolation
# ------------------------------------------------------------------------------------------------
def test_python_off_by_default(ws: Path):
    with pytest.raises(ToolError, match="unknown tool 'execute_python'"):
        Toolbox(ws).run("execute_python", {"code": "print(1)"})


@pytest.mark.parametrize("code, needle", [
    ("print(open('/etc/passwd').read())", "FileNotFoundError"),
    ("print(open('/etc/shadow').read())", "FileNotFoundError"),
    ("print(open('{outside}/secret.txt').read())", "FileNotFoundError"),
    ("open('{outside}/evil.txt', 'w').write('pwned')", "FileNotFoundError"),
    ("open('/usr/evil.txt', 'w').write('pwned')", "Read-only file system"),
    ("import os\nprint(open(f'/proc/{agent}/environ').read())", "FileNotFoundError"),
    ("import os\nos.kill({agent}, 9)", "ProcessLookupError"),
    ("import os\ntry:\n    os.kill(1, 9)\nexcept PermissionError:\n    pass\nraise SystemExit('init alive')",
     "init alive"),
    ("import os\nprint(os.environ['CODETTE_ATTACK_SECRET'])", "KeyError"),
    ("import os\nos.setuid(0)", "PermissionError"),
    ("import subprocess\nsubprocess.run(['cat', '/etc/shadow'], check=True)", "CalledProcessError"),
    ("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "Error"),
    ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", "Error"),
    ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", "PermissionError"),
    ("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0codette-attack')", "ConnectionRefusedError"),
], ids=["etc-passwd", "etc-shadow", "outside-read", "outside-write", "usr-write", "parent-environ", "kill-agent",
        "kill-init", "env-secret", "setuid-root", "subprocess-shadow", "socket-local", "socket-internet",
        "raw-socket", "abstract-unix-socket"])
def test_python_cannot_reach_the_host(tb: Toolbox, ws: Path, outside: Path, evil, monkeypatch, code, needle):
    monkeypatch.setenv("CODETTE_ATTACK_SECRET", SECRET)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0codette-attack")  # an abstract socket on the host: not reachable from another netns
    listener.listen(1)
    try:
        code = code.format(outside=outside, agent=os.getpid(), port=evil.server_address[1])
        r = py(tb, code)
        assert SECRET not in r.content
        blocked(r, needle)
    finally:
        listener.close()
    assert not (outside / "evil.txt").exists() and (outside / "secret.txt").read_text() == SECRET
    still_works(tb, python=True)


_NR = _ARCHES[platform.machine()][1]
SYSCALLS = {  # what the snippet tries, through libc or a raw syscall()
    "unshare-user": "libc.unshare(0x10000000)",
    "mount-tmpfs": "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
    "memfd": "libc.memfd_create(b'x', 0)",
    "ptrace-init": "libc.ptrace(16, 1, None, None)",
    "chroot": "libc.chroot(b'/tmp')",
    "keyctl": f"libc.syscall({_NR['keyctl']}, 0, 0, 0, 0)",
    "bpf": f"libc.syscall({_NR['bpf']}, 0, 0, 0)",
    "io-uring": f"libc.syscall({_NR['io_uring_setup']}, 1, 0)",
    "clone-newuser": f"libc.syscall({_ARCHES[platform.machine()][2]}, 0x10000000 | 17, 0, 0, 0, 0)",
}


@pytest.mark.parametrize("name", list(SYSCALLS))
def test_python_dangerous_syscalls_refused(tb: Toolbox, name):
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"r = {SYSCALLS[name]}\n"
            "if r < 0:\n    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
            f"if r == 0 and 'clone' in {name!r}:\n    os._exit(0)\n")
    blocked(py(tb, code), "[Errno")
    still_works(tb, python=True)


def test_python_no_capabilities_no_root(tb: Toolbox):
    code = ("import os\nst = open('/proc/self/status').read()\n"
            "caps = [l for l in st.splitlines() if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))]\n"
            "assert os.getuid() != 0 and all(l.split()[1] == '0' * 16 for l in caps), caps\n"
            "assert 'NoNewPrivs:\\t1' in st\nraise SystemExit('no privileges')")
    blocked(py(tb, code), "no privileges")
    still_works(tb, python=True)


@pytest.mark.parametrize("code", [
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '{marker}'])\n",
    "import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
    "    os._exit(0)\ntime.sleep(0.2)\n",
    "import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n",
    "import os\nif os.fork() == 0:\n    os.setpgid(0, 0)\n    os.execv('/bin/sleep', ['sleep', '{marker}'])\n",
    "import os\nos.system('nohup sleep {marker} >/dev/null 2>&1 &')\n",
], ids=["setsid", "double-fork", "popen-new-session", "setpgid", "nohup-shell"])
def test_background_processes_do_not_survive(tb: Toolbox, code):
    marker = f"31.{os.getpid()}{time.monotonic_ns() % 100000}"
    blocked(py(tb, code.format(marker=marker)), "background process")
    deadline = time.monotonic() + 2
    while survivors(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors(marker) == []
    still_works(tb, python=True)


def test_background_process_on_timeout_does_not_survive(tb: Toolbox):
    marker = f"32.{os.getpid()}"
    code = f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\ntime.sleep(60)"
    blocked(py(tb, code), "timed out")
    time.sleep(0.2)
    assert survivors(marker) == []
    still_works(tb, python=True)


def test_fork_bomb_is_bounded(tb: Toolbox):
    code = "import os\nfor _ in range(10_000):\n    os.fork()\n"
    start = time.monotonic()
    blocked(py(tb, code), "")
    assert time.monotonic() - start < PY_TIMEOUT + 3
    still_works(tb, python=True)


def test_nested_forks_limited_to_the_process_cap(tb: Toolbox):
    # 8 nested forks would make 256 processes; the cap is 16 tasks for the whole sandbox.
    code = ("import os, time\nmain = os.getpid()\nfor _ in range(8):\n    try:\n        os.fork()\n"
            "    except OSError:\n        break\nopen(f'/tmp/proc-{os.getpid()}', 'w').close()\n"
            "if os.getpid() != main:\n    time.sleep(1)\n    os._exit(0)\ntime.sleep(0.5)\n"
            "ran = [n for n in os.listdir('/tmp') if n.startswith('proc-')]\n"
            "raise SystemExit(f'{len(ran)} processes ran')")
    error = blocked(py(tb, code), "processes ran")
    assert 1 <= int(re.search(r"(\d+) processes ran", error).group(1)) <= 16
    still_works(tb, python=True)


def test_thread_bomb_is_bounded(tb: Toolbox):
    code = "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(5,)).start()"
    blocked(py(tb, code), "can't start new thread")
    still_works(tb, python=True)


def test_total_disk_quota_holds_across_files(tb: Toolbox, ws: Path):
    code = "for i in range(8):\n    open(f'f{i}.bin', 'wb').write(b'x' * 15_000_000)"
    blocked(py(tb, code), "No space left on device")
    total = sum(p.stat().st_size for p in ws.iterdir() if p.is_file())
    assert 60_000_000 <= total <= 65 * 1024 * 1024
    still_works(tb, python=True)


def test_many_small_files_are_not_copied_back(tb: Toolbox, ws: Path):
    # Empty files cost no tmpfs bytes; the number of changes sent back is capped instead.
    blocked(py(tb, "for i in range(6000):\n    open(f'e{i}', 'w').close()"), "more than 5000 files")
    assert sorted(os.listdir(ws)) == ["notes.txt"]
    still_works(tb, python=True)


@pytest.mark.parametrize("code, needle", [
    ("open('big.bin', 'wb').write(b'x' * 20_000_000)", "File too large"),
    ("for i in range(3):\n    open(f'/tmp/t{i}.bin', 'wb').write(b'x' * 10_000_000)", "No space left on device"),
    ("open('/dev/shm/t.bin', 'wb').write(b'x' * 2_000_000)", "No space left on device"),
    ("x = bytearray(2 * 1024 ** 3)", "MemoryError"),
    ("print('x' * 30_000_000)", "File too large"),
    ("while True:\n    pass", "timed out"),
    ("import time\ntime.sleep(60)", "timed out"),
], ids=["file-size", "tmp-disk", "shm-disk", "memory", "output", "cpu-loop", "sleep"])
def test_size_time_and_memory_bombs(tb: Toolbox, ws: Path, code, needle):
    start = time.monotonic()
    r = py(tb, code)
    blocked(r, needle)
    assert time.monotonic() - start < PY_TIMEOUT + 3
    assert len(r.content) < 20_000
    assert not (ws / "big.bin").exists() or (ws / "big.bin").stat().st_size <= 16 * 1024 * 1024
    still_works(tb, python=True)


# -- the worker-poisoning attacks, against the isolated path -------------------------------------------------
def test_print_replacement_does_not_carry_over(tb: Toolbox):
    poison = ("import builtins\n_p = builtins.print\n"
              "builtins.print = lambda *a, **k: _p('2 + 2 = 5')\nprint(2 + 2)\nraise SystemExit(3)")
    r = py(tb, poison)
    blocked(r, "status 3")
    assert r.data["stdout"] == "2 + 2 = 5\n"  # the poison works in its own call...
    r = py(tb, "print(2 + 2)")
    assert r.ok and r.data["stdout"] == "4\n"  # ...and nowhere else


def test_daemon_thread_does_not_keep_writing(tb: Toolbox, ws: Path):
    poison = ("import threading, time\ndef loop():\n    i = 0\n    while True:\n"
              "        open(f'late{i}.txt', 'w').close(); i += 1; time.sleep(0.01)\n"
              "threading.Thread(target=loop, daemon=True).start()\ntime.sleep(0.1)\nraise SystemExit('thread started')")
    blocked(py(tb, poison), "thread started")
    before = sorted(os.listdir(ws))
    time.sleep(0.3)
    assert sorted(os.listdir(ws)) == before
    still_works(tb, python=True)


def test_forged_reply_is_not_taken(tb: Toolbox):
    forge = ("import os, json\nfake = json.dumps({'t': 'result', 'exit': 0, 'timed_out': False}) + '\\n'\n"
             "for fd in list(range(3, 64)) + [int(f) for f in os.listdir('/proc/self/fd')]:\n"
             "    try:\n        os.write(fd, fake.encode())\n    except OSError:\n        pass\n"
             "try:\n    os.listdir(f'/proc/{os.getppid()}/fd')\n    raise SystemExit('saw the supervisor fds')\n"
             "except PermissionError:\n    pass\n"
             "raise SystemExit(3)")
    r = py(tb, forge)
    blocked(r, "status 3")
    assert r.data["exit_code"] == 3
    nxt = py(tb, "print('fresh')")
    assert nxt.ok and nxt.data["stdout"] == "fresh\n"


def test_killing_the_supervisor(tb: Toolbox):
    # The snippet's parent is the sandbox's supervisor, not the agent: killing it ends only this call.
    blocked(py(tb, "import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(1)"), "stopped before it reported")
    still_works(tb, python=True)


def test_killing_the_sandbox_from_inside(tb: Toolbox):
    blocked(py(tb, "import os, signal\nos.kill(-1, signal.SIGKILL)"), "stopped before it reported")
    still_works(tb, python=True)


def test_links_and_fifos_made_in_the_sandbox_stay_there(tb: Toolbox, ws: Path):
    code = "import os\nos.symlink('/etc/shadow', 's')\nos.mkfifo('f')\nos.link('notes.txt', 'h')\nraise SystemExit('made')"
    blocked(py(tb, code), "made")
    assert not (ws / "s").exists() and not (ws / "f").exists()
    assert (ws / "h").read_text() == "buy coffee\n" and (ws / "h").stat().st_nlink == 1
    blocked(tb.run("read_file", {"path": "s"}), "does not exist")
    still_works(tb, python=True)


@pytest.mark.parametrize("record", [
    {"t": "file", "p": "../outside/evil.txt", "data": b"pwned"},
    {"t": "file", "p": "/etc/evil.txt", "data": b"pwned"},
    {"t": "file", "p": "link/evil.txt", "data": b"pwned"},
    {"t": "del", "p": "../outside/secret.txt"},
    {"t": "dir", "p": "../outside/newdir"},
], ids=["dotdot-file", "absolute-file", "through-link", "dotdot-delete", "dotdot-dir"])
def test_forged_copy_back_records_are_validated(ws: Path, outside: Path, record):
    (ws / "link").symlink_to(outside, target_is_directory=True)
    problems = _apply(Workspace(ws), [record])
    assert len(problems) == 1 and ("outside the workspace" in problems[0] or "symbolic link" in problems[0])
    assert sorted(os.listdir(outside)) == ["secret.txt"] and (outside / "secret.txt").read_text() == SECRET


# ------------------------------------------------------------------------------------------------
# Parsers: depth, length and number limits before parsing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, needle", [
    ("[" * 100_000, "nested"),
    ('{"name": "calculator", "arguments": {"expression": ' + "9" * 5000 + "}}", "digits"),
    ('{"name": "calculator", "arguments": {"x": 1.7e309}}', "out of range"),
    ('{"name": "calculator", "arguments": {"x": NaN}}', "not a JSON number"),
    ('{"name": "calculator", "arguments": "' + "[" * 1000 + '"}', "must be an object"),
], ids=["deep", "bigint", "overflow", "nan", "deep-string-arguments"])
def test_parse_tool_calls_limits(body, needle):
    start = time.monotonic()
    with pytest.raises(ToolCallParseError) as info:
        parse_tool_calls(f"<tool_call>{body}</tool_call>")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and len(msg) < 300 and time.monotonic() - start < 2


def test_parse_tool_calls_huge_reply_refused():
    with pytest.raises(ToolCallParseError, match="longer than"):
        parse_tool_calls("<tool_call>" + " " * (9 * 1024 * 1024) + "</tool_call>")


@pytest.mark.timeout(120)
def test_closing_tags_inside_strings_are_scanned_in_linear_time():
    """8 MiB of blocks whose closing tag sits inside an unterminated string: each stretch between opening tags
    is searched for a closing tag outside strings once."""
    block = '<tool_call>{"q": "</tool_call>'
    start = time.monotonic()
    with pytest.raises(ToolCallParseError, match="malformed JSON"):
        parse_tool_calls(block * (8 * 1024 * 1024 // len(block) - 1))
    assert time.monotonic() - start < 10


@pytest.mark.timeout(120)  # the quadratic scans took hours here: fail, never hang the run
@pytest.mark.parametrize("entry, needle", [
    ("markup-body", "malformed JSON"),
    ("markup-unclosed-tags", "without '</tool_call>'"),
    ("stringified-arguments", "must be an object"),
    ("toolbox-arguments", "not valid JSON"),
    ("analyze-data-file", "not valid JSON"),
])
def test_worst_case_json_is_refused_in_linear_time(tb: Toolbox, ws: Path, entry, needle):
    """2 MiB of an unterminated string of escaped quotes, at each place a model's text reaches a JSON scan."""
    from codette.tools.calls import call_from_object

    start = time.monotonic()
    if entry == "markup-body":
        with pytest.raises(ToolCallParseError, match=needle):
            parse_tool_calls(f"<tool_call>{QUOTES}</tool_call>")
    elif entry == "markup-unclosed-tags":
        with pytest.raises(ToolCallParseError, match=needle):
            parse_tool_calls("<tool_call>" * (len(QUOTES) // len("<tool_call>")))
    elif entry == "stringified-arguments":  # OpenAI-style structured calls from an HTTP server
        with pytest.raises(ToolCallParseError, match=needle):
            call_from_object({"name": "calculator", "arguments": QUOTES}, 0, arguments_required=False)
    elif entry == "toolbox-arguments":
        with pytest.raises(ToolError, match=needle):
            tb.run("calculator", QUOTES)
    else:
        (ws / "quotes.json").write_text(QUOTES, encoding="utf-8")
        blocked(tb.run("analyze_data", {"path": "quotes.json"}), needle)
    assert time.monotonic() - start < 10
    still_works(tb)


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("name, arguments, needle", [
    ("calculator", '{"expression": ' + "[" * 100_000 + "}", "nested"),
    ("calculator", '{"expression": ' + "9" * 5000 + "}", "digits"),
    ("calculator", {"expression": "[" * 100_000}, "longer than"),
    ("http_request", {"url": "http://127.0.0.1/", "json": _nested(100_000)}, "nested"),
], ids=["deep-string", "bigint-string", "long-expression", "deep-object"])
def test_validation_limits(tb: Toolbox, name, arguments, needle):
    with pytest.raises(ToolError, match=needle):
        tb.run(name, arguments)
    from codette.tools import ToolCall
    if isinstance(arguments, dict):
        blocked(tb.run_call(ToolCall(name, arguments)), needle)
    still_works(tb)


def test_calculator_deep_parentheses(tb: Toolbox):
    blocked(tb.run("calculator", {"expression": "(" * 240 + "1" + ")" * 240}), "")
    assert tb.run("calculator", {"expression": "2 + 2"}).data["result"] == 4


def _png_with_chunk(kind: bytes, payload: bytes, w: int = 2, h: int = 2) -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + b"\0\0\0" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(kind, payload) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, content, needle", [
    ("wide.csv", "a,b\n" + '"' + "x" * (2 * 1024 * 1024) + '",1\n', "not a readable CSV"),
    ("bigint.json", '[{"a": ' + "9" * 5000 + "}]", "not valid JSON"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested"),
    ("deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "\n", "nested"),
    ("huge.csv", "a\n1.7e308\n1.7e308\n", "too large"),
    ("nan.json", '[{"a": NaN}]', "not valid JSON"),
], ids=["csv-field", "json-bigint", "json-deep", "jsonl-deep", "float-overflow", "json-nan"])
def test_table_parser_bombs(tb: Toolbox, ws: Path, name, content, needle):
    (ws / name).write_text(content, encoding="utf-8")
    args = {"path": name, "column": "a", "operation": "sum"} if name == "huge.csv" else {"path": name}
    blocked(tb.run("analyze_data", args), needle)
    still_works(tb)


def test_png_text_chunk_bomb(tb: Toolbox, ws: Path):
    bomb = b"k\0\0" + zlib.compress(b"a" * 50_000_000, 9)
    (ws / "bomb.png").write_bytes(_png_with_chunk(b"zTXt", bomb))
    blocked(tb.run("analyze_image", {"path": "bomb.png"}), "cannot read image")
    still_works(tb)


def test_png_pixel_cap(tb: Toolbox, ws: Path):
    png = _png_with_chunk(b"tEXt", b"k\0v")
    png = png[:16] + struct.pack(">II", 7000, 7000) + png[24:]  # claims 49 M pixels
    ihdr = png[12:29]
    png = png[:29] + struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF) + png[33:]
    (ws / "huge.png").write_bytes(png)
    blocked(tb.run("analyze_image", {"path": "huge.png"}), "pixels")
    still_works(tb)


def test_image_decoding_memory_is_bounded(ws: Path):
    Image.new("RGB", (4000, 4000)).save(ws / "big.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(ws / "small.png")
    worker = BoundedWorker(BOUNDED_OPERATIONS, memory_mb=200)
    try:
        from codette.tools.image import analyze_image
        from codette.tools.base import ToolFailure
        with pytest.raises(ToolFailure, match="memory"):
            analyze_image(Workspace(ws), "big.png", worker)
        assert analyze_image(Workspace(ws), "small.png", worker)["dominant_name"] == "red"
    finally:
        worker.close()


def test_table_analysis_time_is_bounded(ws: Path):
    (ws / "big.csv").write_text("a,b\n" + "1.5,2\n" * 600_000, encoding="utf-8")
    worker = BoundedWorker(BOUNDED_OPERATIONS, timeout_s=0.3)
    try:
        from codette.tools.base import ToolFailure
        from codette.tools.data_analysis import analyze_data
        (ws / "t.csv").write_text("a\n1\n3\n")
        assert analyze_data(Workspace(ws), "t.csv", worker=worker)["numeric"]["a"]["mean"] == 2.0  # started
        start = time.monotonic()
        with pytest.raises(ToolFailure, match="longer than 0.3 s"):
            analyze_data(Workspace(ws), "big.csv", worker=worker)
        assert time.monotonic() - start < 1.5
        assert analyze_data(Workspace(ws), "t.csv", worker=worker)["numeric"]["a"]["mean"] == 2.0
    finally:
        worker.close()


# ------------------------------------------------------------------------------------------------
# Network tools: SSRF forms, Host header, size and time bombs
# ------------------------------------------------------------------------------------------------
SSRF = [
    "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://localhost./", "http://localhost/",
    "http://evil.example@127.0.0.2/", "http://127.0.0.1:22/", "http://169.254.169.254/latest/meta-data",
    "http://metadata.google.internal/", "file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://127.0.0.1/",
    "http://127.0.0.1\\@evil.example/",
]


@pytest.mark.parametrize("url", SSRF)
def test_ssrf_forms_refused_before_any_connection(tb: Toolbox, monkeypatch, url):
    attempts = []
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", lambda *a, **k: attempts.append(a) or 1 / 0)
    blocked(tb.run("http_request", {"url": url}))
    assert attempts == []
    monkeypatch.undo()
    still_works(tb)


@pytest.mark.parametrize("headers, needle", [
    ({"Host": "169.254.169.254"}, "cannot be set"),
    ({"host": "localhost"}, "cannot be set"),
    ({" HOST ": "x"}, "cannot be set"),
    ({"Transfer-Encoding": "chunked"}, "cannot be set"),
    ({"X-A": "b\r\nHost: evil"}, "not allowed"),
], ids=["Host", "host-lower", "host-spaces", "transfer-encoding", "crlf"])
def test_request_headers_refused(tb: Toolbox, evil, headers, needle):
    r = tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}/ok", "headers": headers})
    blocked(r, needle)
    ok = tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}/ok"})
    assert ok.ok and ok.data["json"]["host_header"] == f"127.0.0.1:{evil.server_address[1]}"


def test_redirect_not_followed(tb: Toolbox, evil):
    r = tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}/redirect"})
    assert r.ok and r.data["status"] == 302 and "meta-data" not in r.data["body"]


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


@pytest.mark.parametrize("path", ["/big", "/gzip"], ids=["200MB-body", "gzip-300MiB"])
def test_response_size_bombs_are_cut(tb: Toolbox, evil, path):
    assert len(evil.gzip_bomb) < 2 * 1024 * 1024  # 300 MiB of zeros, inflated only as far as the cap
    before = _peak_rss_mb()
    r = tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}{path}"})
    assert r.ok and r.data["truncated"] is True and len(r.data["body"]) == 8000
    assert _peak_rss_mb() - before < 64
    still_works(tb)


def test_slow_server_bounded_by_one_deadline(tb: Toolbox, evil):
    start = time.monotonic()
    blocked(tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}/slow"}), "timed out")
    assert time.monotonic() - start < 1.6
    still_works(tb)


@pytest.mark.parametrize("path", ["/deep", "/bigint"])
def test_hostile_json_responses(tb: Toolbox, evil, path):
    r = tb.run("http_request", {"url": f"http://127.0.0.1:{evil.server_address[1]}{path}"})
    assert r.ok and "json" not in r.data and r.data["body"]  # shown as text, never parsed into a crash
    still_works(tb)


def test_web_search_huge_response_refused(tb: Toolbox):
    blocked(tb.run("web_search", {"query": "anything"}), "more than 256 KiB")
    still_works(tb)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path, needle", [("/quotes", "did not return JSON"), ("/quotes-2m", "more than 256 KiB")],
                         ids=["256KiB-parsed", "2MiB-cut"])
def test_web_search_worst_case_json_is_refused_in_linear_time(ws: Path, evil, path, needle):
    """An HTTP tool response of escaped quotes: the JSON check before parsing is linear in its length."""
    with Toolbox(ws, search_endpoint=f"http://127.0.0.1:{evil.server_address[1]}{path}") as box:
        start = time.monotonic()
        blocked(box.run("web_search", {"query": "anything"}), needle)
        assert time.monotonic() - start < 10
        still_works(box)


def test_web_search_results_capped(ws: Path, evil):
    port = evil.server_address[1]
    tb = Toolbox(ws, search_endpoint=f"http://127.0.0.1:{port}/search-long")
    r = tb.run("web_search", {"query": "anything", "max_results": 10})
    assert r.ok and sum(len(x["snippet"]) for x in r.data["results"]) <= 8000
    assert all(len(x["snippet"]) <= 500 for x in r.data["results"]) and len(r.content) < 12_000



def test_yaml_python_tags_in_a_config_are_refused(tmp_path: Path):
    from codette.config import load_config_file
    from codette.errors import CodetteError
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'data: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    with pytest.raises(CodetteError, match="evil.yaml: cannot parse config"):
        load_config_file(evil)
    assert not marker.exists()
