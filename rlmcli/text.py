"""Numbers as people read them in messages; shared by the core (context.py) and the view."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`plural(1, "file")` -> "1 file"; `plural(1200, "line")` -> "1,200 lines"."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")
