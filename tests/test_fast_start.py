"""A fast start (issue 16, item 6): runs against OpenAI-protocol servers never import litellm.

Root calls take the direct path like sub-calls, model strings are resolved, keys checked and
prices read without litellm (rlmcli/model/openai_models.py, prices.py); what they give must agree
with what litellm gives, which these tests check against litellm itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from typing import Any

import fake_llm
import pytest
from conftest import MODEL, clean_env, popen_rlm
from fake_llm import FakeLLM, Fault, reply

from rlmcli.budget import Budget
from rlmcli.model import openai_models, prices, providers
from rlmcli.model.client import Completion, ModelClient, ModelConfig, load_litellm

ROOT_MESSAGES = [{"role": "system", "content": "system prompt"}, {"role": "user", "content": "question"}]


def imported(importtime_stderr: bytes, module: str) -> bool:
    """Whether `python -X importtime` listed `module` among the imports."""
    lines = importtime_stderr.decode(errors="replace").splitlines()
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == module for line in lines)


@pytest.mark.parametrize("model", ["openai/my-local-model", "hosted_vllm/my-local-model", "gpt-4o-mini"])
def test_a_run_against_an_openai_server_never_imports_litellm(model, rlm_bin, tmp_path, data_file) -> None:
    script = [reply("Look.", "print(llm_query('what is this?'))"), 'FINAL("it is a test")']
    with FakeLLM(root=script) as fake:
        args = ["ask", str(data_file), "What is it?", "-m", model, "--api-base", fake.url]
        args += ["--sandbox", "local"]
        env = clean_env(tmp_path)
        proc = popen_rlm(sys.executable, ["-X", "importtime", rlm_bin, *args], env)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == "it is a test"
    assert [r["kind"] for r in fake.requests] == ["root", "sub", "root"]
    assert {r["body"]["model"] for r in fake.requests} == {model.split("/")[-1]}
    assert imported(err, "rlmcli.model.openai_http")  # the check below reads a real import listing
    assert not imported(err, "litellm")


def test_a_provider_that_needs_litellm_still_gets_it(run_rlm, rlm_bin, tmp_path, data_file) -> None:
    """anthropic/... is not OpenAI's protocol: its key is checked by litellm (so it is imported)."""
    args = [
        "-X",
        "importtime",
        rlm_bin,
        "ask",
        str(data_file),
        "q",
        "-m",
        "anthropic/claude-3-5-haiku-latest",
    ]
    proc = popen_rlm(sys.executable, args, clean_env(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4 and b"ANTHROPIC_API_KEY is not set" in err
    assert imported(err, "litellm")


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("".join(f"line {i}: a note\n" for i in range(40)))
    return path


# -- root calls on the direct path give the Completion litellm gave ----------------------------


def complete(
    fake: FakeLLM,
    model: str,
    through_litellm: bool,
    monkeypatch: pytest.MonkeyPatch,
    messages: list = ROOT_MESSAGES,
) -> Completion:
    config = ModelConfig(model=model, api_base=fake.url)
    client = ModelClient(config, config, Budget())
    if through_litellm:  # the path every root call took before
        monkeypatch.setattr(client.router, "direct_route", lambda cfg: None)

    async def go() -> Completion:
        try:
            return await client.root(messages)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "openai/gpt-4.1", "openai/not-in-the-table"])
