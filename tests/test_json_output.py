"""`--json` on every path: exactly one JSON object on stdout, whatever the exit status, with the same
keys; and `--instructions` (`-s`), which reaches the end of the root model's system prompt.

Exit 6 (an answer that fails --schema) is at the end; tests/test_schema.py has the rest of --schema.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ask_args, clean_env, popen_rlm
from fake_llm import Fault, reply

from rlmcli.cli import app as app_module
from rlmcli.prompts import INSTRUCTIONS_HEADER
from rlmcli.repl import bwrap as sandbox_bwrap

KEYS = {
    "answer", "partial_answer", "exit_reason", "partial", "message", "error", "hint", "iterations",
    "subcalls", "usage", "cost_usd", "cost_known", "elapsed_s", "model", "sub_model", "sandbox", "context",
    "run_id", "trace", "citations", "unverified", "cache", "usage_by_depth",
}  # fmt: skip
NO_DOCKER = "unix:///nonexistent/docker.sock"


def one_object(stdout: bytes) -> dict:
    """stdout holds one JSON object on one line, and nothing else; it has every key."""
    lines = stdout.decode().splitlines()
    assert len(lines) == 1, stdout
    document = json.loads(lines[0])
    assert isinstance(document, dict) and set(document) == KEYS, document
    return document


def assert_failure(document: dict, reason: str, error: str) -> None:
    assert document["exit_reason"] == reason
    assert document["answer"] is None
    assert error in document["error"] and document["message"] == document["error"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "a.txt"
    path.write_text("alpha\nbeta\n" * 5)
    return path


def answers(fake_llm, answer: str) -> None:
    """One run's replies: a look at the input first (a FINAL before any code may be refused)."""
    fake_llm.add_root(reply("", "print(len(context))"), f"FINAL({answer})")


def ask_json(fake_llm, data: Path, *extra: str) -> list[str]:
    return ask_args(fake_llm, str(data), extra=["--json", *extra])


# ---------- 0: answered ----------


def test_exit_0_answer_and_no_error(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", "print(context.count('beta'))"), "FINAL(5)")
    proc = run_cli(ask_json(fake_llm, data))
    assert proc.returncode == 0, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert (out["answer"], out["partial_answer"], out["exit_reason"]) == ("5", None, "final")
    assert out["error"] is None and out["hint"] is None and out["partial"] is False
    assert out["cost_known"] is True and out["cost_usd"] > 0  # gpt-4o-mini has a price
    assert out["elapsed_s"] >= 0 and out["iterations"] == 2 and out["sandbox"] == "local"


def test_cost_is_null_when_a_model_has_no_price(fake_llm, run_cli, data):
    answers(fake_llm, "done")
    args = ["ask", str(data), "q", "--model", "openai/my-local-model", "--api-base", fake_llm.url,
            "--sandbox", "local", "--json"]  # fmt: skip
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert out["answer"] == "done" and out["cost_known"] is False
    assert out["cost_usd"] is None  # not 0: nobody knows what it cost
    assert out["usage"]["total_tokens"] > 0


# ---------- 2: usage and input errors ----------


@pytest.mark.parametrize(
    "extra, error",
    [
        (["--max-iterations", "0"], "--max-iterations must be a whole number >= 1"),  # from resolve()
        (["--sandbox", "nowhere"], "unknown sandbox 'nowhere'"),
    ],
)
def test_exit_2_for_our_usage_errors(fake_llm, run_cli, data, extra, error):
    proc = run_cli(ask_json(fake_llm, data, *extra))
    assert proc.returncode == 2, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "usage_error", error)
    assert b"rlm: error:" in proc.stderr  # stderr still says it, as without --json
    assert fake_llm.root_requests == []


def test_exit_2_with_a_hint(fake_llm, run_cli, data):
    proc = run_cli(ask_json(fake_llm, data, "--memory", "lots"))
    assert proc.returncode == 2
    out = one_object(proc.stdout)
    assert_failure(out, "usage_error", "--memory")
    assert "K/M/G" in out["hint"]


def test_exit_2_for_a_missing_input(fake_llm, run_cli, tmp_path):
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "missing.txt"), extra=["--json"]))
    assert proc.returncode == 2
    out = one_object(proc.stdout)
    assert_failure(out, "input_error", "no such file or directory")
    assert out["partial_answer"] is None and out["run_id"] and out["model"] == "openai/gpt-4o-mini"


