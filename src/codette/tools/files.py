"""File tools confined to one workspace folder: read_file, write_file, list_directory, search_files.

Every path is opened relative to a descriptor of the workspace, in one step that refuses ``..``
above it and every symbolic link (:mod:`codette.tools.safeopen`), so no race between a check and
an ``open`` can lead outside. What was opened is checked with ``fstat``: only regular files with a
single hard link are read or written, and files are opened non-blocking, so a FIFO, a device file
or a hard link to an outside file is refused instead of hanging or leaking. Writes go to a
temporary name renamed into place, count against a per-call and a per-workspace byte quota, and
paths in results are relative to the workspace, with forward slashes.

The workspace quota is counted per folder (its resolved real path) for the life of the process,
not per :class:`Workspace` object: ``codette serve`` builds a new agent, and so a new Toolbox, for
every request, and two toolboxes on one folder must not each get the whole quota.
"""

from __future__ import annotations

import codecs
import errno
import fnmatch
import logging
import os
import posixpath
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codette.tools.base import ToolFailure
from codette.tools.safeopen import O_PATH, Refused, check_regular, describe_unusable, open_beneath, read_fd
from codette.tooltable import MAX_WRITE_CHARS

log = logging.getLogger(__name__)

DEFAULT_MAX_READ_BYTES = 64 * 1024
MAX_WRITE_BYTES = 2 * MAX_WRITE_CHARS      # per call, in UTF-8 bytes
DEFAULT_WORKSPACE_QUOTA_BYTES = 256 * 1024 * 1024  # bytes the tools may write into one workspace in all
MAX_LIST_ENTRIES = 500
MAX_WALK_ENTRIES = 20_000                 # entries one listing or search may visit
MAX_SEARCH_FILE_BYTES = 1024 * 1024
MAX_SEARCH_TOTAL_BYTES = 32 * 1024 * 1024  # bytes one search may read
MAX_SEARCH_LINE_CHARS = 200
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY

# Bytes written by the tools into each workspace folder (by resolved real path) since the process began.
_WRITTEN: dict[Path, int] = {}
_WRITTEN_LOCK = threading.Lock()


