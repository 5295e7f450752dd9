"""The stream of a Docker attach or exec without a TTY, split into stdout (to the REPL protocol) and
stderr (a tail kept for messages): shared by the run's server (docker.py) and a child's
(docker_exec.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

STDERR_TAIL = 4096  # bytes of the server's stderr kept for messages; the rest is dropped


class _Flow:
    """What `demux` gives its sink as the transport: the sink "pauses reading" when it holds more
    than twice its limit and "resumes" once drained, as it does with a socket. A cell can write
    on the channel at any time (a thread, between cells): without this, every byte of it would
    be buffered on the host. readexactly(n) resumes the flow while it waits, so a frame larger
    than the limit (up to MAX_FRAME) still arrives whole."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()


async def demux(
    source: asyncio.StreamReader, sink: asyncio.StreamReader, tail: bytearray | None = None
) -> None:
    """Docker multiplexes an attached stream without a TTY: an 8-byte header (stream type, 3
    zero bytes, big-endian length) before each chunk. Pass stdout's bytes on; keep the last
    STDERR_TAIL bytes of stderr in `tail` (the container has no log: this is its only trace).
    While the sink is full, nothing is read: the socket, then Docker, then the cell's write, block."""
    flow = _Flow()
    sink.set_transport(flow)  # type: ignore[arg-type]  # it only pauses and resumes
    try:
        while True:
            await flow.open.wait()
            header = await source.readexactly(8)
            payload = await source.readexactly(int.from_bytes(header[4:8], "big"))
            if header[0] == 1:
                sink.feed_data(payload)
            elif header[0] == 2 and tail is not None:
                tail += payload
                del tail[:-STDERR_TAIL]
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        sink.feed_eof()


class Attached:
    """A server's attach (or exec) socket as asyncio streams: stdout framed for the protocol, the
    tail of stderr kept for messages. Shared by the run's server (docker.py) and a child's
    (docker_exec.py)."""

    def __init__(self) -> None:
        self.stderr = bytearray()
        self._raw: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None

    async def open(self, sock: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._raw = getattr(sock, "_sock", sock)  # the SDK wraps the socket in a SocketIO
        reader, self._writer = await asyncio.open_connection(sock=self._raw)
        stdout = asyncio.StreamReader(limit=2**20)
        self.stderr = bytearray()
        self._task = asyncio.create_task(demux(reader, stdout, self.stderr))
        return stdout, self._writer

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        raw, self._raw = self._raw, None
        if raw is not None:
            # The SDK's wrapper still holds the socket, so closing the transport leaves it open: the
            # daemon would go on writing a flooding cell's output to it, and removing the container
            # waits for that copy to end, forever once the socket's buffer is full. Shut it down.
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