def test_exit_2_for_an_empty_question(fake_llm, run_cli, data):
    proc = run_cli(ask_args(fake_llm, str(data), question="   ", extra=["--json"]))
    assert proc.returncode == 2
    assert_failure(one_object(proc.stdout), "usage_error", "the question is empty")


@pytest.mark.parametrize(
    "argv, error",
    [
        (["ask", "a.txt", "q", "--json", "--no-such-flag"], "No such option: --no-such-flag"),
        (["ask", "--json"], "Missing argument"),
        (["ask", "a.txt", "q", "--json", "--max-iterations", "many"], "Invalid value for '--max-iterations'"),
    ],
)
def test_exit_2_for_typers_own_usage_errors(argv, error, monkeypatch, capsys, tmp_path):
    """Those happen before our command runs: the console entry point (app.main) catches them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(sys, "argv", ["rlm", *argv])
    with pytest.raises(SystemExit) as stop:
        app_module.main()
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert_failure(one_object(captured.out.encode()), "usage_error", error)
    assert error.split(" '")[0] in captured.err


def test_typers_usage_errors_without_json_print_nothing_on_stdout(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["rlm", "ask", "a.txt", "q", "--no-such-flag"])
    with pytest.raises(SystemExit) as stop:
        app_module.main()
    assert stop.value.code == 2 and capsys.readouterr().out == ""


# ---------- 3: a limit, with the best partial text apart from the answer ----------


def test_exit_3_partial_answer_is_not_the_answer(fake_llm, run_cli, data):
    fake_llm.add_root(
        reply("Partial: beta appears often.", "x = 1"), reply("", "y = 2"), "Still no answer, sorry."
    )
    proc = run_cli(ask_json(fake_llm, data, "--max-iterations", "2"))
    assert proc.returncode == 3, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "max_iterations", "no answer after 2 iterations")
    assert out["partial_answer"] == "Still no answer, sorry." and out["partial"] is True
    assert out["iterations"] == 2 and out["usage"]["total_tokens"] > 0


def test_exit_3_without_json_still_prints_the_partial_text(fake_llm, run_cli, data):
    fake_llm.add_root(reply("Partial: beta appears often.", "x = 1"), "Still no answer.")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--max-iterations", "1"]))
    assert (proc.returncode, proc.stdout) == (3, b"Still no answer.\n")


# ---------- 4: the provider ----------


def test_exit_4_missing_key_before_the_loop(fake_llm, run_cli, data):
    args = [
        "ask",
        str(data),
        "q",
        "--model",
        "anthropic/claude-3-5-haiku-20241022",
        "--sandbox",
        "local",
        "--json",
    ]
    proc = run_cli(args)  # clean_env leaves no ANTHROPIC_API_KEY
    assert proc.returncode == 4, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "provider_error", "ANTHROPIC_API_KEY is not set")
    assert "ANTHROPIC_API_KEY" in out["hint"]
    assert out["model"] == "anthropic/claude-3-5-haiku-20241022" and out["iterations"] is None


def test_exit_4_provider_error_in_the_loop(fake_llm, run_cli, data):
    fake_llm.add_root(Fault(status=401, message="bad key"))
    proc = run_cli(ask_json(fake_llm, data))
    assert proc.returncode == 4, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "provider_error", "bad key")
    assert out["iterations"] == 1 and out["sandbox"] == "local"


# ---------- 5: the sandbox ----------


@pytest.fixture
def no_sandbox(tmp_path: Path):
    """An environment with neither Docker nor bubblewrap; what this process learnt about the real
    bubblewrap is forgotten before and after."""
    for cached in (sandbox_bwrap.unusable, sandbox_bwrap.sizes_tmpfs):
        cached.cache_clear()
    (tmp_path / "bin").mkdir()
    yield {"PATH": str(tmp_path / "bin"), "DOCKER_HOST": NO_DOCKER}
    for cached in (sandbox_bwrap.unusable, sandbox_bwrap.sizes_tmpfs):
        cached.cache_clear()


def test_exit_5_sandbox_unavailable_before_the_loop(fake_llm, run_cli, data, no_sandbox):
    args = [a if a != "local" else "auto" for a in ask_json(fake_llm, data)]
    proc = run_cli(args, env=no_sandbox)
    assert proc.returncode == 5, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "sandbox_error", "no Docker daemon")
    assert out["hint"] and "--sandbox process" in out["hint"]
    assert fake_llm.root_requests == []


# ---------- 130: interrupted ----------


def test_exit_130_interrupted_before_the_loop(fake_llm, run_cli, data, monkeypatch):
    import rlmcli.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rlmcli.run, "make_sandbox", interrupted)  # Ctrl-C while the sandbox starts
    proc = run_cli(ask_json(fake_llm, data))
    assert proc.returncode == 130, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "interrupted", "interrupted")
    assert out["partial_answer"] is None


def test_exit_130_sigint_mid_run_keeps_the_partial_answer(fake_llm, rlm_bin, tmp_path, data):
    """A real process: the signal is the point."""
    fake_llm.add_root(reply("Partial: the file holds beta.", "import time\ntime.sleep(120)"))
    args = ask_json(fake_llm, data, "--cell-timeout", "300")
    proc = popen_rlm(rlm_bin, args, clean_env(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while not fake_llm.root_requests:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # the reply is being run: the cell sleeps
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    document = one_object(out)
    assert_failure(document, "interrupted", "interrupted")
    assert document["partial_answer"] == "Partial: the file holds beta."
    assert document["elapsed_s"] >= 1.0  # at least the second the cell was left to run (a lower bound)


# ---------- --instructions ----------


def system_message(fake_llm) -> str:
    """The system message of the latest run's first root request."""
    first = fake_llm.root_requests[-2]["body"]["messages"][0]
    assert first["role"] == "system"
    return first["content"]


