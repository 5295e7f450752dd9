"""Where the run stands, as each user turn tells the root model: "Turn 3 of 30." and, when a limit
is set, what is left of it ("Budget left: $0.42 of $1.00, 12,000 tokens, 3 sub-calls, 40 s.").

A model that knows how many turns and how much budget remain can plan (fewer, larger sub-call
batches; an answer before the end) instead of being cut off mid-plan. One short line, first in the
message: older messages may be compacted (compact.py) to their first characters, and keep it.
"""

from __future__ import annotations

from .budget import Budget


def turn_line(turn: int, budget: Budget) -> str:
    """The line that opens the message the model reads before its turn `turn` (1-based)."""
    total = budget.limits.max_iterations
    line = f"Turn {turn} of {total}" + (" (the last one)." if turn == total else ".")
    left = budget_left(budget)
    return f"{line} Budget left: {left}." if left else line


def budget_left(budget: Budget) -> str | None:
    """What is left of each limit set, in one phrase; None when no limit but the turns is set."""
    lim, use = budget.limits, budget.usage
    parts = []
    if lim.max_cost is not None:
        left = max(0.0, lim.max_cost - use.cost_usd - budget.reserved_cost)
        parts.append(f"{_usd(left)} of {_usd(lim.max_cost)}")
    if lim.max_tokens is not None:
        left_tokens = max(0, lim.max_tokens - use.total_tokens - budget.reserved_tokens)
        parts.append(f"{left_tokens:,} tokens")
    if lim.max_subcalls is not None:
        left_calls = max(0, lim.max_subcalls - use.subcalls)
        parts.append(f"{left_calls:,} sub-call{'' if left_calls == 1 else 's'}")
    remaining = budget.remaining_time()
    if remaining is not None:
        parts.append(f"{remaining:,.0f} s")
    return ", ".join(parts) or None


def _usd(amount: float) -> str:
    """Cents for amounts a user reads as such; more digits below 10 cents, where they matter."""
    return f"${amount:,.2f}" if amount >= 0.1 or amount == 0 else f"${amount:.4f}"
