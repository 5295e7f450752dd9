"""The five defects of issue 10, end to end through the installed `rlm` script (a real process):
each turned a right run into a wrong answer, silently.

1. Code and FINAL(literal) in one reply: the literal was accepted before the model saw the output.
2. FINAL(name) of a REPL variable returned the string "name".
3. A fence inside the answer was executed and cut from it.
4. A FINAL on turn 1, before any code ran, was accepted.
5. Exception text was not capped: `raise ValueError(context)` sent the whole input back.

Each test checks the exit status, stdout, and what the fake model server received.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import reply

BETAS = 10  # "beta" lines in the input: what the code prints


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Larger than the 500-character prefix of the first message: the model has not seen it whole."""
    path = tmp_path / "input.txt"
    path.write_text("alpha\n" * 300 + "beta\n" * BETAS + "gamma\n" * 300)
    return path


def told(request: dict) -> str:
    """The newest user message of a root request: what the model read before that reply."""
    return request["body"]["messages"][-1]["content"]


def test_1_final_literal_with_code_is_not_accepted_unseen(fake_llm, run_rlm, data):
    """The reply prints the count (10) and says FINAL(99) in the same breath: 99 is a guess."""
    fake_llm.add_root(
        "Let me count.\n```repl\nprint(context.count('beta'))\n```\nFINAL(99)",
        f"FINAL({BETAS})",  # having seen the output, the model answers from it
    )
    proc = run_rlm(ask_args(fake_llm, str(data), question="How many beta lines?"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == f"{BETAS}\n".encode()  # not 99
    requests = fake_llm.root_requests
    assert len(requests) == 2
    second = told(requests[1])
    assert str(BETAS) in second and "repeat your FINAL line" in second  # the output, and a request to confirm


def test_2_final_of_a_variable_name_is_its_value(fake_llm, run_rlm, data):
    fake_llm.add_root(reply("", "total = context.count('beta')\nprint('computed')"), "FINAL(total)")
    proc = run_rlm(ask_args(fake_llm, str(data), question="How many beta lines?"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == f"{BETAS}\n".encode()  # not "total"


def test_3_a_fence_inside_the_answer_is_not_run_and_stays(fake_llm, run_rlm, data):
    answer = "Use this:\n```python\nprint(llm_query('was this fence run?'))\n```"
    fake_llm.add_root(reply("", "print(len(context))"), f"FINAL({answer}\n)")
    proc = run_rlm(ask_args(fake_llm, str(data), question="How do I ask a sub-model?"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == f"{answer}\n".encode()  # the fence is part of the answer
    assert fake_llm.sub_requests == []  # run, its llm_query would have reached the server
    assert len(fake_llm.root_requests) == 2


def test_4_final_before_any_code_is_refused_once(fake_llm, run_rlm, data):
    fake_llm.add_root(
        "The input probably has 3 beta lines.\nFINAL(3)",  # a plan given as the answer, on turn 1
        reply("", "print(context.count('beta'))"),
        f"FINAL({BETAS})",
    )
    proc = run_rlm(ask_args(fake_llm, str(data), question="How many beta lines?"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == f"{BETAS}\n".encode()  # not 3
    requests = fake_llm.root_requests
    assert len(requests) == 3
    assert "before running any code" in told(requests[1])


def test_5_exception_text_is_capped(fake_llm, run_rlm, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(("0123456789abcdef" * 4 + "\n") * 16_000)  # about 1 MB
    cap = 2000
    fake_llm.add_root(reply("", "raise ValueError(context)"), "FINAL(the input is one big list of hex lines)")
    args = ask_args(fake_llm, str(big), question="What is this?", extra=["--max-output-chars", str(cap)])
    proc = run_rlm(args)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"the input is one big list of hex lines\n"
    requests = fake_llm.root_requests
    assert len(requests) == 2
    back = told(requests[1])  # the cell's error, as the model got it
    assert "ValueError" in back
    assert len(back) < cap + 1500, len(back)  # the cap, plus the turn's own words; not a megabyte
    assert "not shown" in back  # the marker says that (and how much) was cut
