"""Citation measures of one bench result (issue 11, item 7): how many of the answer's `[n]` markers
the host verified, and how much of the row's gold location the verified citations cover.

- precision = verified / cited: `cited` counts the markers of the answer (every `[n]` that is meant
  to name a span registered with cite()), `verified` those whose lines the host cut from the input
  and checked (cite/check.py). No marker: no precision (None), not 0.
- recall (families with gold locations in `meta.gold_lines`: logs, codeqa, sniah) = the share of
  gold lines that some verified citation covers, line by line. A run that cites nothing has recall
  0; a row without gold locations has none (None).
Quotes and `path:N` references the answer typed are checked too; those not borne out are counted
in `unverified_claims`, apart from precision. The bench context is one file, so lines are compared
and paths are not.
"""

from __future__ import annotations

from typing import Any

MARKER_KINDS = ("marker", "span")  # Unverified kinds that are markers; "quote"/"reference" are not


def citation_fields(row: dict[str, Any], evidence: Any) -> dict[str, Any]:
    """The result-row fields for a run's `RunResult.evidence` (None when --cite off: no fields)."""
    if evidence is None:
        return {}
    verified = [c for c in evidence.citations if c.verified]
    failed_markers = [u for u in evidence.unverified if u.kind in MARKER_KINDS]
    cited = len(evidence.citations) + len(failed_markers)
    spans = [[c.start_line, c.end_line] for c in verified]
    return {
        "cited": cited,
        "verified": len(verified),
        "citation_precision": len(verified) / cited if cited else None,
        "citation_recall": recall(row.get("meta", {}).get("gold_lines"), spans),
        "unverified_claims": len(evidence.unverified) - len(failed_markers),
        "citations": spans,
    }


def recall(gold: list[list[int]] | None, spans: list[list[int]]) -> float | None:
    """The share of the gold lines ([start, end] ranges, inclusive) inside some cited span."""
    if not gold:
        return None
    wanted = {line for start, end in gold for line in range(start, end + 1)}
    covered = {line for line in wanted if any(start <= line <= end for start, end in spans)}
    return len(covered) / len(wanted)
