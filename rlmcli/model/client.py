"""The model client: calls for the root model and sub-calls, with retries, usage and cost.

Calls to OpenAI-compatible servers (`openai/...`, `hosted_vllm/...`, a server behind --api-base: see
providers.Router.direct_route), root calls and sub-calls alike, take a direct HTTP path
(openai_http.py); the rest go through litellm. litellm takes seconds to import and costs ~4 ms of CPU
per call, which a 64-prompt batch pays serially on the event loop.

litellm is imported only for a call that needs it (providers.load_litellm), so a run against an
OpenAI-compatible server never imports it; prices come from its table read as JSON (prices.py).
Which model a sub-call may name, and where its request and key go, is decided by providers.Router.
Every call goes through the shared Budget: estimated and reserved right before dispatch, its usage
validated and recorded when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import tokens
from ..budget import Budget, estimate_prompt_tokens, prompt_tokens_at_most
from ..errors import RlmError, redact
from ..events import ModelRetry
from . import openai_http, prices, retry, timeouts
from .completion import Completion, finish_reason, read_response, to_completion
from .providers import (  # noqa: F401 - re-exported: callers import these from here
    PLACEHOLDER_API_KEY,
    ModelConfig,
    ModelNotAllowed,
    Router,
    load_litellm,
    priced,
    reply_params,
    unit_prices,
)

if TYPE_CHECKING:
    from .cache import CallCache


# Called as each sub-call of a batch ends: its Completion, or None when it failed (for events).
CallDone = Callable[[Completion | None], None]
# Called when an attempt failed and the call will be tried again (the event has no parent yet).
OnRetry = Callable[[ModelRetry], None]


class ModelClient:
    def __init__(
        self,
        root: ModelConfig,
        sub: ModelConfig,
        budget: Budget,
        concurrency: int = 64,
        allow_models: Iterable[str] = (),
    ):
        self.root_config = root
        self.sub_config = sub
        self.router = Router(root, sub, allow_models)
        self.budget = budget
        self.concurrency = max(1, concurrency)
        # Indirection so tests can observe (and skip) backoff waits.
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        # asyncio primitives bind to the loop they are first used in; keep one per loop so the
        # client survives several asyncio.run() calls (tests, recursive children).
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._gates: dict[tuple[str, str], asyncio.Lock] = {}
        self._gates_loop: asyncio.AbstractEventLoop | None = None
        self._prices: dict[str, tuple[float, float] | None] = {}  # model -> USD per prompt/completion token
        self._http = openai_http.ChatClient()  # holds a connection pool per event loop
        self.cache: CallCache | None = None  # the cache of model calls (run.make_client sets it)
        # Whether the first request went out (or a call ended without one), and who waits for it.
        self._out = False
        self._out_waiters: list[asyncio.Future[None]] = []

    # -- public API ------------------------------------------------------------------------------

    def check_credentials(self) -> None:
        """Fail early, naming the variable to set, when a model's provider key is missing."""
        self.router.check_credentials()

    def warm_up(self) -> None:
        """Load the direct path's HTTP client in the background when the run's calls take it (call
        after check_credentials)."""
        routes = [self.router.direct_route(cfg) for cfg in (self.root_config, self.sub_config)]
        urls = tuple(route.url for route in routes if route is not None)
        if urls:
            openai_http.warm_up(urls)

    async def request_out(self) -> None:
        """Return once this client's first request is out (or a call ended without sending one: a
        cached reply, a failure), for work that must not delay it (run.py counts the context's tokens)."""
        if not self._out:
            waiter = asyncio.get_running_loop().create_future()
            self._out_waiters.append(waiter)
            await waiter

    def note_request_out(self) -> None:
        """The first request is out (or there will be none): start loading the tokenizer, which
        estimates every later call (tokens.py: ~0.4 s of CPU that holds the GIL, spent while the
        model replies), and wake request_out's waiters. Later calls do nothing."""
        if self._out:
            return
        self._out = True
        tokens.preload()
        for waiter in self._out_waiters:
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(None)
        self._out_waiters.clear()

    def cost_limit_warnings(self) -> list[str]:
        """Under --max-cost, one warning per model of the run (root, sub, --allow-model) that has no
        price in litellm's table: its calls cost nothing as far as the limit can tell."""
        if self.budget.limits.max_cost is None:
            return []
        models = dict.fromkeys([self.root_config.model, self.sub_config.model, *self.router.allow_models])
        return [
            f"--max-cost cannot limit the cost of {model}: {self._why_unpriced(model)} "
            "(--max-tokens can bound its usage)"
            for model in models
            if self._unit_prices(model) is None
        ]

    def _why_unpriced(self, model: str) -> str:
        cfg = self._config_of(model)
        if cfg.table_priced:
            return "it has no price in litellm's table"
        return f"served from {cfg.api_base}, it is priced as unknown unless --price IN,OUT gives its price"

    async def root(
        self, messages: list[dict], on_retry: OnRetry | None = None, on_sent: Callable[[], None] | None = None
    ) -> Completion:
        """A root call. `on_sent` is called once its request is written out (on the litellm path:
        as it is handed over), so the caller's own work overlaps the wait for the reply; not at all
        for a reply from the cache or a request that could not be sent."""
        return await self._call(self.root_config, messages, kind="root", on_retry=on_retry, on_sent=on_sent)

    async def sub(self, prompt: str, model: str | None = None) -> str:
        cfg = self.router.config_for(model)
        completion = await self._call(cfg, [{"role": "user", "content": prompt}], kind="sub")
        return completion.text

    async def batch(
        self,
        prompts: list[str],
        model: str | None = None,
        on_done: CallDone | None = None,
        on_retry: OnRetry | None = None,
    ) -> list[str]:
        """Run sub-calls concurrently; a failed prompt yields an error string in its slot.

        `concurrency` workers take the prompts in order, so a huge batch costs no coroutine per
        prompt. Once a limit is reached they take no more: the slots never dispatched get the
        limit's error. `on_done` gets each dispatched call's Completion (None if it failed) as it
        ends, `on_retry` each retry: the caller's events and progress.
        """
        try:
            cfg = self.router.config_for(model)
        except ModelNotAllowed as e:  # one answer for the batch: nothing is sent anywhere
            return [f"[llm_query error: {e}]"] * len(prompts)
        results: list[str | None] = [None] * len(prompts)
        taken = 0

        async def one(prompt: str) -> str:
            completion = None
            try:
                messages = [{"role": "user", "content": prompt}]
                completion = await self._call(cfg, messages, kind="sub", on_retry=on_retry)
                return completion.text
            except RlmError as e:  # incl. LimitReached: the budget stays breached, the loop notices
                return f"[llm_query error: {e}]"
            except Exception as e:  # a bug or odd provider failure: one bad prompt must not sink the batch
                return redact(f"[llm_query error: {type(e).__name__}: {e}]")
            finally:
                if on_done is not None:
                    on_done(completion)

        async def worker() -> None:
            nonlocal taken
            while taken < len(prompts) and self.budget.breached is None:
                slot, taken = taken, taken + 1
                results[slot] = await one(prompts[slot])

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(prompts)))))
        if self.cache is not None and self.cache.missed is not None:  # --cache-only: a miss ends the run
            raise self.cache.missed
        refused = f"[llm_query error: {self.budget.breached}]"
        return [refused if r is None else r for r in results]

    async def aclose(self) -> None:
        """Close the HTTP session the direct path opened in the running event loop."""
        await self._http.aclose()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    # -- estimates and reservations --------------------------------------------------------------

    def _estimate(self, kind: str, model: str, prompt_tokens: int) -> tuple[int, float | None]:
        """(tokens, cost) of a call before it is made, for its reservation.

        The prompt is estimated from its characters; the completion as the largest one of this kind
        and model seen so far (root replies, full of code, run longer than sub-call answers), or 0
        before a non-empty one was seen, while calls run alone (see _first_call). Cost is None
        without a price. The bound this gives is spelled out in budget.py's docstring.
        """
        if not self.budget.limits.limits_spending:
            return 0, None  # nothing to check: skip the pricing work
        completion = self.budget.completion_estimate(kind, model) or 0
        cost = None
        if self.budget.limits.max_cost is not None and (prices := self._unit_prices(model)) is not None:
            cost = prices[0] * prompt_tokens + prices[1] * completion
        return prompt_tokens + completion, cost

    def _unit_prices(self, model: str) -> tuple[float, float] | None:
        """USD per prompt and per completion token from litellm's table (cached: ~0.1 ms a lookup),
        or --price, or None for a model served from a server its provider does not run."""
        if model not in self._prices:
            per_thousand = prices.cost_parts(model, 1000, 1000)
            self._prices[model] = (
                None if per_thousand is None else (per_thousand[0] / 1000, per_thousand[1] / 1000)
            )
        return unit_prices(self._config_of(model), self._prices[model])

    def _config_of(self, model: str) -> ModelConfig:
        """The config calls to `model` go out with (for its pricing)."""
        if model == self.root_config.model:
            return self.root_config
        try:
            return self.router.config_for(model)
        except ModelNotAllowed:
            return ModelConfig(model)

    @contextlib.asynccontextmanager
    async def _first_call(self, kind: str, model: str) -> AsyncIterator[None]:
        """Under a cost or token limit, the first call of a kind and model runs alone.

        Until a non-empty completion was seen, a call's completion is estimated as 0 tokens; were
        64 such calls admitted at once, each could overshoot the limit by a whole completion. So the
        first runs alone, and the calls waiting behind it are then estimated with its size. Should it
        fail, or its reply be empty (which tells nothing about the next one's size), the next waiter
        runs alone in its place. A run thus overshoots by at most one call's completion, plus how
        much later completions exceed the largest one seen before them.
        """
        if not self.budget.limits.limits_spending or self.budget.completion_estimate(kind, model) is not None:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._gates_loop is not loop:  # asyncio primitives belong to one loop (see _semaphore)
            self._gates, self._gates_loop = {}, loop
        gate = self._gates.setdefault((kind, model), asyncio.Lock())
        await gate.acquire()
        held = True
        try:
            if self.budget.completion_estimate(kind, model) is not None:  # seen while we waited
                gate.release()
                held = False
            yield
        finally:
            if held:
                gate.release()

    async def _call(
        self,
        cfg: ModelConfig,
        messages: list[dict],
        kind: str,
        on_retry: OnRetry | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Completion:
        """One logical call: each attempt admitted by the budget, its usage recorded."""
        try:
            if self.cache is not None:  # a reply already paid for is served free (model/cache.py)
                hit = await self.cache.lookup(kind, cfg, messages, self.budget)
                if hit is not None:
                    return hit
            prompt_tokens, quick = self._prompt_estimate(cfg, messages)
            async with self._first_call(kind, cfg.model):
                async with self._semaphore() if kind == "sub" else contextlib.nullcontext():
                    completion = await self._complete(
                        cfg, messages, kind, prompt_tokens, on_retry, quick, on_sent
                    )
        finally:
            # A call served from the cache, or failed before sending: nobody waits for a request.
            self.note_request_out()
        if self.cache is not None:
            await self.cache.store(kind, cfg, messages, completion)
        return completion

    def _sent_callback(self, on_sent: Callable[[], None] | None) -> Callable[[], None] | None:
        """What the transport calls once a request is written: the first request starts the
        tokenizer's load (note_request_out), and the caller hears of it (`on_sent`)."""
        if self._out:
            return on_sent
        if on_sent is None:
            return self.note_request_out

        def sent() -> None:
            self.note_request_out()
            on_sent()

        return sent

    def _prompt_estimate(self, cfg: ModelConfig, messages: list[dict]) -> tuple[int, bool]:
        """(the prompt's tokens for the budget and the reply cap, whether that is only a bound).

        Before the tokenizer has loaded (it loads once the first request is out: note_request_out),
        a call on the direct path is sized by budget.prompt_tokens_at_most, a bound that errs high,
        wherever erring high changes nothing: no --max-tokens/--max-cost reservation to refuse it,
        and a reply cap (max_tokens) the bound leaves as it is. Otherwise, e.g. a server's window of
        4,096 tokens, the prompt is counted (the tokenizer loads first). The litellm path counts as
        ever (litellm's import takes seconds). A bound is never recorded as usage (_complete).
        """
        if tokens.loaded() or self.budget.limits.limits_spending:
            return estimate_prompt_tokens(messages), False
        route = self.router.direct_route(cfg)
        if route is None:
            return estimate_prompt_tokens(messages), False
        bound = prompt_tokens_at_most(messages)
        if reply_params(cfg, route.url, bound) != reply_params(cfg, route.url, 0):
            return estimate_prompt_tokens(messages), False  # the bound would shrink the reply cap
        return bound, True

    # -- one logical call, with retries ----------------------------------------------------------

    async def _complete(
        self,
        cfg: ModelConfig,
        messages: list[dict],
        kind: str,
        prompt_estimate: int,
        on_retry: OnRetry | None = None,
        quick: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> Completion:
        """Make the request, retrying what may succeed on a second try; never past --timeout.

        Every attempt is a dispatch: admitted by the budget right before it is sent, and counted
        when it ends, a failed one too when the provider may have billed it (see retry.may_be_billed).
        `quick`: `prompt_estimate` is only a bound (_prompt_estimate); what is counted as usage in
        its place is the prompt's count.
        """
        api_key = self.router.api_key(cfg)
        route = self.router.direct_route(cfg)
        litellm = load_litellm() if route is None else None  # seconds to import: only when needed
        subcall = kind == "sub"
        attempts = max(0, cfg.max_retries) + 1
        # Where the request goes, for messages: the base URL as the user gave it, where they did.
        url = cfg.api_base or (route.url.removesuffix("/chat/completions") if route is not None else None)
        started = time.monotonic()
        sent = self._sent_callback(on_sent)
        for attempt in range(1, attempts + 1):
            self.budget.check_clock()
            # `timeout` bounds the time without progress, `total` the whole request (timeouts.py).
            timeout, total = cfg.request_timeout, timeouts.total_for(cfg.request_timeout)
            remaining = self.budget.remaining_time()
            if remaining is not None:  # don't let one request outlive the run's wall-time limit
                total = max(0.05, min(total, remaining))
                timeout = min(timeout, total)
            # Reserved inside the semaphore, right before dispatch, with no await in between; a
            # retry must pass the limits again (earlier attempts and other calls may have used them up).
            tokens, cost = self._estimate(kind, cfg.model, prompt_estimate)
            reservation = self.budget.reserve(tokens, cost, subcall=subcall, retry=attempt > 1)
            try:
                try:
                    if route is not None:
                        reply = await self._http.chat(
                            route.url, route.headers, route.model, messages, timeout,
                            total=total, reasoning=subcall,
                            params=reply_params(cfg, route.url, prompt_estimate),
                            on_sent=sent,
                        )  # fmt: skip
                    else:
                        # httpx's timeouts (connect, each read) bound the time without progress;
                        # this, the whole request, reading the body included.
                        if sent is not None:  # litellm has no such hook: as the request is handed over
                            sent()
                            sent = None
                        async with asyncio.timeout(total):
                            assert litellm is not None
                            response = await litellm.acompletion(
                                model=cfg.model,
                                messages=messages,
                                api_base=cfg.api_base,
                                api_key=api_key,
                                timeout=timeout,
                                # We retry ourselves (with Retry-After and budget awareness); both
                                # layers below must not: num_retries is litellm's, max_retries the
                                # openai SDK's.
                                num_retries=0,
                                max_retries=0,
                                **reply_params(cfg, None, prompt_estimate),
                            )
                finally:
                    self.budget.settle(reservation)
            except Exception as e:
                if type(e) is TimeoutError:  # asyncio.timeout(total) above
                    e = openai_http.RequestTimeout(f"no complete response within {total:g} s")
                if retry.may_be_billed(e):  # in the same step as the release: the limits never miss it
                    billed = estimate_prompt_tokens(messages) if quick else prompt_estimate
                    self._record_failed_attempt(cfg.model, billed, subcall)
                self.budget.check_clock()  # cut short by the run's wall-time limit: that is the reason
                found = retry.failure(e, timeout)
                # Nothing listening, no such host, not an OpenAI API: one quick retry at most (a
                # server starting up), not the whole backoff series.
                few = retry.FEW_RETRIES.get(found.kind) if found is not None else None
                last = attempt == attempts or (few is not None and attempt > few)
                if not retry.is_retryable(e) or last:
                    raise retry.provider_error(cfg.model, e, attempt, url=url, timeout=timeout) from None
                delay = retry.QUICK_RETRY_S if few is not None else retry.delay(e, attempt, cfg.backoff_base)
                remaining = self.budget.remaining_time()
                if remaining is not None and delay >= remaining:
                    stop = "; stopped retrying at the wall-time limit"
                    raise retry.provider_error(cfg.model, e, attempt, stop, url, timeout) from None
                if on_retry is not None:
                    on_retry(ModelRetry(kind, cfg.model, attempt, retry.reason(e, timeout), round(delay, 3)))
                await self.sleep(delay)
                continue
            latency = time.monotonic() - started
            cached = 0
            if route is not None:
                usage, reported_cost = (reply.prompt_tokens, reply.completion_tokens), None
                text, cached = reply.text, reply.cached_tokens
            else:
                text, usage, reported_cost = read_response(response, reasoning=subcall)
            completion = to_completion(
                cfg.model, text, usage, reported_cost, prompt_estimate, latency, cached
            )
            if quick and completion.usage_estimated:  # the count stands in for a missing usage, not the bound
                exact = estimate_prompt_tokens(messages)
                completion = to_completion(cfg.model, text, usage, reported_cost, exact, latency, cached)
            finish = reply.finish_reason if route is not None else finish_reason(response)
            completion.truncated = finish == "length"
            # A local server under a known name is not billed at its price: --price, else unknown.
            completion.cost_usd = priced(cfg, completion.cost_usd, completion.prompt_tokens,
                                         completion.completion_tokens)  # fmt: skip
            # Recorded in the same step as the release, and before the gate opens for the calls
            # that wait for this completion's size (_first_call).
            self.budget.record(
                completion.prompt_tokens, completion.completion_tokens, completion.cost_usd,
                subcall=subcall, estimated=completion.usage_estimated,
            )  # fmt: skip
            self.budget.note_completion(kind, cfg.model, completion.completion_tokens)
            return completion
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def _record_failed_attempt(self, model: str, prompt_tokens: int, subcall: bool) -> None:
        """Count a failed attempt the provider may have billed: its prompt, as estimated, at the
        table price (no completion: none came back), marked estimated."""
        unit = self._unit_prices(model)
        cost = None if unit is None else unit[0] * prompt_tokens
        self.budget.record(prompt_tokens, 0, cost, subcall=subcall, estimated=True)
