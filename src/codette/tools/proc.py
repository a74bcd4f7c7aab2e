"""Child processes for the tools: started in a session of their own, read within bounds, always killed.

execute_python (one-shot, persistent worker and bubblewrap sandbox) and the bounded table/image
parser all run code that may misbehave: a snippet that forks detached children, never answers, or
prints without end. The rules they share live here, once:

* :func:`start` puts the child in a new session, so its process group is its own and
  :func:`kill_group` can kill everything it started that stayed in that group;
* :func:`read_line` and :func:`read_all` read a pipe against a deadline and a size limit, so a
  silent or chatty child cannot hold or fill the caller;
* :func:`read_output` shows a captured stream (a temporary file) up to a character limit;
* :func:`stop` kills, reaps and closes the pipes, whatever state the child is in;
* :data:`EXEC_MAIN_SOURCE` is the child-side code that runs a snippet as ``__main__`` and turns its
  end (``SystemExit``, an exception) into an exit status the way the interpreter does.

Standard library only, nothing else of codette.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

READ_CHUNK = 65536

# Pasted into the programs the children run (``python -c``): stdlib only, it defines one function.
EXEC_MAIN_SOURCE = r'''
import sys

def _exec_main(code):
    """Execute code as a fresh __main__ module; return (exit status, whether a MemoryError ended it)."""
    main = type(sys)("__main__")
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
            import traceback
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
'''


def start(args: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``Popen(args, **popen)`` in a new session: the child leads its own process group, for :func:`kill_group`."""
    return subprocess.Popen(args, start_new_session=True, **popen)


def cpu_seconds(timeout_s: float) -> int:
    """The CPU-time limit for a wall timeout: whole seconds, rounded up, at least one."""
    return max(1, int(timeout_s + 0.999))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group and the child, then reap it (safe on a child already reaped)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def close_pipes(proc: subprocess.Popen) -> None:
    """Close the parent's ends of the child's pipes; one already closed (or broken) is no error."""
    for fh in (proc.stdin, proc.stdout, proc.stderr):
        if fh is not None:
            try:
                fh.close()
            except (OSError, ValueError):
                pass


def stop(proc: subprocess.Popen) -> None:
    """Kill the child's group, reap the child and close its pipes: nothing of it is left afterwards."""
    kill_group(proc)
    close_pipes(proc)


def _chunks(fd: int, deadline: float, size: int) -> Iterator[bytes]:
    """What ``fd`` yields until end of file or the ``time.monotonic()`` deadline, a read at a time."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return
        chunk = os.read(fd, size)
        if not chunk:
            return
        yield chunk


def read_line(fd: int, deadline: float, buf: bytes = b"", limit: int | None = None) -> tuple[bytes | None, bytes]:
    """One line (without its newline) from ``buf`` and then ``fd``, and the bytes read past it.

    The line is None at the deadline, at end of file, or once more than ``limit`` bytes came without
    a newline: a child that stalls or never ends its line cannot hold the caller.
    """
    if b"\n" not in buf:
        for chunk in _chunks(fd, deadline, READ_CHUNK):
            buf += chunk
            if b"\n" in buf:
                break
            if limit is not None and len(buf) > limit:
                return None, buf
        else:
            return None, buf
    line, rest = buf.split(b"\n", 1)
    return line, rest


def read_all(fd: int, deadline: float, limit: int) -> tuple[bytes, bool]:
    """Everything ``fd`` gives until end of file or the deadline; ``(b"", True)`` past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    for chunk in _chunks(fd, deadline, 1 << 20):
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


def read_output(fh: IO[bytes], limit: int) -> str:
    """A captured stream (a file the child wrote) as text, cut after ``limit`` characters with a note."""
    fh.seek(0)
    raw = fh.read(limit * 4 + 4)
    text = raw.decode("utf-8", errors="replace")
    more = fh.read(1) != b""
    if len(text) > limit or more:
        text = text[:limit] + f"\n... [output truncated after {limit} characters]"
    return text


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number no signal has."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def reported_returncode(exit_status: Any, signum: Any) -> int | None:
    """Popen's convention for a child's own report (JSON, so any type): the status, minus the signal, or None."""
    if isinstance(exit_status, int):
        return exit_status
    if isinstance(signum, int):
        return -int(signum)
    return None


__all__ = ["EXEC_MAIN_SOURCE", "READ_CHUNK", "close_pipes", "cpu_seconds", "kill_group", "read_all", "read_line",
           "read_output", "reported_returncode", "signal_name", "start", "stop"]
