"""Follow-up questions (`rlm ask -c`, `--continue RUN_ID`) and offline re-runs (`rlm replay --rerun`),
issue 14: the earlier conversation and REPL state carried over without paying for them again."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ask_args
from fake_llm import FakeLLM, reply

TURNS = (
    reply("Split it.", "lines = context.splitlines()\nprint(len(lines))"),
    reply("Ask about the first.", "summary = llm_query('Summarise: ' + lines[0])\nprint(summary)"),
    reply("Count errors.", "errors = [l for l in lines if 'ERROR' in l]\nprint(len(errors))"),
    "FINAL_VAR(summary)",
)
LOG = "INFO start\nERROR disk full\nINFO retry\nERROR disk full again\n"


def last_user(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def first_run(fake: FakeLLM, run_cli, tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text(LOG)
    fake.add_root(*TURNS)
    fake.sub = lambda prompt: "a service starting up"
    proc = run_cli(ask_args(fake, "app.log", question="What happened?"))
    assert (proc.returncode, proc.stdout.decode()) == (0, "a service starting up\n"), proc.stderr.decode()
    assert (len(fake.root_requests), len(fake.sub_requests)) == (4, 1)


def logs(run_cli) -> list[dict]:
    return json.loads(run_cli(["logs", "--json"]).stdout)


def test_a_follow_up_uses_the_earlier_variables_and_pays_for_nothing_again(fake_llm, run_cli, tmp_path):
    first_run(fake_llm, run_cli, tmp_path)
    fake_llm.add_root(
        reply("Use what is there.", "print(len(lines), len(errors), summary)"),
        "FINAL(2 errors, both disk full)",
    )
    # No PATH, no --model or --api-base: the earlier run's inputs, model and server.
    proc = run_cli(["ask", "-c", "How many errors, and why?", "--sandbox", "local"])
    assert (proc.returncode, proc.stdout.decode()) == (0, "2 errors, both disk full\n"), proc.stderr.decode()
    assert len(fake_llm.root_requests) == 4 + 2  # only the follow-up's own turns
    assert len(fake_llm.sub_requests) == 1  # the earlier llm_query came from the cache
    follow = fake_llm.root_requests[4]["body"]["messages"]
    # The earlier conversation, then the new question.
    assert [m["role"] for m in follow] == ["system", *["user", "assistant"] * 4, "user"]
    assert follow[2]["content"] == TURNS[0] and follow[8]["content"] == "FINAL_VAR(summary)"
    assert (
        "How many errors, and why?" in follow[-1]["content"]
        and "REPL kept its state" in follow[-1]["content"]
    )
    # The follow-up's first cell saw the variables the earlier three turns built.
    assert "4 2 a service starting up" in last_user(fake_llm.root_requests[5]["body"])
    assert "continuing run" in proc.stderr.decode()
    runs = logs(run_cli)
    assert runs[0]["parent_run"] == runs[1]["id"] and runs[1]["parent_run"] is None
    table = run_cli(["logs"]).stdout.decode().splitlines()
    assert "FOLLOWS" in table[0] and runs[1]["id"] in table[1]
    assert f"follows:     {runs[1]['id']}" in run_cli(["logs", "show", "last"]).stdout.decode()


def test_a_chain_of_follow_ups_carries_every_earlier_turn(fake_llm, run_cli, tmp_path):
    first_run(fake_llm, run_cli, tmp_path)
    fake_llm.add_root(reply("", "extra = len(errors) * 10"), "FINAL(noted)")
    assert run_cli(["ask", "-c", "Note it.", "--sandbox", "local"]).returncode == 0
    fake_llm.add_root(reply("", "print(extra, len(lines))"), "FINAL(done)")
    second = logs(run_cli)[0]["id"]
    proc = run_cli(["ask", "--continue", second, "And now?", "--sandbox", "local"])
    assert proc.returncode == 0, proc.stderr.decode()
    assert "20 4" in last_user(fake_llm.root_requests[-1]["body"])  # cells of both earlier runs ran again
    assert len(fake_llm.root_requests[-2]["body"]["messages"]) == 1 + 2 * 4 + 2 * 2 + 1
    assert len(fake_llm.sub_requests) == 1


def test_a_changed_input_is_a_fresh_run_unless_forced(fake_llm, run_cli, tmp_path):
    first_run(fake_llm, run_cli, tmp_path)
    (tmp_path / "app.log").write_text(LOG + "ERROR one more\n")
    fake_llm.add_root(reply("", "print(len(context.splitlines()))"), "FINAL(5 lines)")
    proc = run_cli(["ask", "-c", "How many lines?", "--sandbox", "local"])
    assert (proc.returncode, proc.stdout.decode()) == (0, "5 lines\n"), proc.stderr.decode()
    err = proc.stderr.decode()
    assert "the input changed since run" in err and "app.log" in err and "fresh run" in err
    assert len(fake_llm.root_requests[4]["body"]["messages"]) == 2  # nothing carried over
    fake_llm.add_root(reply("", "print(summary)"), "FINAL(forced)")
    first = logs(run_cli)[1]["id"]
    proc = run_cli(["ask", "--continue", first, "Still?", "--force", "--sandbox", "local"])
    assert proc.returncode == 0, proc.stderr.decode()
    assert "continuing (--force)" in proc.stderr.decode()
    assert "a service starting up" in last_user(fake_llm.root_requests[-1]["body"])


def test_continue_needs_no_paths_and_a_recorded_run(fake_llm, run_cli, tmp_path):
    proc = run_cli(["ask", "-c", "Anything?"])
    assert proc.returncode == 2 and b"no runs recorded yet" in proc.stderr
    first_run(fake_llm, run_cli, tmp_path)
    proc = run_cli(["ask", "-c", "app.log", "Anything?"])
    assert proc.returncode == 2 and b"give only the question" in proc.stderr
    proc = run_cli(["ask", "Anything?"])
    assert proc.returncode == 2 and b"no input given" in proc.stderr


def test_rerun_reproduces_the_record_offline_then_reports_a_divergence(fake_llm, run_cli, tmp_path):
    first_run(fake_llm, run_cli, tmp_path)
    run_id = logs(run_cli)[0]["id"]
    fake_llm.stop()  # no server: every reply must come from the record
    made = len(fake_llm.requests)
    proc = run_cli(["replay", run_id, "--rerun"], env={"OPENAI_API_KEY": "", "RLM_SANDBOX": "local"})
    assert (proc.returncode, proc.stdout.decode()) == (0, "a service starting up\n"), proc.stderr.decode()
    assert "the re-run reproduces the record" in proc.stderr.decode()
    assert len(fake_llm.requests) == made
    # A cell now prints something else: the input changed on purpose.
    (tmp_path / "app.log").write_text(LOG.replace("ERROR disk full again", "INFO fine"))
    proc = run_cli(["replay", run_id, "--rerun"], env={"OPENAI_API_KEY": "", "RLM_SANDBOX": "local"})
    assert proc.returncode == 1, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "the re-run diverges from the record" in err
    assert "cell 3: output differs at line 1: recorded '2', now '1'" in err
    assert proc.stdout.decode() == "a service starting up\n"  # the same answer: only the cell diverged
