"""Questions over real system logs (Loghub 2k samples), with gold from the structured CSVs.

Source: logpai/loghub (Zhu et al., "Loghub: A Large Collection of System Log Datasets for AI-driven
Log Analytics", ISSRE 2023), the 2,000-line sample of each system with `<System>_2k.log_structured.csv`
(line i of the log is LineId i, parsed into Level, Component, EventId, EventTemplate, ...). Licence:
free for research or academic work, citing the loghub repository. This family is ours; it is not in
the RLM paper. A context holds one or more systems' logs, each under a "### <System> log" header, in a
seeded order; the last one is cut to the lines that fit. Questions are about one included system,
and gold counts only the lines included:
- count: lines matching an event template (templates of at most 300 characters);
- first / last: the timestamp of the first / last line (in log order) matching a template;
- component: the component with the most lines at a given level (errors and warnings first);
- level: lines at a given level.
Scorer: the text after the last "Answer:" (else the whole output), less quotes, brackets, asterisks
and a final period; counts score 0.75 ** |gold - pred| as in OOLONG; components and timestamps must
match exactly (case and runs of whitespace ignored).
Gold locations (`meta.gold_lines`, context line ranges): the lines a question is about, i.e. those
matching the template, the first or last such line, or the lines at the level (of the component).
`--profile paper` sizes the context so that it and the question are within `length` real tokens.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .common import char_budget, check_args, data_path, fit_tokens, make_row, rng, sha256_text

TASK = "logs"
SYSTEMS = (
    "Android Apache BGL HDFS HPC Hadoop HealthApp Linux Mac OpenSSH OpenStack Proxifier Spark "
    "Thunderbird Windows Zookeeper"
).split()
# Structured-CSV columns that, joined by spaces, spell the timestamp as it appears in the raw line
# (up to runs of spaces, e.g. syslog's "Jul  1").
TIME_COLUMNS = {
    "Android": ("Date", "Time"),
    "Apache": ("Time",),
    "BGL": ("Time",),
    "HDFS": ("Date", "Time"),
    "HPC": ("Time",),
    "Hadoop": ("Date", "Time"),
    "HealthApp": ("Time",),
    "Linux": ("Month", "Date", "Time"),
    "Mac": ("Month", "Date", "Time"),
    "OpenSSH": ("Date", "Day", "Time"),
    "OpenStack": ("Date", "Time"),
    "Proxifier": ("Time",),
    "Spark": ("Date", "Time"),
    "Thunderbird": ("Month", "Day", "Time"),
    "Windows": ("Date", "Time"),
    "Zookeeper": ("Date", "Time"),
}
PROBLEM_LEVELS = ("FATAL", "SEVERE", "ERROR", "error", "Error", "E", "WARN", "WARNING", "Warning", "W")
KINDS = ("count", "first", "last", "component", "level")
FORMAT = " Give your final answer in the form 'Answer: X'."
MAX_TEMPLATE = 300


@dataclass(frozen=True)
class LogSystem:
    name: str
    lines: tuple[str, ...]  # raw log lines; lines[i] has LineId i + 1
    rows: tuple[dict[str, str], ...]  # structured CSV rows, same order


@functools.cache
def load_system(name: str) -> LogSystem:
    folder = data_path("loghub", name)
    lines = tuple((folder / f"{name}_2k.log").read_text(encoding="utf-8", errors="replace").splitlines())
    with open(folder / f"{name}_2k.log_structured.csv", encoding="utf-8", errors="replace", newline="") as f:
        rows = tuple(csv.DictReader(f))
    if len(rows) != len(lines):
        raise ValueError(f"loghub {name}: {len(lines)} log lines but {len(rows)} structured rows")
    return LogSystem(name, lines, rows)


def timestamp(system: str, row: dict[str, str]) -> str:
    return " ".join(row[c] for c in TIME_COLUMNS[system])


def _header(name: str, count: int) -> str:
    return f"### {name} log ({count} lines)\n"


def build_context(
    seed: int, length: int, index: int, reserve: int, chars: int | None = None
) -> tuple[str, list[tuple[str, int]]]:
    """The context and, per included system, how many leading lines it holds; `chars` (default
    characters / 4 of the length) is the budget of context + question."""
    order = list(SYSTEMS)
    rng("logs-systems", seed, length, index).shuffle(order)
    budget = (char_budget(length) if chars is None else chars) - reserve
    parts: list[str] = []
    included: list[tuple[str, int]] = []
    used = 0
    for name in order:
        system = load_system(name)
        room = budget - used - len(_header(name, len(system.lines))) - 1
        take, size = 0, 0
        while take < len(system.lines) and size + len(system.lines[take]) + 1 <= room:
            size += len(system.lines[take]) + 1
            take += 1
        if take == 0 or (take < 50 and included):  # no room for a meaningful further section
            break
        parts.append(_header(name, take) + "\n".join(system.lines[:take]) + "\n")
        included.append((name, take))
        used += len(parts[-1]) + 1
        if take < len(system.lines):
            break
    return "\n".join(parts), included


def _question(kind: str, system: LogSystem, take: int, r: Any) -> tuple[str, str, list[int]] | None:
    """(question, gold, the 0-based lines of the system it is about), or None when not askable."""
    rows = system.rows[:take]
    name = system.name
    templates = Counter(row["EventTemplate"] for row in rows)
    if kind in ("count", "first", "last"):
        # Templates up to 300 characters (a few run to ~1,000 and would crowd the question), preferring
        # ones seen more than once so "first" and "last" differ; sorted for determinism.
        usable = sorted(t for t in templates if len(t) <= MAX_TEMPLATE) or [min(templates, key=len)]
        pool = [t for t in usable if templates[t] > 1] or usable
        template = r.choice(pool)
        lines = [i for i, row in enumerate(rows) if row["EventTemplate"] == template]
        pattern = f"the event template `{template}` (`<*>` stands for a variable part)"
        if kind == "count":
            return f"In the {name} log, how many lines match {pattern}?{FORMAT}", str(len(lines)), lines
        line = lines[0] if kind == "first" else lines[-1]
        which = "first" if kind == "first" else "last"
        text = (
            f"In the {name} log, what is the timestamp of the {which} line (in log order) that matches "
            f"{pattern}? Give the timestamp exactly as it is written in the log line.{FORMAT}"
        )
        return text, timestamp(name, rows[line]), [line]
    levels = Counter(row.get("Level") for row in rows if row.get("Level"))
    if len(levels) < 2:  # a single level ("combo", "Info", ...) makes level questions trivial
        return None
    if kind == "level":
        level = r.choice(sorted(levels))
        text = f"In the {name} log, how many lines have the level `{level}`?{FORMAT}"
        return text, str(levels[level]), [i for i, row in enumerate(rows) if row.get("Level") == level]
    if "Component" not in rows[0]:
        return None
    for level in [lv for lv in PROBLEM_LEVELS if lv in levels] + sorted(levels):
        ranked = Counter(row["Component"] for row in rows if row.get("Level") == level).most_common(2)
        if len(ranked) == 1 or (len(ranked) == 2 and ranked[0][1] > ranked[1][1]):
            text = (
                f"In the {name} log, which component has the most lines with the level `{level}`? "
                f"Give the component name exactly as it is written in the log.{FORMAT}"
            )
            at = [
                i
                for i, row in enumerate(rows)
                if row.get("Level") == level and row["Component"] == ranked[0][0]
            ]
            return text, ranked[0][0], at
    return None


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    if profile == "paper":
        return [
            fit_tokens(
                lambda chars, i=index: _row(i, length, seed, chars, profile),
                lambda row: f"{row['context']}\n{row['question']}",
                length,
            )
            for index in range(n)
        ]
    return [_row(index, length, seed, None, profile) for index in range(n)]


def _row(index: int, length: int, seed: int, chars: int | None, profile: str) -> dict[str, Any]:
    context, included = build_context(seed, length, index, reserve=1200, chars=chars)
    if not included:
        raise ValueError(f"length {length} is too small for a log section")
    r = rng(TASK, seed, length, index)
    kinds = KINDS[index % len(KINDS) :] + KINDS[: index % len(KINDS)]
    for kind in kinds:  # fall back to the next kind when a system cannot support this one
        name, take = r.choice(included)
        asked = _question(kind, load_system(name), take, r)
        if asked is not None:
            break
    else:
        name, take = included[0]
        kind, asked = "count", _question("count", load_system(name), take, r)
    assert asked is not None
    question, gold, lines = asked
    meta = {
        "kind": kind,
        "system": name,
        "systems": [f"{s}:{k}" for s, k in included],
        "answer_type": "NUMERIC" if kind in ("count", "level") else "TEXT",
        "source_sha256": sha256_text("\n".join("\n".join(load_system(s).lines[:k]) for s, k in included)),
        "scorer": "logs",
        "gold_lines": line_ranges([first_line(included, name) + i for i in lines]),
    }
    return make_row(TASK, index, seed, length, context, question, [gold], meta, profile)


def first_line(included: list[tuple[str, int]], name: str) -> int:
    """The context line (1-based) of `name`'s first log line: each section is its header, its lines
    and the blank line that joins it to the next."""
    line = 1
    for system, take in included:
        if system == name:
            return line + 1
        line += take + 2
    raise ValueError(f"{name} is not in the context")


def line_ranges(lines: list[int]) -> list[list[int]]:
    """Sorted line numbers as [start, end] runs: [3, 4, 5, 9] -> [[3, 5], [9, 9]]."""
    out: list[list[int]] = []
    for line in sorted(set(lines)):
        if out and line == out[-1][1] + 1:
            out[-1][1] = line
        else:
            out.append([line, line])
    return out


def extract(output: str) -> str:
    parts = re.split(r"answer\s*:", output, flags=re.IGNORECASE)
    text = parts[-1] if len(parts) > 1 else output
    text = text.replace("*", "").strip()
    for _ in range(2):  # peel a final period and wrapping quotes/brackets, in either order
        text = text.rstrip(".").strip().strip("`\"'[]").strip()
    return " ".join(text.split())


def score(output: str, row: dict[str, Any]) -> float:
    gold = " ".join(str(row["answer"][0]).split())
    pred = extract(output)
    if row["meta"].get("answer_type") == "NUMERIC":
        try:
            return 0.75 ** abs(int(gold) - int(pred.replace(",", "")))
        except ValueError:
            return 0.0
    return 1.0 if pred.lower() == gold.lower() else 0.0
