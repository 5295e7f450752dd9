"""The input as the host holds it: cited lines are cut, and typed quotes looked up, here.

Nothing the sandbox says is shown as evidence. The text comes from the host's own file behind the
context (the named input itself, or the copy the loader wrote for directories and stdin, which the
sandbox only reads), through the loader's file index (rlmcli/context.py). Files are streamed, so a
multi-GB input costs flat memory.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from ..context import STDIN_NAME, Context, FileEntry

CHUNK = 1 << 20
MAX_TEXT_CHARS = 64 * 1024  # of one citation's text kept for --json and the trace; the bytes say the rest
STDIN_NAMES = ("-", STDIN_NAME)
_SPACE = re.compile(r"\s+")


@dataclass
class Cut:
    """Lines start..end of one file: their text (the last line's terminator left out) and where
    they lie in the file, in bytes."""

    text: str
    byte_start: int
    byte_end: int
    truncated: bool = False  # the text was cut at MAX_TEXT_CHARS


class InputText:
    """Reads cited lines and searches quotes in the context file of one run."""

    def __init__(self, context: Context):
        self.context = context
        self.by_path = {f.path: f for f in context.files}
        self._byte_starts: dict[int, int] = {}

    # -- paths --------------------------------------------------------------------------------

    def resolve(self, path: str) -> tuple[FileEntry | None, str | None]:
        """(the loaded file `path` names, None) or (None, why not): as given, `-` for stdin, a
        leading `./` dropped, or the one loaded file whose path ends with it."""
        if path in self.by_path:
            return self.by_path[path], None
        if path in STDIN_NAMES and STDIN_NAME in self.by_path:
            return self.by_path[STDIN_NAME], None
        tail = path[2:] if path.startswith("./") else path
        ends = [f for p, f in self.by_path.items() if p == tail or p.endswith("/" + tail)]
        if len(ends) == 1:
            return ends[0], None
        if ends:
            return None, f"matches {len(ends)} loaded files; give the full path"
        return None, "not a loaded file"

    # -- cutting lines ------------------------------------------------------------------------

    def cut(self, entry: FileEntry, start_line: int, end_line: int) -> Cut:
        """Lines start_line..end_line (1-based, within entry.lines) of `entry`."""
        parts: list[bytes] = []
        kept = pos = byte_start = 0
        line = b""
        with open(self.context.path, "rb") as f:
            f.seek(self._byte_start(entry))
            for number in range(1, end_line + 1):
                line = f.readline()
                if number == start_line:
                    byte_start = pos
                if number >= start_line and kept < MAX_TEXT_CHARS:
                    parts.append(line[: MAX_TEXT_CHARS - kept])
                    kept += len(parts[-1])
                pos += len(line)
        ending = _terminator(line)  # the last line's LF or CRLF is not part of the span
        byte_end = pos - ending
        raw = b"".join(parts)
        truncated = len(raw) < pos - byte_start
        if not truncated and ending:
            raw = raw[:-ending]
        return Cut(raw.decode("utf-8", "replace"), byte_start, byte_end, truncated)

    def _byte_start(self, entry: FileEntry) -> int:
        """Where `entry`'s text starts in the context file, in bytes. The index counts characters:
        one pass over the file (the copy is valid UTF-8: the loader wrote it) converts them all."""
        if entry.start == 0:
            return 0
        if not self._byte_starts:
            self._byte_starts = _char_to_byte(self.context.path, sorted(f.start for f in self.context.files))
        return self._byte_starts[entry.start]

    # -- finding quotes -----------------------------------------------------------------------

    def find(self, quotes: list[str]) -> dict[str, str | None]:
        """For each quote: "verbatim", "whitespace" (found once runs of whitespace are made one
        space, in both), or None (not in the input)."""
        found: dict[str, str | None] = {q: None for q in quotes}
        if not quotes:
            return found
        squeezed = {q: _SPACE.sub(" ", q).strip() for q in quotes}
        overlap = 4 * max(len(q) for q in quotes) + 64
        tail = ""
        with open(self.context.path, encoding="utf-8", errors="replace", newline="") as f:
            while True:
                chunk = f.read(CHUNK)
                window = tail + chunk
                flat = None
                for q in quotes:
                    if found[q] == "verbatim":
                        continue
                    if q in window:
                        found[q] = "verbatim"
                    elif found[q] is None:
                        flat = _SPACE.sub(" ", window) if flat is None else flat
                        if squeezed[q] and squeezed[q] in flat:
                            found[q] = "whitespace"
                if not chunk or all(v == "verbatim" for v in found.values()):
                    return found
                tail = window[-overlap:]


def _terminator(line: bytes) -> int:
    """How many bytes end `line`: its LF, CR or CRLF (as the REPL's cite() leaves them out)."""
    n = 1 if line.endswith(b"\n") else 0
    return n + 1 if line[: len(line) - n].endswith(b"\r") else n


def _char_to_byte(path: Path, offsets: list[int]) -> dict[int, int]:
    """Byte positions of the character positions `offsets` (sorted) in a UTF-8 file."""
    result: dict[int, int] = {}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = nbytes = 0
    todo = iter(offsets)
    want = next(todo, None)
    with open(path, "rb") as f:
        while want is not None:
            chunk = f.read(CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            while want is not None and want <= chars + len(text):
                result[want] = nbytes + len(text[: want - chars].encode("utf-8"))
                want = next(todo, None)
            chars += len(text)
            nbytes += len(text.encode("utf-8"))
            if not chunk:
                break
    return result
