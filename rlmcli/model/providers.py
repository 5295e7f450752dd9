"""Which models a run may call, where each one's requests go, and with which key.

A key must only ever reach its own provider's endpoint, or the server the user paired with that
model (--api-base for --model, --sub-api-base for --sub-model). A sub-call's `model=` comes from
model-written code, so it may only name a model the run was configured with; an --allow-model
model is sent to the sub-calls' server only when it has the sub model's provider.

litellm is imported lazily (it takes seconds and would otherwise fetch a price map over the
network), so importing this module stays cheap for `rlm --help`.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import ModuleType
from urllib.parse import urlsplit

from ..errors import ProviderError, UsageError
from . import openai_models, prices

# Some OpenAI-compatible servers (vLLM, llama.cpp) need no key, but the openai SDK refuses to send
# a request without one.
PLACEHOLDER_API_KEY = "sk-rlm-no-key"
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
# Sub-calls skip litellm (see Router.direct_route) for these providers, which are OpenAI's protocol
# by definition; for any other provider litellm lists as OpenAI-compatible only when --api-base
# names the server, and never for the few whose auth is not a plain bearer key.
DIRECT_PROVIDERS = {"openai", "hosted_vllm"}
NOT_DIRECT_PROVIDERS = {"azure_ai", "chatgpt", "github_copilot"}
MODEL_NAME_SHOWN = 100  # characters of a refused model name quoted back to the cell

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
    # Pricing (see unit_prices): False when the model is served from a base URL that is not its
    # provider's own (a local server under a known name is not billed at that name's price)...
    table_priced: bool = True
    # ...and --price, USD per prompt and per completion token, for a model the table does not price.
    price: tuple[float, float] | None = None
    # The most tokens a reply may take (sent as max_tokens; None: send none), and the model's window
    # where it is known for sure (a server's or a flag's): the reply is capped by what it leaves.
    max_reply_tokens: int | None = None
    window: int | None = None


class ModelNotAllowed(UsageError):
    """A sub-call named a model this run was not configured with (it would get some provider's key)."""


class Router:
    """The run's models, their endpoints and keys; routes and keys are resolved once per model."""

    def __init__(self, root: ModelConfig, sub: ModelConfig, allow_models: Iterable[str] = ()):
        self.root, self.sub = root, sub
        # Models a sub-call may name besides the root and sub models (--allow-model).
        listed = [allow_models] if isinstance(allow_models, str) else allow_models  # a config may give one
        self.allow_models = tuple(dict.fromkeys(str(m) for m in listed))
        self._api_keys: dict[tuple[str, str | None], str | None] = {}
        self._routes: dict[tuple[str, str | None], DirectRoute | None] = {}

    def check_credentials(self) -> None:
        """Fail early, naming the variable to set, when a model's provider key is missing."""
        for cfg in {(c.model, c.api_base): c for c in (self.root, self.sub)}.values():
            self.api_key(cfg)

    def config_for(self, model: object) -> ModelConfig:
        """The config of a sub-call's model override, or ModelNotAllowed.

        Only models the run was configured with qualify, each with the endpoint the user paired it
        with: the root and sub models keep theirs; an --allow-model model gets the sub-calls' API
        base only when it has the sub model's provider (that base speaks its protocol and expects its
        key), else none, so litellm sends that provider's key to that provider's own endpoint.
        """
        if model is None or model == self.sub.model:
            return self.sub
        if model == self.root.model:
            return self.root
        if not isinstance(model, str) or model not in self.allow_models:
            allowed = ", ".join(dict.fromkeys([self.root.model, self.sub.model, *self.allow_models]))
            shown = str(model)
            shown = shown if len(shown) <= MODEL_NAME_SHOWN else shown[:MODEL_NAME_SHOWN] + "..."
            raise ModelNotAllowed(
                f"model {shown!r} is not allowed in this run; allowed: {allowed} "
                "(the user can add --allow-model MODEL)"
            )
        same_provider = provider_of(model) is not None and provider_of(model) == provider_of(self.sub.model)
        base = self.sub.api_base if same_provider else None
        priced = self.sub.table_priced or table_priced(model, base)
        return replace(self.sub, model=model, api_base=base, table_priced=priced)

    def api_key(self, cfg: ModelConfig) -> str | None:
        """The api_key to pass: None lets litellm read the provider's variable from the environment."""
        cache_key = (cfg.model, cfg.api_base)
        if cache_key in self._api_keys:
            return self._api_keys[cache_key]
        # litellm counts a variable that is set but empty as present; an empty key is no key.
        for name in [k for k, v in os.environ.items() if k.endswith("_KEY") and not v.strip()]:
            del os.environ[name]
        missing = openai_models.missing_keys(cfg.model)  # OpenAI-protocol models: no litellm import
        if missing is None:
            litellm = load_litellm()
            try:
                litellm.get_llm_provider(model=cfg.model)
            except Exception as e:
                raise UsageError(
                    f"unknown model provider in {cfg.model!r}",
                    hint="use a litellm model string such as openai/gpt-5-mini "
                    "(openai/NAME also works for any OpenAI-compatible server with --api-base)",
                ) from e
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

    def direct_route(self, cfg: ModelConfig) -> DirectRoute | None:
        """Where to POST sub-calls for `cfg` without litellm (client.py), or None to use litellm.

        Direct when litellm's provider is "openai" or "hosted_vllm", or another provider litellm
        lists as OpenAI-compatible and cfg.api_base is given (see DIRECT_PROVIDERS); never for
        models litellm serves through the Responses API (o3-pro, *-codex, ...).
        """
        cache_key = (cfg.model, cfg.api_base)
        if cache_key in self._routes:
            return self._routes[cache_key]
        api_key = self.api_key(cfg)  # raises the usual UsageError / ProviderError first
        known = openai_models.resolve(cfg.model)
        if known is not None:  # resolved as litellm would, without importing it
            self._routes[cache_key] = _known_route(known, cfg.api_base, api_key)
            return self._routes[cache_key]
        litellm = load_litellm()
        route: DirectRoute | None = None
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
            route = DirectRoute(url=url, model=model, headers=direct_headers(provider, key))
        self._routes[cache_key] = route
        return route


@dataclass(frozen=True)
class DirectRoute:
    url: str  # the full .../chat/completions address
    model: str  # the model name without litellm's provider prefix
    headers: dict[str, str]  # Authorization (never logged or shown), Content-Type, ...


def direct_headers(provider: str, key: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key or PLACEHOLDER_API_KEY}", "Content-Type": "application/json"}
    if provider == "openai":  # litellm and the openai SDK send these when they are set
        org = os.environ.get("OPENAI_ORGANIZATION") or os.environ.get("OPENAI_ORG_ID")
        project = os.environ.get("OPENAI_PROJECT_ID")
        headers.update({"OpenAI-Organization": org} if org else {})
        headers.update({"OpenAI-Project": project} if project else {})
    return headers


def _known_route(
    known: openai_models.OpenAIModel, api_base: str | None, api_key: str | None
) -> DirectRoute | None:
    """direct_route for a model openai_models knows: the same answer, without litellm."""
    base = api_base or known.default_base
    if not base or known.mode not in (None, "chat"):
        return None
    key = api_key or known.fallback_key or openai_models.env_value(known.key_variable)
    base = base.rstrip("/")
    url = base if base.endswith("/chat/completions") else base + "/chat/completions"
    return DirectRoute(url=url, model=known.name, headers=direct_headers(known.provider, key))


def provider_of(model: str) -> str | None:
    """litellm's provider of a model string ("openai", "anthropic", ...), None when it knows none."""
    known = openai_models.resolve(model)
    if known is not None:
        return known.provider
    try:
        return load_litellm().get_llm_provider(model=model)[1]
    except Exception:
        return None


def cost_parts(litellm: ModuleType, model: str, prompt: int, completion: int) -> tuple[float, float] | None:
    """(prompt cost, completion cost) in USD from litellm's price table; None for an unpriced model."""
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt, completion_tokens=completion
        )
        return float(prompt_cost), float(completion_cost)
    except Exception:  # a model missing from litellm's price table: unknown, not an error
        return None


