"""Opening files beneath a directory without a race: ``openat2`` where the kernel has it, else a walk.

A path is checked and opened in one step, relative to an open descriptor of the workspace, so no
rename or symlink swapped in between a check and the ``open`` can lead outside:

* Linux 5.6+: ``openat2(root_fd, path, how)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS`` (the kernel refuses any ``..`` above the root and every symbolic link);
* otherwise: one component at a time with ``openat(dir_fd, name, O_NOFOLLOW)``, each directory
  opened with ``O_DIRECTORY`` before the next name is looked up in it.

Every descriptor is opened ``O_NONBLOCK`` (a FIFO cannot hang the call) and ``O_NOCTTY``; what it
is, is checked afterwards with ``fstat`` by the caller (:func:`check_regular`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
import threading

# O_PATH is Linux's; elsewhere a plain read-only descriptor does the same job for folders.
O_PATH = getattr(os, "O_PATH", 0)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # the same number on every architecture (new syscalls share one table)
_BASE_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class Refused(OSError):
    """The path is a symbolic link, goes through one, or leads above the root."""


_libc = None
_has_openat2: bool | None = None
_probe_lock = threading.Lock()


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall


def openat2_available() -> bool:
    """Whether this kernel has openat2 (probed once: ENOSYS means no)."""
    global _has_openat2
    with _probe_lock:
        if _has_openat2 is None and not sys.platform.startswith("linux"):
            _has_openat2 = False  # syscall 437 means something else on other systems
        if _has_openat2 is None:
            try:
                fd = _openat2(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), ".",
                              os.O_PATH | os.O_DIRECTORY, 0, close_dir=True)
                os.close(fd)
                _has_openat2 = True
            except OSError as exc:
                _has_openat2 = exc.errno != errno.ENOSYS
    return _has_openat2


def _openat2(dir_fd: int, path: str, flags: int, mode: int, close_dir: bool = False) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    try:
        for _ in range(8):  # EAGAIN: a concurrent rename was seen during resolution; try again
            fd = _syscall()(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
            if fd >= 0:
                return fd
            err = ctypes.get_errno()
            if err != errno.EAGAIN:
                break
        if err in (errno.ELOOP, errno.EXDEV):
            raise Refused(err, os.strerror(err), path)
        raise OSError(err, os.strerror(err), path)
    finally:
        if close_dir:
            os.close(dir_fd)


def _walk_open(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    """Open ``parts`` below ``dir_fd`` one name at a time, never following a link."""
    current = os.dup(dir_fd)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(current, name):
                    raise Refused(errno.ELOOP, "symbolic link", name) from None
                raise
            os.close(current)
            current = nxt
        try:
            last = flags | (os.O_NOFOLLOW | os.O_CLOEXEC if flags & O_PATH else _BASE_FLAGS)
            return os.open(parts[-1], last, mode, dir_fd=current)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR) and _is_link(current, parts[-1]):
                raise Refused(errno.ELOOP, "symbolic link", parts[-1]) from None
            raise
    finally:
        os.close(current)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def open_beneath(root_fd: int, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A descriptor for ``rel`` (a normalised relative path, '.' for the root) strictly beneath ``root_fd``.

    Raises :class:`Refused` for a symbolic link anywhere on the path, other OSErrors as ``open`` does.
    """
    # With O_PATH the kernel (openat2 strictly) takes no other flags than these.
    extra = 0 if flags & O_PATH else os.O_NOCTTY | os.O_NONBLOCK
    if rel in ("", "."):
        return os.open(".", flags | os.O_CLOEXEC | extra, dir_fd=root_fd)
    if openat2_available():
        return _openat2(root_fd, rel, flags | extra, mode)
    return _walk_open(root_fd, rel.split("/"), flags, mode)


def describe_unusable(st: os.stat_result, shown: str) -> str | None:
    """Why a (non-directory) file cannot be used, or None for a regular file with a single link."""
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device file" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file")
        return f"'{shown}' is {kind}; only regular files can be used"
    if st.st_nlink != 1:
        return (f"'{shown}' has {st.st_nlink} hard links; files with several links are refused, "
                "since another link may lie outside the workspace")
    return None


def check_regular(fd: int, shown: str) -> os.stat_result:
    """fstat of an opened file: must be a regular file with one link (else ``ValueError`` saying why)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", shown)
    problem = describe_unusable(st, shown)
    if problem:
        raise ValueError(problem)
    return st


def read_fd(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd`` (a regular file opened non-blocking reads like a blocking one)."""
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
