"""What the host accepts from a REPL server: every frame is checked before any field is used.

The server runs the model's code, and that code owns the server process: it can write any bytes
on the protocol channel. So a frame is untrusted input. Each one is bounded in size before it is
read, parsed without risking the host's stack, and checked field by field against the table
below; strings are bounded too. Anything else is a ProtocolError, which the REPL treats like a
dead server (kill it, restart once, then a sandbox error), never as a bug of the host. `Channel`
sends and receives the frames (protocol.py's Repl drives it).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable

# Largest frame the host reads. A legitimate one stays far below: a cell's output and error are
# capped at --max-output-chars, an answer at MAX_FINAL_CHARS, and the server refuses (in the cell)
# a sub-call batch whose prompts would not fit. The size is checked before the body is read.
MAX_FRAME = 64 * 1024 * 1024
FRAME = struct.Struct(">I")  # each frame: its size (4 bytes, big-endian), then that much JSON
MAX_FINAL_CHARS = 10_000_000  # an answer (FINAL, FINAL_VAR): long lists fit, a runaway does not
MAX_PROMPTS = 100_000  # prompts in one llm_query_batched call
MAX_PROMPT_CHARS = 8_000_000  # one prompt: about 2M tokens, the largest context windows offered
MAX_CONTEXT_CHARS = MAX_FRAME  # a child's context (rlm_query): the frame's own cap bounds it
MAX_NAMES = 100  # entries in a result's `restored` list (the reserved names), each a short name
MARKER_SLACK = 200  # room for the server's own truncation markers (under 100 characters) beyond a cap
MAX_CITATIONS = 1000  # spans cite() registers in one run (the server keeps to it)
MAX_PATH_CHARS = 4096  # of a cited path
SPAN_FIELDS = ("marker", "start_line", "end_line", "byte_start", "byte_end")


class ServerDied(Exception):
    """The REPL server stopped answering: exited, was killed, or broke the protocol."""


class ProtocolError(ServerDied):
    """The server sent a frame the protocol does not allow (a bug in it, or a hostile cell)."""


def parse(body: bytes) -> dict:
    """The JSON object in a frame body. Deep nesting is a RecursionError inside json: caught."""
    try:
        msg = json.loads(body)
    except RecursionError:
        raise ProtocolError("the REPL server broke the protocol (a frame nested too deeply)") from None
    except ValueError:  # also UnicodeDecodeError, and integers beyond Python's digit limit
        raise ProtocolError("the REPL server broke the protocol (unreadable frame)") from None
    if not isinstance(msg, dict):
        raise ProtocolError("the REPL server broke the protocol (frame is not an object)")
    return msg


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_opt_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_answer(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_FINAL_CHARS


def _is_opt_answer(value: object) -> bool:
    return value is None or _is_answer(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_duration(value: object) -> bool:
    # Compared, not converted: a 4,000-digit integer would overflow float(); NaN fails both tests.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1e9


def _is_names(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_NAMES
        and all(isinstance(name, str) and len(name) <= 100 for name in value)
    )


def _is_prompts(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_PROMPTS
        and all(isinstance(p, str) and len(p) <= MAX_PROMPT_CHARS for p in value)
    )


def _is_contexts(value: object) -> bool:
    """rlm_query's contexts: one per query, each null (the parent's input) or a text."""
    return (
        isinstance(value, list)
        and len(value) <= MAX_PROMPTS
        and all(c is None or (isinstance(c, str) and len(c) <= MAX_CONTEXT_CHARS) for c in value)
    )


def _is_spans(value: object) -> bool:
    """cite()'s spans: each a path and whole numbers (line and byte positions are >= 0)."""
    return (
        isinstance(value, list)
        and len(value) <= MAX_CITATIONS
        and all(
            isinstance(span, dict)
            and isinstance(span.get("path"), str)
            and len(span["path"]) <= MAX_PATH_CHARS
            and all(_is_int(span.get(key)) and 0 <= span[key] < 2**63 for key in SPAN_FIELDS)
            for span in value
        )
    )


