"""Replay a recorded run: feed its events, in order, to a view (the live view, usually).

Reading the trace file is trace.py's job; this only plays events. There is no sleeping between
events: the view shows the original run's times because it takes them from the events' timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..events import Event, RunFinished


class View(Protocol):
    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


def replay(events: Iterable[Event], view: View) -> RunFinished | None:
    """Show every event on `view`, then close it. The run's last RunFinished, or None when the trace
    stops before the run finished (a crash or a kill while it was being written)."""
    finished: RunFinished | None = None
    try:
        for event in events:
            view(event)
            if isinstance(event, RunFinished):
                finished = event
    finally:
        view.close()
    return finished
