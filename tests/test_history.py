"""The SQLite run history and `rlm logs`: rows at start and finish, lookups, migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlmcli.cli.logs import logs_app
from rlmcli.errors import InputError
from rlmcli.events import CellFinished, RunFinished, RunStarted
from rlmcli.record import history as history_mod
from rlmcli.record.history import MIGRATIONS, History, home

PLANTED = "sk-planted-4c2e9a7f1b3d5068-history"


@pytest.fixture(autouse=True)
def rlm_home(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets its own RLM_HOME: nothing touches the user's real history."""
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def started(run_id: str, ts: float, question: str = "How many errors?", **kw) -> RunStarted:
    return RunStarted(
        question, "openai/gpt-5-mini", "openai/gpt-4o-mini", "local",
        inputs=["logs/", "-"], cwd="/work", id=run_id, ts=ts, **kw,
    )  # fmt: skip


def finished(run_id: str, **kw) -> RunFinished:
    values = dict(
        exit_reason="final", answer="3 errors", iterations=2, subcalls=5, prompt_tokens=1200,
        completion_tokens=300, cost_usd=0.0042, elapsed_s=3.5,
    )  # fmt: skip
    values.update(kw)
    return RunFinished(**values, parent=run_id)


def record_run(hist: History, run_id: str, ts: float, finish: bool = True, **kw) -> None:
    emit = hist.recorder(hist.trace_path_for(run_id))
    emit(started(run_id, ts, **kw))
    emit(CellFinished(1, "out", None, 0.1, parent=run_id))  # other events are ignored
    if finish:
        emit(finished(run_id))


def test_home_is_rlm_home_or_the_user_data_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "elsewhere"))
    assert home() == tmp_path / "elsewhere"
    assert History().path == tmp_path / "elsewhere" / "history.sqlite3"
    assert History().trace_path_for("abc") == tmp_path / "elsewhere" / "traces" / "abc.jsonl"
    monkeypatch.delenv("RLM_HOME")
    monkeypatch.setattr(history_mod.platformdirs, "user_data_path", lambda app: tmp_path / "data" / app)
    assert home() == tmp_path / "data" / "rlm"


