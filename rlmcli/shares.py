"""A child RLM's share of the run's one budget (rlm_query, rlmcli/recursion.py).

Before a child starts, it reserves a share of what is left under --max-tokens / --max-cost; the
share is held in the budget (in its parent's share, for a grandchild) like a call in flight, so
parallel children cannot each spend the whole remainder, and the parent keeps room of its own.
The child's calls are admitted against its share. As the child spends, its hold shrinks by what it
spent (now counted as usage); when it ends, what it did not spend is released.

Which share a call belongs to follows the asyncio task that makes it: the child runs in a task of
its own, and `current` (a context variable) is set there, so its root calls, its cells' sub-calls
and its own children all draw on it, while its siblings' and its parent's calls do not.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from .errors import LimitReached


@dataclass
class Share:
    """What one child may spend: `tokens` / `cost` (None: that limit is not set)."""

    depth: int  # the child's depth (the root run is 0)
    tokens: int | None
    cost: float | None
    parent: Share | None = None
    spent_tokens: int = 0  # by the child's calls, and its children's
    spent_cost: float = 0.0
    held_tokens: int = 0  # its calls in flight, and its children's unspent shares
    held_cost: float = 0.0
    breached: LimitReached | None = field(default=None, repr=False)  # the share is spent

    def unspent(self) -> tuple[int, float]:
        """What the share still holds in its parent's pool."""
        tokens = 0 if self.tokens is None else max(0, self.tokens - self.spent_tokens)
        cost = 0.0 if self.cost is None else max(0.0, self.cost - self.spent_cost)
        return tokens, cost

    def left(self) -> tuple[int | None, float | None]:
        """What a new call (or child) of this share may still take; None where unlimited."""
        tokens = None if self.tokens is None else self.tokens - self.spent_tokens - self.held_tokens
        cost = None if self.cost is None else self.cost - self.spent_cost - self.held_cost
        return tokens, cost

    def admit(self, tokens: int, cost: float) -> None:
        """Hold a call's estimate, or raise LimitReached when the share cannot cover it."""
        if self.breached is None:
            left_tokens, left_cost = self.left()
            if left_tokens is not None and tokens > left_tokens:
                self.breached = LimitReached(
                    "tokens", f"this child's share of --max-tokens ({self.tokens:,} tokens) is spent"
                )
            elif left_cost is not None and cost > left_cost:
                self.breached = LimitReached(
                    "cost", f"this child's share of --max-cost (${self.cost:.4f}) is spent"
                )
        if self.breached is not None:
            raise self.breached
        self.held_tokens += tokens
        self.held_cost += cost

    def release(self, tokens: int, cost: float) -> None:
        self.held_tokens -= tokens
        self.held_cost = max(0.0, self.held_cost - cost)


current: ContextVar[Share | None] = ContextVar("rlm_budget_share", default=None)
