"""What an answer claims about the input: its markers `[n]`, the quotes it typed, and the
`path:N` / `path:N-M` references it names. Pure functions of the answer text.

Fenced code blocks are left out: they hold code the model wrote as often as text it copied, and
a citation is made with cite(), whose lines the tool cuts itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_QUOTE_CHARS = 8  # shorter quoted text ("ERROR", a name) is a word, not a claim about the input
MAX_QUOTE_CHARS = 2000
# A run of markers: [3], [1][2], [1, 2]; not an index (x[3], x[1][2]), a link ([3](url)), [[3]].
MARKER = re.compile(r"(?<![\w\]\)\[])((?:\[\d{1,4}(?:\s*,\s*\d{1,4})*\])+)(?![(\[])")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_SIZE = f"{{{MIN_QUOTE_CHARS},{MAX_QUOTE_CHARS}}}"  # {8,2000}
_QUOTES = (
    re.compile(f'"([^"\n]{_SIZE})"'),
    re.compile(f"\u201c([^\u201d\n]{_SIZE})\u201d"),
    re.compile(f"(?<!`)`([^`\n]{_SIZE})`(?!`)"),
)
# path:N or path:N-M. Not inside a word, a URL or a time (10:32:01): what comes before is none
# of the path's own characters nor a colon.
REFERENCE = re.compile(r"(?<![\w./~+:<>-])(<stdin>|[\w.~+/-]*\w):(\d{1,9})(?:-(\d{1,9}))?(?![\d\w])")
# A name:N that is no loaded file counts as a path only if it looks like one: a directory in it,
# or a file extension people cite (a host:port such as db.example.com:5432 is neither).
EXTENSIONS = frozenset(
    "log txt out err md rst py pyi js mjs ts tsx jsx go rs java kt scala c h cc cpp hpp cs rb php "
    "sh bash zsh ps1 json jsonl yaml yml toml ini cfg conf xml html css scss sql csv tsv proto "
    "gradle swift lua pl r tf vue dart ex exs erl hs ml clj env lock mk cmake ipynb".split()
)


@dataclass(frozen=True)
class Reference:
    text: str  # as the answer wrote it: "src/a.py:12-14"
    path: str
    start_line: int
    end_line: int


def prose(answer: str) -> str:
    """The answer without its fenced code blocks."""
    return _FENCE.sub("\n", answer)


def markers(answer: str) -> list[int]:
    """The marker numbers, in order of first appearance."""
    seen: dict[int, None] = {}
    for m in MARKER.finditer(prose(answer)):
        for number in re.findall(r"\d+", m.group(1)):
            seen.setdefault(int(number), None)
    return list(seen)


def quotes(answer: str, loaded: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The quoted strings (in "...", \u201c...\u201d or `...`) of at least MIN_QUOTE_CHARS, in order,
    once each. A quote that is only a path or a `path:N` reference is a name, not a quote."""
    text = prose(answer)
    found: dict[str, int] = {}
    for pattern in _QUOTES:
        for m in pattern.finditer(text):
            quote = m.group(1).strip()
            bare = MARKER.sub("", quote).strip()
            if len(bare) < MIN_QUOTE_CHARS or bare in loaded or REFERENCE.fullmatch(bare):
                continue
            found.setdefault(quote, m.start())
    return sorted(found, key=found.__getitem__)


def references(answer: str) -> list[Reference]:
    """Every `path:N` and `path:N-M` in the answer's prose, once each, in order."""
    seen: dict[str, Reference] = {}
    for m in REFERENCE.finditer(prose(answer)):
        start = int(m.group(2))
        end = int(m.group(3)) if m.group(3) else start
        seen.setdefault(m.group(0), Reference(m.group(0), m.group(1), start, end))
    return list(seen.values())


def looks_like_path(name: str) -> bool:
    """Whether a name that is no loaded file still reads as a file path (so naming it is a claim)."""
    if name == "<stdin>":
        return True
    if "/" in name and re.search(r"[A-Za-z]", name):
        return True
    base = name.rsplit("/", 1)[-1]
    return "." in base and base.rsplit(".", 1)[1].lower() in EXTENSIONS
