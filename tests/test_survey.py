"""Load once and fast (issue 13, item 5): a big named file is surveyed and the first model request
goes out while its full pass runs (rlmcli/survey.py), the REPL starts meanwhile (Repl.begin), and
--memory's default is sized by what the context needs as a str (run.sandbox_memory).
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import pytest
from conftest import ask_args, clean_env, popen_rlm
from fake_llm import Fault, reply

from rlmcli import run, survey
from rlmcli.context import load_context
from rlmcli.load_pass import Stopped
from rlmcli.settings import Settings
from rlmcli.walk import LoadOptions

MiB = 2**20
LINE = "2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: started\n"


def write_log(path: Path, mib: float, odd: str = "") -> str:
    """About `mib` MiB of log lines, `odd` in the middle; returns the text written."""
    half = LINE * int(mib * MiB / len(LINE) / 2)
    text = half + odd + half
    path.write_text(text, encoding="utf-8", newline="")
    return text


def first_user_text(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def test_a_big_file_is_surveyed_and_every_figure_after_the_first_prompt_is_exact(
    fake_llm, run_cli, tmp_path, monkeypatch
):
    monkeypatch.setattr(survey, "DEFER_BYTES", 64 * 1024)  # a 2 MiB file counts as big here
    data = tmp_path / "app.log"
    text = write_log(data, 2, odd="it\u2019s done \U0001f600\n")
    fake_llm.add_root(
        reply("Measure.", "print('LEN', len(context), 'LINES', context.count(chr(10)))"),
        reply("", "FINAL('ok')"),
    )
    trace = tmp_path / "run.jsonl"
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--json", "--trace", str(trace)]))
    assert proc.returncode == 0, proc.stderr.decode()

    assert f"reading {data} (2.0 MB) in full in the background".encode() in proc.stderr
    first = first_user_text(fake_llm.root_requests[0]["body"])
    assert "of about" in first and "estimated from samples" in first
    assert text[:100] in first  # the prefix is read, not estimated
    # The cell saw the whole file: the REPL started once the full pass was done.
    later = json.dumps(fake_llm.root_requests[1]["body"])
    assert f"LEN {len(text)} LINES {text.count(chr(10))}" in later

    out = json.loads(proc.stdout)
    assert out["context"]["chars"] == len(text)  # the full pass's figures, not the survey's
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    loaded = [e for e in events if e["event"] == "ContextLoaded"]
    assert len(loaded) == 1
    assert loaded[0]["chars"] == len(text)
    assert loaded[0]["sources"][0][2] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert events[-1]["event"] == "RunFinished"


def test_a_small_file_is_not_surveyed(fake_llm, run_cli, tmp_path):
    data = tmp_path / "small.log"
    text = write_log(data, 0.01)
    fake_llm.add_root(reply("", "FINAL('ok')"), reply("", "FINAL('ok')"))
    proc = run_cli(ask_args(fake_llm, str(data)))
    assert proc.returncode == 0, proc.stderr.decode()
    first = first_user_text(fake_llm.root_requests[0]["body"])
    assert f"with {len(text):,} total characters" in first and "estimated" not in first


@pytest.mark.parametrize("why", ["redact", "stdin", "two files", "directory"])
def test_only_one_named_file_without_redaction_is_deferrable(tmp_path, monkeypatch, why):
    monkeypatch.setattr(survey, "DEFER_BYTES", 1024)
    data = tmp_path / "a.log"
    write_log(data, 0.1)
    assert survey.deferrable([str(data)], LoadOptions())
    others = {"stdin": ["-"], "two files": [str(data), str(data)], "directory": [str(tmp_path)]}
    paths = others.get(why, [str(data)])
    assert not survey.deferrable(paths, LoadOptions(redact_secrets=why == "redact"))


def test_cancel_stops_a_surveyed_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(survey, "DEFER_BYTES", 1024)
    data = tmp_path / "a.log"
    write_log(data, 300)  # seconds of work for the child: the stop lands mid-pass
    ctx = survey.survey([str(data)], tmp_path / "work", LoadOptions())
    ctx.cancel()
    with pytest.raises(Stopped):
        ctx.finish()


def test_the_survey_estimates_come_near_the_exact_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(survey, "DEFER_BYTES", 1024)
    data = tmp_path / "a.log"
    text = write_log(data, 4, odd="caf\u00e9 \u2019 \U0001f600\n")
    ctx = survey.survey([str(data)], tmp_path / "work", LoadOptions())
    estimated = ctx.stats
    assert estimated.estimated and ctx.pending is not None
    ctx.finish()
    exact = ctx.stats
    assert not exact.estimated and ctx.pending is None
    assert (exact.chars, exact.lines) == (len(text), text.count("\n"))
    assert abs(estimated.chars - exact.chars) / exact.chars < 0.01
    assert abs(estimated.lines - exact.lines) / exact.lines < 0.01
    assert exact.char_width == 4  # the one emoji, which the samples may well miss
    assert ctx.files[0].sha256 == hashlib.sha256(data.read_bytes()).hexdigest()


def make_context(tmp_path: Path, text: str):
    data = tmp_path / "in.txt"
    data.write_text(text, encoding="utf-8", newline="")
    return load_context([str(data)], tmp_path / "work", LoadOptions())


def test_memory_auto_is_at_least_1g_and_an_explicit_memory_is_kept(tmp_path):
    ctx = make_context(tmp_path, "hello\n")
    assert run.sandbox_memory(Settings(), ctx) == 2**30
    assert run.sandbox_memory(Settings(memory="512m"), ctx) == 512 * MiB


@pytest.mark.parametrize("odd,factor", [("", 1), ("caf\u00e9", 3), ("\u2019", 3), ("\U0001f600", 5)])
def test_memory_auto_follows_the_widest_character(tmp_path, monkeypatch, odd, factor):
    monkeypatch.setattr(run, "AUTO_MEMORY_FLOOR", 0)  # the need itself, below the 1 GiB floor
    ctx = make_context(tmp_path, LINE * 1000 + odd + "\n")
    size = ctx.path.stat().st_size
    expected = int((run.context_memory.BASE_BYTES + size * (1 + factor)) * run.context_memory.MARGIN)
    assert run.sandbox_memory(Settings(), ctx) == expected


def test_a_context_the_old_1g_default_could_not_hold_loads_at_the_default(fake_llm, run_cli, tmp_path):
    """200 MiB of logs with one emoji: the str is 4 bytes a character (~800 MB) and the decode holds
    ~5 bytes a byte. At --memory 1g (the old default) the load fails; at the default it loads."""
    data = tmp_path / "big.log"
    text = write_log(data, 200, odd="\U0001f600\n")
    answer = reply("", "FINAL('LEN ' + str(len(context)))")
    fake_llm.add_root(answer, answer)
    failed = run_cli(ask_args(fake_llm, str(data), extra=["--memory", "1g", "--yes", "--no-cache"]))
    assert failed.returncode == 5, failed.stderr.decode()
    assert b"raise --memory" in failed.stderr
    proc = run_cli(ask_args(fake_llm, str(data), extra=["--yes", "--no-cache"]))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == f"LEN {len(text)}"


def test_ctrl_c_while_a_big_file_loads_stops_the_pass_and_exits_130(fake_llm, rlm_bin, tmp_path):
    """The first request is out while the full pass of a 400 MB file runs on a thread; Ctrl-C then
    stops the pass at its next chunk and exits 130, with no abort from a thread left in the
    secrets scanner's C++ at exit, and no ContextLoaded for a pass that did not end."""
    data = tmp_path / "big.log"
    write_log(data, 400)
    fake_llm.add_root(Fault(delay=60))
    trace = tmp_path / "run.jsonl"
    args = ask_args(fake_llm, str(data), extra=["--trace", str(trace), "--yes"])
    proc = popen_rlm(rlm_bin, args, clean_env(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while not fake_llm.root_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake_llm.root_requests, "no first request"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"terminate called" not in err and b"Traceback" not in err, err.decode()
    events = [json.loads(line)["event"] for line in trace.read_text().splitlines()]
    assert events[-1] == "RunFinished" and "ContextLoaded" not in events
