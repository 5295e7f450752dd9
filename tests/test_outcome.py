"""How a run ends: every ExitReason carries the exit status the README documents, every error
declares its reason, and a stopped run leaves one RunStopped event (old traces still replay)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import MODEL, REPO, SENTINEL_KEY
from fake_llm import Fault, reply
from typer.testing import CliRunner

from rlmcli.bench.common import BenchDataError
from rlmcli.bench.report import is_error
from rlmcli.cli.app import app
from rlmcli.errors import (
    LIMIT_REASONS,
    ExitReason,
    ExitStatus,
    InputError,
    LimitReached,
    ProviderError,
    RlmError,
    SandboxError,
    UsageError,
)
from rlmcli.events import RunFinished, RunStarted, RunStopped
from rlmcli.model.providers import ModelNotAllowed
from rlmcli.record.history import DB_NAME, History
from rlmcli.record.trace import TraceWriter, read_trace

# The README's exit-status table, reason by reason.
DOCUMENTED = {
    ExitReason.FINAL: 0,
    ExitReason.ERROR: 1,
    ExitReason.USAGE_ERROR: 2,
    ExitReason.INPUT_ERROR: 2,
    ExitReason.MAX_ITERATIONS: 3,
    ExitReason.MAX_SUBCALLS: 3,
    ExitReason.MAX_COST: 3,
    ExitReason.MAX_TOKENS: 3,
    ExitReason.TIMEOUT: 3,
    ExitReason.PROVIDER_ERROR: 4,
    ExitReason.SANDBOX_ERROR: 5,
    ExitReason.INVALID_ANSWER: 6,
    ExitReason.INTERRUPTED: 130,
}


def test_every_reason_is_in_the_table() -> None:
    assert set(DOCUMENTED) == set(ExitReason)


@pytest.mark.parametrize("reason", list(ExitReason))
def test_each_reason_carries_its_documented_exit_status(reason: ExitReason) -> None:
    assert int(reason.status) == DOCUMENTED[reason]
    assert reason.is_limit == (DOCUMENTED[reason] == 3)
    assert reason.is_error == (DOCUMENTED[reason] in (1, 2, 4, 5))


def test_the_readme_documents_the_same_table() -> None:
    """README's exit-status table: `| status | reasons | meaning |`, one row per status."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (`[^|]*`) \|", readme, re.MULTILINE)
    in_readme = {
        reason: int(status) for status, reasons in rows for reason in re.findall(r"`(\w+)`", reasons)
    }
    assert in_readme == {reason.value: status for reason, status in DOCUMENTED.items()}
    assert {int(s) for s in ExitStatus} == set(DOCUMENTED.values())


def test_reason_strings_never_change() -> None:
    """Users' scripts match on --json's exit_reason and the history's column."""
    assert [r.value for r in ExitReason] == [
        "final", "max_iterations", "max_subcalls", "max_cost", "max_tokens", "timeout", "usage_error",
        "input_error", "provider_error", "sandbox_error", "interrupted", "error", "invalid_answer",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RlmError("x"), ExitReason.ERROR),
        (UsageError("x"), ExitReason.USAGE_ERROR),
        (InputError("x"), ExitReason.INPUT_ERROR),
        (ProviderError("x"), ExitReason.PROVIDER_ERROR),
        (SandboxError("x"), ExitReason.SANDBOX_ERROR),
        # Subclasses inherit their family's reason (the class name says nothing about it).
        (ModelNotAllowed("x"), ExitReason.USAGE_ERROR),
        (BenchDataError("x"), ExitReason.INPUT_ERROR),
    ],
)
def test_each_error_declares_its_reason(error: RlmError, reason: ExitReason) -> None:
    assert error.reason is reason and error.exit_status == reason.status


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        ("iterations", "max_iterations"),
        ("subcalls", "max_subcalls"),
        ("cost", "max_cost"),
        ("tokens", "max_tokens"),
        ("timeout", "timeout"),
    ],
)
def test_a_limit_carries_its_reason(limit: str, reason: str) -> None:
    stopped = LimitReached(limit, "ran out")
    assert stopped.limit == limit and stopped.reason == reason and stopped.exit_status == ExitStatus.LIMIT


def test_every_limit_is_mapped_and_an_unknown_one_is_a_bug() -> None:
    assert set(LIMIT_REASONS.values()) == {r for r in ExitReason if r.is_limit}
    with pytest.raises(KeyError):
        LimitReached("patience", "ran out")


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"exit_reason": "provider_error", "error": "401"}, True),
        ({"exit_reason": "error", "error": "unexpected KeyError"}, True),
        ({"exit_reason": "internal_error", "error": "unexpected KeyError"}, True),  # older rlm
        ({"exit_reason": "max_cost", "error": "cost limit"}, False),
        ({"exit_reason": "final", "error": "scorer failed: ValueError"}, False),
        ({"exit_reason": "final", "error": None}, False),
    ],
)
def test_bench_error_rows(row: dict, error: bool) -> None:
    assert is_error(row) is error


# -- the event ------------------------------------------------------------------------------------


def test_run_stopped_round_trips_through_a_trace(tmp_path: Path) -> None:
    run = RunStarted("q", MODEL, MODEL, "local")
    events = [
        run,
        RunStopped("provider_error", "401 from the provider", "check the key", parent=run.id),
        RunFinished("provider_error", None, parent=run.id),
    ]
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    for event in events:
        writer(event)
    writer.close()
    assert read_trace(path) == events


