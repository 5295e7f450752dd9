"""`rlm logs`: list past runs, show one, say where the history lives.

cli/app.py imports this module at startup, so only typer, the standard library and view/escape.py are
imported at module level; the history (sqlite3, platformdirs) is imported when a command runs.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..view.escape import echo, safe_json
from .guard import guarded, say

if TYPE_CHECKING:
    from ..record.history import RunRecord

logs_app = typer.Typer(
    help="Past runs: list them (the default), show one in full, or print where they are kept.",
    invoke_without_command=True,
    add_completion=False,  # completions come from scripts/gen-completions.py, for all of rlm
    context_settings={"help_option_names": ["-h", "--help"]},
)

PIPE_QUESTION_CHARS = 100  # question shown per row when stdout is not a terminal


@logs_app.callback()
@guarded
def logs(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many runs to list, newest first.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of runs.")] = False,
) -> None:
    """List recent runs, newest first: id, start time, exit reason, cost, question."""
    if ctx.invoked_subcommand is not None:
        return

    from ..record.history import History

    history = History()
    records = history.recent(limit)
    if as_json:
        echo(safe_json(json.dumps([r.to_dict() for r in records], ensure_ascii=False, indent=2)))
    elif not records:
        say(f"no runs recorded yet (history: {history.path})")
    else:
        # On a terminal the question gets what the width leaves; in a pipe, a fixed cap.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for line in _table(records, width):
            echo(line)


@logs_app.command("show")
@guarded
def show(
    run_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="A run id, a unique prefix of one, or `last`.", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as one JSON object.")] = False,
) -> None:
    """Show one run in full: settings, totals, the answer and where its trace is."""
    from ..record.history import History

    record = History().get(run_id)
    if as_json:
        echo(safe_json(json.dumps(record.to_dict(), ensure_ascii=False, indent=2)))
        return
    for line in _details(record):
        echo(line)  # questions, answers, paths: escaped on a terminal, intact in a pipe


@logs_app.command("path")
@guarded
def path() -> None:
    """Print the directory holding the run history and traces (RLM_HOME overrides it)."""
    from ..record.history import home

    typer.echo(str(home()))


# -- rendering ---------------------------------------------------------------------------------


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _cost(record: RunRecord) -> str:
    if record.cost_usd is None:
        return "-"  # still running, or died before it could say
    return f"${record.cost_usd:.4f}" + ("" if record.cost_known else "+")  # +: some calls unpriced


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _table(records: list[RunRecord], columns: int | None) -> list[str]:
    rows: list[tuple[str, ...]] = [(r.id, _when(r.started_at), r.exit_reason, _cost(r)) for r in records]
    header: tuple[str, ...] = ("ID", "STARTED", "EXIT", "COST")
    if any(r.parent_run for r in records):  # follow-ups (`rlm ask -c`): the run each one continues
        header += ("FOLLOWS",)
        rows = [(*row, r.parent_run or "-") for row, r in zip(rows, records, strict=True)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # The question takes what the terminal has left, but never less than 20 characters: a
    # narrow terminal wraps rather than losing the question altogether.
    room = PIPE_QUESTION_CHARS if columns is None else max(columns - sum(widths) - 2 * len(header), 20)

    def line(cells: tuple[str, ...], question: str) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + question

    return [line(header, "QUESTION")] + [
        line(row, _one_line(r.question, room)) for row, r in zip(rows, records, strict=True)
    ]


def _details(r: RunRecord) -> list[str]:
    from ..record.replay import recorded_sources

    def opt(value: object) -> str:
        return "-" if value is None else str(value)

    tokens = "-"
    if r.prompt_tokens is not None and r.completion_tokens is not None:
        total = r.prompt_tokens + r.completion_tokens
        tokens = f"{total:,} ({r.prompt_tokens:,} prompt + {r.completion_tokens:,} completion)"
    trace = r.trace_path or "-"
    if r.trace_path and not Path(r.trace_path).exists():
        trace += " (missing)"
    lines = [
        f"id:          {r.id}",
        f"started:     {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(r.started_at))}",
        f"exit:        {r.exit_reason}" + (" (partial answer)" if r.partial else ""),
        f"question:    {r.question}",
        f"inputs:      {' '.join(r.inputs) or '-'}",
        f"cwd:         {r.cwd or '-'}",
        f"model:       {r.model}" + (f" (sub-calls: {r.sub_model})" if r.sub_model != r.model else ""),
        f"sandbox:     {r.sandbox}",
        f"iterations:  {opt(r.iterations)}",
        f"sub-calls:   {opt(r.subcalls)}",
        f"tokens:      {tokens}",
        f"cost:        {_cost(r)}" + (" (some models have no known price)" if r.cost_known is False else ""),
        f"elapsed:     {'-' if r.elapsed_s is None else f'{r.elapsed_s:.1f} s'}",
        f"trace:       {trace}",
        "",
    ]
    if r.cache_hits:  # what the cache of model calls served
        saved = f"{r.cache_saved_tokens or 0:,} tokens, ${r.cache_saved_cost_usd or 0:.4f}"
        lines.insert(-2, f"cache:       {r.cache_hits} calls served, {saved} saved")
    if r.parent_run:
        lines.insert(1, f"follows:     {r.parent_run}")
    if r.answer is not None:
        lines.append(r.answer)
        sources = recorded_sources(Path(r.trace_path)) if r.trace_path else ""
        lines += ["", sources] if sources else []  # the answer's evidence, as `rlm ask` printed it
    elif r.exit_reason == "running":
        lines.append("(no answer: the run is still going, or died without finishing)")
    else:
        lines.append("(no answer)")
    return lines