# The API hosts of providers whose models litellm's table prices: a base URL elsewhere serves some
# other copy of the model (a local server, a proxy), whose price the table does not know.
OWN_HOSTS = {
    "openai": ("api.openai.com",),
    "anthropic": ("api.anthropic.com",),
    "gemini": ("generativelanguage.googleapis.com",),
    "mistral": ("api.mistral.ai",),
    "groq": ("api.groq.com",),
    "deepseek": ("api.deepseek.com",),
    "xai": ("api.x.ai",),
    "together_ai": ("api.together.xyz", "api.together.ai"),
    "fireworks_ai": ("api.fireworks.ai",),
    "openrouter": ("openrouter.ai",),
    "deepinfra": ("api.deepinfra.com",),
    "perplexity": ("api.perplexity.ai",),
    "cohere": ("api.cohere.ai", "api.cohere.com"),
    "cerebras": ("api.cerebras.ai",),
}
# Providers whose endpoint is always the user's own deployment (given as the base URL), priced by
# the table all the same.
DEPLOYMENT_PROVIDERS = {"azure", "azure_ai", "bedrock", "vertex_ai", "sagemaker", "databricks", "watsonx"}


def table_priced(model: str, api_base: str | None) -> bool:
    """Whether litellm's table prices `model` served from `api_base`: with no base URL (the
    provider's own endpoint), with its provider's own API host, or for a provider whose endpoints
    are deployments. A model under a known name from any other server (a local llama.cpp serving
    `openai/gpt-4o-mini`) is priced as unknown. No litellm import: the prefix names the provider."""
    if not api_base:
        return True
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider in DEPLOYMENT_PROVIDERS:
        return True
    try:
        host = (urlsplit(api_base if "//" in api_base else "//" + api_base).hostname or "").lower()
    except ValueError:
        return False
    return host in OWN_HOSTS.get(provider, ())


