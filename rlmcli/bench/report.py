"""`rlm bench report`: methods side by side from one or more RESULTS files, as tables and a plot.

Per group (overall, task family, context length, family × length) and method: mean score with a
seeded percentile-bootstrap 95% CI, citation precision and recall (citations.py; "-" where a method
cites nothing or a family has no gold locations), mean cost and tokens per query, median latency,
error count.
The plot is mean score against context length, one panel per family and one line per method: PNG
through matplotlib when it is installed (the optional `plot` extra), else an SVG written here
without dependencies.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape

from ..errors import ExitReason, InputError

METHOD_ORDER = ("rlm", "rlm-no-subcalls", "direct", "rlm-d0", "rlm-d1", "rlm-d2", "rlm-d3")
RESAMPLES = 1000
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
GROUPINGS = {
    "overall": (),
    "by_family": ("task",),
    "by_length": ("length",),
    "by_family_length": ("task", "length"),
}
HEADINGS = {"task": "family", "length": "length"}


# -- reading -------------------------------------------------------------------------------------


def read_results(path: Path) -> list[dict[str, Any]]:
    """The result rows of RESULTS; a cut last line (killed mid-write) is ignored, not an error."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the results file {path}: {exc}") from exc
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    rows = []
    for n, line in numbered:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or "id" not in row or "method" not in row:
            if n == numbered[-1][0]:
                break
            raise InputError(f"{path} is not a bench results file (line {n})")
        rows.append(row)
    return rows


def result_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return str(row["id"]), str(row["method"]), str(row.get("model"))


def is_error(row: dict[str, Any]) -> bool:
    """A failure of the machinery (provider, sandbox, input), as opposed to a limit or an answer."""
    return bool(row.get("error")) and ExitReason.parse(row.get("exit_reason")).is_error


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Every result row of `paths`; a (row, method, model) run twice (--retry-errors) counts once,
    the later run winning."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in paths:
        if not path.is_file():
            raise InputError(f"no results file at {path}")
        for row in read_results(path):
            latest.pop(result_key(row), None)  # re-insert: keeps file order, later wins
            latest[result_key(row)] = row
    if not latest:
        raise InputError(f"no result rows in {', '.join(map(str, paths))}")
    return list(latest.values())


# -- aggregation ---------------------------------------------------------------------------------


def method_label(row: dict[str, Any], several_models: bool) -> str:
    return f"{row['method']} [{row.get('model')}]" if several_models else str(row["method"])


def bootstrap_ci(values: list[float], rng: random.Random, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    if len(set(values)) <= 1:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]


def aggregate(
    rows: list[dict[str, Any]], by: tuple[str, ...], resamples: int = RESAMPLES, seed: int = 0
) -> list[dict[str, Any]]:
    several = len({r.get("model") for r in rows}) > 1
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(*(row.get(field) for field in by), method_label(row, several))].append(row)
    out = []
    for key, members in groups.items():
        scores = [float(r.get("score") or 0.0) for r in members]
        # Seeded by the group itself, so a group's interval does not depend on which others exist.
        rng = random.Random(f"bootstrap:{seed}:{json.dumps(key, default=str)}")
        low, high = bootstrap_ci(scores, rng, resamples)
        out.append(
            {
                **dict(zip(by, key[:-1], strict=True)),
                "method": key[-1],
                "n": len(members),
                "score": statistics.fmean(scores),
                "ci_low": low,
                "ci_high": high,
                "cost_per_query": statistics.fmean(float(r.get("cost_usd") or 0.0) for r in members),
                "cost_known": all(r.get("cost_known", True) for r in members),
                "tokens_per_query": statistics.fmean(
                    int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0) for r in members
                ),
                "latency_median_s": statistics.median(float(r.get("latency_s") or 0.0) for r in members),
                "errors": sum(is_error(r) for r in members),
                "truncated": sum(bool(r.get("truncated")) for r in members),
                **citation_summary(members),
            }
        )
    return sorted(out, key=lambda g: (*(_sort_key(g.get(f)) for f in by), _method_rank(g["method"])))


