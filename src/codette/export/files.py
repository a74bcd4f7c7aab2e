"""Atomic outputs for writers that open files themselves (gguf-py, safetensors) and for whole folders.

Same contract as :func:`codette.fileio.atomic_open`: the data goes to a temporary name in the target's
folder, is fsynced, then renamed; if anything fails (or the process is interrupted) the temporary is
removed and nothing ever appears at the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from codette.errors import CodetteError
from codette.fileio import (
    DISK_FULL,
    TMP_SUFFIX,
    ensure_writable_dir,
    fsync_dir,
    fsync_path,
    publish_mode,
    temp_prefix,
    write_error,
)


def refuse_existing(paths: list[Path], force: bool) -> None:
    """Refuse to replace any of ``paths`` unless ``force``; the error names the first one found."""
    if force:
        return
    for p in paths:
        if p.exists():
            raise CodetteError(f"{p} already exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; on success it is fsynced and renamed to ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_mode(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise write_error(path, exc) from None
        raise


@contextlib.contextmanager
def scratch_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` for an intermediate file; it is always removed.

    Named like :func:`atomic_path`'s temporaries, so one left by a killed process is recognised as stale.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success its files are fsynced and it replaces ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        publish_mode(tmp, directory=True)
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        if path.exists():  # the caller checked --force
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise write_error(path, exc) from None
        raise
