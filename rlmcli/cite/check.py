"""Checking an answer's evidence against the input: markers resolved to the spans cite()
registered, typed quotes looked up, `path:N` references checked against the loaded files.

The REPL only says which lines were cited (path, start and end line). The host checks the path is
a loaded file and the lines are in it, cuts the text itself (source.py) and counts the bytes; what
the server said about the bytes is only compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..context import Context
from ..repl.protocol import CitedSpan
from . import answer as claims
from .source import InputText

MODES = ("off", "check", "require")


@dataclass
class Citation:
    """A marker of the answer and the input lines it stands for."""

    marker: int
    path: str
    start_line: int
    end_line: int
    byte_start: int
    byte_end: int
    sha256: str  # of the whole file, as loaded
    text: str  # the lines, cut by the host (the last line's terminator left out)
    verified: bool = True
    truncated: bool = False  # `text` stops at source.MAX_TEXT_CHARS; the byte range is whole
    redacted: bool = False  # a secret in these lines was replaced before the sandbox (--redact-secrets)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Citation:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Unverified:
    """Something the answer claims that the input does not bear out."""

    kind: str  # "marker" | "span" | "quote" | "reference"
    text: str  # as the answer has it: "[7]", the quote, "a.py:99"
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        shown = f'"{self.text}"' if self.kind == "quote" else self.text
        return f"unverified {self.kind} {shown}: {self.reason}"


@dataclass
class Evidence:
    """The outcome of checking one answer."""

    citations: list[Citation] = field(default_factory=list)
    unverified: list[Unverified] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # quotes found only with whitespace normalised

    def failures(self, mode: str) -> list[str]:
        """What `--cite require` refuses (one line each); nothing in the other modes."""
        if mode != "require":
            return []
        lines = [item.line() for item in self.unverified]
        if not any(c.verified for c in self.citations):
            lines.append("the answer cites no span: it has no [n] marker that cite() returned")
        return lines

    def to_dict(self, text_cap: int | None = None) -> dict:
        """As JSON; `text_cap` cuts each citation's text (for the trace), marking it truncated."""
        citations = [c.to_dict() for c in self.citations]
        for c in citations:
            if text_cap is not None and len(c["text"]) > text_cap:
                c["text"], c["truncated"] = c["text"][:text_cap], True
        return {
            "citations": citations,
            "unverified": [u.to_dict() for u in self.unverified],
            "notes": list(self.notes),
        }


def check(answer: str, spans: list[CitedSpan], context: Context) -> Evidence:
    """Check `answer` against the input: its markers, its quotes, its references."""
    source = InputText(context)
    evidence = Evidence()
    by_marker = {span.marker: span for span in spans}
    for number in claims.markers(answer):
        span = by_marker.get(number)
        if span is None:
            why = "names no span registered with cite()"
            evidence.unverified.append(Unverified("marker", f"[{number}]", why))
            continue
        cited, problem = _cut(source, span)
        if cited is None:
            evidence.unverified.append(Unverified("span", f"[{number}]", problem or "cannot be cut"))
        else:
            evidence.citations.append(cited)
    quotes = claims.quotes(answer, loaded=set(source.by_path))
    for quote, how in source.find(quotes).items():
        if how is None:
            evidence.unverified.append(Unverified("quote", quote, "not found in the input"))
        elif how == "whitespace":
            evidence.notes.append(f'quote "{quote}" matches the input only with whitespace normalised')
    for ref in claims.references(answer):
        problem = _reference_problem(source, ref)
        if problem is not None:
            evidence.unverified.append(Unverified("reference", ref.text, problem))
    return evidence


def _cut(source: InputText, span: CitedSpan) -> tuple[Citation | None, str | None]:
    entry = source.by_path.get(span.path)
    if entry is None:
        return None, f"{span.path} is not a loaded file"
    if not 1 <= span.start_line <= span.end_line <= max(entry.lines, 1):
        return None, f"lines {span.start_line}-{span.end_line} are not in {span.path} ({entry.lines} lines)"
    cut = source.cut(entry, span.start_line, span.end_line)
    citation = Citation(
        span.marker, entry.path, span.start_line, span.end_line, cut.byte_start, cut.byte_end,
        entry.sha256, cut.text, truncated=cut.truncated,
        redacted=any(a <= span.end_line and span.start_line <= b for a, b in entry.redacted),
    )  # fmt: skip
    if (span.byte_start, span.byte_end) != (cut.byte_start, cut.byte_end):
        return None, (
            f"the REPL put it at bytes {span.byte_start}-{span.byte_end}, the input at "
            f"{cut.byte_start}-{cut.byte_end}"
        )
    return citation, None


def _reference_problem(source: InputText, ref: claims.Reference) -> str | None:
    """Why a `path:N` reference does not hold, or None when it names lines of a loaded file (or is
    not a file reference at all: a name that is neither loaded nor looks like a path)."""
    entry, why = source.resolve(ref.path)
    if entry is None:
        if why == "not a loaded file" and not claims.looks_like_path(ref.path):
            return None
        return f"{ref.path} is not a loaded file" if why == "not a loaded file" else f"{ref.path} {why}"
    if ref.start_line < 1 or ref.end_line < ref.start_line:
        return f"{ref.start_line}-{ref.end_line} is not a range of lines"
    if ref.end_line > entry.lines:
        return f"line {ref.end_line} is past the end of {entry.path} ({entry.lines} lines)"
    return None
