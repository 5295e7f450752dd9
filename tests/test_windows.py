"""Context windows (issue 10, items 3 and 4): the sub-call capacity the system prompt states follows
the sub model's window (--sub-window, else litellm's table); a sub-call prompt beyond that window
never reaches the provider; a long run compacts older cell outputs so no root request passes the root
model's window (--root-window); and every user turn says "Turn i of N" and what is left of the budget.

The end-to-end tests run `rlm ask` in process against the fake model server and look at what the
server received. Tokens are counted as the host counts them: characters / 4 per message, plus a few
per message (budget.estimate_prompt_tokens).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODEL, REPO, ask_args
from fake_llm import reply

from rlmcli import compact, turns, windows
from rlmcli.budget import Budget, Limits, estimate_prompt_tokens
from rlmcli.compact import HEAD_CHARS, TRIGGER

CAPACITY = re.compile(r"can handle around ([\d,]+) characters")
MARKER = re.compile(r"\[output compacted: [\d,]+ of [\d,]+ chars dropped\]")


def request_tokens(request: dict) -> int:
    return estimate_prompt_tokens(request["body"]["messages"])


def system_of(request: dict) -> str:
    return request["body"]["messages"][0]["content"]


def user_messages(request: dict) -> list[str]:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "user"]


def capacity(request: dict) -> int:
    found = CAPACITY.search(system_of(request))
    assert found, system_of(request)
    return int(found.group(1).replace(",", ""))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("alpha beta gamma\n" * 200)  # larger than the first message's prefix
    return path


# -- sub-calls and the sub model's window ------------------------------------------------------

# Texts made the same way in the sandbox (the cell defines these functions) and here: prose (~5
# characters a token) and numbers (dense, ~2.5), so sizes in tokens follow from the host's counter.
TEXTS = """
WORDS = "the report says our service was slow after the last deploy so we read every log for errors".split()


