"""A look before paying (`rlm files`, `rlm ask --dry-run`): what would be loaded, its tokens, and
what a run may cost, with no sandbox and no model call.

The inputs go through the real loader (context.py) into a temporary directory that is removed
after, so the list is exactly what a run would load, skipped files and the secrets scan included.
Tokens per file are exact when the whole input is within tokens.EXACT_CHARS, else each file's
share of the input's (sampled) count by its characters, marked estimated.

The cost range is litellm's price table (model/prices.py, read without importing litellm) applied
to two stated scenarios: LOW, the sub-calls read the whole input once, in prompts as large as the
sub model's window allows, and the root model takes a few short turns; HIGH, the input is read
twice and the root model uses every turn it may (--max-iterations) with a fuller history.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import tokens
from .context import Context, load_context
from .model import prices
from .settings import Settings
from .windows import SCAFFOLD_TOKENS, Windows


@dataclass(frozen=True)
class Scenario:
    name: str
    input_reads: int  # how many times the sub-calls read the whole input
    sub_reply: int  # completion tokens per sub-call
    root_turns: int | None  # None: --max-iterations
    root_prompt: int  # prompt tokens per root turn (at most the root window's prompt limit)
    root_reply: int  # completion tokens per root turn


LOW = Scenario("low", input_reads=1, sub_reply=300, root_turns=3, root_prompt=4_000, root_reply=500)
HIGH = Scenario("high", input_reads=2, sub_reply=1_000, root_turns=None, root_prompt=16_000, root_reply=1_000)


@dataclass
class FileTokens:
    path: str
    tokens: int
    bytes: int
    lines: int


@dataclass
class Cost:
    low: float | None  # USD; None when a model has no price
    high: float | None
    subcalls: tuple[int, int]  # sub-calls in the low and high scenario
    unpriced: list[str] = field(default_factory=list)  # models litellm's table has no price for
    assumptions: list[str] = field(default_factory=list)


@dataclass
class Preview:
    context: Context
    files: list[FileTokens]  # largest first
    tokens_estimated: bool  # per-file tokens are shares of a sampled count
    cost: Cost

    def to_dict(self) -> dict:
        stats = self.context.stats
        return {
            "files": [asdict(f) for f in self.files],
            "skipped": stats.skipped,
            "totals": {
                "files": stats.files, "bytes": stats.bytes, "chars": stats.chars, "lines": stats.lines,
                "tokens": stats.est_tokens, "tokens_estimated": self.tokens_estimated or stats.tokens_sampled,
            },
            "secrets": {"count": stats.secrets, "warning": self.context.secrets_warning},
            "cost_usd": asdict(self.cost),
        }  # fmt: skip


def preview(
    settings: Settings, paths: list[str], windows: Windows, stdin: BinaryIO | None = None, progress=None
) -> Preview:  # noqa: ANN001 - progress: context.Progress
    """Load `paths` as a run would, into a directory removed before returning, and estimate."""
    with tempfile.TemporaryDirectory(prefix="rlm-files-") as tmp:
        context = load_context(paths, Path(tmp), settings.load_options(), stdin, progress=progress)
        files, estimated = file_tokens(context)
    return Preview(context, files, estimated, estimate_cost(settings, windows, context.stats.est_tokens))


def file_tokens(context: Context) -> tuple[list[FileTokens], bool]:
    """Tokens of each loaded file, largest first; and whether they are estimates."""
    stats = context.stats
    exact = stats.chars <= tokens.EXACT_CHARS and not stats.tokens_sampled
    if exact:
        with open(context.path, encoding="utf-8", errors="replace", newline="") as f:
            text = f.read()
        counts = [tokens.count_text(text[e.start : e.end]).tokens for e in context.files]
    else:
        per_char = stats.est_tokens / stats.chars if stats.chars else 0.0
        counts = [round((e.end - e.start) * per_char) for e in context.files]
    listed = [FileTokens(e.path, n, e.bytes, e.lines) for e, n in zip(context.files, counts, strict=True)]
    listed.sort(key=lambda f: (-f.tokens, f.path))
    return listed, not exact


def estimate_cost(settings: Settings, windows: Windows, input_tokens: int) -> Cost:
    root, sub = settings.model, settings.effective_sub_model
    per_call = max(1_000, windows.sub.prompt_limit - SCAFFOLD_TOKENS)  # input tokens one sub-call carries
    calls = 0 if settings.no_subcalls else math.ceil(input_tokens / per_call)
    totals, unpriced = [], []
    subcalls = []
    for s in (LOW, HIGH):
        turns = s.root_turns or settings.max_iterations
        root_prompt = min(s.root_prompt, windows.root.prompt_limit)
        n = calls * s.input_reads
        subcalls.append(n)
        sub_prompt = min(per_call, input_tokens) + SCAFFOLD_TOKENS
        parts = [(root, turns, root_prompt, s.root_reply), (sub, n, sub_prompt, s.sub_reply)]
        total = 0.0
        for model, count, prompt, reply in parts:
            if not count:
                continue
            cost = prices.table_cost(model, prompt, reply)
            if cost is None:
                unpriced.append(model)
                total = math.nan
                continue
            total += count * sum(cost)
        totals.append(None if math.isnan(total) else total)
    assumptions = [
        f"sub-calls read the whole input (~{input_tokens:,} tokens) once (low) or twice (high), "
        f"~{per_call:,} input tokens per sub-call (the {sub} window less room for the reply): "
        f"{subcalls[0]:,}-{subcalls[1]:,} sub-calls with {LOW.sub_reply}-{HIGH.sub_reply} tokens replies"
        if calls
        else "no sub-calls (--no-subcalls)",
        f"{LOW.root_turns}-{settings.max_iterations} root turns ({root}) of ~{LOW.root_prompt:,}-"
        f"{HIGH.root_prompt:,} prompt tokens and {LOW.root_reply}-{HIGH.root_reply} reply tokens",
        "prices from litellm's table; a provider's prompt caching makes runs cheaper",
    ]
    return Cost(totals[0], totals[1], (subcalls[0], subcalls[1]), sorted(set(unpriced)), assumptions)
