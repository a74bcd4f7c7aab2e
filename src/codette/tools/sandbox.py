"""execute_python for untrusted code: one fresh process per call inside a bubblewrap sandbox.

What the snippet gets (see docs/SECURITY.md for the threat model):

* its own user, PID, network, IPC, UTS and cgroup namespaces: no network at all, no view of the
  caller's processes (``/proc`` is the sandbox's own), and when the call ends the namespace's init
  is killed, which kills every process the snippet started, detached or not;
* a user id that is not root on the host (65534), so ``RLIMIT_NPROC`` bounds its processes (as root,
  the sandbox gets a user namespace mapping 65534 to the host's 65534; otherwise bwrap maps it to the
  caller's own id);
* read-only system libraries and the Python installation, nothing else of the host's files;
* a copy of the workspace on a size-limited tmpfs (the disk quota for the whole call, every file
  together) plus a small ``/tmp``; when the snippet has ended, the files it changed are sent back
  and written into the real workspace through the same checked descriptors as ``write_file``;
* limits on CPU time, address space, file size, open files and output, and a seccomp filter that
  refuses new namespaces, mounts, ``memfd_create``, ``ptrace``, ``bpf``, ``io_uring`` and friends.

Where bubblewrap is missing or cannot build the sandbox, the call is refused with a message that
says how to get it: the snippet never runs with weaker isolation.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codette.tools import proc
from codette.tools.base import ToolFailure
from codette.tools.files import Workspace
from codette.tools.python_exec import MAX_OUTPUT_CHARS, ExecutionResult, check_code
from codette.tools.safeopen import check_regular, read_fd

log = logging.getLogger(__name__)

SANDBOX_UID = 65534
DEFAULT_DISK_MB = 64          # what the snippet may add to its copy of the workspace, all files together
DEFAULT_MAX_PROCESSES = 16    # tasks (processes and threads) the snippet may have at once
DEFAULT_FILE_SIZE_MB = 16     # per file, and so per output stream
MAX_WORKSPACE_COPY_BYTES = 256 * 1024 * 1024
MAX_WORKSPACE_ENTRIES = 5000
TMP_MB = 16
SHM_MB = 1
MAX_OPEN_FILES = 64
RETURN_GRACE_S = 10.0         # time after the snippet's timeout for the sandbox to send its files back

INSTALL_HINT = ("execute_python runs untrusted code only inside a bubblewrap sandbox, and bubblewrap (bwrap) "
                "is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap) or leave "
                "execute_python disabled")

# -- seccomp: a classic BPF program, assembled here so no library is needed ----------------------------
_ARCHES = {
    # machine: (AUDIT_ARCH, refused syscalls, clone, clone3)
    "x86_64": (0xC000003E, {
        "memfd_create": 319, "memfd_secret": 447, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "kexec_load": 246, "init_module": 175, "finit_module": 313, "acct": 163,
        "swapon": 167, "quotactl": 179, "personality": 135}, 56, 435),
    "aarch64": (0xC00000B7, {
        "memfd_create": 279, "memfd_secret": 447, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "kexec_load": 104, "init_module": 105, "finit_module": 273, "acct": 89,
        "swapon": 224, "quotactl": 60, "personality": 92}, 220, 435),
}
_NEW_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def seccomp_program(machine: str | None = None) -> bytes:
    """The filter bwrap loads before starting the bootstrap (``struct sock_filter[]`` bytes)."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        raise ToolFailure(f"execute_python's sandbox filter is not available on {platform.machine()}; "
                          "it is built for x86_64 and aarch64")
    audit, refused, clone, clone3 = arch
    ins: list[tuple[int, int, int, int]] = [(0x20, 0, 0, 4), (0x15, 1, 0, audit), (0x06, 0, 0, _RET_KILL),
                                            (0x20, 0, 0, 0)]
    if audit == 0xC000003E:  # x32 system calls share the arch: refuse them all
        ins += [(0x35, 0, 1, 0x40000000), (0x06, 0, 0, _RET_ERRNO | _ENOSYS)]
    for nr in sorted(refused.values()):
        ins += [(0x15, 0, 1, nr), (0x06, 0, 0, _RET_ERRNO | _EPERM)]
    ins += [(0x15, 0, 1, clone3), (0x06, 0, 0, _RET_ERRNO | _ENOSYS),  # glibc falls back to clone
            (0x15, 1, 0, clone), (0x06, 0, 0, _RET_ALLOW),
            (0x20, 0, 0, 16), (0x45, 0, 1, _NEW_NAMESPACE_FLAGS), (0x06, 0, 0, _RET_ERRNO | _EPERM),
            (0x06, 0, 0, _RET_ALLOW)]
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


