"""Numbers as people read them in messages; shared by the core (context.py) and the view."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`plural(1, "file")` -> "1 file"; `plural(1200, "line")` -> "1,200 lines"."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


def human_count(n: int) -> str:
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{round(n / 1000)}k"
    return f"{n / 1_000_000:.1f}M"
