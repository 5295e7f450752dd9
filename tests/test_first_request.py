"""The first model request does not wait for the tokenizer (issue 16): nothing before it counts
tokens (the first prompt states characters and lines, the context is counted in run.py's
before_start once the request is out, the request's size is bounded by its bytes), and every figure
after it is the true count: ContextLoaded, --json, the REPL's count_tokens, the usage recorded.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import MODEL, ask_args
from fake_llm import FakeLLM, Fault, reply

from rlmcli import prompts, tokens
from rlmcli.budget import Budget, Limits, estimate_prompt_tokens, prompt_tokens_at_most
from rlmcli.context import Context, ContextStats
from rlmcli.model.client import ModelClient, ModelConfig

WAIT_S = 60  # how long the held load waits for the first request (a run that never sends one: a bug)
DENSE = {
    "prose": "The quick brown fox jumps over the lazy dog. " * 40,
    "log": "2015-10-18 18:01:47,978 INFO [main] MRAppMaster: started 0x7f3a9c1e\n" * 30,
    "digits": "".join(f"{i:012d}\n" for i in range(300)),
    "cjk": "日本語のテキストです。한국어 텍스트" * 60,
    "emoji": "👩‍👩‍👧‍👦🏳️‍🌈🧑🏽‍🚀" * 80,
    "base64": "q0/9+Zx7Lw==aB3dE5gH7jK9mN1pR3tV5xZ7" * 40,
    "bytes": bytes(range(256)).decode("latin-1") * 4,
}


@pytest.fixture
def unloaded():
    """No encoding loaded in this process (other tests load it), before and after the test."""
    tokens.reset()
    yield
    tokens.reset()


@pytest.fixture
def held_load(unloaded, monkeypatch):
    """The tokenizer's load held until `first_request` is set (by the fake, when the first chat
    request arrives): a run whose first request waited for the tokenizer would wait WAIT_S here, and
    `waited` says so."""
    first_request = threading.Event()
    waited: list[bool] = []
    real_load = tokens._load

    def load():  # noqa: ANN202
        waited.append(first_request.wait(WAIT_S))
        return real_load()

    monkeypatch.setattr(tokens, "_load", load)
    return first_request, waited


def trace_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_first_request_goes_out_before_the_tokenizer_loads(fake_llm, run_cli, tmp_path, held_load):
    first_request, waited = held_load
    data = tmp_path / "notes.txt"
    text = "".join(f"line {i}: é some text to ask about\n" for i in range(40))
    data.write_text(text, encoding="utf-8")
    seen: list[bool] = []

    def first(body: dict) -> str:
        seen.append(tokens.loaded())
        first_request.set()
        return reply("Count.", "print('TOKENS', count_tokens(context))")

    fake_llm.add_root(first, 'FINAL("ok")')
    trace = tmp_path / "run.jsonl"
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--json", "--trace", str(trace)]))
    assert proc.returncode == 0, proc.stderr.decode()
    assert seen == [False] and waited == [True]  # the load began after the request was out

    body = fake_llm.root_requests[0]["body"]
    first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    assert f"Your context is a file with {len(text):,} total characters (40 lines)." in first_user
    want = tokens.count_text(text).tokens  # what every figure after the first request says
    loaded = [e for e in trace_events(trace) if e["event"] == "ContextLoaded"]
    assert [e["est_tokens"] for e in loaded] == [want]
    assert json.loads(proc.stdout)["context"]["est_tokens"] == want
    # The REPL's count_tokens is calibrated on the true count (the index's chars_per_token).
    assert f"TOKENS {want}" in json.dumps(fake_llm.root_requests[1]["body"])


def test_a_run_whose_first_call_fails_still_records_the_true_count(fake_llm, run_cli, tmp_path, unloaded):
    data = tmp_path / "notes.txt"
    text = "".join(f"line {i}: a note\n" for i in range(40))
    data.write_text(text)
    fake_llm.add_root(Fault(status=401, message="Incorrect API key provided"))
    trace = tmp_path / "run.jsonl"
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--trace", str(trace)]))
    assert proc.returncode == 4, proc.stderr.decode()
    events = trace_events(trace)
    loaded = [e for e in events if e["event"] == "ContextLoaded"]
    assert [e["est_tokens"] for e in loaded] == [tokens.count_text(text).tokens]
    assert events[-1]["event"] == "RunFinished"


def first_messages(text: str, question: str = "What is this?") -> list[dict]:
    """The messages of a first request (as agent.Agent builds them) about `text`."""
    lines = text.count("\n")
    stats = ContextStats(1, len(text.encode()), len(text), lines, None, 0, {})
    context = Context(Path("input.txt"), "file", [], stats, text[:500])
    return [
        {"role": "system", "content": prompts.system_prompt(20_000, citations=True)},
        {"role": "user", "content": prompts.first_message(context, question)},
    ]


@pytest.mark.parametrize("kind", sorted(DENSE))
def test_the_bound_on_a_first_prompt_errs_high(kind):
    text = DENSE[kind]
    for messages in (first_messages(text), first_messages(text, question=text)):  # a dense question too
        assert prompt_tokens_at_most(messages) >= estimate_prompt_tokens(messages)
    texts = [{"role": "user", "content": text}]
    assert prompt_tokens_at_most(texts) >= estimate_prompt_tokens(texts)


def test_the_first_prompt_states_no_tokens_and_needs_no_count():
    """est_tokens is None until counted: first_message never reads it, whole or surveyed."""
    text = "a line of text\n" * 100
    [_, user] = first_messages(text)
    assert user["content"].startswith("Your context is a file with 1,500 total characters (100 lines).")
    stats = ContextStats(1, 10**9, 10**9, 12_345_678, None, 0, {}, estimated=True)
    surveyed = prompts.first_message(Context(Path("big.log"), "file", [], stats, "x"), "q")
    assert surveyed.startswith(
        "Your context is a file of about 1,000,000,000 characters (~12,345,678 lines; estimated from "
        "samples: `len(context)` is exact)."
    )
    assert prompts.first_message(Context(Path("big.log"), "file", [], stats, "x"), "q") == surveyed


def test_a_file_has_no_more_tokens_than_its_bound(tmp_path):
    for kind, text in DENSE.items():
        for size in (1, 2_000):  # counted whole, and on a sample (above tokens.EXACT_CHARS)
            path = tmp_path / f"{kind}-{size}.txt"
            whole = text * size
            path.write_text(whole, encoding="utf-8")
            counted = tokens.count_file(path, len(whole))
            assert counted.estimated == (path.stat().st_size > tokens.EXACT_CHARS)
            assert tokens.most_in_file(path, len(whole)) >= counted.tokens, (kind, size)


def client_for(fake: FakeLLM, limits: Limits | None = None, window: int | None = None) -> ModelClient:
    root = ModelConfig(MODEL, fake.url, max_retries=0)
    root.max_reply_tokens, root.window = 8192, window
    return ModelClient(root, ModelConfig(MODEL, fake.url), Budget(limits or Limits()))


@pytest.mark.parametrize(
    "limits, window, quick",
    [
        (None, None, True),  # no limit to reserve against, no window: the bound changes nothing
        (None, 131_072, True),  # a window the bound leaves the reply cap in
        (Limits(max_tokens=100_000), None, False),  # a reservation under --max-tokens: counted
        (Limits(max_cost=1.0), None, False),  # ... under --max-cost
        (None, 4096, False),  # a small server's window: the bound would shrink max_tokens
    ],
)
def test_the_bound_is_used_only_where_erring_high_is_harmless(limits, window, quick, monkeypatch, unloaded):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    messages = first_messages(DENSE["prose"])
    with FakeLLM() as fake:
        client = client_for(fake, limits, window)
        estimate, was_quick = client._prompt_estimate(client.root_config, messages)
    assert was_quick == quick
    assert estimate == (prompt_tokens_at_most(messages) if quick else estimate_prompt_tokens(messages))


def test_a_missing_usage_is_counted_not_bounded(monkeypatch, unloaded):
    """Usage the provider left out is the prompt's count, never the (high) bound it was sent with."""
    import asyncio

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    messages = first_messages(DENSE["prose"])
    with FakeLLM(root=["the reply"], usage=lambda body, text: None) as fake:
        client = client_for(fake)

        async def call():  # noqa: ANN202
            try:
                return await client.root(messages)
            finally:
                await client.aclose()

        completion = asyncio.run(call())
    assert completion.usage_estimated
    assert completion.prompt_tokens == estimate_prompt_tokens(messages) < prompt_tokens_at_most(messages)


