"""Host side of the REPL protocol: framed JSON with sandbox/repl_server.py over any byte stream.

One protocol, many transports: a sandbox only has to hand over an asyncio (reader, writer) pair
connected to the server's stdin/stdout. `Repl` loads the context once, runs cells, brokers the
server's `llm_query` and `rlm_query` requests to the handlers the caller passes with each cell, and
restarts a dead server once. `Repl.child` starts a child RLM's REPL: one more server in the same
sandbox (Sandbox.spawn), on the parent's context file or on a text the host writes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import LimitReached, SandboxError
from .confine import SandboxLimits
from .context_memory import memory_hint
from .frames import Channel, ProtocolError, ServerDied, cell_text, clean, validate

__all__ = [
    "CellResult", "Channel", "ChildHandler", "CitedSpan", "ProtocolError", "Repl", "Sandbox", "ServerDied",
    "SubcallHandler",
]  # fmt: skip

# How long past the cell timeout the host waits before it concludes the in-server timer failed.
BACKSTOP_GRACE = 3.0

# (prompts, model) -> one reply per prompt: how a cell's llm_query reaches the host's model client.
SubcallHandler = Callable[[list[str], str | None], Awaitable[list[str]]]
NO_SUBCALLS = "[llm_query error: sub-calls are not available here]"
# (queries, contexts, model) -> one answer per query: how a cell's rlm_query reaches the host.
# A context is the child's text, or None for the parent's whole input.
ChildHandler = Callable[[list[str], list[str | None], str | None], Awaitable[list[str]]]


def fallback_prompt(query: str, context: str | None) -> str:
    """What rlm_query asks as a plain llm_query where no child may start (past --max-depth)."""
    return query if context is None else f"{query}\n\n{context}"


@dataclass
class CellResult:
    output: str
    error: str | None = None
    final: str | None = None
    restored: list[str] = field(default_factory=list)
    duration: float = 0.0


@dataclass(frozen=True)
class CitedSpan:
    """A span cite() registered in the REPL, as the server says it. Only the path and the lines are
    used: the host cuts the text and counts the bytes itself (rlmcli/cite/), and compares."""

    marker: int
    path: str
    start_line: int
    end_line: int
    byte_start: int
    byte_end: int


class Sandbox(Protocol):
    """Where the REPL server runs. Implementations: DockerSandbox, BwrapSandbox, ProcessSandbox."""

    name: str
    share_dir: Path | None  # where the host may write a file every server here can read (None: anywhere)
    limits: SandboxLimits  # what the next start caps (run.py sets the memory once the context is known)

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

    def spawn(self, memory: int) -> Sandbox:
        """One more server in this sandbox (a child RLM's), capped at `memory` bytes of address
        space; not started. Its start() raises SandboxError when the sandbox's processes are
        nearly all used; its stop() ends it and all it started, and nothing else."""
        ...

    def exit_description(self) -> str:
        """Why the server died (exit status, signal, last lines of its stderr), for messages."""
        ...


class Repl:
    """A live REPL in a sandbox: context loaded once, namespace kept across cells.

    Every frame from the server is validated (repl/frames.py) before it is used. A server that dies or
    breaks the protocol is killed and restarted once (the model is told); the next time it is a
    SandboxError.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        context_path: Path,
        index_path: Path | None,
        cell_timeout: float = 120.0,
        max_output_chars: int = 20000,
        max_restarts: int = 1,
    ):
        self.sandbox = sandbox
        self.context_path, self.index_path = context_path, index_path
        self.owned: Path | None = None  # a child's context file the host wrote: removed on close
        self.cell_timeout = cell_timeout
        self.max_output_chars = max_output_chars
        self.max_restarts = max_restarts
        self.restarts = 0
        self.python = ""
        self.channel: Channel | None = None
        self._starting: asyncio.Task | None = None  # begin(): the start, in the background

    def begin(self, after: Awaitable[None] | None = None) -> asyncio.Task:
        """Start the server in the background, once `after` is done (run.py: the input's pass, which
        sizes the memory); every use of the REPL waits for it. So the first model request goes out
        while the sandbox starts and the context loads, not after: a container and a 1 GB decode
        are seconds, hidden behind the model's first reply. A failed start is raised at first use."""

        async def start() -> None:
            if after is not None:
                await after
            await self.start()

        self._starting = asyncio.create_task(start())
        return self._starting

    async def ready(self) -> None:
        """Wait for the start begun by begin() (nothing when none was)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)  # a cancelled wait leaves the start to close()

    async def start(self) -> None:
        """Start the server and load the context into it (the only time the context moves)."""
        try:
            reader, writer = await self.sandbox.start()
            self.channel = Channel(reader, writer)
            ready = validate(await asyncio.wait_for(self.channel.recv(), 60), ("ready",))
            index = None if self.index_path is None else self.sandbox.visible_path(self.index_path)
            self.python = clean(ready["python"][:100])
            loaded = await self._call(
                {
                    "op": "load",
                    "context_path": self.sandbox.visible_path(self.context_path),
                    "index_path": index,
                    "max_output_chars": self.max_output_chars,
                },
                ("loaded", "error"),
                timeout=None,
            )
        except (ServerDied, TimeoutError) as exc:
            await self._kill()
            raise SandboxError(
                f"the {self.sandbox.name} REPL failed to start: {exc}; {self.sandbox.exit_description()}"
            ) from exc
        if loaded["type"] == "error":
            if loaded.get("out_of_memory") is True:
                size = self.context_path.stat().st_size
                raise SandboxError(
                    f"the context ({size:,} bytes) does not fit in the sandbox's memory limit",
                    hint=memory_hint(self.context_path),  # context_memory.py: the measured need
                )
            error = clean(loaded["error"][:2000])
            raise SandboxError(f"the REPL could not load the context: {error}")

    async def run_cell(
        self,
        code: str,
        timeout: float | None = None,
        deadline: float | None = None,
        on_subcalls: SubcallHandler | None = None,
        on_children: ChildHandler | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> CellResult:
        """Run one cell. `timeout` bounds the server's own time (sub-call waits excluded);
        `deadline` (time.monotonic()) is the run's wall-clock end, counting everything: past it the
        server is killed and LimitReached("timeout") raised. The cell's llm_query calls go to
        `on_subcalls` (none: each gets an error string), its rlm_query calls to `on_children` (none:
        each is an llm_query, as past --max-depth); their exceptions (a breached budget) propagate
        as they are. `on_sent` is called once the cell is on its way to the server, before any of
        its frames is read (at once, should the server still be starting), so that the caller's
        own work overlaps the cell's (the agent writes its events then); not at all when the cell
        could not be sent."""
        timeout = self.cell_timeout if timeout is None else timeout
        if on_sent is not None and self._starting is not None and not self._starting.done():
            on_sent()  # not after a start that may take seconds (a container, a 1 GB context)
            on_sent = None
        await self.ready()
        exec_cell = {"op": "exec", "code": code, "timeout": timeout}
        try:
            msg = await self._call(
                exec_cell, ("result",), timeout, deadline, on_subcalls, on_children, on_sent
            )
        except ServerDied as died:
            return await self._restart(died)
        output, error = cell_text(msg["output"], msg["error"], self.max_output_chars)
        final = msg["final"]
        return CellResult(
            output=output,
            error=error,
            final=None if final is None else clean(final),
            restored=[clean(name) for name in msg["restored"]],
            duration=float(msg["duration"]),
        )

    async def get(self, name: str) -> tuple[str | None, str | None]:
        """(value, error) of a variable in the namespace, as a string."""
        await self.ready()
        try:
            msg = await self._call({"op": "get", "name": name}, ("value", "error"), timeout=30)
        except ServerDied as died:
            await self._restart(died)
            return None, "the REPL was restarted and its variables were lost"
        if msg["type"] == "error":
            return None, clean(msg["error"][: self.max_output_chars])
        return clean(msg["value"]), None

    async def citations(self) -> list[CitedSpan]:
        """The spans cite() registered so far (none after a restart: they died with the server)."""
        await self.ready()
        try:
            msg = await self._call({"op": "citations"}, ("citations",), timeout=30)
        except ServerDied as died:
            await self._restart(died)
            return []
        return [
            CitedSpan(
                span["marker"],
                clean(span["path"]),
                span["start_line"],
                span["end_line"],
                span["byte_start"],
                span["byte_end"],
            )
            for span in msg["spans"]
        ]

    async def close(self) -> None:
        """Ask the server to exit, then stop the sandbox either way (the server may be mid-cell)."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()  # a start nobody waits for any more (the run ended before a cell)
        if starting is not None:  # its error, if any, was raised at first use
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await starting
        if self.channel is not None:
            try:
                await asyncio.wait_for(self.channel.send({"op": "shutdown"}), 1)
            except (ServerDied, TimeoutError):
                pass
        await self._kill()
        if self.owned is not None:
            self.owned.unlink(missing_ok=True)
            self.owned = None

    async def child(self, text: str | None, memory: int) -> Repl:
        """A started REPL for a child RLM: one more server in this sandbox, capped at `memory`
        bytes, whose `context` is this REPL's input (text None: the same file, no copy) or `text`
        (written once by the host where the sandbox reads it). Never restarted: a child that dies
        fails. SandboxError when it cannot start; close() it when done."""
        await self.ready()
        sandbox = self.sandbox.spawn(memory)
        path, index = self.context_path, self.index_path
        owned = None
        if text is not None:
            folder = self.sandbox.share_dir or (self.index_path or self.context_path).parent
            path = owned = folder / f"child-{secrets.token_hex(6)}.txt"
            try:
                path.write_text(text, encoding="utf-8", errors="replace", newline="")
                path.chmod(0o644)  # the sandbox's user (Docker: nobody) reads it
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise SandboxError(f"cannot write a child's context: {exc}") from exc
            index = None
        repl = Repl(sandbox, path, index, self.cell_timeout, self.max_output_chars, max_restarts=0)
        repl.owned = owned
        try:
            await repl.start()
        except BaseException:
            await repl.close()
            raise
        return repl

    async def _call(
        self,
        msg: dict,
        expected: tuple[str, ...],
        timeout: float | None,
        deadline: float | None = None,
        on_subcalls: SubcallHandler | None = None,
        on_children: ChildHandler | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> dict:
        """Send one command and return the server's answer, a frame of an `expected` type.

        `deadline` (time.monotonic()) ends the wait whatever the server or the sub-calls are doing:
        the server is killed (it may be mid-cell) and the run ends with LimitReached("timeout").
        """
        assert self.channel is not None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(left) as run_clock:
                return await self._exchange(msg, expected, timeout, on_subcalls, on_children, on_sent)
        except TimeoutError:
            if not run_clock.expired():
                raise
            await self._kill()
            raise LimitReached(
                "timeout", "the run's wall-time limit (--timeout) was reached while a cell ran"
            ) from None

    async def _exchange(
        self,
        msg: dict,
        expected: tuple[str, ...],
        timeout: float | None,
        on_subcalls: SubcallHandler | None,
        on_children: ChildHandler | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> dict:
        """Send `msg`; serve the server's sub-call requests until its answer arrives.

        The backstop counts only the server's own time: waiting for sub-calls is not charged,
        exactly as the server pauses its own cell timer meanwhile.
        """
        assert self.channel is not None
        channel = self.channel
        await channel.send(msg)
        if on_sent is not None:
            on_sent()
        left = None if not timeout else timeout + BACKSTOP_GRACE
        while True:
            started = time.monotonic()
            try:  # not wait_for: in 3.11 it runs recv() as a task of its own, two more loop turns a frame
                async with asyncio.timeout(left):
                    frame = await channel.recv()
            except TimeoutError:
                raise ServerDied(
                    f"the cell did not stop at its {timeout:g}s timeout and was killed"
                ) from None
            if left is not None:
                left -= time.monotonic() - started
            frame = validate(frame, ("llm_query", "rlm_query", *expected))
            if frame["type"] not in ("llm_query", "rlm_query"):
                return frame
            model = None if frame["model"] is None else clean(frame["model"])
            # Either handler may raise (a breached budget): that ends the run, which closes the sandbox.
            if frame["type"] == "rlm_query":
                replies = await self._children(frame, model, on_subcalls, on_children)
            elif on_subcalls is None:
                replies = [NO_SUBCALLS] * len(frame["prompts"])
            else:
                replies = await on_subcalls([clean(p) for p in frame["prompts"]], model)
            await channel.send({"type": "llm_reply", "id": frame["id"], "replies": replies})

    async def _children(
        self,
        frame: dict,
        model: str | None,
        on_subcalls: SubcallHandler | None,
        on_children: ChildHandler | None,
    ) -> list[str]:
        """The answers to an rlm_query frame: from `on_children`, else as llm_query calls."""
        queries = [clean(q) for q in frame["queries"]]
        contexts = [None if c is None else clean(c) for c in frame["contexts"]]
        if len(contexts) != len(queries):
            raise ProtocolError("the REPL server broke the protocol (rlm_query: one context per query)")
        if on_children is not None:
            return await on_children(queries, contexts, model)
        if on_subcalls is None:
            return [NO_SUBCALLS] * len(queries)
        prompts = [fallback_prompt(q, c) for q, c in zip(queries, contexts, strict=True)]
        return await on_subcalls(prompts, model)

    async def _kill(self) -> None:
        """Stop the sandbox, reading and dropping what the server still sends meanwhile: a stream
        left unread (a refused frame) stops the pipe from closing, and the stop would wait forever."""
        channel, self.channel = self.channel, None
        drain = None if channel is None else asyncio.create_task(channel.discard())
        try:
            await self.sandbox.stop()
        finally:
            if drain is not None:
                drain.cancel()

    async def _restart(self, died: ServerDied) -> CellResult:
        await self._kill()
        reason = f"{died}; {self.sandbox.exit_description()}"
        if self.restarts >= self.max_restarts:
            raise SandboxError(f"the REPL server failed again ({reason}); giving up")
        self.restarts += 1
        await self.start()
        return CellResult(
            output="",
            error=(
                f"REPL error: {reason}. The REPL was restarted: ALL variables from earlier cells are "
                "lost; `context`, `files` and the helper functions are loaded again."
            ),
        )
