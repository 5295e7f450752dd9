"""The model client: calls for the root model and sub-calls, with retries, usage and cost.

Root calls, and sub-calls to providers that do not speak plain OpenAI chat completions, go through
litellm. Sub-calls to OpenAI-compatible servers take a direct aiohttp path (openai_http.py): litellm
costs ~4 ms of CPU per call, which a 64-prompt batch pays serially on the event loop.

litellm is imported lazily (it takes seconds and would otherwise fetch a price map over the
network), so `import rlmcli.lm` stays cheap for `rlm --help` and for tests that never call a model.
Every call goes through the shared Budget: checked right before dispatch, recorded on success.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from . import openai_http, retry
from .budget import Budget
from .errors import ProviderError, RlmError, UsageError, redact

# Some OpenAI-compatible servers (vLLM, llama.cpp) need no key, but the openai SDK refuses to send
# a request without one.
PLACEHOLDER_API_KEY = "sk-rlm-no-key"
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
# Sub-calls skip litellm (see _direct_route) for these providers, which are OpenAI's protocol by
# definition; for any other provider litellm lists as OpenAI-compatible only when --api-base names
# the server, and never for the few whose auth is not a plain bearer key.
DIRECT_PROVIDERS = {"openai", "hosted_vllm"}
NOT_DIRECT_PROVIDERS = {"azure_ai", "chatgpt", "github_copilot"}

_litellm: ModuleType | None = None


def load_litellm() -> ModuleType:
    """Import and configure litellm once, on first use."""
    global _litellm
    if _litellm is None:
        # Must be set before the import: otherwise litellm fetches its price map from GitHub.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stderr
        if hasattr(litellm, "telemetry"):
            litellm.telemetry = False
        if not os.environ.get("LITELLM_LOG"):
            # litellm logs warnings (e.g. unmapped model prices) that would clutter our stderr;
            # LITELLM_LOG=DEBUG still turns them on for debugging.
            logging.getLogger("LiteLLM").setLevel(logging.ERROR)
        # litellm leaves ~300k objects for the cyclic GC to scan; each full collection then takes
        # ~0.2 s and, landing inside a batch, delays all of it. They live as long as the process,
        # so move them out of the collector's reach (a one-off; later objects are collected as usual).
        gc.freeze()
        _litellm = litellm
    return _litellm


@dataclass
class ModelConfig:
    model: str  # litellm model string, e.g. "openai/gpt-5-mini"
    api_base: str | None = None
    request_timeout: float = 120.0
    max_retries: int = 4
    backoff_base: float = 1.0  # seconds; exponential with jitter, capped at BACKOFF_CAP_S


@dataclass
class Completion:
    text: str  # message content, or reasoning_content when the content is empty
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when the model has no known price
    latency_s: float  # wall time of the whole call, retries included


# Called after every successful model call: (kind "root" | "sub", model, completion). For events.
CallListener = Callable[[str, str, Completion], None]


class ModelClient:
    def __init__(self, root: ModelConfig, sub: ModelConfig, budget: Budget, concurrency: int = 64):
        self.root_config = root
        self.sub_config = sub
        self.budget = budget
        self.concurrency = max(1, concurrency)
        self.on_call: CallListener | None = None
        # Indirection so tests can observe (and skip) backoff waits.
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self._api_keys: dict[tuple[str, str | None], str | None] = {}
        # asyncio primitives bind to the loop they are first used in; keep one per loop so the
        # client survives several asyncio.run() calls (tests, recursive children).
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._routes: dict[tuple[str, str | None], _DirectRoute | None] = {}
        self._http = openai_http.ChatClient()  # holds an aiohttp session per event loop
        self._ssl: Any = None  # litellm's TLS settings, resolved on the first direct call

    # -- public API ------------------------------------------------------------------------------

    def check_credentials(self) -> None:
        """Fail early, naming the variable to set, when a model's provider key is missing."""
        for cfg in {
            (self.root_config.model, self.root_config.api_base): self.root_config,
            (self.sub_config.model, self.sub_config.api_base): self.sub_config,
        }.values():
            self._api_key(cfg)

    async def root(self, messages: list[dict]) -> Completion:
        self.budget.check(subcall=False)
        self.budget.count_dispatch(subcall=False)
        return await self._complete(self.root_config, messages, kind="root")

    async def sub(self, prompt: str, model: str | None = None) -> str:
        cfg = self._sub_config_for(model)
        async with self._semaphore():
            # Checked inside the semaphore, right before dispatch: a run overshoots a limit by at
            # most the calls already in flight.
            self.budget.check(subcall=True)
            self.budget.count_dispatch(subcall=True)
            completion = await self._complete(cfg, [{"role": "user", "content": prompt}], kind="sub")
        return completion.text

    async def batch(
        self, prompts: list[str], model: str | None = None, on_done: Callable[[bool], None] | None = None
    ) -> list[str]:
        """Run sub-calls concurrently; a failed prompt yields an error string in its slot.
        `on_done(failed)` is called as each one finishes (for progress displays)."""

        async def one(prompt: str) -> str:
            failed = True
            try:
                reply = await self.sub(prompt, model)
                failed = False
                return reply
            except RlmError as e:  # incl. LimitReached: the budget stays breached, the loop notices
                return f"[llm_query error: {e}]"
            except Exception as e:  # a bug or odd provider failure: one bad prompt must not sink the batch
                return redact(f"[llm_query error: {type(e).__name__}: {e}]")
            finally:
                if on_done is not None:
                    on_done(failed)

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def aclose(self) -> None:
        """Close the HTTP session the direct sub-call path opened in the running event loop."""
        await self._http.aclose()

    # -- routing and credentials -----------------------------------------------------------------

    def _sub_config_for(self, model: str | None) -> ModelConfig:
        """A model override keeps the endpoint and timeouts of the config it most likely targets."""
        if model is None or model == self.sub_config.model:
            return self.sub_config
        if model == self.root_config.model:
            return self.root_config
        return replace(self.sub_config, model=model)

    def _api_key(self, cfg: ModelConfig) -> str | None:
        """The api_key to pass: None lets litellm read the provider's variable from the environment."""
        cache_key = (cfg.model, cfg.api_base)
        if cache_key in self._api_keys:
            return self._api_keys[cache_key]
        litellm = load_litellm()
        try:
            litellm.get_llm_provider(model=cfg.model)
        except Exception as e:
            raise UsageError(
                f"unknown model provider in {cfg.model!r}",
                hint="use a litellm model string such as openai/gpt-5-mini "
                "(openai/NAME also works for any OpenAI-compatible server with --api-base)",
            ) from e
        # litellm counts a variable that is set but empty as present; an empty key is no key.
        for name in [k for k, v in os.environ.items() if k.endswith("_KEY") and not v.strip()]:
            del os.environ[name]
        env = litellm.validate_environment(model=cfg.model)
        # litellm lists OLLAMA_API_BASE as "missing" although it defaults to localhost:11434.
        missing = [k for k in env.get("missing_keys", []) if k != "OLLAMA_API_BASE"]
        key: str | None = None
        if missing:
            if cfg.api_base is None:
                raise ProviderError(
                    f"{missing[0]} is not set (needed for model {cfg.model})",
                    hint=f"export {missing[0]}=..., or point --api-base at a local server",
                )
            key = PLACEHOLDER_API_KEY
        self._api_keys[cache_key] = key
        return key

    def _direct_route(self, cfg: ModelConfig) -> _DirectRoute | None:
        """Where to POST sub-calls for `cfg` without litellm, or None to use litellm.

        Direct when litellm's provider is "openai" or "hosted_vllm", or another provider litellm
        lists as OpenAI-compatible and cfg.api_base is given (see DIRECT_PROVIDERS); never for
        models litellm serves through the Responses API (o3-pro, *-codex, ...).
        """
        cache_key = (cfg.model, cfg.api_base)
        if cache_key in self._routes:
            return self._routes[cache_key]
        litellm = load_litellm()
        api_key = self._api_key(cfg)  # raises the usual UsageError / ProviderError first
        route: _DirectRoute | None = None
        model, provider, dynamic_key, dynamic_base = litellm.get_llm_provider(
            model=cfg.model, api_base=cfg.api_base
        )
        direct = provider in DIRECT_PROVIDERS or (
            cfg.api_base is not None
            and provider in getattr(litellm, "openai_compatible_providers", ())
            and provider not in NOT_DIRECT_PROVIDERS
        )
        try:
            mode = litellm.get_model_info(model=cfg.model).get("mode")
        except Exception:  # not in litellm's table: a chat model on some server
            mode = None
        if getattr(litellm, "route_all_chat_openai_to_responses", False) or model.startswith("responses/"):
            mode = "responses"
        base = cfg.api_base or dynamic_base
        if provider == "openai":  # as litellm resolves it for openai models
            base = base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
            base = base or OPENAI_DEFAULT_BASE
        if direct and base and mode in (None, "chat"):
            key = api_key or dynamic_key
            if not key and provider == "openai":
                key = os.environ.get("OPENAI_API_KEY")
            base = base.rstrip("/")
            url = base if base.endswith("/chat/completions") else base + "/chat/completions"
            route = _DirectRoute(url=url, model=model, headers=_direct_headers(provider, key))
        self._routes[cache_key] = route
        return route

    def _ssl_setting(self) -> Any:
        """litellm's TLS configuration (SSL_VERIFY, SSL_CERT_FILE, certifi), so both paths agree."""
        if self._ssl is None:
            try:
                from litellm.llms.custom_httpx.http_handler import get_ssl_configuration

                self._ssl = get_ssl_configuration()
            except Exception:  # moved in some litellm version: aiohttp's default verification
                self._ssl = True
        return self._ssl

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    # -- one logical call, with retries ----------------------------------------------------------

    async def _complete(self, cfg: ModelConfig, messages: list[dict], kind: str) -> Completion:
        litellm = load_litellm()
        api_key = self._api_key(cfg)
        subcall = kind == "sub"
        route = self._direct_route(cfg) if subcall else None
        attempts = max(0, cfg.max_retries) + 1
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            timeout = cfg.request_timeout
            remaining = self.budget.remaining_time()
            if remaining is not None:  # don't let one request outlive the run's wall-time limit
                timeout = max(1.0, min(timeout, remaining))
            try:
                if route is not None:
                    reply = await self._http.chat(
                        route.url, route.headers, route.model, messages, timeout, self._ssl_setting()
                    )
                else:
                    response = await litellm.acompletion(
                        model=cfg.model,
                        messages=messages,
                        api_base=cfg.api_base,
                        api_key=api_key,
                        timeout=timeout,
                        # We retry ourselves (with Retry-After and budget awareness); both layers
                        # below must not: num_retries is litellm's, max_retries the openai SDK's.
                        num_retries=0,
                        max_retries=0,
                    )
            except Exception as e:
                if not retry.is_retryable(e) or attempt == attempts:
                    raise retry.provider_error(cfg.model, e, attempt) from None
                delay = retry.delay(e, attempt, cfg.backoff_base)
                remaining = self.budget.remaining_time()
                if remaining is not None and delay >= remaining:
                    stop = "; stopped retrying at the wall-time limit"
                    raise retry.provider_error(cfg.model, e, attempt, stop) from None
                await self.sleep(delay)
                continue
            if route is not None:
                cost = _cost_per_token(litellm, cfg.model, reply.prompt_tokens, reply.completion_tokens)
                completion = Completion(
                    reply.text, reply.prompt_tokens, reply.completion_tokens, cost, time.monotonic() - started
                )
            else:
                completion = _to_completion(litellm, response, time.monotonic() - started)
            self.budget.record(
                completion.prompt_tokens, completion.completion_tokens, completion.cost_usd, subcall=subcall
            )
            if self.on_call is not None:
                self.on_call(kind, cfg.model, completion)
            return completion
        raise AssertionError("unreachable: the last attempt either returns or raises")