def unit_prices(cfg: ModelConfig, table: tuple[float, float] | None) -> tuple[float, float] | None:
    """USD per prompt and per completion token of a call to `cfg`, given the table's (None: not in
    it): the table's where it applies (table_priced) and has one, else --price, else unknown."""
    if cfg.table_priced and table is not None:
        return table
    return cfg.price


def priced(cfg: ModelConfig, cost: float | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The cost of a finished call to `cfg` whose table (or litellm) cost is `cost`: that cost where
    the table applies and knows one, else at --price, else None (unknown)."""
    if cfg.table_priced and cost is not None:
        return cost
    if cfg.price is None:
        return None
    return cfg.price[0] * prompt_tokens + cfg.price[1] * completion_tokens


# Replies of root calls (code and reasoning) and of sub-calls (answers about one chunk), in tokens:
# enough for any reply a turn needs, short of a small local model looping until its window is full.
DEFAULT_MAX_REPLY_TOKENS = {"root": 8192, "sub": 4096}


def max_reply_tokens(kind: str, setting: int | None, model: str, api_base: str | None) -> int | None:
    """The max_tokens of a model's calls: --max-reply-tokens / --max-sub-reply-tokens, else the
    default; none for a reasoning model at its provider's own endpoint (its reasoning counts in
    max_tokens, and the provider caps the reply itself)."""
    if setting is not None:
        return setting
    if table_priced(model, api_base) and (prices.entry(model) or {}).get("supports_reasoning"):
        return None
    return DEFAULT_MAX_REPLY_TOKENS[kind]


def reply_params(cfg: ModelConfig, url: str | None, prompt_tokens: int) -> dict[str, int]:
    """The request parameter that caps a reply ({} for none): cfg.max_reply_tokens, less where the
    window known for sure leaves less room (windows.reply_cap). OpenAI's own API takes it as
    max_completion_tokens (its reasoning models refuse max_tokens); other servers as max_tokens,
    which litellm maps per provider (`url` None: the litellm path)."""
    from ..windows import reply_cap

    cap = reply_cap(cfg.max_reply_tokens, cfg.window, prompt_tokens)
    if cap is None:
        return {}
    own_openai = url is not None and (urlsplit(url).hostname or "") in OWN_HOSTS["openai"]
    return {"max_completion_tokens" if own_openai else "max_tokens": cap}


def ollama_hint(model: str, url: str | None) -> str | None:
    """For an `ollama/NAME` model whose server answered 404: most often an OpenAI-compatible server
    (llama.cpp, vLLM, LM Studio, Ollama's own /v1), which litellm's Ollama route does not speak."""
    provider, _, name = model.partition("/")
    if provider not in ("ollama", "ollama_chat") or not name:
        return None
    base = (url or "http://127.0.0.1:11434").rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    return f"for an OpenAI-compatible server use --model openai/{name} --api-base {base}"
