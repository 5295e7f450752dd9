"""How much memory the REPL needs to load a context file, for the `--memory` hint.

The REPL server (sandbox/repl_server.py, read_text) maps the file and decodes it into one `str`.
Measured with its own address-space cap (`--max-memory`, RLIMIT_AS: what --memory sets for the
local and process sandboxes, and the container's memory for Docker), the smallest cap that loads a
file of B bytes is

    BASE_BYTES + B * (1 + decode factor)

The 1 is the mapped file. The decode factor is what Python's UTF-8 decoder holds at its peak, in
bytes per byte of input: 1 for ASCII (a str of 1 byte per character); 3 once any character is
not ASCII (its writer builds the text at 2 bytes per character, sized by the input's length, while
the 1-byte buffer it started with is still alive); 5 with a character beyond U+FFFF (4 bytes per
character). BASE_BYTES is the interpreter and the server itself (~25 MiB). Measured (Python 3.11,
docs/PERFORMANCE.md, "Memory to load a context"): 64 MiB of ASCII needs 153 MiB; of logs with one
’ (U+2019) per 12 KiB, or of CJK text, 281 MiB; with one emoji per 12 KiB 409 MiB. Text whose
only non-ASCII characters are Latin-1 needs less (factor 2 to 3): 3 is the bound used. 450 MiB of
ASCII logs need 921 MiB, with a Latin-1 é per 12 KiB 1,377 MiB, with a ’ ~1.8 GiB: the hint then
says 3g, and "2g", the old hint, fails.

`--memory auto` (the default) gives the server this need, and at least 1 GiB (run.sandbox_memory),
with the factor from what the host's load saw (factor_of: the characters, bytes and widest
character); a server that still runs out (an explicit --memory) gets a hint with the factor read
from the file again.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

BASE_BYTES = 25 * 2**20  # the interpreter and repl_server.py, loaded, before the context
MARGIN = 1.15  # the index of a directory's files, a container's own overhead, the first cell
CHUNK = 16 * 2**20
_ASTRAL_LEAD = re.compile(rb"[\xf0-\xf4]")  # the first byte of a UTF-8 character beyond U+FFFF


def decode_factor(path: Path) -> int:
    """Bytes the decoder holds per byte of the file: 1 (ASCII), 3 (any other text), 5 (text with a
    character beyond U+FFFF). A file that cannot be read counts as the worst case."""
    factor = 1
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                if chunk.isascii():
                    continue
                if _ASTRAL_LEAD.search(chunk):
                    return 5
                factor = 3
    except OSError:
        return 5
    return factor


def needed_bytes(path: Path, factor: int | None = None) -> int:
    """The smallest --memory that loads `path` into the REPL, with a small margin; `factor`, when the
    caller knows it (factor_of), saves reading the file again."""
    return needed(path.stat().st_size, decode_factor(path) if factor is None else factor)


def needed(size: int, factor: int) -> int:
    """The smallest --memory that loads a context file of `size` bytes with this decode factor."""
    return int((BASE_BYTES + size * (1 + factor)) * MARGIN)


def factor_of(size: int, chars: int, width: int) -> int:
    """The decode factor from what the load saw, no second read: a file of as many characters as
    bytes is ASCII (1); a str of 4 bytes a character held one beyond U+FFFF (5); else 3."""
    return 1 if chars >= size else 5 if width == 4 else 3


def memory_hint(path: Path) -> str:
    """The hint of a context that did not fit: the --memory to give, in whole gigabytes (or
    megabytes below one), and why."""
    need = needed_bytes(path)
    size = path.stat().st_size
    factor = decode_factor(path)
    text = {1: "ASCII text", 3: "non-ASCII text", 5: "text with characters beyond U+FFFF"}[factor]
    flag = f"{math.ceil(need / 2**30)}g" if need > 2**30 else f"{math.ceil(need / 2**20 / 64) * 64}m"
    return (
        f"raise --memory to at least {flag}: loading {size / 2**20:,.0f} MiB of {text} takes about "
        f"{need / 2**30:.1f} GiB (the file mapped, plus {factor} bytes per byte while it is decoded "
        "into one string)"
    )