def citation_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision over all markers of the group (verified / cited), and mean recall over its rows
    with gold locations; None where there is nothing to measure (no marker, no gold, --cite off)."""
    cited = sum(int(r.get("cited") or 0) for r in rows)
    verified = sum(int(r.get("verified") or 0) for r in rows)
    recalls = [float(r["citation_recall"]) for r in rows if r.get("citation_recall") is not None]
    return {
        "cited": cited,
        "verified": verified,
        "citation_precision": verified / cited if cited else None,
        "citation_recall": statistics.fmean(recalls) if recalls else None,
        "citation_recall_n": len(recalls),
    }


def _sort_key(value: Any) -> tuple:
    from . import FAMILIES

    if isinstance(value, int | float):
        return (0, value, "")
    names = list(FAMILIES)
    return (1, names.index(value) if value in names else len(names), str(value))


def _method_rank(label: str) -> tuple[int, str]:
    base = label.split(" [", 1)[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label)


def build_report(rows: list[dict[str, Any]], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    return {name: aggregate(rows, by, resamples, seed) for name, by in GROUPINGS.items()}


# -- tables --------------------------------------------------------------------------------------


def _cells(group: dict[str, Any], by: tuple[str, ...]) -> list[str]:
    cost = f"${group['cost_per_query']:.4f}" + ("" if group["cost_known"] else "?")
    return [
        *(_fmt_group(field, group[field]) for field in by),
        group["method"],
        str(group["n"]),
        f"{group['score']:.3f}",
        f"[{group['ci_low']:.3f}, {group['ci_high']:.3f}]",
        _fraction(group.get("citation_precision")),
        _fraction(group.get("citation_recall")),
        cost,
        f"{group['tokens_per_query']:,.0f}",
        f"{group['latency_median_s']:.1f}s",
        str(group["errors"]),
    ]


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt_group(field: str, value: Any) -> str:
    return f"{value:,}" if field == "length" and isinstance(value, int) else str(value)


def print_report(report: dict[str, Any], file: TextIO | None = None, sections: tuple[str, ...] = ()) -> None:
    """Tables of `report`: Rich on a terminal, aligned plain text otherwise (pipes, files, CI logs)."""
    file = file or sys.stdout
    names = sections or ("overall", "by_family", "by_length")
    headers = ["method", "n", "score", "95% CI", "cite prec", "cite rec", "$/query", "tokens/query",
               "latency p50", "errors"]  # fmt: skip
    titles = {"overall": "All rows", "by_family": "By task family", "by_length": "By context length (tokens)",
              "by_family_length": "By family and context length"}  # fmt: skip
    tty = file.isatty()
    console = None
    if tty:
        from rich.console import Console

        console = Console(file=file)
    for name in names:
        by = GROUPINGS[name]
        if name in ("by_family", "by_length") and len({tuple(g[f] for f in by) for g in report[name]}) <= 1:
            continue  # one family or one length: the same numbers as "All rows"
        rows = [_cells(g, by) for g in report[name]]
        firsts = [tuple(g[f] for f in by) for g in report[name]]
        head = [HEADINGS[f] for f in by] + headers
        plain = _plain_table(head, rows, firsts, len(by))
        # Rich wraps cells when the terminal is narrower than the table; plain text then reads better.
        if console is not None and console.width >= len(plain.splitlines()[1]) + 3 * len(head) + 1:
            _rich_table(console, titles[name], head, rows, firsts, len(by))
        else:
            file.write(f"{titles[name]}\n{plain}\n")
    notes = []
    if any(not g["cost_known"] for g in report["overall"]):
        notes.append("? some calls had no known price: the cost is a lower bound")
    truncated = sum(g["truncated"] for g in report["overall"])
    if truncated:
        notes.append(f"{truncated} direct row(s) had their context cut to the model's window")
    for note in notes:
        file.write(f"note: {note}\n")


def _plain_table(head: list[str], rows: list[list[str]], firsts: list[tuple], keys: int) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    numeric = set(range(keys + 1, len(head)))

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs)

    out = [line(head).rstrip(), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        shown = list(row)
        if i and keys and firsts[i] == firsts[i - 1]:
            shown[:keys] = [""] * keys  # methods of one group sit together under its label
        out.append(line(shown).rstrip())
    return "\n".join(out) + "\n"


def _rich_table(
    console: Any, title: str, head: list[str], rows: list[list[str]], firsts: list, keys: int
) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(head):
        table.add_column(h, justify="right" if i > keys else "left")
    for i, row in enumerate(rows):
        last_of_group = i + 1 == len(rows) or firsts[i + 1] != firsts[i]
        shown = row if i == 0 or firsts[i] != firsts[i - 1] or not keys else [""] * keys + row[keys:]
        table.add_row(*shown, end_section=bool(keys) and last_of_group)
    console.print(table)


# -- plot ----------------------------------------------------------------------------------------


def write_plot(cells: list[dict[str, Any]], out: Path, say: Any = None) -> Path:
    """Mean score vs context length per method, one panel per family. `cells` is the report's
    "by_family_length". A .png needs matplotlib; without it an SVG is written beside it instead."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cells = [c for c in cells if c.get("length") is not None]  # rows from elsewhere may lack a length
    if out.suffix.lower() == ".png":
        try:
            import matplotlib
        except ImportError:
            out = out.with_suffix(".svg")
            if say is not None:
                say(f"matplotlib is not installed (pip install 'rlm-cli[plot]'); writing {out} instead")
        else:
            matplotlib.use("Agg")  # no display needed
            _png(cells, out)
            return out
    out.write_text(svg(cells), encoding="utf-8")
    return out


def _series(cells: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, list[int]]]:
    """Families, methods, and each family's sorted lengths."""
    families = list(dict.fromkeys(c["task"] for c in cells))
    methods = sorted({c["method"] for c in cells}, key=_method_rank)
    lengths = {
        f: sorted({c["length"] for c in cells if c["task"] == f and c["length"] is not None})
        for f in families
    }
    return families, methods, lengths


def fmt_tokens(n: int) -> str:
    """8192 -> 8K, 131072 -> 131K, as the paper labels its axes."""
    return f"{n / 1e6:.3g}M" if n >= 999_500 else f"{round(n / 1000)}K" if n >= 1000 else str(n)


