"""Running the table and image parsers in a child process bounded in memory and time.

A crafted CSV, JSON or image can make a parser take seconds and hundreds of megabytes. The agent's
process must not pay that, so :class:`BoundedWorker` keeps one child (started on first use) that
receives the file's bytes, runs one whitelisted function on them under ``RLIMIT_AS`` and a CPU
limit, and answers with JSON (never a pickle: the child parses hostile input and is not trusted).
The parent kills and restarts the child after a wall timeout, a crash or a memory error. The
child never opens files: the parent reads them through the workspace's checked descriptors.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 1536
DEFAULT_TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 4 * 1024 * 1024
STARTUP_TIMEOUT_S = 60.0

_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from codette.tools.bounded import _child_main; _child_main()"


def _functions() -> dict[str, Any]:
    from codette.tools import data_analysis, image

    return {"table": data_analysis.table_summary, "image": image.describe_image}


def _child_main() -> None:
    """The child's loop: a JSON header line, then ``n`` bytes of data; one JSON reply line each."""
    import resource

    mem_mb, cpu_s = int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (mem_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    funcs = _functions()
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
    """One child process for :func:`table_summary` and :func:`describe_image`; calls are serialised."""

    def __init__(self, memory_mb: int = DEFAULT_MEMORY_MB, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        cpu_s = max(1, int(self.timeout_s + 0.999))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(sys.path), str(self.memory_mb), str(cpu_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True)
        if self._read_line(self._proc, time.monotonic() + STARTUP_TIMEOUT_S) != b"ready":  # imports not timed
            self._stop()
            raise ToolFailure("the analysis process could not start")
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
            for fh in (proc.stdin, proc.stdout):
                if fh is not None:
                    try:
                        fh.close()
                    except OSError:
                        pass

    def close(self) -> None:
        with self._lock:
            self._stop()

    def call(self, op: str, data: bytes, what: str, **args: Any) -> dict[str, Any]:
        """Run ``op`` on ``data`` in the child; ToolFailure for the function's own errors, a timeout or a crash."""
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            assert proc.stdin is not None and proc.stdout is not None
            deadline = time.monotonic() + self.timeout_s
            try:
                proc.stdin.write(json.dumps({"op": op, "n": len(data), "args": args}).encode("utf-8") + b"\n")
                proc.stdin.write(data)
                proc.stdin.flush()
                line = self._read_line(proc, deadline)
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
    def _read_line(proc: subprocess.Popen, deadline: float) -> bytes | None:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(buf) > MAX_REPLY_BYTES:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
        return buf.split(b"\n", 1)[0]

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass
