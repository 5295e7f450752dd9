"""One finished model call, as the client returns it: its own module, so the client and the cache
of model calls (cache.py) both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


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
