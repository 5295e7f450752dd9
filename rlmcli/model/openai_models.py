"""Model strings that are OpenAI's protocol by their name, resolved without importing litellm.

`openai/NAME`, `hosted_vllm/NAME` and OpenAI's own model names (`gpt-4o-mini`, as litellm's table
lists them) need nothing from litellm: where their requests go, which key they need and how they
are priced are all known here, the way litellm's get_llm_provider and validate_environment resolve
them (tests/test_fast_start.py checks the two agree). So a run with such models never pays the
seconds litellm takes to import (providers.Router asks this module first); any other provider
string returns None and litellm decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import prices

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"


@dataclass(frozen=True)
class OpenAIModel:
    provider: str  # litellm's provider name: "openai" or "hosted_vllm"
    name: str  # the model name a request carries (the string without its provider prefix)
    key_variable: str | None  # the variable its key is read from, when it must have one
    fallback_key: str | None  # what litellm sends when no key is given (hosted_vllm: a dummy)
    default_base: str | None  # where requests go without --api-base
    mode: str | None  # litellm's table: "chat", "responses" (served by another API), None: unknown


def resolve(model: str) -> OpenAIModel | None:
    """How litellm would resolve `model`, for the providers above; None for anything else."""
    provider, _, name = model.partition("/")
    if not name:  # no prefix: an OpenAI model when litellm's table lists it as one
        info = prices.entry(model)
        if info is None or info.get("litellm_provider") != "openai":
            return None
        provider, name = "openai", model
    mode = _mode(model)
    if provider == "openai":
        base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE") or OPENAI_DEFAULT_BASE
        return OpenAIModel("openai", name, "OPENAI_API_KEY", None, base, mode)
    if provider == "hosted_vllm":
        key = env_value("HOSTED_VLLM_API_KEY") or "fake-api-key"  # as litellm: vLLM needs no key
        return OpenAIModel("hosted_vllm", name, None, key, env_value("HOSTED_VLLM_API_BASE"), mode)
    return None


def missing_keys(model: str) -> list[str] | None:
    """The variables a model's key is missing from ([] when none), like litellm's
    validate_environment; None when this module does not know the model (ask litellm)."""
    known = resolve(model)
    if known is None:
        return None
    if known.key_variable is None or env_value(known.key_variable):
        return []
    return [known.key_variable]


def _mode(model: str) -> str | None:
    info = prices.entry(model)
    mode = info.get("mode") if info is not None else None
    return mode if isinstance(mode, str) else None


def env_value(name: str | None) -> str | None:
    """A variable's value; set but empty counts as unset (an empty key is no key)."""
    value = os.environ.get(name, "") if name else ""
    return value if value.strip() else None
