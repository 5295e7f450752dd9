"""Host side of the REPL protocol: framed JSON with sandbox/repl_server.py over any byte stream.

One protocol, many transports: a sandbox only has to hand over an asyncio (reader, writer) pair
connected to the server's stdin/stdout. `Repl` loads the context once, runs cells, brokers the
server's `llm_query` requests to the host's model client, and restarts a dead server once.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import SandboxError

FRAME = struct.Struct(">I")
MAX_FRAME = 512 * 1024 * 1024
# How long past the cell timeout the host waits before it concludes the in-server timer failed.
BACKSTOP_GRACE = 3.0

SubcallHandler = Callable[[list[str], str | None], Awaitable[list[str]]]


@dataclass
class CellResult:
    output: str
    error: str | None = None
    final: str | None = None
    restored: list[str] = field(default_factory=list)
    duration: float = 0.0


class ServerDied(Exception):
    """The REPL server stopped answering: exited, was killed, or broke the protocol."""


class Sandbox(Protocol):
    """Where the REPL server runs. Implementations: LocalSandbox, later DockerSandbox."""

    name: str

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Start a fresh REPL server; return streams to its stdin/stdout."""
        ...

    def add_input(self, host_path: Path) -> None:
        """Let the server read a host file that lives outside the run's own directory."""
        ...

    def visible_path(self, host_path: Path) -> str:
        """The path under which the server sees a host file (the context, its index)."""
        ...

    async def stop(self) -> None:
        """Kill the server and everything it started; safe to call twice."""
        ...

    def exit_description(self) -> str:
        """Why the server died (exit status, signal, last lines of its stderr), for messages."""
        ...


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def send(self, msg: dict) -> None:
        data = json.dumps(msg, ensure_ascii=False).encode("utf-8", "replace")
        try:
            self.writer.write(FRAME.pack(len(data)) + data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ServerDied(f"the REPL server stopped reading ({exc.__class__.__name__})") from exc

    async def recv(self) -> dict:
        try:
            (size,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
            if size > MAX_FRAME:
                raise ServerDied(f"the REPL server sent an oversized frame ({size} bytes)")
            msg = json.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise ServerDied("the REPL server exited") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServerDied("the REPL server broke the protocol (unreadable frame)") from exc
        if not isinstance(msg, dict):
            raise ServerDied("the REPL server broke the protocol (frame is not an object)")
        return msg


class Repl:
    """A live REPL in a sandbox: context loaded once, namespace kept across cells."""

    def __init__(
        self,
        sandbox: Sandbox,
        context_path: Path,
        index_path: Path,
        on_subcalls: SubcallHandler | None = None,  # may be set after construction (the agent's)
        cell_timeout: float = 120.0,
        max_output_chars: int = 20000,
        max_restarts: int = 1,
    ):
        self.sandbox = sandbox
        self.context_path, self.index_path = context_path, index_path
        self.on_subcalls = on_subcalls
        self.cell_timeout = cell_timeout
        self.max_output_chars = max_output_chars
        self.max_restarts = max_restarts
        self.restarts = 0
        self.python = ""
        self.channel: Channel | None = None

    async def start(self) -> None:
        """Start the server and load the context into it (the only time the context moves)."""
        try:
            reader, writer = await self.sandbox.start()
            self.channel = Channel(reader, writer)
            ready = await asyncio.wait_for(self.channel.recv(), 60)
            self.python = ready.get("python", "")
            loaded = await self._call(
                {
                    "op": "load",
                    "context_path": self.sandbox.visible_path(self.context_path),
                    "index_path": self.sandbox.visible_path(self.index_path),
                    "max_output_chars": self.max_output_chars,
                },
                timeout=None,
            )
        except (ServerDied, TimeoutError) as exc:
            await self.sandbox.stop()
            raise SandboxError(
                f"the {self.sandbox.name} REPL failed to start: {exc}; {self.sandbox.exit_description()}"
            ) from exc
        if loaded.get("type") != "loaded":
            if loaded.get("out_of_memory"):
                size = self.context_path.stat().st_size
                raise SandboxError(
                    f"the context ({size:,} bytes) does not fit in the sandbox's memory limit",
                    hint=f"raise --memory to about {max(1, 3 * size // 2**30 + 1)}g "
                    "(the REPL holds the file mapped and the whole text as one string)",
                )
            raise SandboxError(f"the REPL could not load the context: {loaded.get('error')}")

    async def run_cell(self, code: str, timeout: float | None = None) -> CellResult:
        timeout = self.cell_timeout if timeout is None else timeout
        try:
            msg = await self._call({"op": "exec", "code": code, "timeout": timeout}, timeout=timeout)
        except ServerDied as died:
            return await self._restart(died)
        return CellResult(
            output=msg.get("output", ""),
            error=msg.get("error"),
            final=msg.get("final"),
            restored=list(msg.get("restored") or []),
            duration=float(msg.get("duration") or 0.0),
        )

    async def get(self, name: str) -> tuple[str | None, str | None]:
        """(value, error) of a variable in the namespace, as a string."""
        try:
            msg = await self._call({"op": "get", "name": name}, timeout=30)
        except ServerDied as died:
            await self._restart(died)
            return None, "the REPL was restarted and its variables were lost"
        return msg.get("value"), msg.get("error")

    async def close(self) -> None:
        if self.channel is not None:
            try:
                await asyncio.wait_for(self.channel.send({"op": "shutdown"}), 1)
            except (ServerDied, TimeoutError):
                pass
        await self.sandbox.stop()

    async def _call(self, msg: dict, timeout: float | None) -> dict:
        """Send one command; serve the server's sub-call requests until its answer arrives.

        The backstop deadline counts only the server's own time: waiting for sub-calls is not
        charged, exactly as the server pauses its own cell timer meanwhile.
        """
        assert self.channel is not None
        await self.channel.send(msg)
        left = None if not timeout else timeout + BACKSTOP_GRACE
        while True:
            started = time.monotonic()
            try:
                frame = await asyncio.wait_for(self.channel.recv(), left)
            except TimeoutError:
                raise ServerDied(
                    f"the cell did not stop at its {timeout:g}s timeout and was killed"
                ) from None
            if left is not None:
                left -= time.monotonic() - started
            if frame.get("type") != "llm_query":
                return frame
            prompts = [str(p) for p in frame.get("prompts") or []]
            if self.on_subcalls is None:
                replies = ["[llm_query error: sub-calls are not available here]"] * len(prompts)
            else:
                replies = await self.on_subcalls(prompts, frame.get("model"))
            await self.channel.send({"type": "llm_reply", "id": frame.get("id"), "replies": replies})

    async def _restart(self, died: ServerDied) -> CellResult:
        await self.sandbox.stop()
        self.channel = None
        reason = f"{died}; {self.sandbox.exit_description()}"
        if self.restarts >= self.max_restarts:
            raise SandboxError(f"the REPL server died again ({reason}); giving up")
        self.restarts += 1
        await self.start()
        return CellResult(
            output="",
            error=(
                f"REPL error: {reason}. The REPL was restarted: ALL variables from earlier cells are "
                "lost; `context`, `files` and the helper functions are loaded again."
            ),
        )