def svg(cells: list[dict[str, Any]]) -> str:
    """A dependency-free line chart: panels of mean score (with 95% CI bars) against context length."""
    families, methods, lengths = _series(cells)
    pw, ph, left, right, top, bottom = 360, 260, 52, 16, 28, 44  # panel size and inner margins
    cols = max(1, min(3, len(families)))
    nrows = max(1, math.ceil(len(families) / cols))
    head = 56  # title and legend
    width, height = cols * pw + 20, head + nrows * ph + 10
    color = {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="18" font-size="14" font-weight="bold">Mean score vs context length '
        "(error bars: bootstrap 95% CI)</text>",
    ]
    x = 10
    for m in methods:  # legend
        p.append(f'<line x1="{x}" y1="38" x2="{x + 22}" y2="38" stroke="{color[m]}" stroke-width="2.5"/>')
        p.append(f'<circle cx="{x + 11}" cy="38" r="3.5" fill="{color[m]}"/>')
        p.append(f'<text x="{x + 28}" y="42">{escape(m)}</text>')
        x += 44 + 6 * len(m)
    for fi, family in enumerate(families):
        ox, oy = 10 + (fi % cols) * pw, head + (fi // cols) * ph
        x0, x1, y0, y1 = ox + left, ox + pw - right, oy + top, oy + ph - bottom
        xs = lengths[family]

        def px(i: int, x0: float = x0, x1: float = x1, count: int = len(xs)) -> float:
            # Evenly spaced lengths: a log axis for the usual doubling sweep, readable for any other.
            return (x0 + x1) / 2 if count == 1 else x0 + 12 + i * (x1 - x0 - 24) / (count - 1)

        def py(v: float, y0: float = y0, y1: float = y1) -> float:
            return y1 - max(0.0, min(1.0, v)) * (y1 - y0)

        p.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{oy + 16}" text-anchor="middle" font-weight="bold">'
                 f"{escape(str(family))}</text>")  # fmt: skip
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = py(tick)
            p.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            p.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
        p.append(f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="black"/>')
        p.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
        for i, length in enumerate(xs):
            p.append(f'<line x1="{px(i):.1f}" y1="{y1}" x2="{px(i):.1f}" y2="{y1 + 4}" stroke="black"/>')
            p.append(f'<text x="{px(i):.1f}" y="{y1 + 16}" text-anchor="middle">{fmt_tokens(length)}</text>')
        p.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{y1 + 34}" text-anchor="middle">context length (tokens)</text>'
        )
        p.append(f'<text transform="translate({ox + 14},{(y0 + y1) / 2:.1f}) rotate(-90)" '
                 'text-anchor="middle">mean score</text>')  # fmt: skip
        for mi, m in enumerate(methods):
            shift = (mi - (len(methods) - 1) / 2) * 4  # methods side by side, error bars not on top
            points = sorted(
                (xs.index(c["length"]), c) for c in cells if c["task"] == family and c["method"] == m
            )
            if not points:
                continue
            coords = [(px(i) + shift, py(c["score"])) for i, c in points]
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            p.append(f'<polyline points="{path}" fill="none" stroke="{color[m]}" stroke-width="2"/>')
            for (cx, cy), (_, c) in zip(coords, points, strict=True):
                lo, hi = py(c["ci_low"]), py(c["ci_high"])
                bar = f"M{cx:.1f},{lo:.1f}V{hi:.1f}M{cx - 3:.1f},{lo:.1f}h6M{cx - 3:.1f},{hi:.1f}h6"
                p.append(f'<path d="{bar}" stroke="{color[m]}" fill="none"/>')
                tip = f"{m} {fmt_tokens(c['length'])}: {c['score']:.3f} (n={c['n']})"
                p.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{color[m]}">'
                         f"<title>{escape(tip)}</title></circle>")  # fmt: skip
    p.append("</svg>")
    return "\n".join(p) + "\n"


def _png(cells: list[dict[str, Any]], out: Path) -> None:
    import matplotlib.pyplot as plt

    families, methods, lengths = _series(cells)
    cols = max(1, min(3, len(families)))
    nrows = max(1, math.ceil(len(families) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    for ax, family in zip(axes.flat, families, strict=False):
        for i, m in enumerate(methods):
            points = sorted((c["length"], c) for c in cells if c["task"] == family and c["method"] == m)
            if not points:
                continue
            xs = [length for length, _ in points]
            ys = [c["score"] for _, c in points]
            err = [
                [y - c["ci_low"] for y, (_, c) in zip(ys, points, strict=True)],
                [c["ci_high"] - y for y, (_, c) in zip(ys, points, strict=True)],
            ]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m, color=COLORS[i % len(COLORS)])
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths[family], [fmt_tokens(x) for x in lengths[family]])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(family)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("mean score")
        ax.grid(axis="y", color="#e5e5e5")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=max(1, len(labels)), frameon=False)
    fig.suptitle("Mean score vs context length (error bars: bootstrap 95% CI)", y=0.02, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(out, dpi=150)
    plt.close(fig)
