"""What a task set holds, in a few lines: rows, lengths, context sizes and, for the OOLONG families,
lines, users and gold pairs per context. `bench generate` prints it after writing a set, and
`bench list --stats FILE` prints it for a file, so a set can be set beside the paper's setting
(docs/BENCHMARKS.md records the numbers for the paper profile)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any


def _spread(values: list[int]) -> str:
    if len(set(values)) == 1:
        return f"{values[0]:,}"
    return f"median {statistics.median(values):,.0f} (min {min(values):,}, max {max(values):,})"


def describe(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (family, profile, length) group of `rows`."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row.get("task"), row.get("profile", "cli"), row.get("length"))].append(row)
    lines = []
    for (task, profile, length), members in groups.items():
        sizes = _spread([int(r["context_tokens"]) for r in members])
        parts = [
            f"{task} [{profile}] length {length:,}: {len(members)} rows",
            f"context {sizes} o200k_base tokens",
        ]
        meta = [r.get("meta", {}) for r in members]
        windows = {(m.get("context_window_id"), m.get("num_instances")) for m in meta if "num_instances" in m}
        if windows:
            parts.append(f"{len(windows)} window(s) of {_spread([count for _, count in windows])} lines")
        users = {(m.get("context_window_id"), m.get("num_users")) for m in meta if "num_users" in m}
        if users:
            parts.append(f"users per window {_spread([count for _, count in users])}")
        if any("num_gold_pairs" in m for m in meta):
            parts.append(f"gold pairs per query {_spread([int(m.get('num_gold_pairs', 0)) for m in meta])}")
        lines.append("; ".join(parts))
    return lines
