"""Replies that were cut, and prices of local servers (issue 16, items 3 and 4).

Every root call and sub-call carries a max_tokens (--max-reply-tokens, --max-sub-reply-tokens),
less where a window known for sure leaves less; a root reply the server cut there
(finish_reason "length") is reported to the model, and the block it was writing is not run; a very
long reply is kept shortened in the history. A model served from a base URL that is not its
provider's own is priced as unknown unless --price gives its price.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MODEL, MODEL_PRICE
from fake_llm import Fault, LocalServer, reply

from rlmcli import compact
from rlmcli.model import providers
from rlmcli.reply import parse


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("alpha\n" * 50)
    return path


def ask(fake, data: Path, *extra: str) -> list[str]:
    return [
        "ask",
        str(data),
        "What is there?",
        "-m",
        MODEL,
        "--api-base",
        fake.url,
        "--sandbox",
        "local",
        *extra,
    ]


def last_user(request: dict) -> str:
    return [m for m in request["body"]["messages"] if m["role"] == "user"][-1]["content"]


# -- max_tokens ---------------------------------------------------------------------------------


def test_root_and_sub_calls_carry_max_tokens(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(llm_query('hi'))"), "FINAL(done)")
    ran = run_cli(ask(fake_llm, data))
    assert ran.returncode == 0, ran.stderr.decode()
    assert [r["body"]["max_tokens"] for r in fake_llm.root_requests] == [8192, 8192]
    assert [r["body"]["max_tokens"] for r in fake_llm.sub_requests] == [4096]


def test_the_flags_set_max_tokens(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(llm_query('hi'))"), "FINAL(done)")
    ran = run_cli(ask(fake_llm, data, "--max-reply-tokens", "1000", "--max-sub-reply-tokens", "300"))
    assert ran.returncode == 0, ran.stderr.decode()
    assert fake_llm.root_requests[0]["body"]["max_tokens"] == 1000
    assert fake_llm.sub_requests[0]["body"]["max_tokens"] == 300


def test_a_known_window_caps_max_tokens_to_what_the_prompt_leaves(fake_llm, run_cli, data):
    fake_llm.local = LocalServer("llama.cpp", slots=2, window=6000)  # the root prompt is ~2.5K tokens
    fake_llm.add_root("FINAL(done)")
    ran = run_cli(ask(fake_llm, data))
    assert ran.returncode == 0, ran.stderr.decode()
    sent = fake_llm.root_requests[0]["body"]["max_tokens"]
    assert 256 <= sent <= 6000 - 1500  # not 8192: the window holds the prompt (~2K tokens) and what is left


def test_openai_gets_max_completion_tokens_and_reasoning_models_no_cap():
    cfg = providers.ModelConfig("openai/gpt-4o-mini", max_reply_tokens=500)
    assert providers.reply_params(cfg, "https://api.openai.com/v1/chat/completions", 10) == {
        "max_completion_tokens": 500
    }
    assert providers.reply_params(cfg, "http://127.0.0.1:8080/v1/chat/completions", 10) == {"max_tokens": 500}
    # Reasoning counts in max_tokens: at the provider's own API the provider caps the reply.
    assert providers.max_reply_tokens("root", None, "openai/gpt-5-mini", None) is None
    assert providers.max_reply_tokens("root", None, "openai/gpt-5-mini", "http://127.0.0.1:1/v1") == 8192
    assert providers.max_reply_tokens("sub", 700, "openai/gpt-5-mini", None) == 700


# -- a root reply cut at max_tokens --------------------------------------------------------------


def test_a_cut_reply_runs_nothing_of_its_unfinished_block_and_the_model_is_told(fake_llm, run_cli, data):
    cut = "Let me look.\n```repl\nprint('first ran')\n```\nNow more:\n```repl\nprint('second ran')\nx = ["
    fake_llm.add_root(Fault(text=cut, finish_reason="length"), "FINAL(done)")
    ran = run_cli(ask(fake_llm, data))
    assert ran.returncode == 0, ran.stderr.decode()
    told = last_user(fake_llm.root_requests[1])
    assert "first ran" in told and "second ran" not in told
    assert "Your last reply was cut off: it reached its length limit (max_tokens)" in told
    assert "its last ```repl``` block was unfinished and was not run" in told
    assert "no ```repl``` block" not in told  # not the "you wrote no code" nudge


def test_a_cut_reply_with_no_block_gets_the_cut_note_not_the_no_code_nudge(fake_llm, run_cli, data):
    fake_llm.add_root(Fault(text="I will now explain at length " * 50, finish_reason="length"), "FINAL(done)")
    ran = run_cli(ask(fake_llm, data))
    assert ran.returncode == 0, ran.stderr.decode()
    told = last_user(fake_llm.root_requests[1])
    assert "was cut off" in told and "no ```repl``` block" not in told


def test_an_unfinished_final_in_a_cut_reply_is_not_the_answer():
    blocks, final, note = compact.cut_reply(parse("Done.\nFINAL(The answer is that the ser"))
    assert final is None and "FINAL it ended with was unfinished" in note
    blocks, final, note = compact.cut_reply(parse("```repl\nx = 1\n```\nFINAL(x is 1)"))
    assert final is not None and final.value == "x is 1"


def test_a_very_long_reply_is_kept_shortened_in_the_history(fake_llm, run_cli, data):
    long = "Thinking. " * 10_000 + "\n```repl\nprint('ran')\n```"  # 100K characters
    fake_llm.add_root(long, "FINAL(done)")
    ran = run_cli(ask(fake_llm, data))
    assert ran.returncode == 0, ran.stderr.decode()
    kept = [m for m in fake_llm.root_requests[1]["body"]["messages"] if m["role"] == "assistant"][-1][
        "content"
    ]
    assert len(kept) <= compact.REPLY_KEEP_CHARS + 100 and "characters of this reply not kept" in kept
    assert kept.endswith("print('ran')\n```") and "ran" in last_user(fake_llm.root_requests[1])


# -- prices of a model served elsewhere ---------------------------------------------------------


def test_a_known_model_from_a_local_server_is_priced_as_unknown(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(llm_query('hi'))"), "FINAL(done)")
    ran = run_cli(ask(fake_llm, data, "--json"))
    assert ran.returncode == 0, ran.stderr.decode()
    result = json.loads(ran.stdout)
    assert result["cost_usd"] is None and result["usage"]["prompt_tokens"] > 0


def test_price_gives_it_a_price(fake_llm, run_cli, data):
    fake_llm.add_root("FINAL(done)")
    ran = run_cli(ask(fake_llm, data, "--json", "--price", "1.5,3"))
    assert ran.returncode == 0, ran.stderr.decode()
    result = json.loads(ran.stdout)
    usage = result["usage"]
    expected = (1.5 * usage["prompt_tokens"] + 3 * usage["completion_tokens"]) / 1e6
    assert usage["prompt_tokens"] > 1000
    assert result["cost_usd"] == pytest.approx(expected, abs=1e-6)  # printed to 6 places


def test_token_budgets_still_work_without_a_price(fake_llm, run_cli, data):
    fake_llm.add_root(*[reply("", "print(1)")] * 5)
    ran = run_cli(ask(fake_llm, data, "--json", "--max-tokens", "5000"))
    result = json.loads(ran.stdout)
    assert ran.returncode == 3 and result["exit_reason"] == "max_tokens" and result["cost_usd"] is None


@pytest.mark.parametrize(
    "model,base,table",
    [
        ("openai/gpt-4o-mini", None, True),
        ("openai/gpt-4o-mini", "https://api.openai.com/v1", True),
        ("openai/gpt-4o-mini", "http://127.0.0.1:8080/v1", False),
        ("anthropic/claude-sonnet-4-5", "https://my-proxy.example.com", False),
        ("azure/gpt-4o", "https://me.openai.azure.com", True),  # a deployment: its endpoint is the user's
    ],
)
def test_which_bases_the_table_prices(model, base, table):
    assert providers.table_priced(model, base) is table


def test_a_bad_price_is_a_usage_error(fake_llm, run_cli, data):
    ran = run_cli(ask(fake_llm, data, "--price", "cheap"))
    assert ran.returncode == 2 and "--price must be two numbers" in ran.stderr.decode()
    assert MODEL_PRICE.count(",") == 1
