"""Calls on the direct OpenAI-protocol path (rlmcli/model/openai_http.py), over real HTTP to FakeLLM.

litellm.acompletion is replaced by a function that fails the test, so every call below proves it did
not go through litellm: sub-calls and root calls alike. The request timeout bounds the time without
progress, not the time a request waits behind others at a busy server.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fake_llm import FakeLLM, Fault

from rlmcli.budget import Budget, Limits
from rlmcli.errors import LimitReached, ProviderError
from rlmcli.model import openai_http
from rlmcli.model.client import ModelClient, ModelConfig, load_litellm

SECRET = "sk-test-secret-0123456789"
ROOT_MESSAGES = [{"role": "system", "content": "system prompt"}, {"role": "user", "content": "question"}]
ERROR = "[llm_query error:"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORGANIZATION", "OPENAI_ORG_ID"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def litellm_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """litellm.acompletion, counted: any call through it fails the test."""
    litellm = load_litellm()
    calls: list[dict] = []

    async def acompletion(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise AssertionError("a call went through litellm")

    monkeypatch.setattr(litellm, "acompletion", acompletion)
    return calls


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def make_client(
    fake: FakeLLM, model: str = "openai/gpt-4o-mini", budget: Budget | None = None, **cfg: Any
) -> tuple[ModelClient, list[float]]:
    """A client whose backoff waits are recorded instead of slept."""
    cfg.setdefault("backoff_base", 0.01)
    config = ModelConfig(model=model, api_base=fake.url, **cfg)
    client = ModelClient(config, config, budget or Budget())
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    client.sleep = record_sleep
    return client, delays


def run_batch(client: ModelClient, prompts: list[str], on_done=None) -> list[str]:  # noqa: ANN001
    async def go() -> list[str]:
        try:
            return await client.batch(prompts, on_done=on_done)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_sub_call_success_records_usage_and_cost(fake: FakeLLM, litellm_calls: list[dict]) -> None:
    fake.usage = lambda body, text: (100, 20)
    client, _ = make_client(fake)
    seen: list = []
    assert run_batch(client, ["summarise this"], on_done=seen.append) == ["sub: summarise this"]
    [completion] = seen
    assert (completion.model, completion.text) == ("openai/gpt-4o-mini", "sub: summarise this")
    assert (completion.prompt_tokens, completion.completion_tokens) == (100, 20)
    assert completion.cost_usd is not None and completion.cost_usd > 0
    usage = client.budget.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.subcalls, usage.root_calls) == (100, 20, 1, 0)
    assert usage.cost_usd == pytest.approx(completion.cost_usd) and usage.cost_known
    [request] = fake.requests
    assert request["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "summarise this"}],
    }
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert litellm_calls == []


def test_unknown_model_has_no_cost(fake: FakeLLM) -> None:
    client, _ = make_client(fake, model="openai/totally-unknown-model")
    assert run_batch(client, ["x"]) == ["sub: x"]
    assert fake.requests[0]["body"]["model"] == "totally-unknown-model"
    assert client.budget.usage.cost_known is False and client.budget.usage.prompt_tokens > 0


def test_rate_limit_honours_retry_after_ms() -> None:
    replies = iter([Fault(status=429, retry_after_ms=5000), "ok"])
    with FakeLLM(sub=lambda p: next(replies)) as fake:
        client, delays = make_client(fake)
        assert run_batch(client, ["p"]) == ["ok"]
    assert len(fake.requests) == 2
    assert delays == [5.0]  # the server's wish, not the 0.01 s exponential backoff


def test_server_errors_exhaust_retries() -> None:
    with FakeLLM(sub=lambda p: Fault(status=500)) as fake:
        client, delays = make_client(fake, max_retries=2, backoff_base=1.0)
        [result] = run_batch(client, ["p"])
    assert result.startswith(f"{ERROR} model provider error: openai/gpt-4o-mini: 500 Internal Server Error")
    assert "after 3 attempts: fake: scripted 500" in result
    assert len(fake.requests) == 3
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0
    # A 5xx may have been billed: each attempt counts its prompt, as estimated (lm.may_be_billed).
    assert client.budget.usage.prompt_tokens == 3 * 5 and client.budget.usage.estimated


def test_unauthorized_fails_at_once_without_leaking_the_key() -> None:
    with FakeLLM(sub=lambda p: Fault(status=401)) as fake:
        client, _ = make_client(fake)
        [result] = run_batch(client, ["p"])
        with pytest.raises(ProviderError) as info:
            asyncio.run(client.sub("again"))
    assert len(fake.requests) == 2  # one per call: a 401 is not retried
    for message in (result, str(info.value)):
        assert "401 Unauthorized: fake: scripted 401" in message and "OPENAI_API_KEY" in message
        assert SECRET not in message
    assert info.value.exit_status == 4


def test_garbage_is_retried_then_an_error() -> None:
    with FakeLLM(sub=lambda p: Fault(garbage=True)) as fake:
        client, delays = make_client(fake, max_retries=2)
        [result] = run_batch(client, ["p"])
    assert result.startswith(ERROR) and "after 3 attempts: the response was not valid JSON" in result
    assert len(fake.requests) == 3 and len(delays) == 2


def test_content_none_uses_reasoning() -> None:
    def sub(prompt: str) -> Fault:
        return Fault(content_none=True, reasoning="the answer is 42" if prompt == "think" else None)

    with FakeLLM(sub=sub) as fake:
        client, _ = make_client(fake)
        assert run_batch(client, ["think", "nothing"]) == ["the answer is 42", ""]


def test_timeout_and_unreachable_server_are_retried() -> None:
    replies = iter([Fault(delay=1.5, text="too late"), "in time"])
    with FakeLLM(sub=lambda p: next(replies)) as fake:
        client, _ = make_client(fake, request_timeout=0.3)
        assert run_batch(client, ["p"]) == ["in time"]
        assert len(fake.requests) == 2
    with FakeLLM() as gone:
        pass
    client, delays = make_client(gone, max_retries=1)
    [result] = run_batch(client, ["p"])
    assert result.startswith(ERROR) and "after 2 attempts" in result and len(delays) == 1


def test_key_only_in_the_authorization_header() -> None:
    with FakeLLM(sub=lambda p: Fault(status=401) if "bad" in p else "fine") as fake:
        client, _ = make_client(fake)
        results = run_batch(client, ["good", "bad", f"mention {SECRET[:6]}"])
    assert results[0] == "fine" and SECRET not in results[1]
    assert len(fake.requests) == 3
    for request in fake.requests:
        assert SECRET.encode() not in request["raw"]
        assert [k for k, v in request["headers"].items() if SECRET in v] == ["authorization"]


def test_batch_of_64_with_one_failing_prompt() -> None:
    with FakeLLM(sub=lambda p: Fault(status=400) if p == "p13" else p.upper(), latency=0.2) as fake:
        client, _ = make_client(fake)
        prompts = [f"p{i}" for i in range(64)]
        results = run_batch(client, prompts)
    assert len(fake.requests) == 64
    assert results[13].startswith(f"{ERROR} model provider error:") and "400 Bad Request" in results[13]
    assert [r for i, r in enumerate(results) if i != 13] == [p.upper() for p in prompts if p != "p13"]
    assert client.budget.breached is None and client.budget.usage.subcalls == 64


@pytest.mark.parametrize("concurrency", [1, 8])
def test_subcall_limit_is_exact(fake: FakeLLM, concurrency: int) -> None:
    client, _ = make_client(fake, budget=Budget(limits=Limits(max_subcalls=5)))
    client.concurrency = concurrency
    results = run_batch(client, [f"p{i}" for i in range(20)])
    assert len(fake.requests) == 5
    assert len([r for r in results if not r.startswith(ERROR)]) == 5
    assert all("sub-call limit of 5 reached" in r for r in results if r.startswith(ERROR))
    with pytest.raises(LimitReached):
        asyncio.run(client.sub("one more"))
    assert len(fake.requests) == 5


def test_root_calls_take_the_direct_path_too(fake: FakeLLM, litellm_calls: list[dict]) -> None:
    fake.add_root("root answer")
    client, _ = make_client(fake)

    async def go() -> tuple[str, str]:
        try:
            return (await client.root(ROOT_MESSAGES)).text, await client.sub("sub prompt")
        finally:
            await client.aclose()

    assert asyncio.run(go()) == ("root answer", "sub: sub prompt")
    assert litellm_calls == []
    assert [r["kind"] for r in fake.requests] == ["root", "sub"]
    assert fake.requests[0]["body"] == {"model": "gpt-4o-mini", "messages": ROOT_MESSAGES}


def test_hosted_vllm_takes_the_direct_path(fake: FakeLLM) -> None:
    client, _ = make_client(fake, model="hosted_vllm/my-model")
    assert run_batch(client, ["x"]) == ["sub: x"]
    assert fake.requests[0]["body"]["model"] == "my-model"
    assert client.budget.usage.cost_known is False


def test_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    client = ModelClient(ModelConfig("openai/gpt-4o-mini"), ModelConfig("openai/gpt-4o-mini"), Budget())
    route = client.router.direct_route(ModelConfig("openai/gpt-4o-mini"))
    assert route is not None and route.url == "https://api.openai.com/v1/chat/completions"
    assert route.model == "gpt-4o-mini" and route.headers["Authorization"] == f"Bearer {SECRET}"
    local = client.router.direct_route(ModelConfig("openai/m", api_base="http://127.0.0.1:9/v1/"))
    assert local is not None and local.url == "http://127.0.0.1:9/v1/chat/completions"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/custom")
    via_env = client.router.direct_route(ModelConfig("openai/gpt-4o"))
    assert via_env is not None and via_env.url == "http://127.0.0.1:9/custom/chat/completions"
    # Other protocols, and models litellm serves through the Responses API, stay on litellm.
    assert client.router.direct_route(ModelConfig("anthropic/claude-3-5-sonnet-20240620")) is None
    assert client.router.direct_route(ModelConfig("openai/o3-pro")) is None


def test_sessions_are_closed(fake: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:
    """aclose() closes the session; a loop that ends without it (asyncio.run) closes it too."""
    client, _ = make_client(fake)
    gc.collect()  # what earlier tests left for the collector is theirs: only this client's sessions count
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, "asyncio"):
        warnings.simplefilter("always")
        for i in range(3):  # no aclose(): each asyncio.run() ends its loop with the session open
            assert asyncio.run(client.batch([f"a{i}", f"b{i}"])) == [f"sub: a{i}", f"sub: b{i}"]
        assert run_batch(client, ["c"]) == ["sub: c"]
        del client
        gc.collect()
    unclosed = [str(w.message) for w in caught if "nclosed" in str(w.message)]
    assert unclosed == [] and "nclosed" not in caplog.text


# -- the request timeout counts time without progress, not time waiting in a server's queue -------


def one_slot_server(service_s: float) -> tuple[FakeLLM, list[tuple[float, float]]]:
    """A server with one slot, like llama.cpp -np 1: it accepts every connection at once and
    answers requests one at a time, `service_s` each, the rest waiting in its queue without a byte
    sent. Returns the server and the (start, end) of each request's service."""
    slot = threading.Lock()
    served: list[tuple[float, float]] = []

    def sub(prompt: str) -> str:
        with slot:
            start = time.monotonic()
            time.sleep(service_s)
            served.append((start, time.monotonic()))
        return f"done {prompt}"

    return FakeLLM(sub=sub), served


def test_a_request_queued_at_a_busy_server_does_not_time_out() -> None:
    """Six requests at once to a one-slot server serving each in 0.4 s: the last waits ~2 s, twice
    its 1 s timeout, but the server answers the others meanwhile: no timeout, no retry."""
    server, served = one_slot_server(0.4)
    with server as fake:
        client, delays = make_client(fake, request_timeout=1.0)
        prompts = [f"p{i}" for i in range(6)]
        assert run_batch(client, prompts) == [f"done p{i}" for i in range(6)]
        assert len(fake.requests) == 6 and delays == []
    waits = sorted(end for _, end in served)
    assert waits[-1] - waits[0] > 1.5  # the last one really waited longer than its timeout


def test_a_server_that_answers_nothing_times_out_by_its_silence() -> None:
    """The same queue, but the slot is held 3 s: nothing comes back for 1 s, so both requests time
    out after 1 s of silence (the one in service and the one queued), not after 3 s."""
    server, _ = one_slot_server(3.0)
    with server as fake:
        client, _ = make_client(fake, request_timeout=1.0, max_retries=0)
        results = run_batch(client, ["a", "b"])
    # Ended by the silence (not by the total deadline, nor by the server's answer at 3 s): the
    # message says which timeout fired, so no clock is needed here.
    assert all(r.startswith(ERROR) and "nothing received for 1 s" in r for r in results), results


def test_a_trickling_server_ends_at_the_total_deadline() -> None:
    """A byte every 0.2 s is progress, so the 1 s timeout never trips; the total deadline does."""
    with FakeLLM(sub=lambda p: Fault(trickle=0.2, text="slow " * 100)) as fake:

        async def go() -> str:
            http = openai_http.ChatClient()
            try:
                messages = [{"role": "user", "content": "x"}]
                await http.chat(fake.url + "/chat/completions", {}, "m", messages, 1.0, total=1.5)
            except openai_http.RequestTimeout as e:
                return str(e)
            finally:
                await http.aclose()
            return "no timeout"

        assert asyncio.run(go()) == "no complete response within 1.5 s"
