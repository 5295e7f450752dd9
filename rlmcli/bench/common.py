"""Shared pieces of the benchmark generators: data location, token budget, seeded randomness, rows.

Every generator is a pure function of (n, length, seed) plus the read-only source data, so the same
arguments give the same bytes. Randomness comes only from `rng(...)`, whose seed is a string: Python
hashes str seeds with SHA-512 (random.seed version 2), independent of PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..budget import CHARS_PER_TOKEN as CHARS_PER_TOKEN
from ..budget import estimate_tokens as estimate_tokens
from ..errors import InputError

DATA_ENV = "RLM_DATA_DIR"
# `--profile`: "cli" sizes contexts in characters / 4 and keeps this tool's own choices; "paper"
# follows the RLM paper's setup where it differs (docs/BENCHMARKS.md, "The paper profile").
PROFILES = ("cli", "paper")
PAPER_TOKENIZER = "o200k_base"  # rlmcli/tokens.py: the one real token counter of rlm
# The repository sits at <workplace>/main, the shared data at <workplace>/shared/data:
# rlmcli/bench/common.py -> parents[2] is the repo root, parents[3] its parent.
_DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# Under the cli profile `--length` is turned into a character budget at CHARS_PER_TOKEN = 4 per
# token: deterministic and quick, but real tokenizers differ by tens of percent on UUIDs, numbers,
# logs and code, so those lengths are nominal (as in OOLONG and RULER). Rows record the real count
# (o200k_base) in `context_tokens`. The paper profile sizes by real tokens instead (fit_tokens), or
# by OOLONG's own line rule for the OOLONG families (trec.paper_line_count).


class BenchDataError(InputError):
    """The source data a generator needs is missing or unreadable."""


def data_dir() -> Path:
    """The shared data folder: $RLM_DATA_DIR, else ../shared/data next to the repository."""
    override = os.environ.get(DATA_ENV)
    return Path(override).expanduser() if override else _DEFAULT_DATA


def data_path(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise BenchDataError(
            f"benchmark source data not found: {path}",
            hint=f"set {DATA_ENV} to the folder holding trec/ and loghub/ (the project's shared/data)",
        )
    return path


def char_budget(length_tokens: int) -> int:
    return length_tokens * CHARS_PER_TOKEN


def rng(*parts: object) -> random.Random:
    """A generator seeded by the string form of `parts` (stable across runs and machines)."""
    return random.Random(":".join(str(p) for p in parts))


def random_uuid(r: random.Random) -> str:
    # RULER's generate_random_uuid: uuid.UUID(int=random.getrandbits(128), version=4).
    return str(uuid.UUID(int=r.getrandbits(128), version=4))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_args(n: int, length: int, profile: str = "cli") -> None:
    if profile not in PROFILES:
        raise InputError(f"unknown --profile {profile!r}", hint=f"choose one of: {', '.join(PROFILES)}")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if length < 1024:
        raise InputError(f"--length must be at least 1024 tokens, got {length}")


def make_row(
    task: str,
    index: int,
    seed: int,
    length: int,
    context: str,
    question: str,
    answer: list[Any],
    meta: dict[str, Any],
    profile: str = "cli",
) -> dict[str, Any]:
    """One JSONL row. `answer` is a list of gold strings (of [a, b] pairs for oolong-pairs).

    A `paper` row says so in its id (so results of both profiles never collide on resume) and in a
    `profile` field; a `cli` row is unchanged. `context_tokens` is the real count (o200k_base) in both."""
    row = {
        "id": f"{task}-L{length}-s{seed}-{index:04d}",
        "task": task,
        "index": index,
        "seed": seed,
        "length": length,
        "context_tokens": estimate_tokens(context),
        "context": context,
        "question": question,
        "answer": answer,
        "meta": meta,
    }
    if profile == "paper":
        row.update(id=f"{task}-paper-L{length}-s{seed}-{index:04d}", profile="paper")
    return row


def real_tokens(text: str) -> int:
    from ..tokens import count_text  # tiktoken loads on first use, never on the --help path

    return count_text(text).tokens


T = TypeVar("T")


def fit_tokens(build: Callable[[int], T], text: Callable[[T], str], length: int) -> T:
    """The paper profile's sizing for the families OOLONG's line rule does not cover: the largest
    `build(chars)` (a deterministic function of a character budget) whose `text` is within `length`
    real tokens. Starts at characters / 4, rescales by the measured characters per token, and
    bisects once a budget that fits and one that does not are known (contexts made of whole files
    or sections grow in steps); stops within 2% below the length or after 12 builds."""
    chars, fits, too_big = char_budget(length), 0, 0
    best: T | None = None
    best_tokens = -1
    for _ in range(12):
        built = build(chars)
        tokens = real_tokens(text(built))
        if tokens <= length:
            fits = max(fits, chars)
            if tokens > best_tokens:
                best, best_tokens = built, tokens
        else:
            too_big = chars if not too_big else min(too_big, chars)
        if best_tokens >= length * 0.98 or (too_big and too_big - fits <= max(16, too_big // 200)):
            break
        # Aim a little under the length: the ratio is measured on this text, not on the next one.
        guess = max(1, int(chars * length * 0.99 / max(tokens, 1)))
        if too_big and not fits < guess < too_big:
            guess = (fits + too_big) // 2
        chars = guess
    if best is None:
        raise ValueError(f"length {length} is too small for this task")
    return best