def test_root_calls_on_the_direct_path_return_what_litellm_returned(model, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    load_litellm()  # compared with litellm in this process: its import is not part of any latency
    with FakeLLM(root=["the root reply"] * 2, usage=lambda body, text: (1234, 56)) as fake:
        started = time.monotonic()
        direct = complete(fake, model, through_litellm=False, monkeypatch=monkeypatch)
        direct_wall = time.monotonic() - started
        via_litellm = complete(fake, model, through_litellm=True, monkeypatch=monkeypatch)
        bodies = [r["body"] for r in fake.requests]
    assert (direct.text, direct.prompt_tokens, direct.completion_tokens) == ("the root reply", 1234, 56)
    assert (direct.model, direct.usage_estimated) == (model, False)
    assert (via_litellm.text, via_litellm.prompt_tokens, via_litellm.completion_tokens) == (
        direct.text, direct.prompt_tokens, direct.completion_tokens,
    )  # fmt: skip
    if direct.cost_usd is None:
        assert via_litellm.cost_usd is None
    else:
        assert direct.cost_usd > 0 and math.isclose(direct.cost_usd, via_litellm.cost_usd, rel_tol=1e-9)
    assert 0 < direct.latency_s <= direct_wall and via_litellm.latency_s > 0
    # The same request: the model name without its prefix, the messages as they are.
    assert bodies[0]["model"] == bodies[1]["model"] == model.split("/", 1)[1]
    assert bodies[0]["messages"] == bodies[1]["messages"] == ROOT_MESSAGES


def test_a_root_reply_is_never_the_reasoning(monkeypatch) -> None:
    """A reasoning model's draft must not run as the root's reply: an empty content stays empty
    (the loop asks again), on the direct path as on litellm's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    draft = Fault(content_none=True, reasoning='```repl\nprint("draft")\n```')
    with FakeLLM(root=[draft, draft]) as fake:
        assert complete(fake, "openai/gpt-4o-mini", False, monkeypatch).text == ""
        assert complete(fake, "openai/gpt-4o-mini", True, monkeypatch).text == ""


def test_cached_prompt_tokens_are_priced_at_the_cache_rate(monkeypatch) -> None:
    """usage.prompt_tokens_details.cached_tokens, as OpenAI reports it, at the table's cache price."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    with FakeLLM(root=["ok"]) as fake:

        def with_cache(handler_self: Any, body: dict, fault: Fault) -> None:  # noqa: ANN401
            handler_self._send_json(200, {
                "id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10_000, "completion_tokens": 100, "total_tokens": 10_100,
                          "prompt_tokens_details": {"cached_tokens": 8_000}},
            })  # fmt: skip

        monkeypatch.setattr(fake_llm._Handler, "_answer", with_cache)
        long = [ROOT_MESSAGES[0], {"role": "user", "content": "word " * 10_000}]  # ~10K tokens, as reported
        completion = complete(fake, "openai/gpt-4o-mini", False, monkeypatch, long)
    assert (completion.prompt_tokens, completion.usage_estimated) == (10_000, False)
    info = prices.entry("openai/gpt-4o-mini")
    assert info is not None
    expected = (
        2_000 * info["input_cost_per_token"]
        + 8_000 * info["cache_read_input_token_cost"]
        + 100 * info["output_cost_per_token"]
    )
    assert completion.cost_usd == pytest.approx(expected)
    assert info["cache_read_input_token_cost"] < info["input_cost_per_token"]  # the case is a real one


# -- prices and providers without litellm agree with litellm ------------------------------------

POINTS = [(1_000, 500, 0), (300_000, 1_000, 0), (5_000, 100, 4_000), (400_000, 10, 300_000)]


def test_table_prices_match_litellm_over_the_openai_chat_table() -> None:
    """Every OpenAI chat model litellm prices by the token, small and huge prompts (above the
    272K-token tier), with and without cached tokens: the same cost to the last digit."""
    litellm = load_litellm()
    models = [
        name
        for name, info in prices.table().items()
        if isinstance(info, dict) and info.get("litellm_provider") == "openai" and info.get("mode") == "chat"
        and "input_cost_per_token" in info
    ]  # fmt: skip
    assert len(models) > 50
    tiered = 0
    for name in models:
        for prompt, completion, cached in POINTS:
            ours = prices.table_cost(f"openai/{name}", prompt, completion, cached)
            theirs = litellm.cost_per_token(
                model=f"openai/{name}", prompt_tokens=prompt, completion_tokens=completion,
                cache_read_input_tokens=cached,
            )  # fmt: skip
            assert ours is not None, name
            assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15), (name, prompt, cached)
        tiered += any(key.startswith("input_cost_per_token_above_") for key in prices.table()[name])
    assert tiered > 0  # the tiers were exercised
    assert prices.table_cost("openai/not-in-the-table", 10, 10) is None