Check = tuple[Callable[[object], bool], str]
# Frame type -> its required fields -> (check, what the field must be, for the message).
FRAMES: dict[str, dict[str, Check]] = {
    "ready": {"python": (_is_str, "a string")},
    "loaded": {},
    "result": {
        "output": (_is_str, "a string"),
        "error": (_is_opt_str, "null or a string"),
        "final": (_is_opt_answer, f"null or a string of at most {MAX_FINAL_CHARS:,} characters"),
        "restored": (_is_names, f"a list of at most {MAX_NAMES} names"),
        "duration": (_is_duration, "a number of seconds from 0 to 1e9"),
    },
    "value": {"value": (_is_answer, f"a string of at most {MAX_FINAL_CHARS:,} characters")},
    "error": {"error": (_is_str, "a string")},
    "citations": {"spans": (_is_spans, f"a list of at most {MAX_CITATIONS:,} spans")},
    "llm_query": {
        "id": (_is_int, "an integer"),
        "prompts": (
            _is_prompts,
            f"a list of at most {MAX_PROMPTS:,} strings of at most {MAX_PROMPT_CHARS:,} characters each",
        ),
        "model": (_is_opt_str, "null or a string"),
    },
    "rlm_query": {
        "id": (_is_int, "an integer"),
        "queries": (
            _is_prompts,
            f"a list of at most {MAX_PROMPTS:,} strings of at most {MAX_PROMPT_CHARS:,} characters each",
        ),
        "contexts": (_is_contexts, "a list of null or strings"),
        "model": (_is_opt_str, "null or a string"),
    },
}


def validate(frame: dict, expected: tuple[str, ...]) -> dict:
    """The frame itself if its type is one of `expected` and every field of that type checks out."""
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in expected:
        shown = repr(kind[:40]) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise ProtocolError(
            f"the REPL server broke the protocol (frame type {shown} where {' or '.join(expected)} was due)"
        )
    for name, (ok, what) in FRAMES[kind].items():
        if name not in frame or not ok(frame[name]):
            raise ProtocolError(f"the REPL server broke the protocol ({kind} frame: {name!r} must be {what})")
    return frame


def clean(text: str) -> str:
    """The text with lone surrogates (legal in JSON escapes, unprintable anywhere) replaced."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def clip(text: str, limit: int, what: str = "output") -> str:
    """At most about `limit` characters: the head and the tail, and a marker saying what was cut."""
    if len(text) <= limit:
        return text
    head = max(0, limit * 2 // 3)
    tail = max(0, limit - head)
    cut = len(text) - head - tail
    marker = f"\n[... {what} truncated: {cut:,} characters not shown (cap {limit:,}) ...]\n"
    return text[:head] + marker + (text[-tail:] if tail else "")


def cell_text(output: str, error: str | None, cap: int) -> tuple[str, str | None]:
    """One cap for a cell's printed output and its error together, as the server applies it:
    the error keeps up to half of the cap and the output the rest (each plus its marker)."""
    if error is not None:
        error = clip(clean(error), cap // 2 + MARKER_SLACK, "error")
    output = clip(clean(output), max(0, cap - len(error or "")) + MARKER_SLACK)
    return output, error


class Channel:
    """Frames over an asyncio (reader, writer) pair: the server's stdout and stdin."""

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
        """The next frame as a JSON object; its size is checked before its body is read."""
        try:
            (size,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
            if size > MAX_FRAME:
                raise ProtocolError(
                    f"the REPL server broke the protocol (a frame of {size:,} bytes; at most {MAX_FRAME:,})"
                )
            body = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise ServerDied("the REPL server exited") from exc
        return parse(body)

    async def discard(self) -> None:
        """Read and drop whatever comes, to the end of the stream."""
        try:
            while await self.reader.read(2**16):
                pass
        except (ConnectionError, OSError, ValueError):
            pass
