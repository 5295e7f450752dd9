"""The JSONL trace: one flushed line per event, credentials redacted, read back tolerantly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmcli.errors import InputError
from rlmcli.events import (
    CellFinished,
    ContextLoaded,
    FinalAnswer,
    ModelCall,
    Notice,
    RunFinished,
    RunStarted,
    new_run_id,
)
from rlmcli.record.trace import TraceWriter, read_trace

PLANTED = "sk-planted-9b1f0e7d3c5a4286-do-not-leak"


def run_events() -> list:
    run = RunStarted("How many errors?", "openai/gpt-5-mini", "openai/gpt-5-mini", "local", id=new_run_id())
    return [
        run,
        ContextLoaded("1 file, 12 B", kind="file", chars=12, bytes=12, files=1, parent=run.id),
        ModelCall("root", "openai/gpt-5-mini", 100, 20, 0.001, 0.5, prompt="p", reply="r", parent=run.id),
        CellFinished(1, "3 errors\n", None, 0.01, parent=run.id),
        FinalAnswer("3", parent=run.id),
        RunFinished("final", "3", iterations=1, prompt_tokens=100, completion_tokens=20, parent=run.id),
    ]


def test_writes_one_json_line_per_event_flushed_as_it_goes(tmp_path: Path):
    path = tmp_path / "deep" / "dir" / "run.jsonl"  # parent directories are created
    events = run_events()
    writer = TraceWriter(path)
    try:
        for count, event in enumerate(events, start=1):
            writer(event)
            # Read while the writer is still open: every event so far is on disk, whole.
            lines = path.read_text(encoding="utf-8").splitlines()
            assert len(lines) == count
            assert json.loads(lines[-1]) == event.to_dict()
    finally:
        writer.close()
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_appends_to_an_existing_trace(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    events = run_events()
    with TraceWriter(path) as writer:
        writer(events[0])
    with TraceWriter(path) as writer:
        writer(events[1])
    assert [e.to_dict() for e in read_trace(path)] == [e.to_dict() for e in events[:2]]


def test_credentials_from_the_environment_never_reach_the_trace(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MY_API_KEY", PLANTED)
    monkeypatch.setenv("OTHER_TOKEN", 'quote"and\\slash-secret')  # JSON escapes these characters
    path = tmp_path / "run.jsonl"
    run = RunStarted(f"why does {PLANTED} fail?", "m", "m", "local", inputs=[f"/keys/{PLANTED}"])
    with TraceWriter(path) as writer:
        writer(run)
        writer(Notice(f"auth failed with key {PLANTED}", parent=run.id))
        writer(CellFinished(1, 'env: quote"and\\slash-secret', None, 0.1, parent=run.id))
    text = path.read_text(encoding="utf-8")
    assert PLANTED not in text and "slash-secret" not in text
    events = read_trace(path)  # still valid JSON after redaction
    assert events[0].question == "why does *** fail?"
    assert events[1].message == "auth failed with key ***"
    assert events[2].output == "env: ***"


def test_round_trips_every_event(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    events = run_events()
    with TraceWriter(path) as writer:
        for event in events:
            writer(event)
    read = read_trace(path)
    assert [type(e) for e in read] == [type(e) for e in events]
    assert [e.to_dict() for e in read] == [e.to_dict() for e in events]


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    events = run_events()
    with TraceWriter(path) as writer:
        for event in events[:3]:
            writer(event)
    whole = json.dumps(events[3].to_dict())
    with path.open("a", encoding="utf-8") as f:
        f.write(whole[: len(whole) // 2])  # the process died mid-write
    assert [e.to_dict() for e in read_trace(path)] == [e.to_dict() for e in events[:3]]


def test_a_garbled_last_line_is_dropped_but_a_garbled_middle_line_is_an_error(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    good = [json.dumps(e.to_dict()) for e in run_events()[:2]]
    path.write_text("\n".join([*good, "\x00\x00\x00garbage"]) + "\n", encoding="utf-8")
    assert len(read_trace(path)) == 2
    path.write_text("\n".join([good[0], "{not json", good[1]]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_trace(path)


def test_events_of_a_newer_rlm_are_skipped(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    first = run_events()[0].to_dict()
    newer = {"event": "SomethingNew", "id": "x", "parent": None, "ts": 0.0, "payload": 1}
    path.write_text(json.dumps(first) + "\n" + json.dumps(newer) + "\n", encoding="utf-8")
    assert [e.name for e in read_trace(path)] == ["RunStarted"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no trace at"),
        ("", "holds no complete rlm event"),
        ("hello\nworld\n", "not an rlm trace"),
        ('{"a": 1}\n{"b": 2}\n', "not an rlm trace"),
        ('{"event": "RunStarted"}\n{"event": "RunStarted"}\n', "not an rlm trace"),  # fields missing
    ],
)
def test_a_missing_or_foreign_file_is_an_input_error(tmp_path: Path, content, message):
    path = tmp_path / "trace.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        read_trace(path)
    assert caught.value.exit_status == 2


def test_a_directory_is_not_a_trace(tmp_path: Path):
    with pytest.raises(InputError, match="directory"):
        read_trace(tmp_path)


def test_an_unwritable_trace_path_fails_before_the_run(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the trace"):
        TraceWriter(blocker / "run.jsonl")  # a parent that is a file


def test_a_failing_write_is_reported_once_and_does_not_raise(tmp_path: Path):
    reports: list[str] = []
    writer = TraceWriter(tmp_path / "run.jsonl", on_error=reports.append)

    class FullDisk:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    writer._file.close()
    writer._file = FullDisk()  # type: ignore[assignment]
    for event in run_events():
        writer(event)  # never raises
    writer.close()
    assert len(reports) == 1 and "No space left on device" in reports[0]
    assert writer.failed


def test_writing_after_close_is_ignored(tmp_path: Path):
    writer = TraceWriter(tmp_path / "run.jsonl")
    writer.close()
    writer(run_events()[0])
    assert (tmp_path / "run.jsonl").read_text() == ""