def prose(n, seed=0):
    out, size, i = [], 0, seed
    while size < n:
        out.append(WORDS[(i * 7 + i // 5) % len(WORDS)])
        size, i = size + len(out[-1]) + 1, i + 1
    return " ".join(out)[:n]


def numbers(n, seed=0):
    out, size, j = [], 0, 0
    while size < n:
        out.append(str((j * 7919 + seed * 31) % 100003))
        size, j = size + len(out[-1]) + 1, j + 1
    return " ".join(out)[:n]
"""
made: dict = {}
exec(TEXTS, made)
prose, numbers = made["prose"], made["numbers"]
BATCH = ["prose(1_000)", "prose(20_000)", "numbers(20_000)", "prose(60_000)", "numbers(60_000)"]


def tokens_of(prompt: str) -> int:
    return estimate_prompt_tokens([{"role": "user", "content": prompt}])


def test_no_subcall_prompt_over_the_sub_window_reaches_the_server(fake_llm, run_cli, data):
    """--sub-window 8192: the prompts of a batch that fit are sent, the others get an error string
    in their slot (the batch goes on), and so does an oversized llm_query."""
    prompts = [eval(expression, made) for expression in BATCH]
    sizes = [tokens_of(p) for p in prompts]
    small = {k for k, n in enumerate(sizes) if n <= 4096}
    big = {k for k, n in enumerate(sizes) if n > 8192}
    assert len(small) >= 2 and len(big) >= 2, sizes  # the test's own premise, by the host's counter
    single = prose(200_000)
    assert tokens_of(single) > 8192
    code = TEXTS + (
        f"answers = llm_query_batched([{', '.join(BATCH)}])\n"
        "for k, a in enumerate(answers):\n"
        "    print(k, a[:400])\n"
        "print('single:', llm_query(prose(200_000))[:400])"
    )
    fake_llm.add_root(reply("", code), "FINAL(checked the sizes)")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--sub-window", "8192"]))
    assert (proc.returncode, proc.stdout.decode()) == (0, "checked the sizes\n"), proc.stderr.decode()

    subs = fake_llm.sub_requests
    assert all(request_tokens(r) <= 8192 for r in subs), [request_tokens(r) for r in subs]
    assert all(len(user_messages(r)[-1]) / 4 <= 8192 for r in subs)
    sent = [user_messages(r)[-1] for r in subs]
    assert {prompts[k] for k in small} <= set(sent) <= set(prompts)  # the large ones: no request spent
    assert not {prompts[k] for k in big} & set(sent)

    told = user_messages(fake_llm.root_requests[1])[-1]
    lines = {line.split(" ", 1)[0]: line for line in told.splitlines() if line[:1].isdigit()}
    for k in small:
        assert lines[str(k)] == f"{k} sub: {prompts[k][:50]}"
    for k in big:
        assert "[llm_query error:" in lines[str(k)] and "window: 8,192 tokens" in lines[str(k)]
        assert f"({len(prompts[k]):,} characters)" in lines[str(k)] and "nothing was sent" in lines[str(k)]
    said = next(line for line in told.splitlines() if line.startswith("single:"))
    assert "[llm_query error:" in said and "(200,000 characters)" in said


def test_a_refusal_suggests_a_size_that_fits_that_kind_of_text():
    window = windows.Window(8192, "flag")
    for text in (prose(100_000), numbers(100_000)):
        error = windows.subcall_too_large(text, window)
        assert error is not None
        suggested = int(re.search(r"at most ~([\d,]+) characters", error).group(1).replace(",", ""))
        assert windows.subcall_too_large(text[:suggested], window) is None
    assert windows.subcall_too_large(prose(window.capacity_chars), window) is None


def test_the_stated_capacity_follows_the_sub_window_and_fits_it(fake_llm, run_cli, data):
    """The system prompt's "can handle around N characters" comes from --sub-window (not from the
    root's window), and a prompt of N characters (of prose) is indeed sent."""

    def fill_to_capacity(body: dict) -> str:
        n = capacity({"body": body})
        return reply("", TEXTS + f"print(llm_query(prose({n}))[:20])")

    fake_llm.add_root(fill_to_capacity, "FINAL(filled)")
    args = ask_args(fake_llm, str(data), extra=["--sub-window", "8192", "--root-window", "200000"])
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr.decode()
    stated = capacity(fake_llm.root_requests[0])
    assert 8192 * 2 <= stated <= 8192 * 4  # chars of about 4 per token, less room for the reply
    (sub,) = fake_llm.sub_requests
    assert user_messages(sub)[-1] == prose(stated) and request_tokens(sub) <= 8192

    fake_llm.add_root(reply("", "print(1)"), "FINAL(again)")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--sub-window", "32768"]))
    assert proc.returncode == 0, proc.stderr.decode()
    assert 4 * stated <= capacity(fake_llm.root_requests[-1]) <= 32768 * 4


def test_without_sub_window_the_capacity_comes_from_litellms_table(fake_llm, run_cli, data):
    """gpt-4o-mini reads 128,000 tokens (litellm's table): the prompt says so in characters."""
    fake_llm.add_root(reply("", "print(1)"), "FINAL(ok)")
    proc = run_cli(ask_args(fake_llm, str(data)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert 100_000 * 4 <= capacity(fake_llm.root_requests[0]) <= 128_000 * 4


def test_a_window_too_small_to_be_one_is_a_usage_error(fake_llm, run_cli, data, tmp_path):
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--sub-window", "10"]))
    assert proc.returncode == 2 and b"--sub-window must be a whole number >= 1024" in proc.stderr
    assert fake_llm.requests == []
    config = tmp_path / "config.toml"
    config.write_text("sub-window = 8192\n")
    fake_llm.add_root(reply("", "print(1)"), "FINAL(ok)")
    proc = run_cli(ask_args(fake_llm, str(data)), env={"RLM_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert capacity(fake_llm.root_requests[0]) <= 8192 * 4


# -- the root history and the root model's window ----------------------------------------------


def cell(i: int) -> str:
    """Turn i's code: it prints ~20,000 characters of prose (about 4,000 tokens); the first turn
    defines prose() in the REPL, where it stays for the others."""
    return reply("", (TEXTS if i == 1 else "") + f"print('{i:02d} ' + prose(19_900, seed={i}))")


def output(i: int) -> str:
    return f"{i:02d} " + prose(19_900, seed=i)


def kind(message: str) -> str:
    """What compaction left of a user message's output: all of it, a head and its size, or its size."""
    found = MARKER.search(message)
    return "whole" if not found else "size" if f"REPL output:\n{found.group(0)}" in message else "head"


def test_a_40_turn_run_stays_inside_a_32k_root_window(fake_llm, run_cli, data, tmp_path):
    """Each of 39 turns prints ~20,000 characters (40 turns would be ~160K tokens): the run ends with
    its answer on turn 40, no root request passes 32K tokens, and the trace says when and how much
    was compacted."""
    fake_llm.add_root(*[cell(i) for i in range(1, 40)], "FINAL(forty turns done)")
    trace = tmp_path / "trace.jsonl"
    extra = ["--max-iterations", "40", "--root-window", "32768", "--trace", str(trace)]
    proc = run_cli(ask_args(fake_llm, str(data), extra=extra))
    assert (proc.returncode, proc.stdout.decode()) == (0, "forty turns done\n"), proc.stderr.decode()

    roots = fake_llm.root_requests
    assert len(roots) == 40
    sizes = [request_tokens(r) for r in roots]
    assert max(sizes) <= 32768, sizes
    assert sum(tokens_of(output(i)) for i in range(1, 40)) > 4 * 32768  # it could not have fitted whole
    last = roots[-1]["body"]["messages"]
    assert output(39) in last[-1]["content"] and output(38) in last[-3]["content"]  # the latest turns
    # Older outputs: the oldest may keep only their sizes, newer ones a head too, the latest are whole.
    kinds = [kind(m["content"]) for m in last[3:] if m["role"] == "user"]
    assert kinds == sorted(kinds, key=["size", "head", "whole"].index), kinds
    assert kinds.count("head") > 0 and kinds[-2:] == ["whole", "whole"], kinds
    k = kinds.index("head")  # the oldest output that kept its head: cell k + 1's
    head = f"REPL output:\n{output(k + 1)[:HEAD_CHARS]}\n[output compacted: "
    assert head in last[3 + 2 * k]["content"]
    # The code of every turn is still there.
    assert [m["content"] for m in last if m["role"] == "assistant"] == [cell(i) for i in range(1, 40)]

    events = [json.loads(line) for line in trace.read_text().splitlines()]
    compactions = [e for e in events if e["event"] == "HistoryCompacted"]
    assert compactions, "the trace must say the history was compacted"
    assert all(e["window_tokens"] == 32768 and e["after_tokens"] < e["before_tokens"] for e in compactions)
    assert all(e["messages"] >= 1 and e["chars_dropped"] > 0 for e in compactions)
    assert events[-1]["event"] == "RunFinished" and events[-1]["exit_reason"] == "final"


# -- the compaction function itself (limits in proportion to the history, whatever the counter) --


def history(turns_: int, output_chars: int = 20_000) -> list[dict]:
    messages = [{"role": "system", "content": prose(6_000)}, {"role": "user", "content": prose(2_000, 1)}]
    for i in range(turns_):
        messages.append({"role": "assistant", "content": f"```repl\nprint({i})\n```"})
        body = f"{i:03d}" + prose(output_chars - 3, seed=i)
        messages.append({"role": "user", "content": f"Turn {i + 2} of 99.\n\nREPL output:\n{body}\n\nGo on."})
    return messages


def test_a_history_under_the_trigger_is_left_alone():
    messages = history(2)
    assert compact.compact(messages, int(estimate_prompt_tokens(messages) / TRIGGER) + 10) is None


def test_older_outputs_are_cut_to_a_head_and_their_size_the_rest_stays_whole():
    messages = history(12)
    snapshot = json.dumps(messages)
    limit = estimate_prompt_tokens(messages)  # past the trigger; cutting some outputs reaches TARGET
    done = compact.compact(messages, limit)
    assert done is not None
    assert json.dumps(messages) == snapshot  # pure: the input is not changed
    out = done.messages
    assert len(out) == len(messages)
    assert done.after_tokens == estimate_prompt_tokens(out) <= limit * compact.TARGET
    assert done.before_tokens == estimate_prompt_tokens(messages) > done.after_tokens
    # System, first message, every assistant message and the latest two turns: the same objects.
    kept = [0, 1, *range(2, len(out), 2), len(out) - 3, len(out) - 1]
    assert all(out[i] is messages[i] for i in kept)
    cut = [i for i in range(len(out)) if out[i] is not messages[i]]
    assert cut and done.compacted == len(cut) and all(out[i]["role"] == "user" for i in cut)
    assert cut == list(range(3, 3 + 2 * len(cut), 2)) and len(cut) < 10  # the oldest first, not all
    first = out[3]["content"]
    assert first.startswith("Turn 2 of 99.\n\nREPL output:\n000" + prose(HEAD_CHARS - 3, seed=0))
    assert first.endswith(f"[output compacted: {20_000 + 8 - HEAD_CHARS:,} of {20_000 + 8:,} chars dropped]")
    assert done.chars_dropped == sum(len(messages[i]["content"]) - len(out[i]["content"]) for i in cut)


def test_a_long_history_keeps_only_the_sizes_of_the_oldest_outputs():
    messages = history(60)
    # Heads alone (5% of each output) would pass the trigger: the oldest lose theirs too.
    limit = estimate_prompt_tokens(messages) // 10
    done = compact.compact(messages, limit)
    assert done is not None and done.after_tokens <= limit * TRIGGER
    kinds = [kind(m["content"]) for m in done.messages[3:] if m["role"] == "user"]
    assert kinds == ["size"] * kinds.count("size") + ["head"] * kinds.count("head") + ["whole"] * 2, kinds
    assert kinds.count("size") > 0 and kinds.count("head") > 0
    oldest = done.messages[3]["content"]
    assert oldest == "Turn 2 of 99.\n\nREPL output:\n[output compacted: 20,008 of 20,008 chars dropped]"
    # Compacting again keeps counting from the original size.
    again = compact.compact_text(compact.compact_text(messages[3]["content"], HEAD_CHARS), 0)
    assert again == oldest


def test_the_latest_turns_are_cut_only_when_nothing_else_fits():
    messages = history(2, output_chars=60_000)  # two turns, no older ones
    limit = estimate_prompt_tokens(messages) * 6 // 10
    done = compact.compact(messages, limit)
    assert done is not None and done.after_tokens <= limit
    assert done.messages[-1] is messages[-1]  # the newest message stays whole: cutting the other sufficed
    assert kind(done.messages[3]["content"]) == "head"


def test_each_output_of_a_message_is_cut_apart():
    text = "Turn 3 of 9.\n\nREPL output (block 1 of 2):\n" + "a" * 5000 + "\nREPL output (block 2 of 2):\n"
    text += "b" * 5000 + "\n\nGo on."
    cut = compact.compact_text(text, 100)
    assert cut.count("[output compacted:") == 2
    assert "REPL output (block 1 of 2):\n" + "a" * 100 + "\n[output compacted:" in cut
    assert "REPL output (block 2 of 2):\n" + "b" * 100 + "\n[output compacted:" in cut
    assert cut.startswith("Turn 3 of 9.\n\n") and len(cut) < 500


# -- Turn i of N and the budget left -----------------------------------------------------------

TURN_AND_BUDGET = re.compile(
    r"^Turn 2 of 5\. Budget left: \$([\d.]+) of \$0\.0100, ([\d,]+) tokens, 3 sub-calls, (\d+) s\.\n"
)


def test_each_user_turn_says_the_turn_and_the_budget_left(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(llm_query('hi'))"), reply("", "print(2)"), "FINAL(counted)")
    limits = ["--max-iterations", "5", "--max-cost", "0.01", "--max-tokens", "100000", "--max-subcalls", "4",
              "--timeout", "600"]  # fmt: skip
    proc = run_cli(ask_args(fake_llm, str(data), extra=limits))
    assert (proc.returncode, proc.stdout.decode()) == (0, "counted\n"), proc.stderr.decode()
    first = user_messages(fake_llm.root_requests[0])[0]
    assert first.startswith("Turn 1 of 5. Budget left: $0.0100 of $0.0100, 100,000 tokens, 4 sub-calls, ")
    found = TURN_AND_BUDGET.match(user_messages(fake_llm.root_requests[1])[-1])
    assert found, user_messages(fake_llm.root_requests[1])[-1][:200]
    cost, tokens, seconds = float(found.group(1)), int(found.group(2).replace(",", "")), int(found.group(3))
    assert 0 < cost < 0.01 and 0 < tokens < 100_000 and seconds <= 600  # spent: the first turn's calls
    assert user_messages(fake_llm.root_requests[2])[-1].startswith("Turn 3 of 5. Budget left: ")


def test_without_limits_the_turn_alone_and_the_last_turn_says_so(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(1)"), reply("", "print(2)"), "FINAL(two)")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--max-iterations", "2"]))
    assert proc.returncode == 0, proc.stderr.decode()
    told = [user_messages(r)[-1] for r in fake_llm.root_requests]
    assert told[0].startswith("Turn 1 of 2.\n\n")
    assert told[1].startswith("Turn 2 of 2 (the last one).\n\nREPL output:")
    assert "Budget left" not in "".join(told)
    assert "used all your iterations" in told[2] and not told[2].startswith("Turn")


def test_budget_left_phrase():
    budget = Budget(Limits(max_cost=0.05, max_tokens=1_000, max_subcalls=1))
    budget.usage.cost_usd, budget.usage.prompt_tokens, budget.usage.subcalls = 0.01, 400, 0
    assert turns.budget_left(budget) == "$0.0400 of $0.0500, 600 tokens, 1 sub-call"
    assert turns.budget_left(Budget(Limits())) is None
    assert turns.turn_line(3, Budget(Limits(max_iterations=4))) == "Turn 3 of 4."


# -- where the windows come from ---------------------------------------------------------------


def test_litellms_shipped_table_gives_the_windows_litellm_gives():
    from rlmcli.model.providers import load_litellm

    litellm = load_litellm()
    for model in (MODEL, "gpt-5-mini", "anthropic/claude-sonnet-4-5", "ollama/llama3"):
        expected = litellm.get_model_info(model=model)["max_input_tokens"]
        assert windows._table_window(model) == windows.window_of(model).tokens == expected, model
    assert windows.window_of("openai/some-local-model") == windows.Window(windows.DEFAULT_WINDOW, "default")
    assert windows.window_of(MODEL, 8192) == windows.Window(8192, "flag")


def test_reading_the_windows_does_not_import_litellm():
    code = (
        "import sys\nfrom rlmcli import windows\n"
        f"assert windows.window_of({MODEL!r}).tokens == 128000\n"
        "assert 'litellm' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
