"""End to end: `rlm` against the fake model server over real HTTP, in this process (run_cli), and
the installed console script once (help and version) and for what `rlm --help` imports."""

from __future__ import annotations

import json
import re

from conftest import SENTINEL_KEY, ask_args
from fake_llm import Fault, reply


def last_user(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def test_answers_a_real_log_directory_with_grep_llm_query_and_final_var(fake_llm, run_cli, shared_data):
    logs = shared_data / "loghub" / "OpenSSH"
    expected = sum(  # matching lines across every file of the directory, counted independently
        "Failed password" in line for f in logs.iterdir() for line in f.open(encoding="utf-8")
    )
    seen = {}

    def count_from_output(body: dict) -> str:
        # The model reads the number the REPL printed and asks a sub-model about a sample.
        seen["output"] = last_user(body)
        return reply(
            "Now summarise.",
            "hits = grep('Failed password')\nsummary = llm_query('Summarise: ' + "
            "str(hits[:3]))\nanswer = f'{len(hits)} failed logins; ' + summary\nprint(answer[:40])",
        )

    fake_llm.add_root(
        reply("Peek first.", "print(len(context), len(files))\nprint(list(files)[:3])"),
        count_from_output,
        "The answer is ready.\nFINAL_VAR(answer)",
    )
    fake_llm.sub = lambda prompt: "ssh brute force from a few hosts"
    proc = run_cli(ask_args(fake_llm, str(logs), question="How many failed logins?"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == f"{expected} failed logins; ssh brute force from a few hosts\n"
    assert "OpenSSH_2k.log" in seen["output"]  # the first cell's output went back to the model
    assert len(fake_llm.sub_requests) == 1
    assert "Failed password" in last_user(fake_llm.sub_requests[0]["body"])
    assert b"rlm: context:" in proc.stderr  # the one-line summary on stderr


def test_first_message_has_metadata_not_the_whole_input(fake_llm, run_cli, tmp_path):
    big = tmp_path / "big.log"
    big.write_text("".join(f"line {i} payload-{i}\n" for i in range(200_000)))
    # An answer before any code, on an input not shown whole, is refused once (issue 10);
    # insisted on, it counts.
    fake_llm.add_root("FINAL(done)", "FINAL(done)")
    proc = run_cli(ask_args(fake_llm, str(big)))
    assert (proc.returncode, proc.stdout.decode()) == (0, "done\n"), proc.stderr.decode()
    assert "before running any code" in fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    first = fake_llm.root_requests[0]["body"]["messages"][1]["content"]
    assert f"{big.stat().st_size:,} total characters" in first
    assert "payload-199999" not in first and len(first) < 5000


def test_final_in_text_and_final_called_in_a_cell(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    fake_llm.add_root('FINAL("The file says hello (once).")')
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt")))
    assert (proc.returncode, proc.stdout.decode()) == (0, "The file says hello (once).\n")

    fake_llm.add_root(reply("", "word = context.strip()\nFINAL_VAR('word')"))
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--no-cache"]))  # not the cached reply
    assert (proc.returncode, proc.stdout.decode()) == (0, "hello\n")

    fake_llm.add_root(reply("", "FINAL(context.upper().strip())"))
    proc = run_cli(ask_args(fake_llm, "-"), input=b"piped text\n")
    assert (proc.returncode, proc.stdout.decode()) == (0, "PIPED TEXT\n")


def test_json_result(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    fake_llm.add_root(reply("", "x = llm_query_batched(['a', 'b'])"), "FINAL(ok)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["answer"] == "ok" and result["exit_reason"] == "final"
    assert result["iterations"] == 2 and result["subcalls"] == 2
    assert result["usage"]["prompt_tokens"] > 0 and result["cost_usd"] > 0 and result["cost_known"]
    assert result["context"]["files"] == 1 and result["model"] == "openai/gpt-4o-mini"


def test_no_secret_reaches_the_sandbox_requests_or_output(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(
        reply("", "import os\nprint(dict(os.environ))\nprint(llm_query('env: ' + str(dict(os.environ))))"),
        "FINAL(checked)",
    )
    trace = tmp_path.parent / f"{tmp_path.name}-trace.jsonl"
    proc = run_cli(
        ask_args(fake_llm, str(tmp_path), extra=["--json", "-v", "--trace", str(trace)]),
        env={"MY_SERVICE_TOKEN": "tok-" + SENTINEL_KEY},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"CellFinished" in trace.read_bytes() and SENTINEL_KEY.encode() not in trace.read_bytes()
    cell_output = last_user(fake_llm.root_requests[1]["body"])
    env_seen = eval(re.search(r"\{.*?\}", cell_output).group(0))
    assert set(env_seen) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE", "PWD"}  # PWD: bwrap --chdir
    for request in fake_llm.requests:
        assert SENTINEL_KEY.encode() not in request["raw"]
    # The key does travel where it must: the Authorization header to the provider.
    assert fake_llm.requests[0]["headers"]["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert SENTINEL_KEY.encode() not in proc.stdout + proc.stderr


def test_provider_error_messages_never_echo_the_key(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(lambda body: Fault(status=401, message=f"Incorrect API key provided: {SENTINEL_KEY}"))
    trace = tmp_path.parent / f"{tmp_path.name}-trace.jsonl"
    proc = run_cli(ask_args(fake_llm, str(tmp_path), extra=["--trace", str(trace)]))
    assert proc.returncode == 4
    assert b"rlm: error:" in proc.stderr and b"Traceback" not in proc.stderr
    assert b"Incorrect API key provided: ***" in proc.stderr  # the provider's words, minus the key
    assert b"RunStopped" in trace.read_bytes()
    assert SENTINEL_KEY.encode() not in proc.stderr + proc.stdout + trace.read_bytes()


def test_hostile_cells_come_back_as_errors_and_the_run_goes_on(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(
        reply("", "while True:\n    pass"),
        reply("", "bomb = bytearray(6 * 1024**3)"),
        reply("", "print('z' * 100_000_000)"),
        reply("", "print('survived', len(context))"),
        "FINAL(all contained)",
    )
    extra = ["--cell-timeout", "2", "--memory", "512m", "--max-output-chars", "5000"]
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=extra))
    assert (proc.returncode, proc.stdout.decode()) == (0, "all contained\n"), proc.stderr.decode()
    outputs = [last_user(r["body"]) for r in fake_llm.root_requests[1:]]
    assert "TimeoutError" in outputs[0]
    assert "MemoryError" in outputs[1]
    assert "output truncated: 99995001 more characters" in outputs[2] and len(outputs[2]) < 7000
    assert "survived 5" in outputs[3]


def test_reasoning_content_is_never_the_reply(fake_llm, run_cli, tmp_path):
    """A draft in reasoning_content neither runs its code nor ends the run: the empty content is re-asked."""
    (tmp_path / "a.txt").write_text("data\n")
    draft = "```repl\nprint(llm_query('from the draft'))\n```\nFINAL(from reasoning)"
    fake_llm.add_root(Fault(content_none=True, reasoning=draft), "FINAL(from content)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt")))
    assert (proc.returncode, proc.stdout.decode()) == (0, "from content\n")
    assert fake_llm.sub_requests == [] and len(fake_llm.root_requests) == 2


def test_empty_reply_is_asked_again_once(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(Fault(content_none=True), "FINAL(second try)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt")))
    assert (proc.returncode, proc.stdout.decode()) == (0, "second try\n")
    assert "empty" in last_user(fake_llm.root_requests[1]["body"])


def test_rate_limit_then_success(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(Fault(status=429, retry_after_ms=50), "FINAL(after retry)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt")))
    assert (proc.returncode, proc.stdout.decode()) == (0, "after retry\n")
    assert len(fake_llm.root_requests) == 2


def test_server_errors_until_retries_run_out_exit_4(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(*[Fault(status=500, retry_after_ms=10)] * 3)
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--max-retries", "2"]))
    assert proc.returncode == 4
    assert len(fake_llm.root_requests) == 3
    err = proc.stderr.decode()
    assert "rlm: error:" in err and "500" in err and "Traceback" not in err


def test_missing_key_exit_4_names_the_variable(run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    proc = run_cli(
        ["ask", str(tmp_path / "a.txt"), "q", "-m", "openai/gpt-4o-mini"], env={"OPENAI_API_KEY": ""}
    )
    assert proc.returncode == 4, proc.stderr.decode()
    errors = [line for line in proc.stderr.decode().splitlines() if line.startswith("rlm: error:")]
    assert len(errors) == 1 and "OPENAI_API_KEY" in errors[0], proc.stderr.decode()


def test_help_and_version(run_rlm):
    proc = run_rlm(["--help"])
    assert proc.returncode == 0 and b"ask" in proc.stdout
    proc = run_rlm(["ask", "--help"])
    assert proc.returncode == 0 and b"weaker" in proc.stdout.lower() and b"--max-cost" in proc.stdout
    proc = run_rlm(["--version"])
    assert proc.returncode == 0 and proc.stdout.startswith(b"rlm ")


def test_help_does_not_import_litellm(rlm_bin):
    import subprocess
    import sys

    code = "import sys; from rlmcli.cli.app import app; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_subcalls_ablation(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(reply("", "print(llm_query('hi'))"), "FINAL(code only)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--no-subcalls"]))
    assert (proc.returncode, proc.stdout) == (0, b"code only\n"), proc.stderr.decode()
    system = fake_llm.root_requests[0]["body"]["messages"][0]["content"]
    assert "llm_query" not in system
    assert "sub-calls are disabled" in last_user(fake_llm.root_requests[1]["body"])
    assert fake_llm.sub_requests == []