# -- the program that runs inside the sandbox ----------------------------------------------------------
_BOOT = proc.EXEC_MAIN_SOURCE + r'''
import ctypes, marshal, os, resource, select, signal, stat, sys, time

def _drop_root(uid):
    libc = ctypes.CDLL(None, use_errno=True)
    if os.getuid() == 0:
        for cap in range(64):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the snippet cannot read this process's memory or fds

def _receive(inp):
    """The caller's one marshal blob (trusted direction): code, sys.path, folders and files of the workspace."""
    n = int.from_bytes(inp.read(8), "big")
    msg = marshal.loads(inp.read(n))
    known_files, known_dirs = {}, set()
    for path in msg["dirs"]:
        os.makedirs(path, exist_ok=True)
        known_dirs.add(path)
    for path, data, mtime, executable in msg["files"]:
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o755 if executable else 0o644)
        os.utime(path, ns=(mtime, mtime))
        known_files[path] = (len(data), mtime, hash(data))  # compared within this process only
    return msg["code"], msg["path"], known_files, known_dirs

def _run(code, path):
    sys.path[:] = path  # the interpreter's own path; site (and its .pth files) is not run
    __builtins__.exit = __builtins__.quit = sys.exit  # what site would have added
    return _exec_main(code)[0]

def _child(code, path, out_fd, cpu_s, mem_mb, fsize_mb, nproc):
    try:
        os.close(out_fd)
        os.closerange(3, 1024)
        for which, value in ((resource.RLIMIT_AS, mem_mb << 20), (resource.RLIMIT_FSIZE, fsize_mb << 20),
                             (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, __NOFILE__),
                             (resource.RLIMIT_NPROC, nproc)):
            resource.setrlimit(which, (value, value))
        # The soft CPU limit sends SIGXCPU (reported as a timeout); the hard one, a second later, SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        os._exit(_run(code, path))
    except BaseException:
        os._exit(1)

def _others():
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]

def _kill_all():
    """Kill every other process of the namespace's user and reap our own children, until none is left."""
    for _ in range(200):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not _others():
            return True
        time.sleep(0.005)
    return False

def _send(out, known_files, known_dirs, result):
    """JSON lines (paths hex-encoded, so no escaping is needed), each file's bytes after its line."""
    def rec(kind, path, extra="", data=b""):
        out.write(('{"t": "%s", "p": "%s"%s}\n' % (kind, path.encode("utf-8", "surrogateescape").hex(), extra)).encode())
        out.write(data)
    files, dirs = {}, set()
    for top, dnames, fnames in os.walk(".", followlinks=False):
        for d in dnames:
            p = os.path.normpath(os.path.join(top, d))
            if not os.path.islink(p):
                dirs.add(p)
        for f in fnames:
            p = os.path.normpath(os.path.join(top, f))
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                files[p] = st
    for d in sorted(dirs - known_dirs):
        rec("dir", d)
    for p in sorted(files):
        st = files[p]
        old = known_files.get(p)
        with open(p, "rb") as fh:
            data = fh.read()
        if old is not None and old[0] == st.st_size == len(data) and old[1] == st.st_mtime_ns and old[2] == hash(data):
            continue
        rec("file", p, ', "n": %d, "x": %s' % (len(data), "true" if st.st_mode & 0o100 else "false"), data)
    for p in sorted(set(known_files) - set(files)):
        rec("del", p)
    for d in sorted(known_dirs - dirs, key=lambda d: -d.count("/")):
        rec("rmdir", d)
    fields = ", ".join('"%s": %s' % (k, "null" if v is None else ("true" if v is True else "false" if v is False else repr(v)))
                       for k, v in result.items())
    out.write(('{"t": "result", %s}\n' % fields).encode())
    out.flush()

def main():
    out_fd, timeout_s, mem_mb, fsize_mb, nproc = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                                  int(sys.argv[4]), int(sys.argv[5]))
    _drop_root(__UID__)
    code, path, known_files, known_dirs = _receive(sys.stdin.buffer)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout.flush()
    sys.stderr.flush()
    cpu_s = max(1, int(timeout_s + 0.999))
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(code, path, out_fd, cpu_s, mem_mb, fsize_mb, nproc)
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], timeout_s)
    result = {"timed_out": not ready, "exit": None, "signal": None}
    if ready:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        else:
            result["exit"] = os.WEXITSTATUS(status)
    result["duration_s"] = time.monotonic() - start
    result["leftover"] = len(_others())
    result["clean"] = _kill_all()
    _send(os.fdopen(out_fd, "wb"), known_files, known_dirs, result)

main()
'''


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _root_userns() -> int:
    """A fresh user namespace mapping 0 and 65534 to themselves (root only), as an fd for ``bwrap --userns``.

    Root's own processes are not bound by RLIMIT_NPROC; in this namespace the snippet runs as the
    host's 65534, which is. Uid 0 is mapped only so bwrap can set up the mounts; the bootstrap drops
    it (and every capability) before reading anything from the caller.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ToolFailure("execute_python's sandbox needs util-linux's 'unshare' when run as root; install util-linux")
    helper = proc.start([unshare, "--user", "--", "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, close_fds=True)
    try:
        assert helper.stdin is not None and helper.stdout is not None
        helper.stdin.write(b"x")
        helper.stdin.flush()
        if helper.stdout.read(1) != b"x":
            raise ToolFailure("execute_python's sandbox could not create a user namespace (unshare --user failed)")
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{helper.pid}/{name}", "w", encoding="ascii") as fh:
                    fh.write(f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n")
            return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ToolFailure(f"execute_python's sandbox could not map its user namespace ({exc.strerror}); as root "
                              "it needs CAP_SETUID, or run the agent as an ordinary user") from None
    finally:
        proc.stop(helper)


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


def _system_binds() -> list[str]:
    """bwrap arguments for the read-only system folders."""
    args: list[str] = []
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _python_binds(made: set[str]) -> list[str]:
    """bwrap arguments for the Python installation (venv and base), read-only.

    They come after the sandbox's own ``/tmp`` is mounted: a virtual environment or a checkout under
    ``/tmp`` (as in a CI clone) would otherwise be hidden by that empty tmpfs.
    """
    args: list[str] = []
    prefixes = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                     os.path.dirname(os.path.realpath(sys.executable)))})
    for p in prefixes:
        if any(p == q or p.startswith(q.rstrip("/") + "/") for q in ("/usr", "/bin", "/lib", "/lib64")):
            continue
        if any(p != q and p.startswith(q + "/") for q in prefixes):
            continue  # inside another bound prefix
        args += _ancestors(p, made) + ["--ro-bind", p, p]
        made.add(p)
    return args


def _ancestors(path: str, made: set[str]) -> list[str]:
    """``--dir`` arguments (mode 0755) for each missing parent of ``path``, so the unprivileged user can traverse."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    cur = ""
    for part in parts:
        cur += "/" + part
        if cur not in made:
            args += ["--perms", "0755", "--dir", cur]
            made.add(cur)
    return args


