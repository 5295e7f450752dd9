"""The local sandbox: the REPL server as a bounded child process.

Weaker isolation than Docker: the child runs as the same user and can read what that user can
read. What it does get: a scrubbed environment (no API keys), a fresh temporary working directory,
rlimits on address space, CPU seconds, file size and processes, its own session (so a terminal
Ctrl-C reaches only the host), and death with its parent (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SandboxError


@dataclass
class SandboxLimits:
    memory: int = 1024**3  # bytes of address space (local) / memory (docker)
    cpu_seconds: int = 3600  # lifetime CPU of the server process: a backstop for runaway threads
    file_size: int = 1024**3  # largest file a cell may write
    pids: int = 128  # processes (local: added to what the user already runs; see below)


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


class LocalSandbox:
    name = "local"

    def __init__(self, limits: SandboxLimits, python: str = sys.executable):
        self.limits = limits
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir: Path | None = None
        self._last_exit: int | None = None
        self._last_stderr = ""

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        self.workdir = Path(tempfile.mkdtemp(prefix="rlm-cell-"))
        stderr = open(self.workdir / ".server-stderr", "wb")
        # RLIMIT_NPROC counts every process of the user, so it is set relative to what runs now.
        nproc = _user_process_count() + self.limits.pids
        limits = self.limits

        def confine() -> None:  # runs in the child between fork and exec
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if sys.platform.startswith("linux"):
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the host

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
                cwd=self.workdir, env=env, preexec_fn=confine, start_new_session=True,
                limit=2**20,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"could not start the local REPL ({self.python}): {exc}") from exc
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
            await proc.wait()
            self._last_exit = proc.returncode
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
        code, tail = self._last_exit, self._last_stderr
        if code is None:
            status = "the server had not exited"
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            status = f"the server was killed by {name}"
        else:
            status = f"the server exited with status {code}"
        return status + (f"; its last words: {tail[-200:]}" if tail else "")
