"""What both renderers of the live view share: the run's state folded from its events, and the text
helpers that make event fields safe and short to print."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .. import events as ev
from ..errors import redact
from ..text import plural
from .escape import safe
from .tree import Tree

LINE_CHARS = 300  # a shown line longer than this is cut


def clean(text: str) -> str:
    """`text` safe to print: host secrets redacted, control and bidi characters (escape codes,
    overrides) shown escaped, e.g. `\\x1b`. The view always cleans: it is for people, whatever
    the stream."""
    return safe(redact(text))


def clip(text: str, max_lines: int | None) -> tuple[str, int]:
    """The first `max_lines` lines of `text` (each cut to LINE_CHARS), and how many were left out."""
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    if max_lines is None:
        return "\n".join(lines), 0
    shown = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " …" for line in lines[:max_lines]]
    return "\n".join(shown), max(0, len(lines) - max_lines)


def seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    minutes, rest = divmod(int(s), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class Batch:
    """A batch of sub-calls under one scope (a cell), as its SubcallProgress events tell it."""

    total: int
    started_ts: float
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    ts: float = 0.0
    shown_done: int = -1  # plain mode: what the last printed line said, and when
    shown_ts: float = 0.0

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def batch_key(event: ev.SubcallProgress) -> str:
    return event.batch or event.id


class RunState:
    """Running totals and scopes, folded from the events; both renderers read it."""

    def __init__(self) -> None:
        self.start_ts: float | None = None
        self.asked_sandbox: str | None = None  # as RunStarted names it ("auto" until SandboxChosen)
        self.last_ts, self.last_seen = 0.0, time.monotonic()
        self.iteration = 0
        self.cells_in_iteration = 0
        self.cells: dict[str, str] = {}  # CellStarted.id -> "2.1" (iteration.cell)
        self.cell_subcalls: dict[str, int] = {}
        self.running_cell: str | None = None
        self.tokens_in = self.tokens_out = 0
        self.cost, self.cost_known = 0.0, True
        self.batches: dict[str, Batch] = {}  # by batch id (the id of its first progress event)
        self.finished: ev.RunFinished | None = None
        self.tree = Tree()  # the root run and its rlm_query children (the Live thread reads it too)
        self.lock = threading.Lock()  # the Live thread reads batches while events arrive

    def update(self, event: ev.Event) -> None:
        if self.start_ts is None:  # RunStarted
            self.start_ts = event.ts
        self.last_ts, self.last_seen = max(self.last_ts, event.ts), time.monotonic()
        with self.lock:
            self.tree.update(event)
        if event.depth > 0:  # a child's event: the tree has it; only the run's totals count it here
            if isinstance(event, ev.ModelCall) and not event.cached:
                self._count(event)
            elif isinstance(event, ev.SubcallProgress):
                self._progress(event)
            return
        if isinstance(event, ev.RunStarted):
            self.asked_sandbox = event.sandbox
        elif isinstance(event, ev.IterationStarted):
            self.iteration, self.cells_in_iteration = event.iteration, 0
        elif isinstance(event, ev.CellStarted):
            self.cells_in_iteration += 1
            self.cells[event.id] = f"{event.iteration}.{self.cells_in_iteration}"
            self.running_cell = event.id
        elif isinstance(event, ev.CellFinished):
            self.running_cell = None
        elif isinstance(event, ev.ModelCall) and not event.cached:  # a cached reply was not paid for
            self._count(event)
            if event.role == "sub":
                key = event.parent or ""
                self.cell_subcalls[key] = self.cell_subcalls.get(key, 0) + 1
        elif isinstance(event, ev.SubcallProgress):
            self._progress(event)
        elif isinstance(event, ev.RunFinished):
            self.finished = event
            self.tree.root.state = "done" if event.exit_reason == "final" else event.exit_reason

    def _count(self, event: ev.ModelCall) -> None:
        self.tokens_in += event.prompt_tokens
        self.tokens_out += event.completion_tokens
        self.cost += event.cost_usd or 0.0
        self.cost_known = self.cost_known and event.cost_usd is not None

    def _progress(self, event: ev.SubcallProgress) -> None:
        with self.lock:
            batch = self.batches.get(batch_key(event))
            if batch is None:
                batch = self.batches[batch_key(event)] = Batch(event.total, started_ts=event.ts)
            batch.done, batch.failed, batch.in_flight = event.done, event.failed, event.in_flight
            batch.ts = event.ts

    def active_batches(self) -> list[Batch]:
        with self.lock:
            return [b for b in self.batches.values() if not b.finished]

    def elapsed(self) -> float:
        """Run time so far: by the events' clock, plus the wall time since the newest one arrived."""
        if self.finished is not None:
            return self.finished.elapsed_s
        if self.start_ts is None:
            return 0.0
        return self.last_ts - self.start_ts + (time.monotonic() - self.last_seen)

    def usage(self) -> str:
        cost = f"${self.cost:.4f}" if self.cost_known else "cost unknown"
        return f"{self.tokens_in + self.tokens_out:,} tokens, {cost}"


def totals(done: ev.RunFinished) -> str:
    cost = f"${done.cost_usd:.4f}" if done.cost_known else "cost unknown"
    tokens = done.prompt_tokens + done.completion_tokens
    return (
        f"{plural(done.iterations, 'iteration')}, {plural(done.subcalls, 'sub-call')}, {tokens:,} tokens "
        f"({done.prompt_tokens:,} in, {done.completion_tokens:,} out), {cost}, {seconds(done.elapsed_s)}"
    ) + cache_line(done)


def cache_line(done: ev.RunFinished) -> str:
    """What the cache of model calls saved (model/cache.py), when it served any call."""
    if not done.cache_hits:
        return ""
    hits = plural(done.cache_hits, "call")
    saved = f"{done.cache_saved_tokens:,} tokens and ${done.cache_saved_cost_usd:.4f}"
    return f"; cache: {hits} served, {saved} saved"