def test_creates_the_schema_at_the_current_version(rlm_home: Path):
    hist = History()
    assert not hist.path.exists()
    assert hist.recent() == []  # reading an absent history creates nothing
    assert not hist.path.exists()
    record_run(hist, "20261122-100000-aaaaaa", 1000.0)
    conn = sqlite3.connect(hist.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert columns == [
        "id", "started_at", "cwd", "inputs", "question", "model", "sub_model", "sandbox", "answer",
        "exit_reason", "partial", "iterations", "subcalls", "prompt_tokens", "completion_tokens",
        "cost_usd", "cost_known", "elapsed_s", "trace_path", "parent_run", "cache_hits", "cache_saved_tokens",
        "cache_saved_cost_usd",
    ]  # fmt: skip


def test_records_a_run_from_its_start_and_finish_events(rlm_home: Path):
    hist = History()
    record_run(hist, "20261122-100000-aaaaaa", 1000.0)
    run = hist.get("20261122-100000-aaaaaa")
    assert (run.question, run.model, run.sub_model, run.sandbox) == (
        "How many errors?", "openai/gpt-5-mini", "openai/gpt-4o-mini", "local",
    )  # fmt: skip
    assert run.inputs == ["logs/", "-"] and run.cwd == "/work" and run.started_at == 1000.0
    assert (run.exit_reason, run.answer, run.partial) == ("final", "3 errors", False)
    assert (run.iterations, run.subcalls, run.prompt_tokens, run.completion_tokens) == (2, 5, 1200, 300)
    assert (run.cost_usd, run.cost_known, run.elapsed_s) == (0.0042, True, 3.5)
    assert run.trace_path == str(rlm_home / "traces" / "20261122-100000-aaaaaa.jsonl")


def test_a_run_that_never_finishes_stays_running(rlm_home: Path):
    hist = History()
    record_run(hist, "20261122-100000-aaaaaa", 1000.0, finish=False)
    run = hist.get("20261122-100000-aaaaaa")
    assert run.exit_reason == "running"
    assert run.answer is None and run.cost_usd is None and run.iterations is None


def test_only_the_top_level_run_is_recorded(rlm_home: Path):
    hist = History()
    emit = hist.recorder(None)
    emit(started("20261122-100000-aaaaaa", 1000.0))
    emit(started("child", 1001.0, parent="20261122-100000-aaaaaa"))  # a recursive child run
    emit(finished("child", answer="child answer"))
    emit(finished("20261122-100000-aaaaaa"))
    assert [r.id for r in hist.recent()] == ["20261122-100000-aaaaaa"]
    assert hist.get("20261122-100000-aaaaaa").answer == "3 errors"
    assert hist.get("20261122-100000-aaaaaa").trace_path is None


def test_credentials_are_redacted_in_the_history(rlm_home: Path, monkeypatch):
    monkeypatch.setenv("MY_API_KEY", PLANTED)
    hist = History()
    emit = hist.recorder(None)
    emit(started("20261122-100000-aaaaaa", 1000.0, question=f"is {PLANTED} valid?"))
    emit(finished("20261122-100000-aaaaaa", answer=f"the key {PLANTED} is revoked"))
    assert PLANTED.encode() not in hist.path.read_bytes()
    run = hist.get("20261122-100000-aaaaaa")
    assert run.question == "is *** valid?" and run.answer == "the key *** is revoked"


def test_recent_is_newest_first_and_limited(rlm_home: Path):
    hist = History()
    for i in range(5):
        record_run(hist, f"20261122-10000{i}-{i:06x}", 1000.0 + i)
    assert [r.id for r in hist.recent(3)] == [f"20261122-10000{i}-{i:06x}" for i in (4, 3, 2)]
    assert len(hist.recent()) == 5


def test_get_by_id_prefix_random_suffix_or_last(rlm_home: Path):
    hist = History()
    record_run(hist, "20261122-100000-3fa9c1", 1000.0)
    record_run(hist, "20261122-110000-77b2e0", 2000.0)
    record_run(hist, "20261123-090000-3fb000", 3000.0)
    assert hist.get("20261122-10").id == "20261122-100000-3fa9c1"
    assert hist.get("77b").id == "20261122-110000-77b2e0"  # the random part is enough
    assert hist.get("last").id == "20261123-090000-3fb000"
    with pytest.raises(InputError, match="ambiguous"):
        hist.get("20261122")
    with pytest.raises(InputError, match="ambiguous"):
        hist.get("3f")
    with pytest.raises(InputError, match="no run"):
        hist.get("ffff")
    with pytest.raises(InputError, match="no run"):
        hist.get("2026%")  # LIKE wildcards are taken literally


def test_get_without_any_history_is_an_input_error(rlm_home: Path):
    with pytest.raises(InputError, match="no runs recorded yet"):
        History().get("abc")


def test_migrations_are_idempotent(rlm_home: Path):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    again = History()  # a second process opening the same database
    record_run(again, "20261122-110000-bbbbbb", 2000.0)
    assert [r.id for r in again.recent()] == ["20261122-110000-bbbbbb", "20261122-100000-aaaaaa"]
    conn = sqlite3.connect(again.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_new_migration_is_applied_to_an_existing_database(rlm_home: Path, monkeypatch):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    monkeypatch.setattr(history_mod, "MIGRATIONS", [*MIGRATIONS, ("ALTER TABLE runs ADD COLUMN tags TEXT",)])
    assert History().get("aaaaaa").exit_reason == "final"  # old rows still read
    conn = sqlite3.connect(History().path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert "tags" in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]


def test_a_failed_migration_leaves_the_database_as_it_was(rlm_home: Path, monkeypatch):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    broken = ("ALTER TABLE runs ADD COLUMN tags TEXT", "THIS IS NOT SQL")
    monkeypatch.setattr(history_mod, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(InputError, match="cannot read the run history"):
        History().recent()
    conn = sqlite3.connect(History().path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert "tags" not in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]


def test_an_unwritable_history_warns_once_and_never_raises(rlm_home: Path):
    rlm_home.parent.mkdir(parents=True, exist_ok=True)
    rlm_home.write_text("a file where the directory should be")
    warnings: list[str] = []
    emit = History().recorder(None, on_error=warnings.append)
    emit(started("20261122-100000-aaaaaa", 1000.0))
    emit(finished("20261122-100000-aaaaaa"))
    assert len(warnings) == 1 and "cannot record the run" in warnings[0]


def test_a_locked_database_does_not_stall_or_crash_a_run(rlm_home: Path, monkeypatch):
    hist = History()
    record_run(hist, "20261122-100000-aaaaaa", 1000.0)
    monkeypatch.setattr(history_mod, "WRITE_TIMEOUT_S", 0.1)
    blocker = sqlite3.connect(hist.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    warnings: list[str] = []
    try:
        emit = hist.recorder(None, on_error=warnings.append)
        emit(started("20261122-110000-bbbbbb", 2000.0))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(warnings) == 1 and "locked" in warnings[0]
    emit(finished("20261122-110000-bbbbbb"))  # the lock is gone: the finish writes the whole row
    run = hist.get("bbbbbb")
    assert (run.question, run.exit_reason) == ("How many errors?", "final")
    assert len(warnings) == 1


def test_a_corrupt_history_is_an_input_error(rlm_home: Path):
    rlm_home.mkdir(parents=True)
    (rlm_home / "history.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match="cannot read the run history"):
        History().recent()


# -- rlm logs ----------------------------------------------------------------------------------

runner = CliRunner()


def test_logs_lists_recent_runs(rlm_home: Path):
    hist = History()
    record_run(hist, "20261122-100000-aaaaaa", 1000.0, question="First question?")
    record_run(hist, "20261122-110000-bbbbbb", 2000.0, finish=False, question="Second\nquestion " + "x" * 300)
    result = runner.invoke(logs_app, [])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "EXIT", "COST", "QUESTION"]
    assert lines[1].startswith("20261122-110000-bbbbbb") and "running" in lines[1]
    assert "Second question xxx" in lines[1] and len(lines[1]) < 200  # one line, truncated
    assert lines[2].startswith("20261122-100000-aaaaaa") and "$0.0042" in lines[2]
    assert "First question?" in lines[2]
    assert len(runner.invoke(logs_app, ["-n", "1"]).stdout.splitlines()) == 2


def test_logs_json_is_an_array_of_runs(rlm_home: Path):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    result = runner.invoke(logs_app, ["--json"])
    assert result.exit_code == 0
    runs = json.loads(result.stdout)
    assert [r["id"] for r in runs] == ["20261122-100000-aaaaaa"]
    assert runs[0]["answer"] == "3 errors" and runs[0]["inputs"] == ["logs/", "-"]


def test_logs_without_runs_says_so_on_stderr(rlm_home: Path):
    result = runner.invoke(logs_app, [])
    assert result.exit_code == 0 and result.stdout == ""
    assert "no runs recorded yet" in result.stderr
    assert json.loads(runner.invoke(logs_app, ["--json"]).stdout) == []


def test_logs_show_prints_every_field_and_the_answer(rlm_home: Path):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    result = runner.invoke(logs_app, ["show", "aaaa"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "id:          20261122-100000-aaaaaa", "exit:        final", "question:    How many errors?",
        "inputs:      logs/ -", "model:       openai/gpt-5-mini (sub-calls: openai/gpt-4o-mini)",
        "sandbox:     local", "iterations:  2", "sub-calls:   5", "1,500 (1,200 prompt + 300 completion)",
        "$0.0042", "3.5 s", str(History().trace_path_for("20261122-100000-aaaaaa")) + " (missing)",
    ):  # fmt: skip
        assert expected in out
    assert out.endswith("\n3 errors\n")
    as_json = json.loads(runner.invoke(logs_app, ["show", "last", "--json"]).stdout)
    assert as_json["id"] == "20261122-100000-aaaaaa" and as_json["cost_usd"] == 0.0042


def test_logs_show_unknown_or_ambiguous_id_exits_2(rlm_home: Path):
    record_run(History(), "20261122-100000-aaaaaa", 1000.0)
    record_run(History(), "20261122-110000-bbbbbb", 2000.0)
    for key, message in (("nope", "no run 'nope'"), ("2026", "ambiguous")):
        result = runner.invoke(logs_app, ["show", key])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.startswith("rlm: error: ") and message in result.stderr


def test_logs_path_prints_rlm_home(rlm_home: Path):
    result = runner.invoke(logs_app, ["path"])
    assert result.exit_code == 0 and result.stdout == f"{rlm_home}\n"
