"""The local sandbox (`--sandbox local`): the REPL server under bubblewrap (`bwrap`).

bwrap is the engine Flatpak uses: it starts the server in new user, PID, IPC, network and UTS
namespaces, on an empty root filesystem into which only the system directories (/usr, /bin,
/lib*), the Python installation and the run's read-only inputs are bound, read-only. So a cell
has no network, no view of the host's processes (no /proc/<ppid>/environ), no host files but its
inputs, no capabilities, and one writable place: a private /tmp in memory (size-capped where
bwrap has --size, 0.7 and later). The rlimits of the process sandbox apply too, and everything
dies with the run: killing bwrap tears down its PID namespace.

It runs unprivileged where user namespaces are allowed, and as root. Nothing from the host's
environment reaches it: bwrap itself starts with an empty environment, because its first process
(PID 1 in the namespace, readable from a cell) keeps the environment it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

from ..context import write_error
from ..errors import SandboxError
from .confine import (
    INPUTS,
    MOUNT,
    STOP_WAIT,
    Family,
    SandboxLimits,
    close_pipes,
    confine,
    describe_exit,
    gone,
    reap,
    server_path,
    tree,
    visible_path,
)
from .pids_cgroup import PidsCgroup

TMP_SIZE = 256 * 2**20  # the private /tmp, as Docker's
SHM_SIZE = 64 * 2**20  # /dev/shm, for multiprocessing's semaphores
STDERR_TAIL = 4096  # bytes of the server's stderr kept for messages; the rest is dropped
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}  # all a cell's environment holds
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/localtime")
INSTALL = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`) "
    "and allow unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu "
    "24.04+ also `sysctl kernel.apparmor_restrict_unprivileged_userns=0`)"
)
WEAKER = "or accept weaker isolation with --sandbox process"
FIXES = f"{INSTALL}; or start Docker and use --sandbox docker; {WEAKER}"  # for --sandbox local
AUTO_FIXES = f"start Docker (e.g. `sudo systemctl start docker` or `dockerd &`); or {INSTALL}; {WEAKER}"


def interpreter() -> tuple[str, list[str]]:
    """The real (non-venv) Python to run the server with, and the directories it needs. The server
    is stdlib only, so the base installation is enough and the virtualenv stays unseen."""
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    prefixes = (sys.base_prefix, sys.base_exec_prefix)
    wanted = {os.path.realpath(p) for p in prefixes} | {os.path.dirname(python)}
    # What lies under /usr (Debian's python3) or under another wanted directory is bound anyway;
    # /root/.pyenv/versions/3.11.7 is not, and then it is bound by itself (the rest of /root is not).
    covered = (*SYSTEM_DIRS, *wanted)
    dirs = [d for d in wanted if not any(d.startswith(c + "/") for c in covered)]
    return python, sorted(dirs)


def command(tmp_size: int, binds: dict[str, str], argv: list[str]) -> list[str]:
    """The bwrap command line: `binds` maps host paths to where the sandbox sees them (read-only)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    python, python_dirs = interpreter()
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL",  # as root bwrap would keep every capability (then remounts were possible)
        "--clearenv", *[a for name, value in ENV.items() for a in ("--setenv", name, value)],
        "--hostname", "rlm-sandbox",
    ]  # fmt: skip
    for path in SYSTEM_DIRS:
        args += ["--ro-bind-try", path, path]
    for path in python_dirs:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if sizes_tmpfs():
        args += ["--size", str(tmp_size), "--tmpfs", "/tmp", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
    else:  # an older (or setuid) bwrap: unsized, in memory; RLIMIT_FSIZE still caps each file
        args += ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    for host, seen in binds.items():
        args += ["--ro-bind", host, seen]
    # The root and /dev are bwrap's own tmpfs mounts: read-only, so /tmp and /dev/shm stay the
    # only places a cell can write (both capped).
    args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp", "--", python, *argv]
    return args


@functools.lru_cache(maxsize=1)
def sizes_tmpfs() -> bool:
    """Whether this bwrap can cap the size of a tmpfs: `--size` came with bubblewrap 0.7 (Ubuntu
    22.04 has 0.6), and a setuid bwrap refuses it to users other than root. Checked once."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    try:
        st = os.stat(bwrap)
        if st.st_mode & stat.S_ISUID and st.st_uid == 0 and os.getuid() != 0:
            return False
        done = subprocess.run([bwrap, "--help"], env=ENV, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in done.stdout + done.stderr


@functools.lru_cache(maxsize=1)
def unusable() -> str | None:
    """Why bwrap cannot run the server here (missing, user namespaces refused, ...), or None.
    Checked once per process, by starting the sandbox's Python under the same options."""
    if shutil.which("bwrap") is None:
        return "is not installed (no `bwrap` on PATH)"
    try:
        done = subprocess.run(
            command(2**20, {}, ["-I", "-S", "-c", "pass"]), env=ENV, capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not be started: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"failed to start a sandbox (status {done.returncode}): {said or 'no message'}"
    return None


def require() -> None:
    problem = unusable()
    if problem is not None:
        raise SandboxError(f"the local sandbox needs bubblewrap, which {problem}", hint=FIXES)


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Drain a stream to its end, keeping only its last STDERR_TAIL bytes: whatever a cell writes
    there (e.g. onto bwrap's own stderr through /proc/1/fd/2) costs the host no disk and little memory."""
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-STDERR_TAIL]


class BwrapSandbox:
    name = "local"

    def __init__(self, limits: SandboxLimits, share_dir: Path):
        require()
        self.limits = limits
        self.share_dir = share_dir
        try:
            shutil.copyfile(server_path(), share_dir / "repl_server.py")
        except OSError as exc:  # a full disk is the user's to fix (exit 2), not a bug
            raise write_error(share_dir / "repl_server.py", exc) from exc
        self.inputs: dict[Path, str] = {}  # host files outside share_dir -> where the sandbox sees them
        # The servers of this run (a child RLM's too: spawn()), whose processes share --pids-limit.
        self.family = Family(limits.pids)
        # As root RLIMIT_NPROC does not hold: a pids cgroup shared by the run's servers does, where
        # the kernel lets us make one (pids_cgroup.py); made at the first start, removed at the stop.
        self.cgroup: PidsCgroup | None = None
        self.child = False
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task | None = None
        self._stderr = bytearray()
        self._last_exit: int | None = None

    def spawn(self, memory: int) -> BwrapSandbox:
        """A child RLM's server: a second bwrap with the same binds and limits, but `memory` bytes
        of address space. It has its own namespaces (and /tmp): killing it ends all it started."""
        child = copy.copy(self)
        child.limits = dataclasses.replace(self.limits, memory=memory)
        child.inputs = dict(self.inputs)
        child.child, child.proc, child._stderr_task = True, None, None
        child._stderr, child._last_exit = bytearray(), None
        return child

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        if self.child:
            self.family.check()
        binds = {str(self.share_dir): MOUNT, **{str(host): seen for host, seen in self.inputs.items()}}
        argv = command(
            TMP_SIZE, binds, ["-I", f"{MOUNT}/repl_server.py", *(["--child"] if self.child else [])]
        )
        self._stderr = bytearray()
        if not self.child and self.cgroup is None:
            self.cgroup = PidsCgroup.create(self.limits.pids)
        preexec = confine(self.limits)
        if self.cgroup is not None:  # a child's server joins its parent's: one cap for the tree
            preexec = self.cgroup.joining(preexec)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=ENV, preexec_fn=preexec,
                start_new_session=True, limit=2**20,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"could not start bubblewrap: {exc}", hint=FIXES) from exc
        assert self.proc.stdout is not None and self.proc.stdin is not None and self.proc.stderr
        self.family.roots.add(self.proc.pid)
        self._stderr_task = asyncio.create_task(_keep_tail(self.proc.stderr, self._stderr))
        return self.proc.stdout, self.proc.stdin

    def add_input(self, host_path: Path) -> None:
        """A named input used in place: bound read-only, by itself (its directory stays unseen)."""
        self.inputs[host_path] = f"{INPUTS}/{host_path.name}"

    def visible_path(self, host_path: Path) -> str:
        return visible_path(host_path, self.inputs, self.share_dir)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            self.family.roots.discard(proc.pid)
            doomed = tree({proc.pid})
            if proc.returncode is None:
                # bwrap and its namespace's init die together (--die-with-parent), and with the
                # init every process of the namespace: daemons a cell left behind included.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            # Waits are bounded all the same: stdin and stdout are not needed any more, and stderr
            # (the server's last words) is read for at most STOP_WAIT seconds.
            close_pipes(proc, (0, 1))
            code = await reap(proc)
            await gone(doomed)  # a child's processes are gone when its stop returns
            # bwrap reports a server killed by signal N as status 128 + N.
            self._last_exit = -(code - 128) if code is not None and code > 128 else code
        if not self.child and self.cgroup is not None:  # a restart makes a new one
            self.cgroup.remove()
            self.cgroup = None
        task, self._stderr_task = self._stderr_task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, STOP_WAIT)
        if proc is not None:
            close_pipes(proc, (2,))

    def exit_description(self) -> str:
        """Call after stop(): how the last server ended."""
        return describe_exit(self._last_exit, self._stderr.decode("utf-8", "replace").strip())
