"""Replay a recorded run: feed its events, in order, to a view (the live view, usually).

Reading the trace file is trace.py's job; this only plays events. There is no sleeping between
events: the view shows the original run's times because it takes them from the events' timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from ..errors import InputError
from ..events import Event, RunFinished, Sources


class View(Protocol):
    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


def replay(events: Iterable[Event], view: View, sources: list[Sources] | None = None) -> RunFinished | None:
    """Show every event on `view`, then close it. The run's last RunFinished, or None when the trace
    stops before the run finished (a crash or a kill while it was being written). The run's
    Sources events (its answer's evidence) are appended to `sources` when it is given."""
    finished: RunFinished | None = None
    try:
        for event in events:
            view(event)
            if isinstance(event, RunFinished):
                finished = event
            elif isinstance(event, Sources) and sources is not None:
                sources.append(event)
    finally:
        view.close()
    return finished


def sources_text(event: Sources | None) -> str:
    """The `Sources:` block of a recorded answer ("" when it cited nothing)."""
    from ..cite import Citation, sources_block

    if event is None:
        return ""
    return sources_block([Citation.from_dict(c) for c in event.citations])


def recorded_sources(trace: Path) -> str:
    """The `Sources:` block of the answer recorded in `trace` ("" if none, or the trace is gone)."""
    from .trace import read_trace

    last: Sources | None = None
    try:
        for event in read_trace(trace):
            if isinstance(event, Sources):
                last = event
    except (InputError, ValueError, TypeError, KeyError):  # a damaged trace only costs the sources
        return ""
    return sources_text(last)