def build_args(bwrap: str, ws_root: Path, userns_fd: int | None, seccomp_fd: int, out_fd: int, timeout_s: float,
               memory_mb: int, file_size_mb: int, max_processes: int, tmpfs_bytes: int) -> list[str]:
    """The bwrap command line for one call."""
    ws = str(ws_root)
    args = [bwrap]
    if userns_fd is not None:
        args += ["--userns", str(userns_fd), "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    else:
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--new-session", "--clearenv",
             "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
             "--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1",
             "--setenv", "MKL_NUM_THREADS", "1", "--hostname", "sandbox"]
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(SHM_MB << 20),
             "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
             "--perms", "1777", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp"]
    made = {"/", "/tmp", *SYSTEM_DIRS}
    args += _python_binds(made)
    args += _ancestors(ws, made)
    args += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", ws, "--chdir", ws,
             "--seccomp", str(seccomp_fd), "--", sys.executable, "-I", "-S", "-X", "utf8", "-c",
             _BOOT.replace("__UID__", str(SANDBOX_UID)).replace("__NOFILE__", str(MAX_OPEN_FILES)),
             str(out_fd), repr(float(timeout_s)), str(memory_mb), str(file_size_mb), str(max_processes)]
    return args


# -- the workspace copy, both ways ------------------------------------------------------------------------
@dataclass
class _Entry:
    rel: str
    is_dir: bool
    data: bytes = b""
    mtime_ns: int = 0
    executable: bool = False


