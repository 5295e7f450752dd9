"""Reading a root model's reply: its code blocks, its FINAL(...) / FINAL_VAR(name), its prose.

Pure functions of the text, shared by the loop (what to run, when to stop) and the views (the
reasoning shown without its code). The loop decides what a FINAL is worth (agent.py); this module
only says where it is and what it holds.

The reply is read line by line, in order, and the first FINAL line ends the reading (its span runs
to the end of the reply): a fence inside or after the answer is part of the answer, never code.
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap
from dataclasses import dataclass, field

RUN_LANGUAGES = ("repl", "python", "py")  # fences in other languages (or none) are prose, never run
# A fence line: its indent, its backticks (three or more), its info string.
FENCE = re.compile(r"^([ \t]*)(`{3,})[ \t]*([^`]*?)[ \t]*$")
# What real models put before a FINAL on its line: list markers, quote markers, bold, backticks.
DECORATION = re.compile(r"^[ \t]*(?:(?:>[ \t]*)+)?(?:(?:[-*+]|\d{1,3}[.)])[ \t]+)?(?:\*\*|__|`)*[ \t]*")
FINAL_START = re.compile(r"(FINAL_VAR|FINAL)\(")
# After FINAL_VAR(name) or FINAL(...)'s closing parenthesis: closing decorations and punctuation.
TRAILER = set("*_`.,;:!'\" \t")
# Answers copied from the prompt's wording rather than given (compared lower-cased, brackets off).
PLACEHOLDERS = {
    "answer", "your answer", "final answer", "your final answer", "your final answer here",
    "answer here", "your answer here", "...", "…",
    "variable_name", "variable name",
}  # fmt: skip


@dataclass(frozen=True)
class Final:
    kind: str  # "FINAL" (a text answer) or "FINAL_VAR" (a name to read in the REPL)
    value: str  # the answer text, or the variable's name
    start: int  # where the FINAL's line starts in the (CRLF-normalised) reply


@dataclass(frozen=True)
class Reply:
    text: str  # the reply with CRLF line ends made LF
    blocks: list[str] = field(default_factory=list)  # code to run, in order: only fences before the FINAL
    spans: list[tuple[int, int]] = field(default_factory=list)  # where the run fences lie (blank ones too)
    final: Final | None = None


def parse(text: str) -> Reply:
    """The blocks to run and the FINAL of a reply, read in order: the FINAL line ends the reading.

    A run fence (```repl / ```python / ```py) closes only at a line holding nothing but backticks
    (at least as many as opened it), so '```' inside a string stays code. Its code is dedented by
    the opening fence's indent (a fence in a list item), then by what all its lines share. A run
    fence still open at the end of the reply runs too: models often drop the closing fence when
    the reply ends with the code, and a cut-off cell fails with a SyntaxError the model then sees.
    A FINAL line inside a run fence is code (the cell calls FINAL); inside any other fence it counts.
    """
    text = text.replace("\r\n", "\n")
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    fence: tuple[str, int, str, int] | None = None  # open fence: indent, backticks, language, start
    body: list[str] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        bare = line.rstrip("\n")
        m = FENCE.match(bare)
        if fence is None:
            if m is not None:
                fence, body = (m.group(1), len(m.group(2)), m.group(3).strip().lower(), start), []
                continue
        elif m is not None and not m.group(3) and len(m.group(2)) >= fence[1]:
            if fence[2] in RUN_LANGUAGES:
                _add_block(blocks, spans, fence, body, (fence[3], start + len(bare)))  # its line end stays
            fence = None
            continue
        elif fence[2] in RUN_LANGUAGES:
            body.append(line)
            continue
        found = _final_at(text, start, bare)
        if found is not None:
            return Reply(text, blocks, spans, found)
        if fence is not None:
            body.append(line)
    if fence is not None and fence[2] in RUN_LANGUAGES:
        _add_block(blocks, spans, fence, body, (fence[3], len(text)))
    return Reply(text, blocks, spans, None)


def _add_block(
    blocks: list[str], spans: list[tuple[int, int]], fence: tuple, body: list[str], span: tuple[int, int]
) -> None:
    indent = fence[0]
    code = "".join(line[len(indent) :] if line.startswith(indent) else line.lstrip(" \t") for line in body)
    code = textwrap.dedent(code)
    spans.append(span)  # a blank block is not run, but it is code all the same: not prose
    if code.strip():
        blocks.append(code)


def _final_at(text: str, start: int, line: str) -> Final | None:
    """The FINAL that starts this line, past its decorations (`**FINAL(x)**`, `- FINAL(x)`, `> ...`)."""
    lead = DECORATION.match(line)
    at = lead.end() if lead else 0
    m = FINAL_START.match(line, at)
    if m is None:
        return None
    rest = text[start + m.end() :]
    if m.group(1) == "FINAL_VAR":
        close = rest.find(")")
        line_end = rest.find("\n")
        if close < 0 or (0 <= line_end < close) or not _only_trailer(rest[close + 1 : _eol(rest, close)]):
            return None  # words after FINAL_VAR(name) on its line: prose that mentions it
        return Final("FINAL_VAR", rest[:close].strip().strip("'\"` "), start)
    return Final("FINAL", _unquote(_final_argument(rest).strip()), start)


def _eol(rest: str, i: int) -> int:
    end = rest.find("\n", i)
    return len(rest) if end < 0 else end


def _only_trailer(s: str) -> bool:
    return all(ch in TRAILER for ch in s)


def _final_argument(rest: str) -> str:
    """The text up to FINAL's closing parenthesis.

    The balanced closing parenthesis wins when nothing but closing decorations follow it on its
    line; otherwise (an answer with unbalanced parentheses, like "1) ... 2) ...") the last one does.
    """
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                if _only_trailer(rest[i + 1 : _eol(rest, i)]):
                    return rest[:i]
                break
            depth -= 1
    last = rest.rfind(")")
    return rest[:last] if last >= 0 else rest


def _unquote(answer: str) -> str:
    """FINAL("text") and FINAL('''text''') mean the text, not the quotes; FINAL(`x`) means x."""
    if answer[:1] in "\"'":
        try:
            value = ast.literal_eval(answer)
            if isinstance(value, str):
                return value
        except (ValueError, SyntaxError):
            pass
    if len(answer) > 2 and answer[0] == answer[-1] == "`" and "`" not in answer[1:-1]:
        return answer[1:-1]
    return answer


def is_name(answer: str) -> bool:
    """A bare identifier: FINAL(x) then means FINAL_VAR(x) when x is bound in the REPL."""
    return answer.isidentifier() and not keyword.iskeyword(answer)


def is_placeholder(answer: str) -> bool:
    """An answer that is the prompt's own wording (FINAL(answer), FINAL(...)), not an answer."""
    return answer.strip().strip("<>[]{}\"'` ").lower() in PLACEHOLDERS


def code_blocks(text: str) -> list[str]:
    return parse(text).blocks


def find_final(text: str) -> tuple[str, str] | None:
    """('FINAL', answer) or ('FINAL_VAR', name): the first FINAL line outside a run fence."""
    final = parse(text).final
    return None if final is None else (final.kind, final.value)


def strip_code(text: str) -> str:
    """The reply without the code that runs: the prose, and the FINAL (with its fences) as written."""
    reply = parse(text)
    kept, at = [], 0
    for start, end in reply.spans:
        kept.append(reply.text[at:start])
        at = end
    kept.append(reply.text[at:])
    return "".join(kept).strip()
