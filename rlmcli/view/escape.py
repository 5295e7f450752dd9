"""Text that reaches a terminal: model and input text made inert before it is shown.

A model reply, a cell's output or a file name can carry escape sequences (OSC sets the window
title or writes the clipboard, CSI moves the cursor and repaints, C1 controls do the same in one
character) and bidi overrides that make text read differently from what it is. `safe` shows each
such character escaped, as Python writes it (`\\x1b`, `\\u202e`), and keeps newlines and tabs.

Which stream gets what: the live view and diagnostics on stderr are always made safe (they are
for people); an answer or listing on stdout is made safe only when stdout is a terminal, so a
pipe or a file gets the text intact. JSON output is always intact: only characters JSON may hold
raw but a terminal would act on are written as JSON escapes, which decode to the same text.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# C0 controls but \t and \n, DEL, C1 controls, the bidi embeddings, overrides, isolates and marks,
# and lone surrogates (undecodable bytes of a surrogate-escaped name: unprintable on a UTF-8 stream).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What JSON output escapes: JSON already escapes every C0 control, so C1, bidi and surrogates.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    char = ord(match.group())
    return f"\\x{char:02x}" if char <= 0xFF else f"\\u{char:04x}"


def safe(text: str) -> str:
    """`text` with every control and bidi character shown escaped; \\n and \\t kept (and \\r\\n
    read as \\n: a lone \\r, which lets text overwrite its own line, is escaped)."""
    return UNSAFE.sub(_escaped, text.replace("\r\n", "\n"))


def safe_json(dumped: str) -> str:
    """A JSON document (from json.dumps) with the characters a terminal acts on written as \\u
    escapes. They only occur inside strings, so the document decodes to the same values."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed, or the terminal is gone
        return False


def for_stream(text: str, stream: TextIO) -> str:
    """`text` as it may be written to `stream`: made safe on a terminal, else intact but for lone
    surrogates (which no UTF-8 stream can encode), written as `\\udcXX`."""
    if is_terminal(stream):
        return safe(text)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def echo(text: str, stream: TextIO | None = None) -> None:
    """Print one line of model or input text on `stream` (stdout by default), per `for_stream`."""
    stream = stream or sys.stdout
    stream.write(for_stream(text, stream) + "\n")
    stream.flush()
