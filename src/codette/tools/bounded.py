"""Running the table and image parsers in a child process bounded in memory and time.

A crafted CSV, JSON or image can make a parser take seconds and hundreds of megabytes. The agent's
process must not pay that, so :class:`BoundedWorker` keeps one child (started on first use) that
receives the file's bytes, runs one whitelisted function on them under ``RLIMIT_AS`` and a CPU
limit, and answers with JSON (never a pickle: the child parses hostile input and is not trusted).
The parent kills and restarts the child after a wall timeout, a crash or a memory error. The
child never opens files: the parent reads them through the workspace's checked descriptors.

The whitelist is handed in by whoever makes the worker (the Toolbox names the table and image
parsers): the child imports each function by its ``module:name`` and runs nothing else, and this
module imports none of the parsers, which see the worker only as a :class:`~codette.tools.base.BoundedRunner`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from codette.tools import proc
from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 1536
DEFAULT_TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 4 * 1024 * 1024
STARTUP_TIMEOUT_S = 60.0

_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from codette.tools.bounded import _child_main; _child_main()"

Operation = Callable[..., dict[str, Any]]


def operation_name(func: Operation) -> str:
    """``module:name``, how the child finds ``func``; only a module's own top-level function has one."""
    name = f"{func.__module__}:{func.__qualname__}"
    if getattr(sys.modules.get(func.__module__), func.__qualname__, None) is not func:
        raise ValueError(f"{name} is not a module-level function, so the analysis process cannot import it")
    return name


def _load(name: str) -> Operation:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _child_main() -> None:
    """The child's loop: a JSON header line, then ``n`` bytes of data; one JSON reply line each."""
    import resource

    mem_mb, cpu_s, names = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (mem_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    funcs = {name: _load(name) for name in names}
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    while True:
        line = inp.readline()
        if not line:
            return
        req = json.loads(line)
        data = inp.read(req["n"])
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        resource.setrlimit(resource.RLIMIT_CPU, (int(used) + cpu_s + 1, resource.RLIM_INFINITY))
        try:
            reply: dict[str, Any] = {"ok": funcs[req["op"]](data, **req["args"])}
        except ToolFailure as exc:
            reply = {"fail": exc.message}
        except MemoryError:
            reply = {"fail": "the file needs more memory to analyse than the limit allows", "restart": True}
        except RecursionError:
            reply = {"fail": "the file is nested too deeply to analyse"}
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            reply = {"fail": f"cannot analyse the file: {type(exc).__name__}: {str(exc)[:200]}"}
        try:
            line = json.dumps(reply, ensure_ascii=False, allow_nan=False)
        except ValueError:
            line = json.dumps({"fail": "the result holds numbers out of range"})
        out.write(line.encode("utf-8") + b"\n")
        out.flush()


class BoundedWorker:
    """One child process that runs only ``operations`` (module-level parsers) on bytes; calls are serialised."""

    def __init__(self, operations: Iterable[Operation], memory_mb: int = DEFAULT_MEMORY_MB,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._proc: subprocess.Popen | None = None
        self._names = {func: operation_name(func) for func in operations}
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._proc = proc.start(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(sys.path), str(self.memory_mb),
             str(proc.cpu_seconds(self.timeout_s)), json.dumps(sorted(self._names.values()))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)
        if self._read_line(self._proc, time.monotonic() + STARTUP_TIMEOUT_S) != b"ready":  # imports not timed
            self._stop()
            raise ToolFailure("the analysis process could not start")
        return self._proc

    def _stop(self) -> None:
        child, self._proc = self._proc, None
        if child is not None:
            proc.stop(child)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def call(self, func: Operation, data: bytes, what: str, **args: Any) -> dict[str, Any]:
        """Run ``func(data, **args)`` in the child; ToolFailure for its own errors, a timeout or a crash."""
        op = self._names.get(func)
        if op is None:
            raise ValueError(f"{operation_name(func)} is not one of this analysis process's operations")
        with self._lock:
            child = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            assert child.stdin is not None and child.stdout is not None
            deadline = time.monotonic() + self.timeout_s
            try:
                child.stdin.write(json.dumps({"op": op, "n": len(data), "args": args}).encode("utf-8") + b"\n")
                child.stdin.write(data)
                child.stdin.flush()
                line = self._read_line(child, deadline)
            except (BrokenPipeError, OSError):
                line = None
            if line is None:
                timed_out = time.monotonic() >= deadline
                self._stop()
                self.restarts += 1
                if timed_out:
                    raise ToolFailure(f"analysing {what} took longer than {self.timeout_s:g} s and was stopped")
                raise ToolFailure(f"analysing {what} failed: the analysis process stopped (memory or CPU limit)")
            reply = json.loads(line)
            if reply.get("restart"):
                self._stop()
                self.restarts += 1
            if "fail" in reply:
                raise ToolFailure(str(reply["fail"]))
            if not isinstance(reply.get("ok"), dict):
                raise ToolFailure(f"analysing {what} failed: no result")
            return reply["ok"]

    @staticmethod
    def _read_line(child: subprocess.Popen, deadline: float) -> bytes | None:
        """The child's next line, or None at the deadline, at its end, or past :data:`MAX_REPLY_BYTES`."""
        assert child.stdout is not None
        return proc.read_line(child.stdout.fileno(), deadline, limit=MAX_REPLY_BYTES)[0]

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass
