"""The fake model server speaks enough OpenAI for the real openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from fake_llm import FakeLLM, Fault, reply

SYSTEM = {"role": "system", "content": "you are the root model"}


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def client(fake: FakeLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url, api_key="x", max_retries=0)


def root_call(fake: FakeLLM, question: str = "q") -> str | None:
    resp = client(fake).chat.completions.create(
        model="m", messages=[SYSTEM, {"role": "user", "content": question}]
    )
    return resp.choices[0].message.content


def test_root_script_then_exhausted(fake: FakeLLM) -> None:
    fake.add_root("first", lambda body: f"echo {body['messages'][-1]['content']}")
    assert root_call(fake) == "first"
    assert root_call(fake, "hello") == "echo hello"
    with pytest.raises(openai.InternalServerError, match="root script exhausted"):
        root_call(fake)
    assert len(fake.root_requests) == 3 and fake.sub_requests == []


def test_sub_calls_and_usage(fake: FakeLLM) -> None:
    resp = client(fake).chat.completions.create(
        model="openai/whatever", messages=[{"role": "user", "content": "x" * 100}]
    )
    assert resp.choices[0].message.content == "sub: " + "x" * 50
    assert resp.model == "openai/whatever"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (25, 13)
    assert resp.usage.total_tokens == 38
    [req] = fake.sub_requests
    assert req["kind"] == "sub" and json.loads(req["raw"]) == req["body"]
    assert req["headers"]["authorization"] == "Bearer x"
    assert fake.root_requests == []


def test_custom_sub_and_usage() -> None:
    with FakeLLM(sub=lambda p: p.upper(), usage=lambda body, text: (7, 3)) as fake:
        resp = client(fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "abc"}])
        assert resp.choices[0].message.content == "ABC"
        assert resp.usage is not None and resp.usage.prompt_tokens == 7


def test_rate_limit_fault_headers(fake: FakeLLM) -> None:
    fake.add_root(Fault(status=429, retry_after_ms=1500), "ok")
    with pytest.raises(openai.RateLimitError) as info:
        root_call(fake)
    headers = info.value.response.headers
    assert headers["retry-after-ms"] == "1500" and headers["retry-after"] == "2"
    assert info.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert root_call(fake) == "ok"


def test_error_statuses(fake: FakeLLM) -> None:
    fake.add_root(Fault(status=500), Fault(status=401))
    with pytest.raises(openai.InternalServerError):
        root_call(fake)
    with pytest.raises(openai.AuthenticationError):
        root_call(fake)


def test_sub_fault() -> None:
    with FakeLLM(sub=lambda p: Fault(status=400) if "bad" in p else "fine") as fake:
        c = client(fake)
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "bad"}])
        ok = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "good"}])
        assert ok.choices[0].message.content == "fine"


def test_content_none_with_reasoning(fake: FakeLLM) -> None:
    fake.add_root(Fault(content_none=True, reasoning="thinking out loud"))
    resp = client(fake).chat.completions.create(model="m", messages=[SYSTEM])
    message = resp.choices[0].message
    assert message.content is None
    assert message.model_extra is not None and message.model_extra["reasoning_content"] == "thinking out loud"


def test_garbage_body(fake: FakeLLM) -> None:
    fake.add_root(Fault(garbage=True))
    with pytest.raises(ValueError):  # the openai SDK lets the JSONDecodeError through
        root_call(fake)


def test_stream_is_sse(fake: FakeLLM) -> None:
    fake.add_root("streamed")
    chunks = list(client(fake).chat.completions.create(model="m", messages=[SYSTEM], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed"


def test_models_endpoint(fake: FakeLLM) -> None:
    assert [m.id for m in client(fake).models.list()] == ["fake-model"]


def test_reply_helper() -> None:
    assert reply("look", "print(1)") == "look\n```repl\nprint(1)\n```"
    assert reply("", "x = 2") == "```repl\nx = 2\n```"
    assert reply("just prose") == "just prose"


def test_64_concurrent_requests_with_latency() -> None:
    with FakeLLM(latency=0.3) as fake:
        c = openai.OpenAI(base_url=fake.url, api_key="x", max_retries=0, timeout=30)

        def call(i: int) -> str | None:
            resp = c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"p{i}"}])
            return resp.choices[0].message.content

        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(call, range(64)))
        assert results == [f"sub: p{i}" for i in range(64)]
        assert len(fake.sub_requests) == 64
