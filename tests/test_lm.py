"""The model client against the fake OpenAI-compatible server: the real litellm -> openai -> HTTP path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeLLM, Fault

from rlmcli.budget import Budget, Limits, Usage, estimate_prompt_tokens
from rlmcli.errors import LimitReached, ProviderError
from rlmcli.model.client import PLACEHOLDER_API_KEY, ModelClient, ModelConfig, ModelNotAllowed

SECRET = "sk-test-secret-0123456789"
ROOT_MESSAGES = [{"role": "system", "content": "system prompt"}, {"role": "user", "content": "question"}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def make_client(
    fake: FakeLLM,
    model: str = "openai/gpt-4o-mini",
    budget: Budget | None = None,
    concurrency: int = 64,
    allow_models: tuple[str, ...] = (),
    **cfg: Any,
) -> tuple[ModelClient, list[float]]:
    """A client whose backoff waits are recorded instead of slept."""
    cfg.setdefault("backoff_base", 0.01)
    config = ModelConfig(model=model, api_base=fake.url, **cfg)
    client = ModelClient(
        config, config, budget or Budget(), concurrency=concurrency, allow_models=allow_models
    )
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    client.sleep = record_sleep
    return client, delays


def test_root_success_records_usage(fake: FakeLLM) -> None:
    fake.usage = lambda body, text: (100, 20)
    fake.add_root("hello")
    client, _ = make_client(fake)
    completion = asyncio.run(client.root(ROOT_MESSAGES))
    assert completion.text == "hello"
    assert (completion.prompt_tokens, completion.completion_tokens) == (100, 20)
    assert completion.cost_usd is not None and completion.cost_usd > 0
    usage = client.budget.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.root_calls, usage.subcalls) == (100, 20, 1, 0)
    assert usage.cost_usd == pytest.approx(completion.cost_usd) and usage.cost_known
    [request] = fake.root_requests
    assert request["body"]["messages"] == ROOT_MESSAGES
    assert request["body"]["model"] == "gpt-4o-mini"


def test_rate_limit_honours_retry_after_ms(fake: FakeLLM) -> None:
    fake.add_root(Fault(status=429, retry_after_ms=5000), "ok")
    client, delays = make_client(fake)
    assert asyncio.run(client.root(ROOT_MESSAGES)).text == "ok"
    assert len(fake.requests) == 2
    assert delays == [5.0]  # the server's wish, not the 0.01 s exponential backoff


def test_server_errors_exhaust_retries(fake: FakeLLM) -> None:
    fake.add_root(*[Fault(status=500)] * 3, "never reached")
    client, delays = make_client(fake, max_retries=2, backoff_base=1.0)
    expected = r"openai/gpt-4o-mini: 500 Internal Server Error after 3 attempts"
    with pytest.raises(ProviderError, match=expected):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert len(fake.requests) == 3  # neither litellm nor the openai SDK retried on their own
    # Exponential with jitter: attempt n waits within [base*2^(n-1)/2, base*2^(n-1)].
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0
    # A 5xx may have been billed: each attempt counts its prompt, as estimated; it is one call.
    usage = client.budget.usage
    assert usage.prompt_tokens == 3 * estimate_prompt_tokens(ROOT_MESSAGES) and usage.completion_tokens == 0
    assert usage.estimated and usage.cost_usd > 0 and usage.root_calls == 1


def test_unauthorized_fails_at_once_without_leaking_the_key(fake: FakeLLM) -> None:
    fake.add_root(Fault(status=401))
    client, _ = make_client(fake)
    with pytest.raises(ProviderError) as info:
        asyncio.run(client.root(ROOT_MESSAGES))
    assert len(fake.requests) == 1
    message = str(info.value)
    assert "401" in message and "OPENAI_API_KEY" in message and SECRET not in message
    assert info.value.exit_status == 4
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(fake: FakeLLM, status: int) -> None:
    fake.add_root(Fault(status=status))
    client, _ = make_client(fake)
    with pytest.raises(ProviderError, match=str(status)):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert len(fake.requests) == 1


def test_a_root_reply_is_the_content_never_the_reasoning(fake: FakeLLM) -> None:
    """A draft in reasoning_content must not run code or end the run: the root reply is empty (the
    loop re-asks)."""
    fake.add_root(Fault(content_none=True, reasoning="```repl\nprint(1)\n```\nFINAL(42)"), "real")
    client, _ = make_client(fake)
    assert asyncio.run(client.root(ROOT_MESSAGES)).text == ""
    assert asyncio.run(client.root(ROOT_MESSAGES)).text == "real"


def test_garbage_is_retried_then_a_provider_error(fake: FakeLLM) -> None:
    fake.add_root(*[Fault(garbage=True)] * 3)
    client, delays = make_client(fake, max_retries=2)
    with pytest.raises(ProviderError, match="after 3 attempts.*not valid JSON"):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert len(fake.requests) == 3 and len(delays) == 2


def test_timeout_is_retried(fake: FakeLLM) -> None:
    fake.add_root(Fault(delay=1.5, text="too late"), "in time")
    client, _ = make_client(fake, request_timeout=0.3)
    assert asyncio.run(client.root(ROOT_MESSAGES)).text == "in time"
    assert len(fake.root_requests) == 2


def test_unreachable_server_is_a_provider_error() -> None:
    with FakeLLM() as gone:
        url = gone.url
    config = ModelConfig("openai/gpt-4o-mini", api_base=url, max_retries=1, backoff_base=0.01)
    client = ModelClient(config, config, Budget())
    with pytest.raises(ProviderError, match="after 2 attempts"):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert client.budget.usage == Usage(root_calls=1)  # never sent: nothing to bill, nothing counted


# -- failed attempts the provider may bill count against the limits --------------------------------

PROMPT = [{"role": "user", "content": "x" * 400}]  # 104 tokens as estimated
BILLED_FAULTS = {
    "500": Fault(status=500, retry_after_ms=1),
    "503": Fault(status=503, retry_after_ms=1),
    "timeout": Fault(delay=0.5),
    "garbage": Fault(garbage=True),
}


@pytest.mark.parametrize("path", ["root", "sub"])  # litellm, and the direct path
@pytest.mark.parametrize("fault", BILLED_FAULTS)
def test_failed_attempts_that_may_be_billed_are_counted(fault: str, path: str) -> None:
    with FakeLLM(sub=lambda prompt: BILLED_FAULTS[fault]) as fake:
        fake.add_root(*[BILLED_FAULTS[fault]] * 3)
        client, _ = make_client(fake, max_retries=2, request_timeout=0.2)
        messages = [{"role": "system", "content": "s"}] + PROMPT if path == "root" else PROMPT
        call = client.root(messages) if path == "root" else client.sub(PROMPT[0]["content"])
        with pytest.raises(ProviderError, match="after 3 attempts"):
            asyncio.run(call)
    usage, each = client.budget.usage, estimate_prompt_tokens(messages)
    assert len(fake.requests) == 3
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (3 * each, 0, True)
    assert usage.cost_usd == pytest.approx(3 * each * 0.15e-6)  # gpt-4o-mini: $0.15 per M prompt tokens
    assert (usage.root_calls, usage.subcalls) == ((1, 0) if path == "root" else (0, 1))


@pytest.mark.parametrize("status", [400, 401, 429])
def test_refused_requests_are_not_counted(fake: FakeLLM, status: int) -> None:
    fake.add_root(*[Fault(status=status, retry_after_ms=1)] * 3)
    client, _ = make_client(fake, max_retries=2)
    with pytest.raises(ProviderError, match=str(status)):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert client.budget.usage == Usage(root_calls=1)


def test_a_retry_must_pass_the_cost_limit_again(fake: FakeLLM) -> None:
    """A server failing with 500 forever: the retries stop at --max-cost, not after 100 free tries."""
    fake.add_root(*[Fault(status=500, retry_after_ms=1)] * 101)
    one = estimate_prompt_tokens(ROOT_MESSAGES) * 0.15e-6  # what each attempt is counted at
    budget = Budget(limits=Limits(max_cost=10.5 * one))
    client, _ = make_client(fake, budget=budget, max_retries=100)
    with pytest.raises(LimitReached, match="cost limit"):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert len(fake.requests) == 10  # the 11th would cross the limit: refused before it is sent
    assert budget.usage.cost_usd == pytest.approx(10 * one) and budget.usage.root_calls == 1


def test_a_retry_is_not_another_subcall(fake: FakeLLM) -> None:
    answers = iter([Fault(status=500, retry_after_ms=1), "ok"])
    with FakeLLM(sub=lambda prompt: next(answers)) as fake:
        client, _ = make_client(fake, budget=Budget(limits=Limits(max_subcalls=1)))
        assert asyncio.run(client.sub("p")) == "ok"
    assert len(fake.requests) == 2 and client.budget.usage.subcalls == 1


def test_an_empty_first_reply_keeps_calls_running_one_at_a_time() -> None:
    """An empty first reply says nothing about the next one's size: until a non-empty completion
    was seen, sub-calls under a cost limit still run alone, so 64 cannot go out reserving none."""
    in_flight, peak, lock = 0, 0, threading.Lock()
    answers = iter(["", "", "x" * 4000] + ["x" * 4000] * 100)

    def sub(prompt: str) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            answer = next(answers)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return answer

    with FakeLLM(sub=sub, usage=lambda body, text: (10, len(text) // 4)) as fake:
        budget = Budget(limits=Limits(max_cost=1.0))
        client, _ = make_client(fake, budget=budget, concurrency=8)
        asyncio.run(client.batch(["a", "b", "c"]))  # the two empty replies, then a 1000-token one
        assert peak == 1 and budget.completion_estimate("sub", "openai/gpt-4o-mini") == 1000
        asyncio.run(client.batch([f"p{i}" for i in range(16)]))
        assert peak > 1  # now that a completion's size is known, calls run together again


def test_sub_call_and_model_override(fake: FakeLLM) -> None:
    client, _ = make_client(fake)
    with pytest.raises(ModelNotAllowed, match="'openai/gpt-4o' is not allowed"):
        asyncio.run(client.sub("again", model="openai/gpt-4o"))  # not configured: nothing is sent
    assert fake.requests == []
    client, _ = make_client(fake, allow_models=("openai/gpt-4o",))
    assert asyncio.run(client.sub("summarise this")) == "sub: summarise this"
    assert asyncio.run(client.sub("again", model="openai/gpt-4o")) == "sub: again"
    first, second = fake.sub_requests
    assert first["body"]["messages"] == [{"role": "user", "content": "summarise this"}]
    assert (first["body"]["model"], second["body"]["model"]) == ("gpt-4o-mini", "gpt-4o")
    assert client.budget.usage.subcalls == 2 and client.budget.usage.root_calls == 0


def test_batch_of_64_runs_concurrently() -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow_sub(prompt: str) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return prompt.upper()

    with FakeLLM(sub=slow_sub) as fake:
        client, _ = make_client(fake, concurrency=64)
        prompts = [f"p{i}" for i in range(64)]
        assert asyncio.run(client.batch(prompts)) == [p.upper() for p in prompts]
        assert len(fake.sub_requests) == 64 and peak > 1

        peak = 0
        client, _ = make_client(fake, concurrency=8)
        assert asyncio.run(client.batch(prompts)) == [p.upper() for p in prompts]
        assert 1 < peak <= 8  # the semaphore caps requests in flight


def test_batch_failed_prompt_returns_error_string() -> None:
    with FakeLLM(sub=lambda p: Fault(status=400) if "bad" in p else f"ok {p}") as fake:
        client, _ = make_client(fake)
        results = asyncio.run(client.batch(["a", "bad one", "c"]))
    assert results[0] == "ok a" and results[2] == "ok c"
    assert results[1].startswith("[llm_query error: model provider error:") and "400" in results[1]
    assert client.budget.breached is None


@pytest.mark.parametrize("concurrency", [1, 8])
def test_subcall_limit_stops_dispatch(fake: FakeLLM, concurrency: int) -> None:
    budget = Budget(limits=Limits(max_subcalls=5))
    client, _ = make_client(fake, budget=budget, concurrency=concurrency)
    results = asyncio.run(client.batch([f"p{i}" for i in range(20)]))
    # The check and the dispatch count happen with no await in between, so even with 8 in flight
    # the limit is not overshot (the design allows up to `concurrency`).
    assert len(fake.requests) <= 5 + (0 if concurrency == 1 else concurrency)
    assert len(fake.requests) == 5
    assert budget.breached is not None and budget.breached.limit == "subcalls"
    ok = [r for r in results if not r.startswith("[llm_query error:")]
    assert len(ok) == 5
    assert all("sub-call limit of 5 reached" in r for r in results if r not in ok)
    with pytest.raises(LimitReached):
        asyncio.run(client.sub("one more"))
    assert len(fake.requests) == 5


def test_root_checks_budget_before_dispatch(fake: FakeLLM) -> None:
    fake.add_root("x")
    budget = Budget(limits=Limits(max_tokens=10))
    budget.record(10, 0, 0.0, subcall=False)
    client, _ = make_client(fake, budget=budget)
    with pytest.raises(LimitReached, match="token limit"):
        asyncio.run(client.root(ROOT_MESSAGES))
    assert fake.requests == []


def test_cost_of_unknown_model_is_none(fake: FakeLLM) -> None:
    fake.add_root("priced", "unpriced")
    known, _ = make_client(fake)
    budget = known.budget
    assert (asyncio.run(known.root(ROOT_MESSAGES)).cost_usd or 0) > 0
    unknown, _ = make_client(fake, model="openai/totally-unknown-model", budget=budget)
    completion = asyncio.run(unknown.root(ROOT_MESSAGES))
    assert completion.text == "unpriced" and completion.cost_usd is None
    assert budget.usage.cost_known is False and budget.usage.cost_usd > 0


def test_check_credentials(fake: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    no_base = ModelConfig("openai/gpt-4o-mini")
    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set"):
        ModelClient(no_base, no_base, Budget()).check_credentials()

    # A local server needs no key: a placeholder is sent so the openai SDK does not refuse.
    fake.add_root("local answer")
    local = ModelConfig("openai/local-model", api_base=fake.url)
    client = ModelClient(local, local, Budget())
    client.check_credentials()
    assert asyncio.run(client.root(ROOT_MESSAGES)).text == "local answer"
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_client_survives_several_event_loops(fake: FakeLLM) -> None:
    client, _ = make_client(fake, concurrency=2)
    for i in range(3):
        assert asyncio.run(client.batch([f"a{i}", f"b{i}", f"c{i}"])) == [f"sub: {x}{i}" for x in "abc"]


def test_import_does_not_load_litellm() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", "import rlmcli.model.client, sys; print('litellm' in sys.modules)"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
