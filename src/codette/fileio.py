"""Atomic file writes: nothing the project writes is ever visible half-written at its final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from codette.errors import CodetteError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check we can write into it, with an error that names it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CodetteError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CodetteError(f"output folder {path} is not writable")
    return path


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: Path | str, directory: bool = False) -> None:
    """Give a finished temporary the permissions a normally created file would have.

    ``mkstemp``/``mkdtemp`` create 0600/0700; checkpoints, datasets and exports are meant to be
    read by other tools and users (an Ollama server often runs as another user).
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    untouched, so a reader never sees a partial file.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def fsync_path(path: Path | str) -> None:
    """Flush a finished file (or folder entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path | str) -> None:
    """Persist a rename itself (POSIX); harmless where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fsync_path(directory)


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (how a run names the tokenizer its checkpoints and packing used)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
