"""What every sandbox backend shares: the limits, the REPL server file, the rlimits and capability
drop applied between fork and exec, protecting the host process, and stopping a server's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxError

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
STOP_WAIT = 5.0  # seconds a stop waits for a killed server (and its pipes) before it moves on


# Where a sandbox (Docker, bubblewrap) sees what it is given, read-only.
MOUNT = "/rlm"  # the run's share directory: the server, the index and (unless used in place) the context
INPUTS = "/rlm-input"  # a named input file used in place


@dataclass
class SandboxLimits:
    memory: int = 1024**3  # bytes of address space per process (local, process) / memory (docker)
    cpu_seconds: int = 3600  # lifetime CPU of the server process: a backstop for runaway threads
    file_size: int = 1024**3  # largest file a cell may write
    pids: int = 128  # processes (local, process: added to what the user already runs; see confine)


def server_path() -> Path:
    """The REPL server file: inside the installed wheel, or in the source tree."""
    package = Path(__file__).resolve().parents[1]  # rlmcli/
    for candidate in (package / "_sandbox" / "repl_server.py", package.parent / "sandbox" / "repl_server.py"):
        if candidate.is_file():
            return candidate
    raise SandboxError("repl_server.py is missing from the installation; reinstall rlm")


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def protect_host() -> None:
    """Make this (host) process non-dumpable, once per run: then no process of the same user
    without CAP_SYS_PTRACE, sandboxed cells included, can read its memory, /proc/<pid>/environ
    (the API keys) or /proc/<pid>/fd. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def confine(limits: SandboxLimits, drop_capabilities: bool = False) -> Callable[[], None]:
    """The function to run in a sandbox's child between fork and exec: rlimits, death with the
    host, and optionally no capabilities after exec (a root user keeps none)."""
    # RLIMIT_NPROC counts every process of the user, so it is set relative to what runs now.
    # The kernel does not apply it to root (uid 0), inside a user namespace or not.
    nproc = _user_process_count() + limits.pids

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the host
        if drop_capabilities:
            # An empty bounding set means exec grants nothing, even to uid 0; errors (EPERM for a
            # user without CAP_SETPCAP, who has no capabilities anyway) are ignored on purpose.
            for cap in range(64):
                libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
            libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # and no setuid binary gives any back

    return apply


def close_pipes(proc: asyncio.subprocess.Process, fds: tuple[int, ...]) -> None:
    """Close our ends of a killed child's pipes (fd numbers as the child sees them). asyncio's
    wait() also waits for every pipe to close, and a process the child left behind may hold them
    for as long as it lives; without our ends, the server's data is not needed any more."""
    # asyncio keeps the transport private; without it, reap() still bounds the wait.
    transport = getattr(proc, "_transport", None)
    for fd in fds if transport is not None else ():
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None:
            pipe.close()


async def reap(proc: asyncio.subprocess.Process) -> int | None:
    """The exit status of a killed child; None if it is not reaped within STOP_WAIT seconds
    (then the run goes on rather than hang: the child was sent SIGKILL, and dies with rlm)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), STOP_WAIT)
    return proc.returncode


def describe_exit(code: int | None, tail: str) -> str:
    """How a server process ended (its exit status or signal), with the end of its stderr."""
    if code is None:
        status = "the server had not exited"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        status = f"the server was killed by {name}"
    else:
        status = f"the server exited with status {code}"
    return status + (f"; its last words: {tail[-200:]}" if tail else "")


def visible_path(host_path: Path, inputs: dict[Path, str], share_dir: Path) -> str:
    """Where a sandbox with MOUNT and INPUTS sees a host file: a named input where it was bound,
    else a file of the run's share directory under MOUNT."""
    if host_path in inputs:
        return inputs[host_path]
    if host_path.parent != share_dir:
        raise SandboxError(f"internal error: {host_path} is not shared with the sandbox")
    return f"{MOUNT}/{host_path.name}"


# A child is refused while the sandbox's processes are within this many of --pids-limit: the
# servers already running must keep room to work (and to be stopped).
PIDS_HEADROOM = 8


def _stat(pid: str) -> tuple[int, bytes] | None:
    """(parent pid, state) of a process from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        return int(fields[1]), fields[0]
    except (OSError, ValueError, IndexError):
        return None


def tree(roots: set[int] | list[int]) -> set[int]:
    """The pids of `roots` and of all their descendants, from /proc (none off Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit() and (found := _stat(entry.name)) is not None:
            children.setdefault(found[0], []).append(int(entry.name))
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen


async def gone(pids: set[int], wait: float = STOP_WAIT) -> None:
    """Wait (at most `wait` seconds) until the killed processes `pids` are gone: SIGKILL reaches a
    PID namespace's members, or a group's, a moment after the call that sends it returns."""
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        if all((found := _stat(str(pid))) is None or found[1] in (b"Z", b"X") for pid in pids):
            return
        await asyncio.sleep(0.02)


class Family:
    """The server processes of one sandbox on this host (the run's and its children's): how many
    processes their trees hold together, counted from /proc, against the sandbox's pids cap."""

    def __init__(self, pids_limit: int):
        self.pids_limit = pids_limit
        self.roots: set[int] = set()

    def processes(self) -> int:
        """Processes (threads not counted) in the trees of the live servers."""
        return len(tree(self.roots))

    def check(self) -> None:
        """SandboxError when another server may not start: the process budget is nearly spent."""
        used = self.processes()
        if used >= self.pids_limit - PIDS_HEADROOM:
            raise SandboxError(
                f"the sandbox's process budget is nearly spent ({used} of --pids-limit {self.pids_limit} "
                "processes): no child started"
            )
