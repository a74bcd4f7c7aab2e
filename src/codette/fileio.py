"""Atomic file writes: nothing the project writes is ever visible half-written at its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from codette.errors import CodetteError

log = logging.getLogger(__name__)

# Every temporary is named ".<final name>.<pid>.<random>.tmp" beside its final file, so that a later
# run can recognise one left by a writer that died (kill -9, power loss) and remove it.
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")
# Errors that mean the disk (or quota) is full rather than a bug.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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


def temp_prefix(path: Path) -> str:
    """The start of a temporary's name for ``path`` (pass ``suffix=TMP_SUFFIX`` to mkstemp/mkdtemp)."""
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer is no longer running; those of a live
    process (another run writing into the same folder) are left alone. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP_NAME.fullmatch(entry.name)
        if m is None or _alive(int(m.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the stale temporary %s: %s", entry, exc.strerror or exc)
            continue
        removed.append(entry)
    if removed:
        log.info("removed %d stale temporar%s left in %s by an interrupted write", len(removed),
                 "y" if len(removed) == 1 else "ies", folder)
    return removed


def write_error(path: Path, exc: OSError) -> CodetteError:
    """The one-line error for a write that failed because the disk is full: which file, and that the
    file at its final name was left as it was."""
    before = f"the existing {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    return CodetteError(f"cannot write {path}: {exc.strerror or exc}; nothing final was replaced ({before})")


class _Tracked:
    """A file object whose write failures carry the temporary's name, so that when several atomic
    files are open at once the error names the one that could not be written."""

    def __init__(self, fh: IO, name: str) -> None:
        self._fh, self._name = fh, name

    def _tag(self, exc: OSError) -> OSError:
        if exc.filename is None:
            exc.filename = self._name
        return exc

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise self._tag(exc) from None

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            raise self._tag(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise write_error(path, exc) from None
        raise
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            tracked = _Tracked(fh, tmp)
            yield tracked  # type: ignore[misc]
            tracked.flush()
            try:
                os.fsync(fh.fileno())
            except OSError as exc:
                raise tracked._tag(exc) from None
        publish_mode(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # A full disk while writing this file (not another one open at the same time) is the user's to fix.
        if isinstance(exc, OSError) and exc.errno in DISK_FULL and exc.filename in (None, tmp):
            raise write_error(path, exc) from None
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
