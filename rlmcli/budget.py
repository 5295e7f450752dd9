"""Usage accounting and hard limits, checked before every model call is dispatched."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import LimitReached


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True  # False once any call was made with a model that has no price
    root_calls: int = 0
    subcalls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Limits:
    max_iterations: int = 30
    max_subcalls: int | None = None
    max_cost: float | None = None  # USD
    max_tokens: int | None = None
    timeout: float | None = None  # wall seconds for the whole run


@dataclass
class Budget:
    """Shared by the root loop and every sub-call; the single place limits are enforced.

    `check()` runs before each dispatch, so a run overshoots a limit by at most the calls already
    in flight. Once breached, the budget stays breached: later checks fail fast with the same reason.
    """

    limits: Limits = field(default_factory=Limits)
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)
    iterations: int = 0
    breached: LimitReached | None = None

    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining_time(self) -> float | None:
        if self.limits.timeout is None:
            return None
        return max(0.0, self.limits.timeout - self.elapsed())

    def check(self, subcall: bool = False) -> None:
        """Raise LimitReached if another model call may not be dispatched."""
        if self.breached is None:
            self.breached = self._breach(subcall)
        if self.breached is not None:
            raise self.breached

    def _breach(self, subcall: bool) -> LimitReached | None:
        lim, use = self.limits, self.usage
        if lim.timeout is not None and self.elapsed() >= lim.timeout:
            return LimitReached("timeout", f"wall-time limit of {lim.timeout:g}s reached")
        if lim.max_cost is not None and use.cost_usd >= lim.max_cost:
            return LimitReached(
                "cost", f"cost limit of ${lim.max_cost:g} reached (${use.cost_usd:.4f} spent)"
            )
        if lim.max_tokens is not None and use.total_tokens >= lim.max_tokens:
            return LimitReached(
                "tokens", f"token limit of {lim.max_tokens} reached ({use.total_tokens} used)"
            )
        if subcall and lim.max_subcalls is not None and use.subcalls >= lim.max_subcalls:
            return LimitReached("subcalls", f"sub-call limit of {lim.max_subcalls} reached")
        return None

    def record(self, prompt_tokens: int, completion_tokens: int, cost: float | None, subcall: bool) -> None:
        """Count a finished call. `cost=None` means the model has no known price."""
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        if cost is None:
            self.usage.cost_known = False
        else:
            self.usage.cost_usd += cost

    def count_dispatch(self, subcall: bool) -> None:
        """Count a call as dispatched (sub-call limits count dispatches, not completions)."""
        if subcall:
            self.usage.subcalls += 1
        else:
            self.usage.root_calls += 1