def test_instructions_end_the_system_prompt(fake_llm, run_cli, data):
    answers(fake_llm, "Hallo")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["-s", "Answer in German."]))
    assert proc.returncode == 0, proc.stderr.decode()
    system = system_message(fake_llm)
    assert system.endswith(f"{INSTRUCTIONS_HEADER}\nAnswer in German.")
    assert system.count("Answer in German.") == 1


def test_instructions_from_the_config_and_the_environment(fake_llm, run_cli, data, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('instructions = "List file paths, one per line."\n')
    answers(fake_llm, "a")
    assert run_cli(ask_args(fake_llm, str(data)), env={"RLM_CONFIG": str(config)}).returncode == 0
    assert system_message(fake_llm).endswith("\nList file paths, one per line.")

    env = {"RLM_CONFIG": str(config), "RLM_INSTRUCTIONS": "Be brief."}  # the environment wins
    answers(fake_llm, "b")
    assert run_cli(ask_args(fake_llm, str(data)), env=env).returncode == 0
    assert system_message(fake_llm).endswith("\nBe brief.")

    flag = ["--instructions", "Quote the lines."]  # and the flag wins over both
    answers(fake_llm, "c")
    assert run_cli(ask_args(fake_llm, str(data), extra=flag), env=env).returncode == 0
    latest = system_message(fake_llm)
    assert latest.endswith("\nQuote the lines.") and "Be brief." not in latest


def test_no_instructions_no_header(fake_llm, run_cli, data):
    answers(fake_llm, "x")
    assert run_cli(ask_args(fake_llm, str(data), extra=["-s", "   "])).returncode == 0
    assert INSTRUCTIONS_HEADER not in system_message(fake_llm)


def test_instructions_of_the_wrong_type_in_the_config(fake_llm, run_cli, data, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("instructions = 3\n")
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--json"]), env={"RLM_CONFIG": str(config)})
    assert proc.returncode == 2
    assert_failure(one_object(proc.stdout), "usage_error", "instructions in")


# ---------- 6: the answer failed validation (--schema) ----------


def test_exit_6_invalid_answer_in_partial_answer(fake_llm, run_cli, data):
    schema = '{"type": "object", "required": ["count"]}'
    fake_llm.add_root(reply("", "print(context.count('beta'))"), "FINAL(5)", "FINAL(five)")  # never JSON
    proc = run_cli(ask_json(fake_llm, data, "--schema", schema))
    assert proc.returncode == 6, proc.stderr.decode()
    out = one_object(proc.stdout)
    assert_failure(out, "invalid_answer", "the answer failed validation against the inline --schema")
    assert out["partial_answer"] == "five" and out["iterations"] == 3 and out["hint"]
