"""Typed events: what the loop, the model client and the sandbox report. The core never prints;
renderers (stderr progress, later the trace file and the live view) subscribe to these."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Event:
    ts: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}


@dataclass
class RunStarted(Event):
    question: str
    model: str
    sub_model: str
    sandbox: str


@dataclass
class Notice(Event):
    """Something the user should know that is not an error (a fallback, a pull in progress)."""

    message: str
    warning: bool = False


@dataclass
class ContextLoaded(Event):
    summary: str
    chars: int
    files: int
    skipped: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ModelCall(Event):
    role: str  # "root" | "sub"
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_s: float


@dataclass
class CellFinished(Event):
    iteration: int
    code: str
    output: str
    error: str | None
    duration_s: float


@dataclass
class SubcallBatch(Event):
    prompts: int
    failed: int
    duration_s: float


@dataclass
class IterationFinished(Event):
    iteration: int
    cells: int
    subcalls: int  # total so far
    tokens: int  # total so far
    cost_usd: float  # total so far
    elapsed_s: float


@dataclass
class RunFinished(Event):
    exit_reason: str
    answer: str | None


Emit = Callable[[Event], None]


def discard(event: Event) -> None:
    """An Emit that drops everything (library use, tests)."""
