"""What a run leaves behind: a clean stdout, a complete small trace, a replayable record, history."""

from __future__ import annotations

import json
import re
import signal
import time

from conftest import ask_args, clean_env, popen_rlm
from fake_llm import Fault, reply
from test_interrupt import wait_for


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stdout_holds_only_the_answer_and_no_color_means_no_escapes(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(reply("Looking.", "print('\\x1b[31mred\\x1b[0m', len(context))"), "FINAL(the answer)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["-v"]), env={"NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"the answer\n"
    assert b"\x1b" not in proc.stderr
    assert b"iteration 1" in proc.stderr


def test_trace_is_complete_small_and_replayable(fake_llm, run_cli, tmp_path):
    big = tmp_path / "big.log"
    line = "2026-11-22 11:22:33 INFO worker-7 processed request id=%08d in 12ms\n"
    with big.open("w") as f:
        for i in range(40 * 2**20 // len(line % 0)):
            f.write(line % i)
    fake_llm.add_root(
        reply("Count them.", "n = context.count('processed')\nprint(n)\nprint(context[:100000])"),
        reply("", "summary = llm_query_batched(['a', 'b', 'c'])"),
        "FINAL_VAR(n)",
    )
    trace = tmp_path / "run.jsonl"
    proc = run_cli(ask_args(fake_llm, str(big), extra=["--trace", str(trace), "--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert big.stat().st_size > 40 * 10**6
    assert trace.stat().st_size < 2 * 2**20, trace.stat().st_size
    events = read_jsonl(trace)
    assert events[0]["event"] == "RunStarted" and events[-1]["event"] == "RunFinished"
    assert events[-2]["event"] == "FinalAnswer" and events[-2]["answer"] == result["answer"]
    last = events[-1]
    assert (last["exit_reason"], last["answer"], last["subcalls"]) == ("final", result["answer"], 3)
    assert last["prompt_tokens"] == result["usage"]["prompt_tokens"] and last["cost_usd"] > 0
    loaded = next(e for e in events if e["event"] == "ContextLoaded")
    assert loaded["sources"][0][1] == big.stat().st_size and len(loaded["sources"][0][2]) == 64  # sha256

    replayed = run_cli(["replay", str(trace)])
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert replayed.stdout.decode() == result["answer"] + "\n"
    assert b"iteration 2" in replayed.stderr

    listed = run_cli(["logs", "--json"])
    assert listed.returncode == 0, listed.stderr.decode()
    runs = json.loads(listed.stdout)
    assert [r["question"] for r in runs] == ["What is in there?"]
    assert runs[0]["id"] == result["run_id"] and runs[0]["exit_reason"] == "final"
    shown = run_cli(["logs", "show", result["run_id"][-6:]])
    assert shown.returncode == 0 and result["answer"].encode() in shown.stdout
    by_id = run_cli(["replay", "last"])
    assert by_id.returncode == 0 and by_id.stdout.decode() == result["answer"] + "\n"


def test_no_log_keeps_no_history(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root("FINAL(x)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--no-log"]))
    assert (proc.returncode, proc.stdout) == (0, b"x\n"), proc.stderr.decode()
    listed = run_cli(["logs", "--json"])
    assert listed.returncode == 0, listed.stderr.decode()
    assert json.loads(listed.stdout or b"[]") == []


def test_sigint_leaves_a_complete_trace_a_history_row_and_the_partial_answer(
    fake_llm, rlm_bin, run_cli, tmp_path
):  # a real process: the signal is the point
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(reply("Partial: still reading.", "import time\ntime.sleep(120)"))
    trace = tmp_path / "t.jsonl"
    args = ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--trace", str(trace), "--cell-timeout", "300"])
    proc = popen_rlm(rlm_bin, args, clean_env(tmp_path))
    try:
        wait_for(lambda: trace.exists() and b"CellStarted" in trace.read_bytes())
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out == b"Partial: still reading.\n"
    events = read_jsonl(trace)
    assert events[-1]["event"] == "RunFinished" and events[-1]["exit_reason"] == "interrupted"
    assert events[-1]["answer"] == "Partial: still reading."
    listed = run_cli(["logs", "--json"])
    assert listed.returncode == 0, listed.stderr.decode()
    assert json.loads(listed.stdout)[0]["exit_reason"] == "interrupted"


def test_plain_view_shows_subcall_progress_while_a_batch_is_in_flight(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.sub = lambda prompt: Fault(delay=0.2, text="ok")  # 64 calls, 8 at a time: ~1.6 s in flight
    fake_llm.add_root(
        reply("", "r = llm_query_batched([f'p{i}' for i in range(64)])\nprint(len(r))"), "FINAL(ok)"
    )
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--concurrency", "8"]))
    assert proc.returncode == 0, proc.stderr.decode()
    done = [int(n) for n in re.findall(r"sub-calls (\d+)/64 done", proc.stderr.decode())]
    assert done[0] == 0 and done[-1] == 64
    assert any(0 < n < 64 for n in done), done
    assert done == sorted(done)
