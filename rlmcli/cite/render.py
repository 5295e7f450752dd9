"""How cited evidence is shown: the `Sources:` block printed after the answer, and the message of
the `--cite require` repair turn. Pure functions returning text."""

from __future__ import annotations

from .check import Citation

MAX_LINES = 12  # shown per citation; the rest is counted
MAX_LINE_CHARS = 200  # a longer line is cut, with an ellipsis
INDENT = "    "


def sources_block(citations: list[Citation]) -> str:
    """`Sources:`, then for each citation `[n] path:start-end` and its lines, indented. Empty when
    there is nothing to show."""
    if not citations:
        return ""
    out = ["Sources:"]
    for c in citations:
        where = f"{c.path}:{c.start_line}" + (f"-{c.end_line}" if c.end_line != c.start_line else "")
        out.append(f"[{c.marker}] {where}" + (" (secrets redacted)" if c.redacted else ""))
        lines = [line.removesuffix("\r") for line in c.text.split("\n")]
        for line in lines[:MAX_LINES]:
            shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " …"
            out.append(INDENT + shown)
        more = (c.end_line - c.start_line + 1) - min(len(lines), MAX_LINES)
        if more > 0:
            out.append(f"{INDENT}… {more:,} more line{'s' if more != 1 else ''}")
    return "\n".join(out)


def repair_message(failures: list[str]) -> str:
    """The one repair turn of `--cite require`: what failed, and how evidence is given."""
    listed = "\n".join(f"- {line}" for line in failures)
    return (
        "Your answer was not accepted: its evidence does not check out against the input.\n"
        f"{listed}\n\n"
        "Cite the lines your answer rests on: in a ```repl``` block, `cite(match)` (a grep match), "
        "`cite(path, start_line, end_line)` or `cite(locate(text))` returns a marker such as [1]; put "
        "the markers in your answer. Quote only text that `locate(text)` finds, and name only lines "
        "that exist. Then give the corrected answer with FINAL or FINAL_VAR."
    )
