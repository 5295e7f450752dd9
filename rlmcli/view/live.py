"""The live view of a run on stderr: a Rich view on a terminal, plain `rlm: ` lines elsewhere.

`LiveView` is an Emit (call it with each event) with the CLI's small progress API: `warn`, `error`,
`close`. It picks Rich when stderr is a terminal and NO_COLOR is unset, plain lines otherwise (pipes,
CI logs, `force_plain=True`). Plain output holds no escape codes and moves no cursor. Both modes
show the same things: the context, each iteration, root-model turns with running tokens and cost,
each cell, sub-call batches while in flight, limits and errors, the answer and the totals.

Elapsed times come from event timestamps, so a replayed trace shows the times of the original run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from .. import events as ev
from ..text import plural
from .plain import PlainOutput
from .state import RunState

if TYPE_CHECKING:  # Rich (~80 ms of imports with pygments) only for the Rich view: see LiveView
    from rich.console import Console

    from .terminal import RichOutput


def one_liners(event: ev.Event, verbose: bool) -> list[tuple[str, str]]:
    """(text, Rich style) of the events that read the same in both modes."""
    if isinstance(event, ev.ContextLoaded):
        skipped = [f"  skipped ({why}): {path}" for why, paths in event.skipped.items() for path in paths]
        return [(event.summary, "dim")] + [(line, "dim") for line in skipped if verbose]
    if isinstance(event, ev.Notice):
        return [(f"warning: {event.message}", "yellow") if event.warning else (event.message, "dim")]
    if isinstance(event, ev.Sources):
        return sources_lines(event)
    # RunStopped is not shown: the CLI ends a stopped run with the one
    # `rlm: error:` line, and RunFinished's own line says how the run stopped.
    return []


def sources_lines(event: ev.Sources) -> list[tuple[str, str]]:
    """The answer's evidence in a line, then one warning per claim the input does not bear out."""
    from ..cite import Unverified

    cited = plural(len(event.citations), "citation")
    summary = f"sources: {cited} cut from the input"
    if event.unverified:
        summary += f", {len(event.unverified)} unverified"
    lines = [(summary, "dim")]
    for item in event.unverified:  # as the trace has them: keys of a newer version are ignored
        unverified = Unverified(str(item.get("kind")), str(item.get("text")), str(item.get("reason")))
        lines.append((f"warning: {unverified.line()}", "yellow"))
    return lines + [(f"note: {note}", "dim") for note in event.notes]


def rich_wanted(stream: TextIO) -> bool:
    """Rich on a terminal, unless NO_COLOR is set (to anything non-empty, per no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LiveView:
    """An Emit rendering a run on stderr (Rich on a terminal, plain lines otherwise).

    `quiet`: nothing but `error()`. `verbose`: the full replies, code and outputs (plain mode) and
    nothing truncated (Rich). `force_plain`: True for plain lines, False for Rich even off a terminal;
    None decides from the stream and NO_COLOR. `console` (Rich only) replaces the one made on
    `stream`, e.g. a recording console; `live=False` prints no transient footer; `answer_panel=False`
    leaves the answer to stdout alone (when stdout is the same terminal, it would show twice).
    """

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        force_plain: bool | None = None,
        *,
        console: Console | None = None,
        live: bool = True,
        answer_panel: bool = True,
    ):
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stderr
        self.state = RunState()
        self.gone = False  # the stream failed: show nothing more
        plain = not rich_wanted(self.stream) if force_plain is None else force_plain
        self.plain = plain and console is None
        self.output: PlainOutput | RichOutput
        if self.plain:
            self.output = PlainOutput(self.stream, self.state, verbose)
        else:
            from rich.console import Console

            from .terminal import RichOutput

            terminal = True if force_plain is False else None
            console = console or Console(file=self.stream, force_terminal=terminal)
            self.output = RichOutput(console, self.state, verbose, live, answer_panel)

    def __call__(self, event: ev.Event) -> None:
        self.state.update(event)
        if self.quiet or self.gone:
            return
        with self._guard():
            self.output.before(event)
            for text, style in one_liners(event, self.verbose):
                self.output.line(text, style)
            self.output.show(event)

    def warn(self, message: str) -> None:
        if not self.quiet and not self.gone:
            with self._guard():
                self.output.line(f"warning: {message}", "yellow")

    def error(self, message: str) -> None:
        if not self.gone:
            with self._guard():
                self.output.line(f"error: {message}", "bold red")

    def close(self) -> None:
        """Stop the live footer, if any; the view still prints warnings and errors after this."""
        if not self.gone:
            with self._guard():
                self.output.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A stream that stops taking writes (the terminal was closed: EIO; a reader went away:
        EPIPE) ends the view, not the run: the trace and the history still record everything."""
        try:
            yield
        except (OSError, ValueError):  # ValueError: the stream was closed under us
            self.gone = True
