"""A minimal plain renderer for stderr: one line per model turn (the live view replaces it)."""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import redact
from .events import ContextLoaded, Event, ModelCall, Notice, RunStarted


class StderrProgress:
    """An Emit: renders events as plain lines on stderr. `--quiet` leaves only errors."""

    def __init__(self, quiet: bool = False, verbose: bool = False, stream: TextIO | None = None):
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stderr
        self.tokens, self.cost, self.turn = 0, 0.0, 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, ModelCall):
            self.tokens += event.prompt_tokens + event.completion_tokens
            self.cost += event.cost_usd or 0.0
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
            self._line(f"model: {event.model}{sub}")
        elif isinstance(event, ModelCall) and event.role == "root":
            self.turn += 1
            self._line(f"[{self.turn}] {self.tokens:,} tokens · ${self.cost:.4f}")

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._line(f"warning: {message}")

    def error(self, message: str) -> None:
        self._line(f"error: {message}")

    def _line(self, text: str) -> None:
        self.stream.write(f"rlm: {redact(text)}\n")
        self.stream.flush()
