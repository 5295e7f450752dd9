"""One finished model call, as the client returns it: its own module, so the client and the cache
of model calls (cache.py) both use it without importing each other; and how a reply becomes one
(usage checked, priced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..budget import checked_usage, valid_cost
from . import prices


@dataclass
class Completion:
    text: str  # the message content (never reasoning_content: a draft is not a reply)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when the model has no known price
    latency_s: float  # wall time of the whole call, retries included
    usage_estimated: bool = False  # the provider's usage was missing or bogus: tokens are estimates
    model: str = ""  # the model that answered, as configured (e.g. openai/gpt-5-mini)
    cached: bool = False  # served from the cache of model calls (model/cache.py): nothing was paid
    truncated: bool = False  # finish_reason "length": the reply was cut at its max_tokens


def finish_reason(response: Any) -> str | None:
    """Why a litellm response ended: "stop", "length" (cut at max_tokens), ..."""
    choices = getattr(response, "choices", None) or [None]
    reason = getattr(choices[0], "finish_reason", None)
    return reason if isinstance(reason, str) else None


def read_response(response: Any, reasoning: bool = False) -> tuple[str, tuple[Any, Any], Any]:
    """(text, (prompt_tokens, completion_tokens) as reported, litellm's cost) of a litellm response.

    A root reply is the content only: a reasoning model's reasoning_content is a draft, and code or
    a FINAL in a draft must never run or end the run (an empty content is re-asked by the loop). A
    sub-call's reply is only text for a cell, so `reasoning=True` falls back to the reasoning when
    the content is empty (vLLM & co. sometimes put the whole answer there).
    """
    message = response.choices[0].message if response.choices else None
    text = (getattr(message, "content", None) or "") if message is not None else ""
    if not text and reasoning and message is not None:
        text = getattr(message, "reasoning_content", None) or ""
    usage = getattr(response, "usage", None)
    # litellm has usually priced the response already, from the usage as reported.
    hidden = getattr(response, "_hidden_params", None)
    reported_cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    counts = (getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
    return str(text), counts, reported_cost


def to_completion(
    model: str,
    text: str,
    usage: tuple[Any, Any],
    reported_cost: Any,
    prompt_estimate: int,
    latency: float,
    cached_tokens: int = 0,
) -> Completion:
    """A Completion with usage a limit can rely on (see budget.checked_usage) and a cost to match.

    litellm's cost is kept when the usage it priced was sound and it is positive (it knows about
    cached-token discounts); otherwise the cost is the table price of the checked token counts,
    so a missing or bogus usage or cost cannot make a priced call free.
    """
    prompt_tokens, completion_tokens, estimated = checked_usage(usage[0], usage[1], prompt_estimate, text)
    cost = None if estimated else valid_cost(reported_cost)
    if cost is None or cost == 0:
        cached = cached_tokens if not estimated else 0  # of the prompt: at the cache-read price
        parts = prices.cost_parts(model, prompt_tokens, completion_tokens, cached)
        cost = sum(parts) if parts is not None else cost
    return Completion(text, prompt_tokens, completion_tokens, cost, latency, estimated, model)
