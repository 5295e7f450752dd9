"""Compaction of the root history: when the messages near the root model's window, older cell
outputs are cut to a head and a note of their size, so a long run goes on instead of overflowing.

What is kept whole: the system prompt, the first message (the input's description and the query),
every assistant message (the code the model wrote: it says what was done, and is short next to its
output) and the latest turns. What is cut: the outputs in older user messages, each to its first
HEAD_CHARS characters and a marker "[output compacted: 18,000 of 20,000 chars dropped]"; if that is
not enough, the oldest to the marker alone. Only when the history still does not fit are the latest turns cut
too (the newest message last). The model still has every value in its REPL variables: it can print
again what it needs.

Compaction starts when the prompt passes TRIGGER of the window's prompt limit and cuts down towards
TARGET, so in a large window it happens now and then rather than at every turn (each compaction
changes the history's prefix, which providers' prompt caches key on); in a small one, where cutting
to heads cannot reach TARGET, keeping the newer heads comes first. Sizes are budget.estimate_prompt_tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .budget import estimate_prompt_tokens, prompt_tokens_at_most
from .reply import Final, Reply, parse

TRIGGER = 0.75  # of the prompt limit: compact once the history passes this...
TARGET = 0.5  # ...down to this, if cutting older outputs gets there
KEEP_RECENT_TURNS = 2  # the latest user messages (with the replies between them) left whole
HEAD_CHARS = 1_000  # of each output kept in the first pass; the second keeps the marker alone
PROTECTED = 2  # messages[0] (system) and messages[1] (first user message): never cut

# Where one cell's output starts in a user message (agent.Agent._format_cell): each is cut apart.
_SECTION = re.compile(r"^(?=REPL output)", re.MULTILINE)
_MARKER = re.compile(r"\[output compacted: [\d,]+ of [\d,]+ chars dropped\]$")
MARKER_CHARS = 60  # about the length of a marker


@dataclass
class Compaction:
    messages: list[dict]  # the new history (the messages not cut are the same objects)
    before_tokens: int
    after_tokens: int
    compacted: int  # messages cut in this pass
    chars_dropped: int


def compact(messages: list[dict], prompt_limit: int) -> Compaction | None:
    """The history cut to fit `prompt_limit` tokens, or None when it needs no cut (or none helps).

    Pure: `messages` is not changed.
    """
    if len(messages) <= PROTECTED:  # nothing to cut; and the first request is not kept waiting for
        return None  # the tokenizer, which loads once it is out (tokens.py)
    # Far from the trigger: no count needed (the count of a history of short replies took ~0.3 ms of
    # the gap between iterations at 25 turns).
    if prompt_tokens_at_most(messages) <= TRIGGER * prompt_limit:
        return None
    before = estimate_prompt_tokens(messages)
    if before <= TRIGGER * prompt_limit:
        return None
    out = list(messages)
    sizes = [estimate_prompt_tokens([m]) for m in out]
    total = before
    users = [i for i, m in enumerate(out) if i >= PROTECTED and m.get("role") == "user"]
    recent = users[-KEEP_RECENT_TURNS:]
    older = [i for i in users if i not in recent]
    cut: set[int] = set()
    dropped = 0

    def shrink(indexes: list[int], head: int, goal: float) -> None:
        nonlocal total, dropped
        for i in indexes:
            if total <= goal:
                return
            text = str(out[i].get("content") or "")
            smaller = compact_text(text, head)
            if len(smaller) >= len(text):
                continue
            out[i] = {**out[i], "content": smaller}
            size = estimate_prompt_tokens([out[i]])
            total, sizes[i] = total - sizes[i] + size, size
            dropped += len(text) - len(smaller)
            cut.add(i)

    # Older outputs first, oldest first, to a head; if that is not enough, the oldest heads go too,
    # as far as needed to get under the trigger (so the newer ones keep theirs). The latest turns only
    # if the history still passes the limit itself (the newest message last of all).
    shrink(older, HEAD_CHARS, TARGET * prompt_limit)
    shrink(older, 0, TRIGGER * prompt_limit)
    for group in (recent[:-1], recent[-1:]):
        for head in (HEAD_CHARS, 0):
            shrink(group, head, prompt_limit)
    if not cut:
        return None
    return Compaction(out, before, total, len(cut), dropped)


def compact_text(text: str, head: int) -> str:
    """A user message with each cell output (or, without any, the whole text) cut to `head`
    characters and a marker of how much was dropped; parts already that short stay as they are."""
    parts = [p for p in _SECTION.split(text) if p]
    return "".join(_cut(p, head) for p in parts)


def _cut(part: str, head: int) -> str:
    """One part cut to `head` characters after its "REPL output..." line, which is always kept."""
    title = ""
    if part.startswith("REPL output"):
        title, newline, rest = part.partition("\n")
        title, part = title + newline, rest
    body = part.rstrip("\n")
    trail = part[len(body) :]
    if _MARKER.search(body):  # cut before: keep counting from the original size
        kept, _, marker = body.rpartition("[output compacted: ")
        kept = kept.removesuffix("\n")
        original = int(marker.split(" of ", 1)[1].split(" ", 1)[0].replace(",", ""))
        if len(kept) <= head:
            return title + part
        return title + _marked(kept[:head], original) + trail
    if len(body) <= head + MARKER_CHARS:  # the marker would not make it shorter
        return title + part
    return title + _marked(body[:head], len(body)) + trail


def _marked(kept: str, original: int) -> str:
    marker = f"[output compacted: {original - len(kept):,} of {original:,} chars dropped]"
    return f"{kept}\n{marker}" if kept else marker


# A root reply longer than this is kept in the history as its head and tail (it still runs whole):
# one runaway reply (a small model repeating itself to its max_tokens) must not fill the window.
REPLY_KEEP_CHARS = 24_000  # ~6K tokens
REPLY_TAIL_CHARS = 4_000


def cap_reply(text: str) -> str:
    if len(text) <= REPLY_KEEP_CHARS:
        return text
    head, tail = text[: REPLY_KEEP_CHARS - REPLY_TAIL_CHARS], text[-REPLY_TAIL_CHARS:]
    return f"{head}\n[... {len(text) - REPLY_KEEP_CHARS:,} characters of this reply not kept ...]\n{tail}"


REPLY_CUT = (
    "Your last reply was cut off: it reached its length limit (max_tokens){what}. Keep replies short: "
    "little prose, one focused ```repl``` block; spread long work over several turns."
)


def cut_reply(parsed: Reply) -> tuple[list[str], Final | None, str]:
    """The blocks to run and the FINAL of a reply cut at its max_tokens, and the note that tells the
    model: a run block still open at the end (parse runs those) is dropped, and so is a FINAL whose
    closing parenthesis never came."""
    text = parsed.text.rstrip("*_`.,;:!'\" \t\n")  # what may follow a FINAL's parenthesis
    if parsed.final is not None:
        if parsed.final.kind == "FINAL" and not text.endswith(")"):
            note = "; the FINAL it ended with was unfinished and does not count"
            return parsed.blocks, None, REPLY_CUT.format(what=note)
    elif (
        parsed.spans and parsed.spans[-1][1] == len(parsed.text) and not parsed.text.rstrip().endswith("```")
    ):
        before = parse(parsed.text[: parsed.spans[-1][0]]).blocks  # the blocks closed before it
        note = "; its last ```repl``` block was unfinished and was not run"
        return before, None, REPLY_CUT.format(what=note)
    return parsed.blocks, parsed.final, REPLY_CUT.format(what="")