class Workspace:
    """The folder the file tools may touch, the one place that decides what is inside it, and its quota."""

    def __init__(self, root: Path | str, quota_bytes: int = DEFAULT_WORKSPACE_QUOTA_BYTES) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve(strict=True)
        if any(self.root == Path(p) or Path(p) in self.root.parents for p in _FORBIDDEN_ROOTS):
            from codette.errors import CodetteError

            raise CodetteError(f"workspace {self.root}: a workspace cannot lie under /proc, /sys or /dev")
        self.quota_bytes = quota_bytes
        self._fd = os.open(self.root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- paths ---------------------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        """``path`` (relative to the workspace, or absolute inside it) as a normalised relative path.

        Lexical normalisation is exact here because no symbolic link is ever followed.
        """
        if not isinstance(path, str) or not path.strip():
            raise ToolFailure("path must be a non-empty string")
        if "\x00" in path:
            raise ToolFailure("path contains a NUL character")
        p = posixpath.normpath(path)
        if p.startswith("/"):
            root = self.root.as_posix()
            if p == root:
                return "."
            if not p.startswith(root.rstrip("/") + "/"):
                raise ToolFailure(self.outside(path))
            p = p[len(root.rstrip("/")) + 1:]
        if p == ".." or p.startswith("../"):
            raise ToolFailure(self.outside(path))
        return p

    @staticmethod
    def outside(path: str) -> str:
        return f"path '{path}' is outside the workspace; only files inside the workspace can be used"

    @staticmethod
    def linked(path: str) -> str:
        return (f"path '{path}' is or goes through a symbolic link; links are not followed, since they could "
                f"lead outside the workspace")

    def open(self, path: str, rel: str, flags: int, mode: int = 0o644) -> int:
        """A descriptor for ``rel`` beneath the workspace; a link anywhere on the way is a ToolFailure."""
        try:
            return open_beneath(self._fd, rel, flags, mode)
        except Refused:
            raise ToolFailure(self.linked(path)) from None

    def open_file(self, path: str, not_file: str | None = None) -> tuple[int, os.stat_result, str]:
        """(fd, fstat, rel) of an existing regular, singly linked workspace file opened for reading.

        ``not_file`` replaces the messages for a missing file and for a folder.
        """
        rel = self.rel(path)
        try:
            fd = self.open(path, rel, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise ToolFailure(not_file or f"file '{path}' does not exist") from None
        try:
            st = check_regular(fd, path)
        except IsADirectoryError:
            os.close(fd)
            raise ToolFailure(not_file or f"'{path}' is a directory; use list_directory to see its contents") from None
        except ValueError as exc:
            os.close(fd)
            raise ToolFailure(str(exc)) from None
        return fd, st, rel

    def read_bytes(self, path: str, limit: int, what: str = "file", not_file: str | None = None) -> tuple[bytes, str]:
        """(content, rel) of a workspace file no larger than ``limit`` bytes."""
        fd, st, rel = self.open_file(path, not_file)
        try:
            if st.st_size > limit:
                raise ToolFailure(f"{what} '{path}' is larger than {_size_text(limit)}")
            data = read_fd(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise ToolFailure(f"{what} '{path}' is larger than {_size_text(limit)}")
        return data, rel

    def open_dir(self, path: str) -> tuple[int, str]:
        """(fd, rel) of an existing workspace folder, with the tools' usual messages otherwise."""
        rel = self.rel(path)
        try:
            return self.open(path, rel, _DIR_FLAGS), rel
        except FileNotFoundError:
            raise ToolFailure(f"folder '{path}' does not exist") from None
        except NotADirectoryError:
            try:
                fd = self.open(path, rel, O_PATH)
            except OSError:
                raise ToolFailure(f"folder '{path}' does not exist") from None
            try:
                is_file = stat.S_ISREG(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
            if is_file:
                raise ToolFailure(f"'{path}' is a file, not a folder; use read_file to read it") from None
            raise ToolFailure(f"folder '{path}' does not exist") from None

    def make_parents(self, path: str, rel: str) -> int:
        """A descriptor of ``rel``'s parent folder, creating missing folders one by one without following links."""
        current = os.dup(self._fd)
        try:
            for name in [p for p in posixpath.dirname(rel).split("/") if p]:
                try:
                    os.mkdir(name, 0o755, dir_fd=current)
                except FileExistsError:
                    pass
                try:
                    nxt = os.open(name, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
                except OSError as exc:
                    if exc.errno == errno.ELOOP or _is_link(current, name):
                        raise ToolFailure(self.linked(path)) from None
                    if exc.errno == errno.ENOTDIR:
                        raise ToolFailure(f"cannot create folder for '{path}': a file with that name exists") from None
                    raise
                os.close(current)
                current = nxt
            return current
        except BaseException:
            os.close(current)
            raise

    # -- quota ---------------------------------------------------------------------------------------
    @property
    def written_bytes(self) -> int:
        """Bytes the tools wrote into this folder so far in this process (by any Workspace on it)."""
        with _WRITTEN_LOCK:
            return _WRITTEN.get(self.root, 0)

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` against the folder's quota, or refuse them all."""
        with _WRITTEN_LOCK:
            written = _WRITTEN.get(self.root, 0)
            if written + nbytes > self.quota_bytes:
                raise ToolFailure(f"the workspace's write quota of {_size_text(self.quota_bytes)} is used up "
                                  f"({_size_text(written)} written); nothing was written")
            _WRITTEN[self.root] = written + nbytes

    def refund(self, nbytes: int) -> None:
        """Give back what :meth:`charge` counted for a write that failed."""
        with _WRITTEN_LOCK:
            _WRITTEN[self.root] = max(0, _WRITTEN.get(self.root, 0) - nbytes)

    def relative(self, real: Path) -> str:
        rel = real.relative_to(self.root).as_posix()
        return rel or "."


def _size_text(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 and n % (1024 * 1024) == 0 else f"{n} bytes"


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head[:8192]


def read_file(ws: Workspace, path: str, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> dict[str, Any]:
    """Text of a workspace file, cut at ``max_bytes`` (on a character boundary) and saying so."""
    fd, st, rel = ws.open_file(path)
    try:
        raw = read_fd(fd, max_bytes + 1)
    finally:
        os.close(fd)
    size = st.st_size
    if _is_binary(raw):
        raise ToolFailure(f"file '{path}' is binary ({size} bytes) and cannot be shown as text")
    truncated = len(raw) > max_bytes
    raw = raw[:max_bytes]
    # An incremental decoder drops a multi-byte character split by the cut instead of mangling it.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=not truncated)
    result: dict[str, Any] = {"path": rel, "content": text, "size": size, "truncated": truncated}
    if truncated:
        result["note"] = f"only the first {max_bytes} bytes of {size} are shown"
    return result


def write_file(ws: Workspace, path: str, content: str, append: bool = False) -> dict[str, Any]:
    """Create or replace (or append to) a text file; parent folders are created as needed."""
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolFailure(f"content is larger than {_size_text(MAX_WRITE_BYTES)}; write it in parts")
    rel, created = write_bytes(ws, path, data, append=append)
    return {"path": rel, "bytes_written": len(data), "created": created, "appended": append}


def write_bytes(ws: Workspace, path: str, data: bytes, append: bool = False, executable: bool = False) -> tuple[str, bool]:
    """Write ``data`` to a workspace file (replaced through a temporary name, or appended); (rel, created)."""
    rel = ws.rel(path)
    if rel == ".":
        raise ToolFailure(f"'{path}' is a directory; give a file path")
    parent = ws.make_parents(path, rel)
    name = posixpath.basename(rel)
    try:
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise ToolFailure(ws.linked(path))
            if stat.S_ISDIR(st.st_mode):
                raise ToolFailure(f"'{path}' is a directory; give a file path")
            problem = describe_unusable(st, path)
            if problem:
                raise ToolFailure(problem)
        ws.charge(len(data))
        try:
            if append and st is not None:
                _append(ws, parent, name, path, data)
            else:
                _replace(parent, name, path, data, 0o755 if executable else 0o644)
        except BaseException:
            ws.refund(len(data))
            raise
    finally:
        os.close(parent)
    return rel, st is None


def remove(ws: Workspace, path: str, rel: str, folder: bool = False) -> None:
    """Delete a workspace file (or an empty folder) by name in its parent, never through a link."""
    parent = ws.open(path, posixpath.dirname(rel) or ".", _DIR_FLAGS)
    name = posixpath.basename(rel)
    try:
        st = os.lstat(name, dir_fd=parent)
        if folder and stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
        elif not folder and stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def _append(ws: Workspace, parent: int, name: str, path: str, data: bytes) -> None:
    try:
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                     dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ToolFailure(ws.linked(path)) from None
        if exc.errno == errno.ENXIO:
            raise ToolFailure(f"'{path}' is a FIFO; only regular files can be used") from None
        raise
    try:
        try:
            check_regular(fd, path)
        except (ValueError, IsADirectoryError) as exc:
            raise ToolFailure(str(exc) if isinstance(exc, ValueError) else f"'{path}' is a directory") from None
        _write_all(fd, data)
    finally:
        os.close(fd)


def _replace(parent: int, name: str, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write to a fresh temporary file and rename it over ``name``: a link to another inode is replaced, not written."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb", closefd=True) as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except IsADirectoryError:
        _unlink_quiet(parent, tmp)
        raise ToolFailure(f"'{path}' is a directory; give a file path") from None
    except BaseException:
        _unlink_quiet(parent, tmp)
        raise


def _unlink_quiet(parent: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _walk(dir_fd: int, prefix: str, budget: list[int]) -> Iterator[tuple[str, str, bool]]:
    """(relative path, name, is_dir) of the entries below ``dir_fd``, pre-order with files first, sorted.

    Never follows a link: sub-folders are opened by name relative to their parent with ``O_NOFOLLOW``.
    ``budget[0]`` counts down the entries still allowed; the walk stops at zero.
    """
    with os.scandir(dir_fd) as it:
        entries = sorted(((e.name, e.is_dir(follow_symlinks=False)) for e in it), key=lambda e: e[0])
    dirs = []
    for name, is_dir in entries:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        rel = f"{prefix}{name}"
        if is_dir:
            dirs.append((name, rel))
        yield rel, name, is_dir
    for name, rel in dirs:
        if budget[0] <= 0:
            return
        try:
            sub = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            log.debug("skipping folder %s: %s", rel, exc)
            continue
        try:
            yield from _walk(sub, rel + "/", budget)
        finally:
            os.close(sub)


def _join(base: str, rel: str) -> str:
    return rel if base == "." else f"{base}/{rel}"


def list_directory(ws: Workspace, path: str = ".", recursive: bool = False) -> dict[str, Any]:
    """Sorted entry names (folders end with '/'); recursive lists paths relative to ``path``."""
    fd, rel = ws.open_dir(path)
    try:
        if recursive:
            budget = [MAX_WALK_ENTRIES]
            entries = sorted(p + ("/" if d else "") for p, _, d in _walk(fd, "", budget))
            capped = budget[0] <= 0
        else:
            with os.scandir(fd) as it:
                found = sorted(((e.name, e.is_dir(follow_symlinks=False)) for e in it), key=lambda e: e[0])
            entries = [n + ("/" if d else "") for n, d in found]
            capped = False
    finally:
        os.close(fd)
    result: dict[str, Any] = {"path": rel, "entries": entries[:MAX_LIST_ENTRIES]}
    if len(entries) > MAX_LIST_ENTRIES or capped:
        result["truncated"] = True
        result["total"] = len(entries)
        if capped:
            result["note"] = f"stopped counting at {MAX_WALK_ENTRIES} entries"
    return result


def _glob_match(rel: str, name: str, pattern: str) -> bool:
    """Glob on the name (no '/' in pattern) or on the relative path; a leading '**/' also matches at the top."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    if pattern.startswith("**/") and fnmatch.fnmatchcase(rel, pattern[3:]):
        return True
    return fnmatch.fnmatchcase(rel, pattern)


def _read_small(base_fd: int, rel: str, limit: int) -> bytes | None:
    """Content of a regular, singly linked file below ``base_fd`` if it is at most ``limit`` bytes, else None."""
    try:
        fd = open_beneath(base_fd, rel, os.O_RDONLY)
    except OSError as exc:
        log.debug("search_files: skipping %s: %s", rel, exc)
        return None
    try:
        st = check_regular(fd, rel)
        if st.st_size > limit:
            return None
        return read_fd(fd, limit)
    except (OSError, ValueError) as exc:
        log.debug("search_files: skipping %s: %s", rel, exc)
        return None
    finally:
        os.close(fd)


def search_files(
    ws: Workspace, pattern: str | None = None, query: str | None = None, path: str = ".", max_results: int = 50
) -> dict[str, Any]:
    """Files matching a glob ``pattern`` and/or lines containing ``query`` (case-insensitive).

    A pattern without '/' matches file names at any depth (``*.py``); one with '/' matches the path
    relative to ``path`` (``src/*.py``). Only regular files are searched; links are never followed.
    """
    if not pattern and not query:
        raise ToolFailure("give a glob 'pattern', a text 'query', or both")
    fd, base = ws.open_dir(path)
    try:
        files = [rel for rel, name, is_dir in _walk(fd, "", [MAX_WALK_ENTRIES])
                 if not is_dir and (not pattern or _glob_match(rel, name, pattern))]
        result: dict[str, Any] = {"path": base}
        if pattern:
            result["pattern"] = pattern
        if not query:
            rels = [_join(base, r) for r in files]
            result["files"] = rels[:max_results]
            if len(rels) > max_results:
                result["truncated"] = True
            return result
        needle = query.lower()
        matches: list[dict[str, Any]] = []
        truncated = False
        budget = MAX_SEARCH_TOTAL_BYTES
        for rel in files:
            raw = _read_small(fd, rel, min(MAX_SEARCH_FILE_BYTES, budget))
            if raw is None:
                continue
            budget -= len(raw)
            if _is_binary(raw):
                continue
            for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
                if needle in line.lower():
                    if len(matches) >= max_results:
                        truncated = True
                        break
                    matches.append({"path": _join(base, rel), "line": lineno,
                                    "text": line.strip()[:MAX_SEARCH_LINE_CHARS]})
            if truncated or budget <= 0:
                truncated = truncated or budget <= 0
                break
    finally:
        os.close(fd)
    result["query"] = query
    result["matches"] = matches
    if truncated:
        result["truncated"] = True
    return result