VARIABLES = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE",
    "OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
)  # fmt: skip
MODELS = [
    ("openai/my-model", None),
    ("openai/my-model", "http://127.0.0.1:9/v1/"),
    ("openai/gpt-4o-mini", None),
    ("gpt-4o-mini", None),
    ("openai/o3-pro", None),  # served by the Responses API: not direct
    ("openai/openai/nested", None),
    ("hosted_vllm/my-model", "http://10.0.0.2:8000/v1"),
    ("hosted_vllm/my-model", None),
]


@pytest.mark.parametrize(("model", "base"), MODELS)
@pytest.mark.parametrize(
    "env",
    [
        {"OPENAI_API_KEY": "sk-test-0123456789"},
        {"OPENAI_API_KEY": ""},  # set but empty: no key
        {"OPENAI_API_KEY": "sk-test-0123456789", "OPENAI_BASE_URL": "http://127.0.0.1:9/custom"},
        {"HOSTED_VLLM_API_KEY": "vllm-key", "HOSTED_VLLM_API_BASE": "http://10.0.0.3:8000/v1"},
    ],
)
def test_routes_keys_and_providers_match_litellms(model, base, env, monkeypatch) -> None:
    """The same route (URL, model name, headers), the same missing key and the same provider,
    whether litellm resolves the model string or openai_models does."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    litellm = load_litellm()
    assert openai_models.resolve(model) is not None  # each of these is known without litellm

    def answer() -> tuple[Any, str | None]:
        cfg = ModelConfig(model, base)
        router = providers.Router(cfg, cfg)
        try:
            outcome: Any = router.direct_route(cfg)
        except Exception as e:  # a missing key: ProviderError, named the same way
            outcome = str(e)
        return outcome, providers.provider_of(model)

    known = answer()
    monkeypatch.setattr(openai_models, "resolve", lambda model: None)
    monkeypatch.setattr(openai_models, "missing_keys", lambda model: None)
    assert known == answer()
    assert known[1] == litellm.get_llm_provider(model=model)[1]


def test_events_of_a_trace_name_each_retry(fake_llm: FakeLLM, run_cli, tmp_path) -> None:
    """Every retry is an event (model, attempt, reason, wait); progress counts retried calls apart
    from failed ones."""
    data = tmp_path / "in.txt"
    data.write_text("some text\n")
    fake_llm.add_root(
        Fault(status=429, retry_after_ms=10),
        reply("Ask.", "print(llm_query_batched(['a', 'b', 'c']))"),
        'FINAL("done")',
    )
    seen: dict[str, int] = {}

    def sub(prompt: str) -> str | Fault:
        seen[prompt] = seen.get(prompt, 0) + 1
        if prompt == "a" and seen[prompt] == 1:
            return Fault(status=503, retry_after_ms=10)
        if prompt == "b":
            return Fault(status=401)  # not retried: a failed call
        return "fine"

    fake_llm.sub = sub
    trace = tmp_path / "trace.jsonl"
    args = ["ask", str(data), "q", "-m", MODEL, "--api-base", fake_llm.url, "--sandbox", "process"]
    ran = run_cli([*args, "--trace", str(trace)])
    assert ran.returncode == 0, ran.stderr.decode()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    retries = [e for e in events if e["event"] == "ModelRetry"]
    assert [(e["role"], e["model"], e["attempt"], e["reason"]) for e in retries] == [
        ("root", MODEL, 1, "429 Too Many Requests"),
        ("sub", MODEL, 1, "503 Service Unavailable"),
    ]
    assert [e["wait_s"] for e in retries] == [0.01, 0.01]  # the server's Retry-After
    assert all(e["parent"] for e in retries)
    assert "model turn failed (429 Too Many Requests); retrying in 0.0s" in ran.stderr.decode()
    last = [e for e in events if e["event"] == "SubcallProgress"][-1]
    assert (last["total"], last["done"], last["failed"], last["retried"]) == (3, 3, 1, 1)
