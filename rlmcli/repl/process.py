"""The process sandbox (`--sandbox process`): the REPL server as a plain, bounded child process.

WEAK isolation, used only when asked for: the child runs as the same user, so it can read what
that user can read, reach the network, and signal the user's other processes. What it does get: a
scrubbed environment (no API keys), a fresh temporary working directory, rlimits on address space,
CPU seconds, file size and processes, no capabilities even when run as root (so, with the host
non-dumpable, it cannot read the host's memory or /proc/<pid>/environ), its own session (so a
terminal Ctrl-C reaches only the host), and death with its parent (PR_SET_PDEATHSIG on Linux).

"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ..context import write_error
from ..errors import SandboxError
from .confine import Family, SandboxLimits, close_pipes, confine, describe_exit, gone, reap, server_path, tree


class ProcessSandbox:
    name = "process"
    share_dir = None  # same filesystem: a child's context file may live anywhere

    def __init__(self, limits: SandboxLimits, python: str = sys.executable, family: Family | None = None):
        self.limits = limits
        self.python = python
        # The servers of this run (a child RLM's too: spawn()), whose processes share --pids-limit.
        self.family = family or Family(limits.pids)
        self.child = family is not None
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir: Path | None = None
        self._last_exit: int | None = None
        self._last_stderr = ""

    def spawn(self, memory: int) -> ProcessSandbox:
        """A child RLM's server: a second process like this one, capped at `memory` bytes."""
        return ProcessSandbox(dataclasses.replace(self.limits, memory=memory), self.python, self.family)

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        if self.child:
            self.family.check()
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
                self.python, "-I", str(server_path()), *(["--child"] if self.child else []),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                cwd=self.workdir, env=env, preexec_fn=confine(self.limits, drop_capabilities=True),
                start_new_session=True, limit=2**20,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"could not start the process REPL ({self.python}): {exc}") from exc
        finally:
            stderr.close()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.family.roots.add(self.proc.pid)
        return self.proc.stdout, self.proc.stdin

    def add_input(self, host_path: Path) -> None:
        pass  # same filesystem: the server reads the host path itself

    def visible_path(self, host_path: Path) -> str:
        return str(host_path)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            self.family.roots.discard(proc.pid)
            doomed = tree({proc.pid})
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the server and anything a cell started
                except ProcessLookupError:
                    pass
            # A daemon a cell left (in its own session: killpg misses it) keeps the pipes open.
            close_pipes(proc, (0, 1))
            self._last_exit = await reap(proc)
            await gone(doomed)
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
