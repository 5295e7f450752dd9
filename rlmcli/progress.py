"""A minimal progress renderer for stderr: one line per iteration (the live view is its own issue)."""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import redact
from .events import ContextLoaded, Event, IterationFinished, Notice, RunStarted


class StderrProgress:
    """An Emit: renders events as plain lines on stderr. `--quiet` leaves only errors."""

    def __init__(self, quiet: bool = False, verbose: bool = False, stream: TextIO | None = None):
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, Notice):
            self._line(f"warning: {event.message}" if event.warning else event.message)
        elif isinstance(event, ContextLoaded):
            self._line(event.summary)
            if self.verbose:
                for reason, paths in event.skipped.items():
                    for path in paths:
                        self._line(f"  skipped ({reason}): {path}")
        elif isinstance(event, RunStarted):
            sub = "" if event.sub_model == event.model else f", sub-calls: {event.sub_model}"
            self._line(f"model: {event.model}{sub}; sandbox: {event.sandbox}")
        elif isinstance(event, IterationFinished):
            self._line(
                f"[{event.iteration}] {event.cells} cell{'s' * (event.cells != 1)} · "
                f"{event.subcalls} sub-calls · {event.tokens:,} tokens · ${event.cost_usd:.4f} · "
                f"{event.elapsed_s:.1f}s"
            )

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._line(f"warning: {message}")

    def error(self, message: str) -> None:
        self._line(f"error: {message}")

    def _line(self, text: str) -> None:
        self.stream.write(f"rlm: {redact(text)}\n")
        self.stream.flush()
