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
from pathlib import Path
from typing import Any

from ..budget import CHARS_PER_TOKEN as CHARS_PER_TOKEN
from ..budget import estimate_tokens as estimate_tokens
from ..errors import InputError

DATA_ENV = "RLM_DATA_DIR"
# The repository sits at <workplace>/main, the shared data at <workplace>/shared/data:
# rlmcli/bench/common.py -> parents[2] is the repo root, parents[3] its parent.
_DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# `--length` is in tokens, estimated as characters / 4 with budget.py's estimator, the one the
# limits use (a common rule of thumb for English text with BPE tokenizers). It is deterministic and
# needs no tokenizer download; real tokenizers differ by tens of percent on UUIDs, numbers and
# code, so lengths are nominal, as in OOLONG and RULER.


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


def check_args(n: int, length: int) -> None:
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
) -> dict[str, Any]:
    """One JSONL row. `answer` is a list of gold strings (of [a, b] pairs for oolong-pairs)."""
    return {
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
