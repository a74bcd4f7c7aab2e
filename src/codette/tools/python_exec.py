"""execute_python: run a snippet in a separate Python process with a wall timeout and rlimits.

Two ways, with the same semantics (fresh ``__main__`` globals, cwd = workspace, same timeout,
same limits, same stdout/stderr/exit-code/traceback text):

* :func:`run_python_once` starts ``python -I`` per snippet (simple, about 20-40 snippets/s);
* :class:`PythonWorker` keeps one child process and runs snippets one after another, restarting it
  after a timeout, a crash or a memory error (the data generator runs thousands of snippets).

The limits (CPU seconds, address space, file size, open files) are set *inside* the child by the
bootstrap program :data:`_CHILD_SOURCE` rather than with ``preexec_fn``, which is unsafe when the
parent has threads (the fixture server, a thread pool). Output goes to temporary files, so a
runaway ``print`` loop is stopped by the file-size limit instead of filling the parent's memory.

This is resource containment, not a security sandbox: the snippet can read any file the user can
read, signal the caller and keep processes running. Both are for *trusted* code only (the data
generator's own snippets); a model's code goes through :func:`codette.tools.sandbox.run_sandboxed`,
which :class:`~codette.tools.Toolbox` uses unless ``persistent_python=True``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codette.tools import proc
from codette.tools.base import ToolFailure
from codette.tooltable import MAX_CODE_CHARS

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 512
DEFAULT_FILE_SIZE_MB = 16
MAX_OUTPUT_CHARS = 8000

# The program every child runs. Stdlib only, no imports from codette, so it starts fast under -I.
# traceback is imported up front: a MemoryError's traceback must not need an import to be printed.
_CHILD_SOURCE = proc.EXEC_MAIN_SOURCE + r'''
import json, os, resource, sys, traceback

def _limit(which, soft, hard=None):
    try:
        resource.setrlimit(which, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass

def _setup(mem_mb, fsize_mb):
    _limit(resource.RLIMIT_AS, mem_mb * 1024 * 1024)
    _limit(resource.RLIMIT_FSIZE, fsize_mb * 1024 * 1024)
    _limit(resource.RLIMIT_CORE, 0)
    try:
        _limit(resource.RLIMIT_NOFILE, min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    except (ValueError, OSError):
        pass

def _cpu_used():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

_PATH = list(sys.path)
_ENVIRON = dict(os.environ)

def _run(code, cwd):
    """Execute code as a fresh __main__ module; return (exit_code, memory_error)."""
    os.chdir(cwd)
    sys.path[:] = _PATH
    if dict(os.environ) != _ENVIRON:
        os.environ.clear()
        os.environ.update(_ENVIRON)
    return _exec_main(code)

def _reset_streams():
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    for fd in (1, 2):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)

def main():
    mode = sys.argv[1]
    cwd, mem_mb, fsize_mb, cpu_s = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    _setup(mem_mb, fsize_mb)
    if mode == "once":
        code = sys.stdin.read()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        _limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)  # SIGXCPU first (a timeout), SIGKILL a second later
        exit_code, _ = _run(code, cwd)
        os._exit(exit_code)
    req = os.fdopen(int(sys.argv[6]), "r", encoding="utf-8")
    resp = os.fdopen(int(sys.argv[7]), "w", encoding="utf-8")
    hard = resource.RLIM_INFINITY
    while True:
        line = req.readline()
        if not line:
            return
        code = json.loads(line)["code"]
        _reset_streams()
        # RLIMIT_CPU counts the process lifetime: move the soft limit per snippet.
        _limit(resource.RLIMIT_CPU, int(_cpu_used()) + cpu_s + 1, hard)
        exit_code, memory_error = _run(code, cwd)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        resp.write(json.dumps({"exit_code": exit_code, "memory_error": memory_error}) + "\n")
        resp.flush()

main()
'''


@dataclass(frozen=True)
class ExecutionResult:
    """What one snippet did. ``exit_code`` is None when it was killed for running past the timeout."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        # The soft CPU limit (SIGXCPU) is the timeout met by CPU-bound code before the wall clock runs out:
        # report both the same way, so callers see one kind of timeout.
        if self.exit_code == -signal.SIGXCPU:
            object.__setattr__(self, "exit_code", None)
            object.__setattr__(self, "timed_out", True)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def error_message(self, timeout_s: float) -> str | None:
        """One line for the model: what went wrong, or None."""
        if self.timed_out:
            return f"execution timed out after {timeout_s:g} s and was stopped"
        if self.exit_code == 0:
            return None
        if self.exit_code is not None and self.exit_code < 0:
            name = proc.signal_name(-self.exit_code)
            hint = {"SIGXFSZ": " (file size limit)", "SIGKILL": ""}.get(name, "")
            return f"the Python process was killed by {name}{hint}"
        last = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        detail = f": {last[-1].strip()}" if last else ""
        return f"the code exited with status {self.exit_code}{detail}"

    def payload(self) -> dict[str, Any]:
        return {"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code, "timed_out": self.timed_out}


def _child_env() -> dict[str, str]:
    """A small, predictable environment: one BLAS thread (so the memory limit is not eaten by thread stacks).

    PYTHON* variables would be ignored anyway: the child runs with ``-I`` (and ``-X utf8``).
    """
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SYSTEMROOT")}
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def check_code(code: str) -> None:
    """Refuse a snippet over :data:`MAX_CODE_CHARS` before any process starts (both ways of running it)."""
    if len(code) > MAX_CODE_CHARS:
        raise ToolFailure(f"code is longer than {MAX_CODE_CHARS} characters")


def run_python_once(
    code: str,
    cwd: Path | str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    file_size_mb: int = DEFAULT_FILE_SIZE_MB,
) -> ExecutionResult:
    """Run ``code`` in a fresh ``python -I`` process; kill its whole process group at the timeout."""
    check_code(code)
    args = [sys.executable, "-I", "-X", "utf8", "-c", _CHILD_SOURCE, "once", str(cwd), str(memory_mb),
            str(file_size_mb), str(proc.cpu_seconds(timeout_s))]
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = proc.start(args, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=str(cwd), env=_child_env(),
                           close_fds=True)
        timed_out = False
        try:
            child.communicate(code.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            proc.kill_group(child)  # at the timeout, on an error, and always for grandchildren the snippet left
        duration = time.monotonic() - start
        return ExecutionResult(stdout=proc.read_output(out, MAX_OUTPUT_CHARS),
                               stderr=proc.read_output(err, MAX_OUTPUT_CHARS),
                               exit_code=None if timed_out else child.returncode,
                               timed_out=timed_out, duration_s=duration)


class PythonWorker:
    """One long-lived child that runs snippets sequentially with the same semantics as one-shot.

    Every snippet gets a fresh ``__main__`` namespace, cwd reset to the workspace, and the same
    timeout; imported modules stay cached (that is where the speed comes from). The child is
    restarted after a timeout, a crash, a ``MemoryError`` and every ``max_snippets`` snippets.
    Thread-safe: calls are serialised.
    """

    def __init__(
        self,
        cwd: Path | str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        file_size_mb: int = DEFAULT_FILE_SIZE_MB,
        max_snippets: int = 1000,
    ) -> None:
        self.cwd = str(Path(cwd).resolve())
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.max_snippets = max_snippets
        self.restarts = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        self._req: IO[str] | None = None
        self._resp_fd: int | None = None
        self._buf = b""
        self._count = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        args = [sys.executable, "-I", "-X", "utf8", "-c", _CHILD_SOURCE, "worker", self.cwd, str(self.memory_mb),
                str(self.file_size_mb), str(proc.cpu_seconds(self.timeout_s)), str(req_r), str(resp_w)]
        try:
            self._proc = proc.start(args, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                    cwd=self.cwd, env=_child_env(), pass_fds=(req_r, resp_w))
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._req = os.fdopen(req_w, "w", encoding="utf-8")
        self._resp_fd = resp_r
        self._buf = b""
        self._count = 0
        log.debug("python worker started (pid %d)", self._proc.pid)

    def _stop(self) -> None:
        if self._proc is not None:
            proc.kill_group(self._proc)
        for fh in (self._req, self._out, self._err):
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass
        if self._resp_fd is not None:
            os.close(self._resp_fd)
        self._proc = self._req = self._out = self._err = None
        self._resp_fd = None

    def close(self) -> None:
        """Stop the child process (idempotent)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> PythonWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- running ---------------------------------------------------------------------------------
    def _read_response(self, deadline: float) -> dict[str, Any] | None:
        """The child's one-line reply, or None on timeout / EOF (child died)."""
        assert self._resp_fd is not None
        line, self._buf = proc.read_line(self._resp_fd, deadline, self._buf)
        return None if line is None else json.loads(line)

    def _outputs(self) -> tuple[str, str]:
        """This snippet's stdout and stderr as the model sees them (the child empties the files per snippet)."""
        assert self._out is not None and self._err is not None
        return proc.read_output(self._out, MAX_OUTPUT_CHARS), proc.read_output(self._err, MAX_OUTPUT_CHARS)

    def run(self, code: str) -> ExecutionResult:
        """Run one snippet; same result fields and texts as :func:`run_python_once`."""
        check_code(code)
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self._stop()
                    self.restarts += 1
                self._start()
            assert self._proc is not None and self._req is not None and self._out and self._err
            start = time.monotonic()
            try:
                self._req.write(json.dumps({"code": code}) + "\n")
                self._req.flush()
            except BrokenPipeError:
                pass  # the child died; the read below reports it
            reply = self._read_response(start + self.timeout_s)
            duration = time.monotonic() - start
            if reply is not None:
                stdout, stderr = self._outputs()
                self._count += 1
                if reply.get("memory_error") or self._count >= self.max_snippets:
                    self._stop()
                return ExecutionResult(stdout, stderr, int(reply["exit_code"]), False, duration)
            # Timed out, or the child died (os._exit, a fatal signal) and closed its reply pipe: the pipe
            # can close just before the process is reaped, so give a dead child a moment to report.
            timed_out = time.monotonic() >= start + self.timeout_s
            if not timed_out:
                try:
                    self._proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    timed_out = True
            if timed_out:
                proc.kill_group(self._proc)
            stdout, stderr = self._outputs()
            exit_code = None if timed_out else self._proc.returncode
            self._stop()
            self.restarts += 1
            return ExecutionResult(stdout, stderr, exit_code, timed_out, duration)