def snapshot(ws: Workspace) -> tuple[list[_Entry], int]:
    """Folders and regular, singly linked files of the workspace (links, FIFOs and devices are left out)."""
    entries: list[_Entry] = []
    total = 0
    stack: list[tuple[int, str]] = [(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=ws._fd), "")]
    try:
        while stack:
            dfd, prefix = stack.pop()
            try:
                with os.scandir(dfd) as it:
                    names = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                                   for e in it)
                for name, is_dir, is_file in names:
                    if len(entries) >= MAX_WORKSPACE_ENTRIES:
                        raise ToolFailure(f"the workspace holds more than {MAX_WORKSPACE_ENTRIES} files and folders; "
                                          "execute_python copies the workspace into its sandbox, so move some out")
                    rel = prefix + name
                    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
                    if is_dir:
                        try:
                            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=dfd)
                        except OSError:
                            continue
                        entries.append(_Entry(rel, True))
                        stack.append((sub, rel + "/"))
                    elif is_file:
                        try:
                            fd = os.open(name, os.O_RDONLY | flags, dir_fd=dfd)
                        except OSError:
                            continue
                        try:
                            st = check_regular(fd, rel)
                            if total + st.st_size > MAX_WORKSPACE_COPY_BYTES:
                                raise ToolFailure(
                                    f"the workspace holds more than {MAX_WORKSPACE_COPY_BYTES >> 20} MiB; "
                                    "execute_python copies the workspace into its sandbox, so move large files out")
                            data = read_fd(fd, st.st_size)
                        except ValueError:
                            continue  # not a regular file with one link: not copied
                        finally:
                            os.close(fd)
                        total += len(data)
                        entries.append(_Entry(rel, False, data, st.st_mtime_ns, bool(st.st_mode & 0o100)))
            finally:
                os.close(dfd)
    finally:
        for dfd, _ in stack:
            os.close(dfd)
    return entries, total


def _interpreter_path() -> list[str]:
    """sys.path for the snippet: the interpreter's folders that exist in the sandbox (no working folder, no .pth)."""
    bound = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)] + ["/usr"]
    return [p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)
            and any(os.path.realpath(p).startswith(b.rstrip("/") + "/") for b in bound)]


def _stream_in(fh: Any, code: str, entries: list[_Entry]) -> None:
    try:
        blob = marshal.dumps({
            "code": code, "path": _interpreter_path(),
            "dirs": [e.rel for e in entries if e.is_dir],
            "files": [(e.rel, e.data, e.mtime_ns, e.executable) for e in entries if not e.is_dir]})
        fh.write(len(blob).to_bytes(8, "big"))
        fh.write(blob)
        fh.close()
    except (BrokenPipeError, OSError, ValueError):
        pass  # the sandbox died early; the result says so