@dataclass(frozen=True)
class _DirectRoute:
    url: str  # the full .../chat/completions address
    model: str  # the model name without litellm's provider prefix
    headers: dict[str, str]  # Authorization (never logged or shown), Content-Type, ...


def _direct_headers(provider: str, key: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key or PLACEHOLDER_API_KEY}", "Content-Type": "application/json"}
    if provider == "openai":  # litellm and the openai SDK send these when they are set
        org = os.environ.get("OPENAI_ORGANIZATION") or os.environ.get("OPENAI_ORG_ID")
        project = os.environ.get("OPENAI_PROJECT_ID")
        headers.update({"OpenAI-Organization": org} if org else {})
        headers.update({"OpenAI-Project": project} if project else {})
    return headers


def _cost_per_token(litellm: ModuleType, model: str, prompt: int, completion: int) -> float | None:
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt, completion_tokens=completion
        )
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # a model missing from litellm's price table: unknown, not an error
        return None


def _to_completion(litellm: ModuleType, response: Any, latency: float) -> Completion:
    message = response.choices[0].message if response.choices else None
    text = (getattr(message, "content", None) or "") if message is not None else ""
    if not text and message is not None:
        # Reasoning models served by vLLM & co. sometimes put the whole answer in reasoning_content.
        text = getattr(message, "reasoning_content", None) or ""
    usage = getattr(response, "usage", None)
    # litellm has usually priced the response already; completion_cost() would do it again.
    hidden = getattr(response, "_hidden_params", None)
    known = hidden.get("response_cost") if isinstance(hidden, dict) else None
    cost: float | None = float(known) if isinstance(known, int | float) else None
    if cost is None:
        try:
            cost = float(litellm.completion_cost(completion_response=response))
        except Exception:  # a model missing from litellm's price table: unknown, not an error
            cost = None
    return Completion(
        text=text,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cost_usd=cost,
        latency_s=latency,
    )
