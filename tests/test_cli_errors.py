"""Bad inputs and limits: one clear line on stderr and the documented exit status. In this process,
but for a terminal on stdin and a file root cannot read (real processes: a pty, dropped capabilities)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess

import pytest
from conftest import ask_args, clean_env
from fake_llm import reply


def assert_one_error_line(proc, status: int, *words: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == status, err
    errors = [line for line in err.splitlines() if line.startswith("rlm: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in errors[0], err
    assert proc.stdout == b""
    return errors[0]


def test_missing_path(fake_llm, run_cli, tmp_path):
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "nope.log")))
    assert_one_error_line(proc, 2, "nope.log")


def test_binary_file_named_explicitly(fake_llm, run_cli, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "blob.bin")))
    assert_one_error_line(proc, 2, "binary")


def test_directory_with_only_ignored_files(fake_llm, run_cli, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "a.log").write_text("x\n")
    proc = run_cli(ask_args(fake_llm, str(repo)))
    assert_one_error_line(proc, 2, "no files")


def test_empty_stdin(fake_llm, run_cli):
    proc = run_cli(ask_args(fake_llm, "-"), input=b"")
    assert_one_error_line(proc, 2, "empty")


def test_dash_on_a_terminal_is_a_usage_error_not_a_hang(fake_llm, run_rlm):
    leader, follower = pty.openpty()
    try:
        proc = run_rlm(ask_args(fake_llm, "-"), stdin=follower, timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    assert_one_error_line(proc, 2)
    assert "pipe" in proc.stderr.decode()


def test_unreadable_file(fake_llm, run_cli, tmp_path, rlm_bin):
    secret = tmp_path / "secret.log"
    secret.write_text("top secret\n")
    secret.chmod(0)
    args = ask_args(fake_llm, str(secret))
    if os.geteuid() == 0:
        # root reads anything; drop the capabilities that let it, as an ordinary user would lack them.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        proc = subprocess.run(
            [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", rlm_bin, *args],
            capture_output=True, input=b"", env=clean_env(tmp_path), timeout=60,
        )  # fmt: skip
    else:
        proc = run_cli(args)
    assert_one_error_line(proc, 2, "secret.log")


def test_usage_error_for_unknown_option(run_cli):
    proc = run_cli(["ask", "x", "q", "--no-such-flag"])
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert b"No such option" in proc.stderr and b"--no-such-flag" in proc.stderr


# ---------- limits: exit 3 with a partial answer in --json ----------


def never_final(n: int) -> list[str]:
    return [reply(f"Partial finding {i}: still looking.", f"step = {i}") for i in range(n)]


def run_json(run_cli, fake_llm, tmp_path, extra):
    (tmp_path / "a.txt").write_text("data\n" * 10)
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--json", *extra]))
    return proc, json.loads(proc.stdout)


def test_iteration_limit(fake_llm, run_cli, tmp_path):
    fake_llm.add_root(*never_final(3), "I still have no final answer, best guess: data.")
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--max-iterations", "3"])
    assert proc.returncode == 3
    assert result["exit_reason"] == "max_iterations" and result["partial"] is True
    assert result["partial_answer"] == "I still have no final answer, best guess: data."
    assert result["answer"] is None  # only a final answer is an answer
    assert result["iterations"] == 3 and len(fake_llm.root_requests) == 4
    assert "used all your iterations" in fake_llm.root_requests[-1]["body"]["messages"][-1]["content"]


def test_iteration_limit_last_turn_may_still_answer(fake_llm, run_cli, tmp_path):
    fake_llm.add_root(*never_final(2), "FINAL(late answer)")
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--max-iterations", "2"])
    assert proc.returncode == 0 and result["answer"] == "late answer"


def test_subcall_limit(fake_llm, run_cli, tmp_path):
    fake_llm.add_root(
        # One at a time: a batch larger than the sub-calls left is refused whole (test_limits.py).
        reply("Partial: asking sub-models.", "r = [llm_query(str(i)) for i in range(10)]")
    )
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--max-subcalls", "3", "--concurrency", "2"])
    assert proc.returncode == 3
    assert result["exit_reason"] == "max_subcalls"
    assert result["partial_answer"] == "Partial: asking sub-models."
    assert len(fake_llm.sub_requests) == 3 and result["subcalls"] == 3


def test_cost_limit(fake_llm, run_cli, tmp_path):
    fake_llm.usage = lambda body, text: (100_000, 1_000)  # gpt-4o-mini: about $0.0156 a call
    fake_llm.add_root(*never_final(5))
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--max-cost", "0.02"])
    assert proc.returncode == 3
    assert result["exit_reason"] == "max_cost"
    assert len(fake_llm.root_requests) == 2  # the third call would start above the limit
    assert result["cost_usd"] >= 0.02 and result["partial_answer"].startswith("Partial finding 1")


def test_token_limit(fake_llm, run_cli, tmp_path):
    fake_llm.usage = lambda body, text: (1000, 10)
    fake_llm.add_root(*never_final(5))
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--max-tokens", "3500"])
    assert proc.returncode == 3 and result["exit_reason"] == "max_tokens"
    # Two calls spend 2,020; the third (its prompt alone ~2,000 tokens by the tokenizer) would cross.
    assert len(fake_llm.root_requests) == 2 and result["usage"]["total_tokens"] <= 3500


def test_wall_time_limit(fake_llm, run_cli, tmp_path):
    fake_llm.latency = 0.7
    fake_llm.add_root(*never_final(10))
    proc, result = run_json(run_cli, fake_llm, tmp_path, ["--timeout", "1.5"])
    assert proc.returncode == 3 and result["exit_reason"] == "timeout"
    assert result["partial_answer"].startswith("Partial finding")
    assert len(fake_llm.root_requests) < 10


def test_a_context_larger_than_the_memory_limit_is_one_clear_error(fake_llm, run_cli, tmp_path):
    big = tmp_path / "big.log"
    big.write_bytes(b"0123456789abcdef\n" * (12 * 2**20 // 17 * 25))  # ~300 MB
    proc = run_cli(ask_args(fake_llm, str(big), extra=["--memory", "256m"]))
    line = assert_one_error_line(proc, 5, "does not fit", "memory limit")
    assert "--memory" in proc.stderr.decode() and line
