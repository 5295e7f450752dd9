"""Limits that hold (issue 8, H3-H8): cost, tokens, sub-calls and wall time, against a fake provider.

Runs go through the CLI in this process (Typer's CliRunner), with the local sandbox and real HTTP
to FakeLLM. The provider is hostile where the case calls for it: oversized prompts, huge batches,
a cell that loops on llm_query, usage that is missing or bogus, a body trickled byte by byte.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL, MODEL_PRICE, SENTINEL_KEY
from fake_llm import FakeLLM, Fault, default_usage, reply
from typer.testing import CliRunner

from rlmcli.agent import Agent, Task
from rlmcli.budget import Budget, Limits, checked_usage, estimate_tokens
from rlmcli.cli.app import app
from rlmcli.context import LoadOptions, load_context
from rlmcli.errors import LimitReached
from rlmcli.model.client import ModelClient, ModelConfig, load_litellm
from rlmcli.record.history import History

SUB_COMPLETION = 1000  # tokens the fake bills per sub-call: what makes a batch expensive


@dataclass
class Run:
    status: int
    result: dict  # the --json object
    stderr: str


@pytest.fixture
def rlm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """rlm(fake, *extra) -> Run: `rlm ask input.txt QUESTION --json ...` in this process."""
    for name in [k for k in os.environ if k.startswith(("RLM_", "OPENAI", "LITELLM"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "rlm-home"))  # History() below reads the same one
    (tmp_path / "input.txt").write_text("line one\nline two\n")
    env = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "no-config.toml")}

    def run(fake: FakeLLM, *extra: str, question: str = "What is in there?", price: bool = True) -> Run:
        args = ["ask", "input.txt", question, "--model", MODEL, "--api-base", fake.url, "--sandbox", "local"]
        # The fake is not OpenAI's API: without --price its gpt-4o-mini is priced as unknown.
        args += ["--price", MODEL_PRICE] if price else []
        result = CliRunner().invoke(app, [*args, "--json", *extra], env=env)
        lines = result.stdout.strip().splitlines()
        assert lines, f"no --json output (exit {result.exit_code}): {result.output}"
        return Run(result.exit_code, json.loads(lines[-1]), result.stderr)

    return run


def sub_usage(completion: Any = SUB_COMPLETION):
    """Usage for the fake: as usual for root calls; sub-calls bill `completion` tokens."""

    def usage(body: dict, text: str) -> tuple[Any, Any]:
        prompt, _ = default_usage(body, text)
        return (prompt, completion) if body["messages"][0]["role"] != "system" else default_usage(body, text)

    return usage


def one_call_cost(prompt_tokens: int = 10, completion_tokens: int = SUB_COMPLETION) -> float:
    prompt_cost, completion_cost = load_litellm().cost_per_token(
        model=MODEL, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    return prompt_cost + completion_cost


# -- cost and tokens: estimated and reserved before dispatch -------------------------------------


def test_max_cost_with_a_1000_prompt_batch_overshoots_by_at_most_one_call(rlm) -> None:
    with FakeLLM(usage=sub_usage(), latency=0.05) as fake:
        fake.add_root(
            reply("Fan out.", "r = llm_query_batched([f'p{i}' for i in range(1000)])\nprint(len(r))")
        )
        run = rlm(fake, "--max-cost", "0.01")
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    cost, one = run.result["cost_usd"], one_call_cost()
    dispatched = len(fake.sub_requests)
    print(
        f"\n--max-cost 0.01, 1,000-prompt batch at concurrency 64: spent ${cost:.6f}, "
        f"overshoot ${cost - 0.01:+.6f}, one call ${one:.6f}; {dispatched} of 1,000 sub-calls dispatched"
    )
    assert cost - 0.01 <= one
    assert 0 < dispatched < 1000 and dispatched == run.result["subcalls"]
    assert run.result["usage"]["estimated"] is False and run.result["cost_known"] is True


def test_an_empty_first_sub_reply_does_not_open_the_gate(rlm) -> None:
    """The first sub-call answers empty (0 completion tokens), the rest 1,000 tokens each: the
    calls behind the empty one must not all go out reserving no completion."""
    answered, lock = [0], threading.Lock()

    def sub(prompt: str) -> str:
        with lock:
            answered[0] += 1
            return "" if answered[0] == 1 else "answer " * 100

    def usage(body: dict, text: str) -> tuple[int, int]:
        if body["messages"][0]["role"] == "system":
            return default_usage(body, text)
        return 10, (SUB_COMPLETION if text else 0)

    with FakeLLM(sub=sub, usage=usage, latency=0.05) as fake:
        fake.add_root(reply("Fan out.", "r = llm_query_batched([f'p{i}' for i in range(1000)])"))
        run = rlm(fake, "--max-cost", "0.01")
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    cost, one = run.result["cost_usd"], one_call_cost()
    print(f"\n--max-cost 0.01, empty first sub reply then 1,000-token ones: overshoot ${cost - 0.01:+.6f}")
    assert cost - 0.01 <= one
    assert 0 < len(fake.sub_requests) < 1000


def test_max_tokens_with_a_batch_overshoots_by_at_most_one_call(rlm) -> None:
    with FakeLLM(usage=sub_usage(), latency=0.05) as fake:
        fake.add_root(reply("Fan out.", "r = llm_query_batched([f'p{i}' for i in range(1000)])"))
        run = rlm(fake, "--max-tokens", "30000")
    assert run.status == 3 and run.result["exit_reason"] == "max_tokens"
    total = run.result["usage"]["total_tokens"]
    print(f"\n--max-tokens 30000, 1,000-prompt batch: {total:,} tokens used ({total - 30000:+,})")
    assert total - 30000 <= 10 + SUB_COMPLETION
    assert 0 < len(fake.sub_requests) < 1000


def test_a_root_prompt_over_the_limit_is_refused_before_dispatch(fake_llm: FakeLLM, rlm) -> None:
    fake_llm.add_root("FINAL(never)")
    run = rlm(fake_llm, "--max-tokens", "100")  # the system prompt alone is more
    assert run.status == 3 and run.result["exit_reason"] == "max_tokens"
    assert "the next call needs" in run.result["message"]
    # A question of 2M characters (~500k tokens) would cost ~$0.08: refused under --max-cost 0.01.
    run = rlm(fake_llm, "--max-cost", "0.01", question="Why? " + "x" * 2_000_000)
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    assert fake_llm.requests == [] and run.result["usage"]["total_tokens"] == 0


def test_a_huge_cell_output_cannot_blow_the_next_prompt_past_the_limit(fake_llm: FakeLLM, rlm) -> None:
    fake_llm.add_root(reply("Print a lot.", "print('x' * 400_000)"), "FINAL(never)")
    run = rlm(fake_llm, "--max-tokens", "50000", "--max-output-chars", "1000000")
    assert run.status == 3 and run.result["exit_reason"] == "max_tokens"
    assert len(fake_llm.root_requests) == 1  # the second prompt (~100k tokens) was never sent
    assert run.result["usage"]["total_tokens"] < 50000


# -- failed attempts count: a provider may bill a request that timed out or failed with a 5xx ----


def test_retries_of_a_failing_provider_stop_at_the_cost_limit(fake_llm: FakeLLM, rlm) -> None:
    fake_llm.add_root(*[Fault(status=500, retry_after_ms=1)] * 200)
    run = rlm(fake_llm, "--max-cost", "0.002", "--max-retries", "100")
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    attempts, usage = len(fake_llm.root_requests), run.result["usage"]
    assert 1 < attempts < 101  # not all the retries: each failed attempt was counted
    assert usage["estimated"] is True and usage["completion_tokens"] == 0
    assert usage["prompt_tokens"] > 1000 * attempts  # each attempt's prompt, the system prompt included
    assert 0.002 - 0.002 / attempts < run.result["cost_usd"] <= 0.002


def test_retries_of_timed_out_sub_calls_count_against_the_cost_limit(rlm) -> None:
    with FakeLLM(sub=lambda prompt: Fault(delay=2)) as fake:
        # ~10,000 tokens a try: numbers, which the tokenizer cannot pack as it packs a run of one letter.
        fake.add_root(reply("Ask.", "print(llm_query(' '.join(map(str, range(3600)))))"), "FINAL(done)")
        run = rlm(fake, "--max-cost", "0.008", "--max-retries", "100", "--request-timeout", "0.3")
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    assert 1 < len(fake.sub_requests) < 101 and run.result["usage"]["estimated"] is True


# -- an unpriced model: --max-cost cannot limit it, and says so --------------------------------------


@pytest.mark.parametrize(
    "extra,warned",
    [
        (["--model", "openai/my-local-model", "--max-cost", "1"], ["openai/my-local-model"]),
        # gpt-4o-mini too: served by the fake, not by OpenAI, it is priced as unknown (no --price)
        (["--sub-model", "openai/my-local-model", "--max-cost", "1"], [MODEL, "openai/my-local-model"]),
        (
            ["--allow-model", "openai/other-local-model", "--max-cost", "1"],
            [MODEL, "openai/other-local-model"],
        ),
        (["--max-cost", "1"], [MODEL]),
        (["--max-cost", "1", "--price", MODEL_PRICE], []),  # priced by --price
        (["--model", "openai/my-local-model"], []),  # no cost limit to warn about
    ],
)
def test_an_unpriced_model_under_max_cost_is_warned_about(fake_llm: FakeLLM, rlm, extra, warned) -> None:
    fake_llm.add_root("FINAL(ok)")
    run = rlm(fake_llm, *extra, price=False)
    assert run.status == 0 and run.result["answer"] == "ok"
    for model in warned:
        assert f"warning: --max-cost cannot limit the cost of {model}" in run.stderr
        assert "served from http://127.0.0.1" in run.stderr and "--price IN,OUT" in run.stderr
    assert "--max-tokens" in run.stderr or not warned
    assert run.stderr.count("--max-cost cannot limit") == len(warned)


# -- sub-call count and wall time -----------------------------------------------------------------


def test_a_batch_larger_than_the_subcalls_left_is_refused_at_once(fake_llm: FakeLLM, rlm, tmp_path) -> None:
    trace = tmp_path / "trace.jsonl"
    fake_llm.add_root(reply("All at once.", "r = llm_query_batched(['p'] * 100_000)"), "FINAL(never)")
    run = rlm(fake_llm, "--max-subcalls", "100", "--trace", str(trace))
    assert run.status == 3 and run.result["exit_reason"] == "max_subcalls"
    assert "a batch of 100,000 prompts was refused" in run.result["message"]
    assert len(fake_llm.sub_requests) <= 100 and run.result["subcalls"] == 0
    assert trace.stat().st_size < 5_000_000


def test_a_million_prompt_batch_costs_the_host_nothing(fake_llm: FakeLLM, tmp_path: Path) -> None:
    """The host's side of H5, whatever the REPL server's own caps: no coroutine, no event, no
    request per prompt, when the batch is larger than the sub-calls left."""
    (tmp_path / "in.txt").write_text("x\n")
    context = load_context([str(tmp_path / "in.txt")], tmp_path / "share", LoadOptions(), None)
    budget = Budget(Limits(max_subcalls=100))
    config = ModelConfig(MODEL, api_base=fake_llm.url)
    events: list = []
    agent = Agent(Task("q", context), ModelClient(config, config, budget), None, budget, emit=events.append)  # type: ignore[arg-type]
    with pytest.raises(LimitReached, match="a batch of 1,000,000 prompts was refused"):
        asyncio.run(agent.calls.llm(["p"] * 1_000_000, None))
    assert events == [] and fake_llm.requests == [] and budget.usage.subcalls == 0


# `--timeout 5` with an llm_query loop stopping within 6 s (H4): tests/test_frames.py.


# -- the wall clock on a single request: a body trickled byte by byte (H8) ------------------------


def test_a_trickled_root_body_ends_at_the_request_timeout(fake_llm: FakeLLM, rlm) -> None:
    # --request-timeout bounds the time without progress: a byte every 3 s is too slow for 1 s. (A
    # faster trickle ends at the request's total deadline: tests/test_openai_http.py.)
    fake_llm.add_root(Fault(trickle=3, text="FINAL(" + "slow " * 100 + ")"))  # ~30 min to send
    run = rlm(fake_llm, "--request-timeout", "1", "--max-retries", "0")
    assert run.status == 4 and run.result["exit_reason"] == "provider_error"
    assert "nothing received for 1 s" in run.result["message"]


def test_a_trickled_root_body_ends_at_the_run_timeout(fake_llm: FakeLLM, rlm) -> None:
    fake_llm.add_root(Fault(trickle=0.5, text="FINAL(" + "slow " * 100 + ")"))
    run = rlm(fake_llm, "--timeout", "2", "--request-timeout", "60")
    assert run.status == 3 and run.result["exit_reason"] == "timeout"


def test_a_trickled_sub_call_is_an_error_in_the_cell(rlm) -> None:
    with FakeLLM(sub=lambda p: Fault(trickle=3, text="slow " * 100)) as fake:
        fake.add_root(reply("Ask.", "print(llm_query('x'))"), "FINAL(done)")
        run = rlm(fake, "--request-timeout", "1", "--max-retries", "0")
    assert run.status == 0
    shown = fake.root_requests[1]["body"]["messages"][-1]["content"]
    assert "[llm_query error:" in shown and "nothing received for 1 s" in shown


# -- usage from the provider is checked, not trusted (H7) -----------------------------------------

BOGUS = {
    "missing": None,
    "negative": (-1_000_000, -5),
    "huge": (1e300, 1e300),
    "nan": (math.nan, math.nan),
    "text": ("12", "many"),
}


@pytest.mark.parametrize("case", BOGUS)
def test_bogus_sub_call_usage_is_estimated(rlm, case: str) -> None:
    counts = BOGUS[case]
    with FakeLLM(
        usage=lambda body, text: counts if body["messages"][0]["role"] != "system" else (900, 20)
    ) as fake:
        fake.add_root(reply("Ask.", "print(llm_query_batched(['a', 'b', 'c']))"), "FINAL(done)")
        run = rlm(fake)
    assert run.status == 0 and run.result["answer"] == "done"
    usage = run.result["usage"]
    assert usage["estimated"] is True and run.result["cost_known"] is True
    # Root calls as billed (2 x 920), plus three small estimated sub-calls.
    assert 2 * 920 < usage["total_tokens"] < 2 * 920 + 100
    assert 0 < run.result["cost_usd"] < 0.01
    [row] = History().recent()
    assert row.exit_reason == "final" and row.prompt_tokens == usage["prompt_tokens"]


@pytest.mark.parametrize("case", ["missing", "negative"])
def test_bogus_sub_call_usage_cannot_turn_the_cost_limit_off(rlm, case: str) -> None:
    counts = BOGUS[case]
    with FakeLLM(
        usage=lambda body, text: counts if body["messages"][0]["role"] != "system" else None
    ) as fake:
        fake.add_root(reply("Fan out.", "r = llm_query_batched([f'p{i}' * 50 for i in range(1000)])"))
        run = rlm(fake, "--max-cost", "0.0005")
    assert run.status == 3 and run.result["exit_reason"] == "max_cost"
    assert run.result["usage"]["estimated"] is True
    assert 0 < run.result["cost_usd"] <= 0.0005 + one_call_cost(100, 10)
    assert len(fake.sub_requests) < 1000


# "huge" and "nan": litellm refused such a response ("Invalid response object", exit 4); root calls
# to an OpenAI-compatible server now take the direct path, which keeps the reply and estimates.
@pytest.mark.parametrize("case", ["missing", "negative", "zero", "tiny", "huge", "nan"])
def test_bogus_root_usage_is_estimated_and_priced(fake_llm: FakeLLM, rlm, case: str) -> None:
    fake_llm.usage = lambda body, text: {"zero": (0, 0), "tiny": (1, 1)}.get(case, BOGUS.get(case))
    fake_llm.add_root("FINAL(done)")
    run = rlm(fake_llm)
    assert run.status == 0 and run.result["usage"]["estimated"] is True
    assert run.result["usage"]["prompt_tokens"] > 1000  # the system prompt, as estimated
    assert run.result["cost_known"] is True and run.result["cost_usd"] > 0


def test_checked_usage() -> None:
    assert checked_usage(120, 30, 100, "reply") == (120, 30, False)
    assert checked_usage(120.0, 30, 100, "reply") == (120, 30, False)  # a whole float is a count
    # A missing completion count is the reply's tokens (o200k_base: 5 for 40 "x"s).
    reply_tokens = estimate_tokens("x" * 40)
    assert checked_usage(None, None, 100, "x" * 40) == (100, reply_tokens, True) and reply_tokens == 5
    assert checked_usage(0, 0, 100, "") == (100, 0, True)  # no prompt is free
    assert checked_usage(0, 0, 0, "") == (0, 0, False)
    for bad in (-1, 1.5, math.nan, math.inf, 1e300, True, "12", [1], 10_000_001):
        assert checked_usage(bad, bad, 100, "abcd") == (100, 1, True), bad
    assert checked_usage(100 * 100 + 1000, 5, 100, "a")[2] is False
    assert checked_usage(100 * 100 + 1001, 5, 100, "a") == (100, 5, True)  # 100x the estimate: bogus
    assert checked_usage(1, 5, 1101, "a") == (1101, 5, True)  # and so is a hundredth of it
    assert checked_usage(2, 5, 1100, "a")[2] is False
    assert checked_usage(5, 50_000, 5, "ok")[:2] == (5, 50_000)  # hidden reasoning tokens are fine