def old_trace(path: Path) -> Path:
    """A trace as rlm wrote it before RunStopped: LimitReached and ErrorEvent lines."""
    lines = [
        {"event": "RunStarted", "id": "r1", "parent": None, "ts": 1.0, "question": "q", "model": MODEL,
         "sub_model": MODEL, "sandbox": "local", "inputs": [], "cwd": "", "version": "0.1"},
        {"event": "ErrorEvent", "id": "e1", "parent": "r1", "ts": 2.0, "kind": "sandbox_error",
         "message": "the REPL died"},
        {"event": "LimitReached", "id": "e2", "parent": "r1", "ts": 3.0, "limit": "max_iterations",
         "message": "no answer after 1 iterations"},
        {"event": "RunFinished", "id": "e3", "parent": "r1", "ts": 4.0, "exit_reason": "max_iterations",
         "answer": "best guess", "partial": True, "iterations": 1},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_an_old_trace_reads_its_stops_as_run_stopped(tmp_path: Path) -> None:
    events = read_trace(old_trace(tmp_path / "old.jsonl"))
    stops = [e for e in events if isinstance(e, RunStopped)]
    assert [(s.reason, s.message, s.hint) for s in stops] == [
        ("sandbox_error", "the REPL died", None),
        ("max_iterations", "no answer after 1 iterations", None),
    ]


def test_an_old_trace_replays(tmp_path: Path) -> None:
    path = old_trace(tmp_path / "old.jsonl")
    result = CliRunner().invoke(app, ["replay", str(path)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert result.stdout == "best guess\n"
    assert "stopped (max_iterations)" in result.stderr


# -- end to end, in process -------------------------------------------------------------------------


@pytest.fixture
def ask(tmp_path: Path, monkeypatch, fake_llm):
    """ask(*extra) -> (click Result, the trace's events, the history row) of one `rlm ask --json`."""
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {
        "OPENAI_API_KEY": SENTINEL_KEY,
        "RLM_CONFIG": str(tmp_path / "no-config.toml"),
        "RLM_HOME": str(tmp_path / "home"),
        "NO_COLOR": "1",
    }
    (tmp_path / "in.txt").write_text("data\n")
    trace = tmp_path / "trace.jsonl"

    def run(*extra: str, model: tuple[str, ...] = ("--model", MODEL, "--api-base", fake_llm.url)):
        args = ["ask", "in.txt", "q?", *model, "--sandbox", "local", "--json", "--trace", str(trace), *extra]
        result = CliRunner().invoke(app, args, env=env)
        row = History(tmp_path / "home" / DB_NAME).get("last")
        return result, read_trace(trace), row

    return run


def test_a_limit_is_exit_3_with_one_run_stopped(ask, fake_llm) -> None:
    fake_llm.add_root(reply("Looking.", "print(1)"), "Not sure yet.")
    result, events, row = ask("--max-iterations", "1")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert document["exit_reason"] == "max_iterations" and document["partial_answer"] == "Not sure yet."
    assert [e.name for e in events[-2:]] == ["RunStopped", "RunFinished"]
    assert events[-2].reason == "max_iterations" and "1 iterations" in events[-2].message
    assert events[-1].exit_reason == "max_iterations" and row.exit_reason == "max_iterations"


def test_a_provider_error_in_the_loop_is_exit_4_with_one_run_stopped(ask, fake_llm) -> None:
    fake_llm.add_root(Fault(status=401, message="Incorrect API key provided"))
    result, events, row = ask()
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["exit_reason"] == "provider_error"
    stops = [e for e in events if isinstance(e, RunStopped)]
    assert len(stops) == 1 and stops[0].reason == "provider_error"
    assert "Incorrect API key" in stops[0].message
    assert row.exit_reason == "provider_error"


def test_an_answer_has_no_run_stopped(ask, fake_llm) -> None:
    fake_llm.add_root(reply("", 'FINAL("data")'))
    result, events, row = ask()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exit_reason"] == "final" and row.exit_reason == "final"
    assert not [e for e in events if isinstance(e, RunStopped)]
    assert [e.name for e in events[-2:]] == ["FinalAnswer", "RunFinished"]


def test_an_error_before_the_loop_records_its_reason_and_hint(ask, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result, events, row = ask(model=("--model", "anthropic/claude-3-5-haiku-20241022"))
    assert result.exit_code == 4, result.output
    assert "ANTHROPIC_API_KEY is not set" in result.stderr
    stop = next(e for e in events if isinstance(e, RunStopped))
    assert stop.reason == "provider_error" and "ANTHROPIC_API_KEY" in (stop.hint or "")
    assert events[-1].exit_reason == "provider_error" and row.exit_reason == "provider_error"


def test_an_input_error_records_input_error(ask, tmp_path: Path) -> None:
    (tmp_path / "in.txt").unlink()
    result, events, row = ask()
    assert result.exit_code == 2, result.output
    assert "no such file or directory: in.txt" in result.stderr
    assert [e.name for e in events[-2:]] == ["RunStopped", "RunFinished"]
    assert events[-1].exit_reason == "input_error" and row.exit_reason == "input_error"
