"""Model prices and windows from litellm's table, read without importing litellm.

litellm takes seconds to import; a run that only talks to OpenAI-protocol servers (the direct path,
openai_http.py) never needs it. Its table ships inside the package as JSON (the same table litellm
loads with LITELLM_LOCAL_MODEL_COST_MAP, see providers.load_litellm), so it is read from there:
~40 ms once per process, shared by prices and windows (windows.py).

Prices cover what chat calls on the direct path are billed by: input and output tokens, cached
input tokens (`cache_read_input_token_cost`, else the input rate), and the higher rates some models
charge above a prompt size (`input_cost_per_token_above_272k_tokens`, ...), as litellm computes them
(tests/test_fast_start.py compares the two over the whole OpenAI chat table). Once litellm is loaded
anyway (a provider that needs it), its own `cost_per_token` answers instead.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path

LITELLM_TABLE = "model_prices_and_context_window_backup.json"
_ABOVE = re.compile(r"^input_cost_per_token_above_(\d+)(k?)_tokens$")


@functools.cache
def table() -> dict:
    """litellm's table as its package ships it (~3 MB of JSON); {} if not found."""
    try:
        spec = importlib.util.find_spec("litellm")  # finds the package without importing it
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            return {}
        data = json.loads((Path(locations[0]) / LITELLM_TABLE).read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return {}
    return data if isinstance(data, dict) else {}


def entry(model: str) -> dict | None:
    """The table's entry for a model string: the string as a key, else the name without its provider
    prefix when the table lists it under that provider (openai/gpt-4o-mini -> gpt-4o-mini)."""
    data = table()
    found = data.get(model)
    if found is None and "/" in model:
        provider, name = model.split("/", 1)
        candidate = data.get(name)
        if isinstance(candidate, dict) and candidate.get("litellm_provider") == provider:
            found = candidate
    return found if isinstance(found, dict) else None


def cost_parts(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> tuple[float, float] | None:
    """(prompt cost, completion cost) in USD; None for a model without a price.

    `cached_tokens` of the prompt were read from the provider's prompt cache (billed at the
    cache-read rate); they are part of `prompt_tokens`.
    """
    litellm = sys.modules.get("litellm")
    if litellm is not None and hasattr(litellm, "cost_per_token"):  # already paid for: ask it
        return _litellm_cost(litellm, model, prompt_tokens, completion_tokens, cached_tokens)
    return table_cost(model, prompt_tokens, completion_tokens, cached_tokens)


def table_cost(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> tuple[float, float] | None:
    """cost_parts from the table alone (what a run without litellm gets)."""
    info = entry(model)
    if info is None or not _rate(info, "input_cost_per_token") and not _rate(info, "output_cost_per_token"):
        return None
    rates = _rates(info, prompt_tokens)
    cached = min(max(0, cached_tokens), prompt_tokens)
    prompt_cost = (prompt_tokens - cached) * rates[0] + cached * rates[2]
    return prompt_cost, completion_tokens * rates[1]


def _rates(info: dict, prompt_tokens: int) -> tuple[float, float, float]:
    """(input, output, cache read) USD per token for a prompt of this size: the highest tier whose
    threshold the prompt exceeds, else the base rates."""
    base_in = _rate(info, "input_cost_per_token") or 0.0
    rates = (base_in, _rate(info, "output_cost_per_token") or 0.0, _rate(info, "cache_read_input_token_cost"))
    best = -1
    for key in info:
        match = _ABOVE.match(key)
        if match is None:
            continue
        threshold = int(match.group(1)) * (1000 if match.group(2) else 1)
        suffix = key.removeprefix("input_cost_per_token")  # "_above_272k_tokens"
        if prompt_tokens > threshold > best and _rate(info, key) is not None:
            best = threshold
            rates = (
                _rate(info, key) or 0.0,
                _rate(info, "output_cost_per_token" + suffix) or rates[1],
                _rate(info, "cache_read_input_token_cost" + suffix) or rates[2],
            )
    cache_read = rates[2] if rates[2] is not None else rates[0]  # no cache price: billed as input
    return rates[0], rates[1], cache_read


def _rate(info: dict, key: str) -> float | None:
    value = info.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _litellm_cost(
    litellm: object, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> tuple[float, float] | None:
    try:
        extra = {"cache_read_input_tokens": cached_tokens} if cached_tokens else {}
        prompt_cost, completion_cost = litellm.cost_per_token(  # type: ignore[attr-defined]
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, **extra
        )
        return float(prompt_cost), float(completion_cost)
    except Exception:  # a model missing from litellm's price table: unknown, not an error
        return None
