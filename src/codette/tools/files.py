"""File tools confined to one workspace folder: read_file, write_file, list_directory, search_files.

Every path the model gives is resolved (symlinks followed) and must land inside the workspace, so
``..``, absolute paths elsewhere and symlinks that point out are all refused with the same clear
message. Paths in results are relative to the workspace, with forward slashes.
"""

from __future__ import annotations

import codecs
import fnmatch
import logging
import os
from pathlib import Path
from typing import Any

from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_MAX_READ_BYTES = 64 * 1024
MAX_WRITE_CHARS = 1024 * 1024
MAX_LIST_ENTRIES = 500
MAX_SEARCH_FILE_BYTES = 1024 * 1024
MAX_SEARCH_LINE_CHARS = 200


class Workspace:
    """The folder the file tools may touch, and the one place that decides what is inside it."""

    def __init__(self, root: Path | str) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve(strict=True)

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` (relative to the workspace, or absolute) if it stays inside."""
        if not isinstance(path, str) or not path.strip():
            raise ToolFailure("path must be a non-empty string")
        if "\x00" in path:
            raise ToolFailure("path contains a NUL character")
        p = Path(path)
        candidate = p if p.is_absolute() else self.root / p
        real = Path(os.path.realpath(candidate))
        if not self.contains(real):
            raise ToolFailure(f"path '{path}' is outside the workspace; only files inside the workspace can be used")
        return real

    def contains(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def relative(self, real: Path) -> str:
        rel = real.relative_to(self.root).as_posix()
        return rel or "."


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head[:8192]


def read_file(ws: Workspace, path: str, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> dict[str, Any]:
    """Text of a workspace file, cut at ``max_bytes`` (on a character boundary) and saying so."""
    real = ws.resolve(path)
    if not real.exists():
        raise ToolFailure(f"file '{path}' does not exist")
    if real.is_dir():
        raise ToolFailure(f"'{path}' is a directory; use list_directory to see its contents")
    size = real.stat().st_size
    with open(real, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if _is_binary(raw):
        raise ToolFailure(f"file '{path}' is binary ({size} bytes) and cannot be shown as text")
    truncated = len(raw) > max_bytes
    raw = raw[:max_bytes]
    # An incremental decoder drops a multi-byte character split by the cut instead of mangling it.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=not truncated)
    result: dict[str, Any] = {"path": ws.relative(real), "content": text, "size": size, "truncated": truncated}
    if truncated:
        result["note"] = f"only the first {max_bytes} bytes of {size} are shown"
    return result


def write_file(ws: Workspace, path: str, content: str, append: bool = False) -> dict[str, Any]:
    """Create or replace (or append to) a text file; parent folders are created as needed."""
    real = ws.resolve(path)
    if real == ws.root or real.is_dir():
        raise ToolFailure(f"'{path}' is a directory; give a file path")
    created = not real.exists()
    # Create parents one by one so that none of them can be an outside symlink created meanwhile.
    parent = real.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ToolFailure(f"cannot create folder for '{path}': a file with that name exists") from None
    if not ws.contains(Path(os.path.realpath(parent))):
        raise ToolFailure(f"path '{path}' is outside the workspace")
    data = content.encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(real, flags, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return {"path": ws.relative(real), "bytes_written": len(data), "created": created, "appended": append}


def list_directory(ws: Workspace, path: str = ".", recursive: bool = False) -> dict[str, Any]:
    """Sorted entry names (folders end with '/'); recursive lists paths relative to ``path``."""
    real = ws.resolve(path)
    if not real.exists():
        raise ToolFailure(f"folder '{path}' does not exist")
    if not real.is_dir():
        raise ToolFailure(f"'{path}' is a file, not a folder; use read_file to read it")
    entries: list[str] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for d in dirnames:
                entries.append((base / d).relative_to(real).as_posix() + "/")
            for f in sorted(filenames):
                entries.append((base / f).relative_to(real).as_posix())
        entries.sort()
    else:
        for child in sorted(real.iterdir(), key=lambda c: c.name):
            entries.append(child.name + ("/" if child.is_dir() else ""))
    truncated = len(entries) > MAX_LIST_ENTRIES
    result: dict[str, Any] = {"path": ws.relative(real), "entries": entries[:MAX_LIST_ENTRIES]}
    if truncated:
        result["truncated"] = True
        result["total"] = len(entries)
    return result


def _iter_files(ws: Workspace, base: Path) -> list[Path]:
    """Regular files under ``base`` whose real location is inside the workspace, in sorted order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            real = Path(os.path.realpath(p))
            if ws.contains(real) and real.is_file():
                out.append(p)
    return out


def _glob_match(rel: str, name: str, pattern: str) -> bool:
    """Glob on the name (no '/' in pattern) or on the relative path; a leading '**/' also matches at the top."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    if pattern.startswith("**/") and fnmatch.fnmatchcase(rel, pattern[3:]):
        return True
    return fnmatch.fnmatchcase(rel, pattern)


def search_files(
    ws: Workspace, pattern: str | None = None, query: str | None = None, path: str = ".", max_results: int = 50
) -> dict[str, Any]:
    """Files matching a glob ``pattern`` and/or lines containing ``query`` (case-insensitive).

    A pattern without '/' matches file names at any depth (``*.py``); one with '/' matches the path
    relative to ``path`` (``src/*.py``).
    """
    if not pattern and not query:
        raise ToolFailure("give a glob 'pattern', a text 'query', or both")
    base = ws.resolve(path)
    if not base.is_dir():
        raise ToolFailure(f"folder '{path}' does not exist")
    files = []
    for p in _iter_files(ws, base):
        rel = p.relative_to(base).as_posix()
        if pattern and not _glob_match(rel, p.name, pattern):
            continue
        files.append(p)
    result: dict[str, Any] = {"path": ws.relative(base)}
    if pattern:
        result["pattern"] = pattern
    if not query:
        rels = [ws.relative(Path(os.path.abspath(p))) for p in files]
        result["files"] = rels[:max_results]
        if len(rels) > max_results:
            result["truncated"] = True
        return result
    needle = query.lower()
    matches: list[dict[str, Any]] = []
    truncated = False
    for p in files:
        try:
            if p.stat().st_size > MAX_SEARCH_FILE_BYTES:
                continue
            raw = p.read_bytes()
        except OSError as exc:
            log.debug("search_files: skipping %s: %s", p, exc)
            continue
        if _is_binary(raw):
            continue
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            if needle in line.lower():
                if len(matches) >= max_results:
                    truncated = True
                    break
                matches.append({"path": ws.relative(Path(os.path.abspath(p))), "line": lineno,
                                "text": line.strip()[:MAX_SEARCH_LINE_CHARS]})
        if truncated:
            break
    result["query"] = query
    result["matches"] = matches
    if truncated:
        result["truncated"] = True
    return result
