"""budget.prompt_tokens_at_most: the bound that lets the check before every root call skip the count. A
history whose bound is under the trigger is never compacted, so the bound must never be below
budget.estimate_prompt_tokens, whatever the text."""

from __future__ import annotations

import base64
import random

from rlmcli import budget, compact
from rlmcli.budget import estimate_prompt_tokens
from rlmcli.tokens import EXACT_CHARS


def texts() -> list[str]:
    rng = random.Random(7)
    cjk = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(3000))
    rare = "".join(chr(rng.randrange(0x20000, 0x2A6DF)) for _ in range(2000))  # astral: 4 UTF-8 bytes
    emoji = "".join(chr(rng.randrange(0x1F300, 0x1F5FF)) for _ in range(2000))
    digits = "".join(rng.choice("0123456789") for _ in range(5000))
    b64 = base64.b64encode(rng.randbytes(6000)).decode()
    mixed = "".join(rng.choice(["a", "é", "ж", "中", "\U0001f600", " ", "\n", "\x00"]) for _ in range(5000))
    return [
        "", "x", "```repl\nx = 1\n```", "plain prose, the kind a model writes. " * 200, cjk, rare, emoji,
        digits, b64, mixed, "a lone surrogate: \udcff\udc80 from a file name", "\u202e bidi \u200b",
        "ascii " * (EXACT_CHARS // 5),  # past EXACT_CHARS: counted from samples
        (cjk + "plain ascii, " * 400) * (EXACT_CHARS // 8000),  # samples denser than the whole
    ]  # fmt: skip


def test_the_bound_is_never_below_the_count() -> None:
    for text in texts():
        messages = [{"role": "user", "content": text}]
        assert budget.prompt_tokens_at_most(messages) >= estimate_prompt_tokens(messages), text[:40]


def test_a_history_is_compacted_as_its_count_says_whatever_the_bound() -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant. " * 50}]
    messages += [{"role": "user" if i % 2 else "assistant", "content": t} for i, t in enumerate(texts()[:12])]
    count = estimate_prompt_tokens(messages)
    assert budget.prompt_tokens_at_most(messages) >= count
    assert compact.compact(messages, int(count / compact.TRIGGER) + 10) is None
    assert compact.compact(messages, int(count / compact.TRIGGER) - 10) is not None


def test_each_text_of_a_history_is_tokenized_once_short_ones_too(monkeypatch) -> None:
    """The root history is counted before every turn: only its new messages may cost a count (a run
    of one-line replies once counted every earlier reply again each turn: 2 ms a turn at 150)."""
    calls: list[str] = []
    real = budget.tokens.count_text
    monkeypatch.setattr(budget.tokens, "count_text", lambda text: calls.append(text) or real(text))
    tag = random.Random().getrandbits(64)  # texts no other test counted (the counts are kept per process)
    history = [{"role": "assistant", "content": f"```repl\nx_{tag} = {i}\n```"} for i in range(40)]
    first = estimate_prompt_tokens(history)
    assert len(calls) == 40
    history.append({"role": "user", "content": f"REPL output:\n{tag}"})
    assert estimate_prompt_tokens(history) > first
    assert calls[40:] == [f"REPL output:\n{tag}"]  # the new message alone
