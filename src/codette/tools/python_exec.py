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
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 512
DEFAULT_FILE_SIZE_MB = 16
MAX_OUTPUT_CHARS = 8000
MAX_CODE_CHARS = 20000

# The program every child runs. Stdlib only, no imports from codette, so it starts fast under -I.
_CHILD_SOURCE = r'''
import json, os, resource, sys, traceback, types

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
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv[:] = ["-c"]
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
        return 0, False
    except SystemExit as exc:
        c = exc.code
        if c is None:
            return 0, False
        if isinstance(c, int):
            return c & 0xFF, False
        try:
            print(c, file=sys.stderr)
        except Exception:
            pass
        return 1, False
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        try:
            traceback.print_exception(type(exc), exc, tb)
        except BaseException:
            pass
        return 1, isinstance(exc, MemoryError)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

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
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
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


def _read_output(fh: IO[bytes], limit: int = MAX_OUTPUT_CHARS) -> str:
    fh.seek(0)
    raw = fh.read(limit * 4 + 4)
    text = raw.decode("utf-8", errors="replace")
    more = fh.read(1) != b""
    if len(text) > limit or more:
        text = text[:limit] + f"\n... [output truncated after {limit} characters]"
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _check_code(code: str) -> None:
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
    _check_code(code)
    cpu_s = max(1, int(timeout_s + 0.999))
    args = [sys.executable, "-I", "-X", "utf8", "-c", _CHILD_SOURCE, "once", str(cwd), str(memory_mb),
            str(file_size_mb), str(cpu_s)]
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=str(cwd),
                                env=_child_env(), start_new_session=True, close_fds=True)
        timed_out = False
        try:
            proc.communicate(code.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:
            _kill_group(proc)
            raise
        else:
            # Grandchildren the snippet started must not outlive it.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        duration = time.monotonic() - start
        return ExecutionResult(stdout=_read_output(out), stderr=_read_output(err),
                               exit_code=None if timed_out else proc.returncode,
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
        cpu_s = max(1, int(self.timeout_s + 0.999))
        args = [sys.executable, "-I", "-X", "utf8", "-c", _CHILD_SOURCE, "worker", self.cwd, str(self.memory_mb),
                str(self.file_size_mb), str(cpu_s), str(req_r), str(resp_w)]
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                          cwd=self.cwd, env=_child_env(), start_new_session=True,
                                          pass_fds=(req_r, resp_w))
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
            _kill_group(self._proc)
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
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._resp_fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._resp_fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, code: str) -> ExecutionResult:
        """Run one snippet; same result fields and texts as :func:`run_python_once`."""
        _check_code(code)
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
                stdout, stderr = _read_output(self._out), _read_output(self._err)
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
                _kill_group(self._proc)
            stdout, stderr = _read_output(self._out), _read_output(self._err)
            exit_code = None if timed_out else self._proc.returncode
            self._stop()
            self.restarts += 1
            return ExecutionResult(stdout, stderr, exit_code, timed_out, duration)
