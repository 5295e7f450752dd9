"""Benchmark task generators and scorers for `rlm bench` (see docs/BENCHMARKS.md).

    rows = generate("oolong", n=50, length=131072, seed=0)            # profile="cli"
    rows = generate("oolong", n=50, length=131072, seed=0, profile="paper")  # as the RLM paper
    write_jsonl(rows, "oolong.jsonl")
    score(rows[0], model_output)  # -> float in [0, 1]

Each row is self-contained: id, task, context, question, answer (gold strings; [a, b] pairs for
oolong-pairs), length (target tokens), context_tokens (o200k_base, rlmcli/tokens.py), seed,
index and a `meta` dict with the task's own fields; `paper` rows also say `"profile": "paper"` (see
profile.py). Scorers read only the row, so `bench run` can score from the JSONL alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import codeqa, logs, oolong, pairs, sniah, threads
from .common import CHARS_PER_TOKEN, DATA_ENV, PROFILES, BenchDataError, data_dir, estimate_tokens

__all__ = [
    "CHARS_PER_TOKEN",
    "DATA_ENV",
    "FAMILIES",
    "PROFILES",
    "BenchDataError",
    "Family",
    "data_dir",
    "estimate_tokens",
    "generate",
    "read_jsonl",
    "score",
    "write_jsonl",
]


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    provenance: str
    scorer: str
    generate: Callable[..., list[dict[str, Any]]]  # (n, length_tokens, seed, profile) -> rows
    score: Callable[[str, dict[str, Any]], float]  # (model output, row) -> score in [0, 1]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "sniah",
            "RULER single needle in a haystack: find the 7-digit number or UUID hidden for one key "
            "(noise and prose haystacks)",
            "RULER niah_single_1..3 (NVIDIA, Apache-2.0); prose haystack: CPython pydoc_data.topics (PSF)",
            "RULER string_match_all: fraction of gold strings in the output, case-insensitive",
            sniah.generate,
            sniah.score,
        ),
        Family(
            "oolong",
            "OOLONG-synth trec_coarse: classify every question line, then count, compare and rank labels "
            "(overall, per user subset, per month or date range)",
            "OOLONG (Bertsch et al. 2025) wording over TREC (Li & Roth 2002) from shared/data/trec; paper: "
            "OOLONG's validated subset (shared/data/oolong)",
            "OOLONG synth scorer: answer after the last colon; exact, comparison phrases, 0.75^|d|, dates",
            oolong.generate,
            oolong.score,
        ),
        Family(
            "oolong-pairs",
            "OOLONG-Pairs: list every pair of user IDs meeting label (and date) conditions; quadratic",
            "RLM paper (arXiv 2512.24601) Appendix D.1, 20 queries, over the oolong contexts",
            "F1 between parsed (a, b) pairs and the gold set; empty vs empty = 1",
            pairs.generate,
            pairs.score,
        ),
        Family(
            "needle-threading",
            "JSON object of UUID -> UUID pairs: single needle, multiple needles, forward/backward threads",
            "after Needle Threading (Roberts, Han & Albanie, ICLR 2025); random UUIDs",
            "output starts with the gold value (multiple needles: fraction of values present)",
            threads.generate,
            threads.score,
        ),
        Family(
            "logs",
            "real system logs: count an event template, first/last time it occurs, component with the most "
            "errors, lines per level",
            "Loghub 2k samples (logpai/loghub, research use) in shared/data/loghub; gold: structured CSVs",
            "answer after 'Answer:'; counts 0.75^|d|, timestamps and components exact",
            logs.generate,
            logs.score,
        ),
        Family(
            "codeqa",
            "four-choice questions about the installed `rich` source: defining file, subclass counts, "
            "parameter defaults, method counts",
            "installed rich package (MIT); gold from its AST; LongBench-v2 prompt format",
            "LongBench-v2 extract_answer ('The correct answer is (X)') or a bare letter; paper: the index",
            codeqa.generate,
            codeqa.score,
        ),
    )
}


def family(task: str) -> Family:
    try:
        return FAMILIES[task]
    except KeyError:
        hint = f"choose one of: {', '.join(FAMILIES)}"
        raise InputError(f"unknown benchmark task {task!r}", hint=hint) from None


def generate(task: str, n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    """`n` rows of `task` whose context and question fit `length` tokens (chars / 4 under `cli`; under
    `paper`, OOLONG's 39-tokens-per-line rule for oolong and oolong-pairs and real tokens elsewhere);
    deterministic."""
    if profile not in PROFILES:
        raise InputError(f"unknown --profile {profile!r}", hint=f"choose one of: {', '.join(PROFILES)}")
    return family(task).generate(n, length, seed, profile)


def score(row: dict[str, Any], output: str) -> float:
    """The family scorer of `row["task"]` applied to a model output; always within [0, 1]."""
    value = float(family(str(row["task"])).score(output or "", row))
    return min(1.0, max(0.0, value))


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Byte-deterministic JSONL: sorted keys, UTF-8 without escapes, "\\n" line ends."""
    with open(Path(path), "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(Path(path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
