"""A child RLM's REPL server in the run's container: `docker exec`, never a second container.

The server runs as the container's user, under the run's caps (memory, CPU, processes: the cgroup
bounds the whole tree), with its own address-space cap (`--max-memory`, a share of the memory). It
speaks the framed protocol over the exec's hijacked socket, demultiplexed as the attach stream is.
It starts its own session (`--child=TAG`); stopping it is a second, fork-free exec that kills, with
SIGKILL and until none is left, every process of the sessions and groups the tagged server and its
forks hold: everything the child's cells started, and nothing of the other servers. (A process a
cell moved into a session of its own escapes it, and dies with the container at the run's end.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any, Protocol

from ..errors import SandboxError
from .confine import MOUNT, PIDS_HEADROOM
from .docker_stream import Attached


class DockerSandbox(Protocol):
    """What a child needs of the run's sandbox (docker.DockerSandbox), which imports this module."""

    share_dir: Path
    container: Any  # the run's container (docker SDK), None once it is gone
    client: Any  # the docker SDK client
    options: Any  # docker.DockerOptions: pids_limit

    def visible_path(self, host_path: Path) -> str: ...


USER = "65534:65534"
# Run with `python3 -I -c KILL TAG`; forks nothing, so it runs even when the pids cap is reached
# (a process joining a cgroup is not counted against pids.max; only forks inside it are).
KILL = r"""
import os, signal, sys
mark = b"--child=" + sys.argv[1].encode()
me = os.getpid()
for _ in range(200):
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                tagged = mark in f.read().split(b"\0")
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue  # dead already; init reaps it
        procs.append((int(name), int(fields[2]), int(fields[3]), tagged))
    groups = {g for _, g, _, t in procs if t} | {s for _, _, s, t in procs if t}
    doomed = [p for p, g, s, t in procs if t or g in groups or s in groups]
    if not doomed:
        break
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


class DockerChild:
    """A child's server: one `docker exec` of repl_server.py in the parent's container."""

    name = "docker"

    def __init__(self, parent: DockerSandbox, memory: int):
        self.parent, self.memory = parent, memory
        self.share_dir: Path | None = parent.share_dir
        self.tag = secrets.token_hex(8)
        self._stream = Attached()
        self._started = False
        self._exit: str = ""

    def spawn(self, memory: int) -> DockerChild:
        return DockerChild(self.parent, memory)

    def add_input(self, host_path: Path) -> None:
        raise SandboxError("internal error: a child's server takes no inputs of its own")

    def visible_path(self, host_path: Path) -> str:
        return self.parent.visible_path(host_path)

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        container = self.parent.container
        if container is None:
            raise SandboxError("the run's container is gone: no child can start")
        await asyncio.to_thread(self._check_pids, container)
        argv = [
            "python3",
            "-I",
            f"{MOUNT}/repl_server.py",
            "--max-memory",
            str(self.memory),
            f"--child={self.tag}",
        ]
        try:
            sock = await asyncio.to_thread(self._exec, container, argv)
        except Exception as exc:
            raise SandboxError(f"cannot start a child's server in the container: {exc}") from exc
        self._started = True
        return await self._stream.open(sock)

    def _exec(self, container: Any, argv: list[str]) -> Any:
        api = self.parent.client.api
        made = api.exec_create(
            container.id, argv, stdin=True, stdout=True, stderr=True, tty=False, user=USER, workdir="/tmp"
        )
        return api.exec_start(made["Id"], socket=True, tty=False)

    def _check_pids(self, container: Any) -> None:
        """Refuse the child when the container's processes are near --pids-limit."""
        limit = self.parent.options.pids_limit
        try:
            used = len(self.parent.client.api.top(container.id).get("Processes") or [])
        except Exception:  # the count is a courtesy; the cgroup's cap holds regardless
            return
        if used >= limit - PIDS_HEADROOM:
            raise SandboxError(
                f"the sandbox's process budget is nearly spent ({used} of --pids-limit {limit} "
                "processes): no child started"
            )

    async def stop(self) -> None:
        self._stream.close()
        if self._started:
            self._started = False
            await asyncio.to_thread(self._kill)

    def _kill(self) -> None:
        container = self.parent.container
        if container is None:  # the container went first: everything in it is gone
            self._exit = "the container is gone"
            return
        with contextlib.suppress(Exception):
            api = self.parent.client.api
            made = api.exec_create(container.id, ["python3", "-I", "-c", KILL, self.tag], user=USER)
            api.exec_start(made["Id"])  # waits for it to finish
            self._exit = "the server was stopped"

    def exit_description(self) -> str:
        tail = self._stream.stderr.decode("utf-8", "replace").strip()
        status = self._exit or "the child's server exited"
        return status + (f"; its last words: {tail[-200:]}" if tail else "")
