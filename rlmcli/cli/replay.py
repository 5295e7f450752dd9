"""`rlm replay`: re-render a recorded run as the live view showed it. Registered by cli/app.py."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import ExitStatus
from .guard import guarded


@guarded
def replay(
    trace: Annotated[str, typer.Argument(metavar="TRACE",
        help="A trace file, or a run id (a unique prefix, or `last`) from `rlm logs`.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the answer.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show full replies, code and outputs.")] = False,
    rerun: Annotated[bool, typer.Option("--rerun", help="Execute the run again with the current code, every model "
        "reply from the record (no key, no network), and report where it diverges from it: exit 0 if it "
        "does not, 1 if it does.")] = False,
) -> None:  # fmt: skip
    """Re-render a recorded run as the live view showed it, and print its answer on stdout."""
    from pathlib import Path

    from ..errors import InputError
    from ..events import Sources
    from ..record.history import History
    from ..record.replay import replay as play
    from ..record.replay import sources_text
    from ..record.trace import read_trace
    from ..view.escape import echo
    from ..view.live import LiveView

    path = Path(trace)
    if not path.exists() and "/" not in trace:
        recorded = History().get(trace).trace_path
        if not recorded:
            raise InputError(f"run {trace} has no trace (it ran with --no-log)")
        path = Path(recorded)
    view = LiveView(quiet=quiet, verbose=verbose, answer_panel=not sys.stdout.isatty())
    if rerun:  # record/rerun.py
        from ..record.rerun import rerun_command

        raise typer.Exit(rerun_command(path, view))
    sources: list[Sources] = []
    finished = play(read_trace(path), view, sources)
    if finished is None:
        view.error(f"the trace {path} ends before the run did (it was cut off)")
        raise typer.Exit(int(ExitStatus.ERROR))
    if finished.answer is not None:
        echo(finished.answer)  # escaped on a terminal, intact in a pipe
        block = sources_text(sources[-1] if sources else None)
        if block:
            echo("\n" + block)