def test_the_confirmation_counts_only_an_input_that_may_pass_its_threshold(tmp_path, capsys):
    from rlmcli.cli.files import confirm_load
    from rlmcli.context import load_context
    from rlmcli.settings import Settings
    from rlmcli.walk import LoadOptions

    data = tmp_path / "notes.txt"
    data.write_text("a line of text\n" * 100)
    context = load_context([str(data)], tmp_path / "work", LoadOptions(), count=False)
    confirm_load(context, Settings(confirm_tokens=2_000), yes=False)  # 1,500 bytes: no more tokens
    assert context.stats.est_tokens is None and capsys.readouterr().err == ""
    confirm_load(context, Settings(confirm_tokens=10), yes=False)  # not a terminal: goes on, says so
    assert context.stats.est_tokens == tokens.count_text(data.read_text()).tokens
    assert (
        f"the input is ~{context.stats.est_tokens:,} tokens, above confirm-tokens (10)"
        in capsys.readouterr().err
    )


def test_a_root_calls_on_sent_once_its_request_is_out_before_its_reply(monkeypatch):
    """ModelClient.root(on_sent=...): the agent writes its held events then, while the model replies
    (issue 16, the gap between iterations). The fake holds its reply until on_sent ran: a client that
    called it only after the reply would leave the fake waiting, and `before_reply` says so."""
    import asyncio

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    sent = threading.Event()
    before_reply: list[bool] = []

    def answer(body: dict) -> str:
        before_reply.append(sent.wait(WAIT_S))
        return "the reply"

    with FakeLLM(root=[answer, "again"]) as fake:
        client = client_for(fake)
        calls: list[int] = []

        async def call():  # noqa: ANN202
            try:
                first = await client.root(first_messages("x"), on_sent=lambda: (calls.append(1), sent.set()))
                second = await client.root(first_messages("y"))  # none given: nothing to call
                return first, second
            finally:
                await client.aclose()

        first, second = asyncio.run(call())
    assert (first.text, second.text) == ("the reply", "again")
    assert before_reply == [True] and calls == [1]
