"""The process sandbox (`--sandbox process`): the REPL server as a plain, bounded child process.

WEAK isolation, used only when asked for: the child runs as the same user, so it can read what
that user can read, reach the network, and signal the user's other processes. What it does get: a
scrubbed environment (no API keys), a fresh temporary working directory, rlimits on address space,
CPU seconds, file size and processes, no capabilities even when run as root (so, with the host
non-dumpable, it cannot read the host's memory or /proc/<pid>/environ), its own session (so a
terminal Ctrl-C reaches only the host), and death with its parent (PR_SET_PDEATHSIG on Linux).

The helpers here (limits, rlimits, the server file) are shared with the bubblewrap and Docker
sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .context import write_error
from .errors import SandboxError

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
STOP_WAIT = 5.0  # seconds a stop waits for a killed server (and its pipes) before it moves on


@dataclass
class SandboxLimits:
    memory: int = 1024**3  # bytes of address space per process (local, process) / memory (docker)
    cpu_seconds: int = 3600  # lifetime CPU of the server process: a backstop for runaway threads
    file_size: int = 1024**3  # largest file a cell may write
    pids: int = 128  # processes (local, process: added to what the user already runs; see confine)


def server_path() -> Path:
    """The REPL server file: inside the installed wheel, or in the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_sandbox" / "repl_server.py", here.parent / "sandbox" / "repl_server.py"):
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


class ProcessSandbox:
    name = "process"

    def __init__(self, limits: SandboxLimits, python: str = sys.executable):
        self.limits = limits
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir: Path | None = None
        self._last_exit: int | None = None
        self._last_stderr = ""

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="rlm-cell-"))
            stderr = open(self.workdir / ".server-stderr", "wb")
        except OSError as exc:  # a full disk is the user's to fix (exit 2), not a bug
            raise write_error(self.workdir or Path(tempfile.gettempdir()), exc) from exc
        # Only these variables: nothing of the host's environment (API keys) reaches the child.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
        }
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-I", str(server_path()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                cwd=self.workdir, env=env, preexec_fn=confine(self.limits, drop_capabilities=True),
                start_new_session=True, limit=2**20,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"could not start the process REPL ({self.python}): {exc}") from exc
        finally:
            stderr.close()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        return self.proc.stdout, self.proc.stdin

    def add_input(self, host_path: Path) -> None:
        pass  # same filesystem: the server reads the host path itself

    def visible_path(self, host_path: Path) -> str:
        return str(host_path)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the server and anything a cell started
                except ProcessLookupError:
                    pass
            # A daemon a cell left (in its own session: killpg misses it) keeps the pipes open.
            close_pipes(proc, (0, 1))
            self._last_exit = await reap(proc)
        if self.workdir is not None:
            try:
                tail = (self.workdir / ".server-stderr").read_bytes()[-400:]
                self._last_stderr = tail.decode("utf-8", "replace").strip()
            except OSError:
                self._last_stderr = ""
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def exit_description(self) -> str:
        """Call after stop(): how the last server ended."""
        return describe_exit(self._last_exit, self._last_stderr)


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
