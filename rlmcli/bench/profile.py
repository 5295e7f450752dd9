"""`--profile paper|cli`: what changes when a bench should stand beside the RLM paper's Table 1.

`cli` (the default) is this tool's own setup: lengths in characters / 4, all of TREC, questions
rotated over kinds, LongBench-v2's answer sentence for codeqa, the methods `rlm`. `paper` follows the
paper (arXiv 2512.24601, v3 for the depth rows and the length sweeps) wherever it says how: the
generators read `profile` (trec.py, oolong.py, pairs.py, codeqa.py, common.fit_tokens), and this
module holds the settings `bench generate` and `bench run` default to. docs/BENCHMARKS.md says per
family which numbers are comparable with Table 1 and why.
"""

from __future__ import annotations

from dataclasses import dataclass

CLI_N, CLI_LENGTH = 10, 8192  # `bench generate` / `bench run TASK` defaults under the cli profile
PAPER_METHODS = ("direct", "rlm-d0", "rlm-d1", "rlm-d2")  # v3 Table 1: base model, then depth 0..2
CLI_METHODS = ("rlm",)


@dataclass(frozen=True)
class PaperSetting:
    n: int  # tasks per length
    length: int  # the Table 1 length (or the sweep's middle where the family is not in Table 1)
    sweep: tuple[int, ...]  # Figure 1's lengths (v3), for `bench generate --sweep`


def _powers(low: int, high: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(low, high + 1))


PAPER: dict[str, PaperSetting] = {
    "sniah": PaperSetting(50, 2**17, _powers(13, 20)),  # Figure 1 (v3): 2^13..2^20, 50 tasks
    "oolong": PaperSetting(50, 2**17, _powers(13, 18)),  # Table 1: 50 tasks at 131K; Figure 1 sweep
    "oolong-pairs": PaperSetting(20, 2**15, _powers(13, 18)),  # Table 1: 20 tasks at 32K
    "codeqa": PaperSetting(50, 2**17, (2**17,)),  # a stand-in for LongBench-v2 CodeQA (not comparable)
    "needle-threading": PaperSetting(50, 2**17, _powers(13, 20)),  # not in the paper
    "logs": PaperSetting(50, 2**17, _powers(13, 20)),  # not in the paper
}


def default_n(task: str, profile: str) -> int:
    return PAPER[task].n if profile == "paper" and task in PAPER else CLI_N


def default_length(task: str, profile: str) -> int:
    return PAPER[task].length if profile == "paper" and task in PAPER else CLI_LENGTH


def lengths(task: str, profile: str, length: int | None, sweep: bool) -> list[int]:
    """The lengths to generate: the family's paper sweep with --sweep, else one length."""
    if sweep:
        return list(PAPER[task].sweep)
    return [default_length(task, profile) if length is None else length]


def default_methods(profile: str) -> list[str]:
    return list(PAPER_METHODS if profile == "paper" else CLI_METHODS)