def _parse_out(raw: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The change records and the result record the sandbox sent (untrusted: validated by the caller)."""
    records: list[dict[str, Any]] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            break
        try:
            rec = json.loads(raw[pos:end])
        except ValueError:
            break
        pos = end + 1
        if not isinstance(rec, dict):
            break
        if isinstance(rec.get("p"), str):
            try:
                rec["p"] = bytes.fromhex(rec["p"]).decode("utf-8", "surrogateescape")
            except ValueError:
                break
        if rec.get("t") == "file":
            n = rec.get("n")
            if not isinstance(n, int) or n < 0 or pos + n > len(raw):
                break
            rec["data"] = raw[pos:pos + n]
            pos += n
        if rec.get("t") == "result":
            return records, rec
        records.append(rec)
    return records, None


def _apply(ws: Workspace, records: list[dict[str, Any]]) -> list[str]:
    """Write the sandbox's changes into the workspace; the problems, one short line each."""
    from codette.tools import files

    problems: list[str] = []
    for rec in records:
        kind, path = rec.get("t"), rec.get("p")
        if not isinstance(path, str) or kind not in ("dir", "file", "del", "rmdir"):
            continue
        try:
            rel = ws.rel(path)
            if rel == ".":
                continue
            if kind == "dir":
                fd = ws.make_parents(path, rel + "/x")
                os.close(fd)
            elif kind == "file":
                files.write_bytes(ws, path, rec["data"], executable=bool(rec.get("x")))
            elif kind == "del":
                files.remove(ws, path, rel)
            else:
                files.remove(ws, path, rel, folder=True)
        except ToolFailure as exc:
            problems.append(exc.message)
        except OSError as exc:
            problems.append(f"'{path}': {exc.strerror or exc}")
    return problems


def run_sandboxed(
    code: str,
    ws: Workspace,
    timeout_s: float,
    memory_mb: int,
    disk_mb: int = DEFAULT_DISK_MB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    file_size_mb: int = DEFAULT_FILE_SIZE_MB,
) -> ExecutionResult:
    """Run ``code`` in a fresh sandbox on a copy of ``ws``; write back what it changed; kill all it started."""
    check_code(code)
    bwrap = bwrap_path()
    if bwrap is None:
        raise ToolFailure(INSTALL_HINT)
    entries, total = snapshot(ws)
    program = seccomp_program()
    userns_fd = _root_userns() if os.geteuid() == 0 else None
    seccomp_r, seccomp_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(seccomp_w, program)  # far below a pipe's buffer
    os.close(seccomp_w)
    # tmpfs accounting rounds every file up to a page and charges folders: leave room for it.
    tmpfs_bytes = total + (disk_mb << 20) + 4096 * (2 * len(entries) + 64)
    args = build_args(bwrap, ws.root, userns_fd, seccomp_r, out_w, timeout_s, memory_mb, file_size_mb,
                      max_processes, tmpfs_bytes)
    limit = total + (disk_mb << 20) + (4 << 20)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            child = proc.start(args, stdin=subprocess.PIPE, stdout=out, stderr=err,
                               pass_fds=tuple(fd for fd in (seccomp_r, out_w, userns_fd) if fd is not None),
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        finally:
            for fd in (seccomp_r, out_w, userns_fd):
                if fd is not None:
                    os.close(fd)
        feeder = threading.Thread(target=_stream_in, args=(child.stdin, code, entries), daemon=True)
        feeder.start()
        # Everything the sandbox writes to its result pipe until it closes it, the deadline, or the quota.
        raw, overflow = proc.read_all(out_r, start + timeout_s + RETURN_GRACE_S, limit)
        os.close(out_r)
        # bwrap's group dies, its namespace's init with it (--die-with-parent), and so does all inside.
        proc.stop(child)
        feeder.join(timeout=1.0)
        records, result = _parse_out(raw)
        duration = time.monotonic() - start
        stdout, stderr = proc.read_output(out, MAX_OUTPUT_CHARS), proc.read_output(err, MAX_OUTPUT_CHARS)
    if result is None:
        first = next((ln for ln in stderr.splitlines() if ln.startswith("bwrap:")), "")
        if first:
            raise ToolFailure(f"execute_python's sandbox could not start ({first.strip()})")
        if overflow:
            raise ToolFailure("execute_python's sandbox sent back more data than its disk quota; nothing was saved")
        if duration >= timeout_s:
            return ExecutionResult(stdout, stderr, None, timed_out=True, duration_s=duration)
        raise ToolFailure("the sandbox was stopped before it reported a result (its processes were killed); "
                          "workspace changes were discarded", {"stdout": stdout, "stderr": stderr})
    if len(records) > MAX_WORKSPACE_ENTRIES:
        raise ToolFailure(f"the code changed more than {MAX_WORKSPACE_ENTRIES} files and folders; none of the "
                          "changes were saved", {"stdout": stdout, "stderr": stderr})
    problems = _apply(ws, records)
    exit_code = proc.reported_returncode(result.get("exit"), result.get("signal"))
    timed_out = bool(result.get("timed_out"))
    if problems:
        stderr += f"\n[execute_python: {len(problems)} changed file(s) were not saved: {problems[0]}]"
    run = ExecutionResult(stdout, stderr, None if timed_out else exit_code, timed_out=timed_out, duration_s=duration)
    leftover = result.get("leftover")
    if run.ok and isinstance(leftover, int) and leftover > 0:
        raise ToolFailure(f"the code left {leftover} background process{'es' if leftover > 1 else ''} running; "
                          "they were stopped (no process may outlive the call)", run.payload())
    return run


def available() -> str | None:
    """None when the sandbox can run here, else the reason (for docs, the CLI and tests)."""
    if bwrap_path() is None:
        return INSTALL_HINT
    if platform.machine() not in _ARCHES:
        return f"execute_python's sandbox filter is not available on {platform.machine()}"
    return None


__all__ = ["INSTALL_HINT", "available", "run_sandboxed", "seccomp_program", "snapshot"]
