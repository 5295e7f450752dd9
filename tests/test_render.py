"""The live view: plain lines off a terminal (no escape codes), Rich on one, quiet, verbose, replay."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rlmcli.events import (
    CellFinished,
    CellStarted,
    ContextLoaded,
    Event,
    FinalAnswer,
    IterationStarted,
    ModelCall,
    Notice,
    RunFinished,
    RunStarted,
    RunStopped,
    SubcallProgress,
)
from rlmcli.record.replay import replay
from rlmcli.view.live import LiveView

T0 = 1_700_000_000.0
ROOT, SUB = "openai/gpt-5-mini", "openai/gpt-5-nano"
ANSWER = "The retry policy lives in config/retry.yaml: 5 attempts, exponential backoff capped at 30 s."
CODE_1 = "print(len(context))\nprint(context[:200])"
CODE_2 = "chunks = [context[i:i + 50_000] for i in range(0, len(context), 50_000)]\n" + (
    "answers = llm_query_batched([f'Find retry settings: {c}' for c in chunks])\nprint(answers[:3])"
)
REPLY_1 = f"Let me look at the size of the input first.\n\n```repl\n{CODE_1}\n```\n"
REPLY_2 = f"The context is big; I will split it and ask sub-models.\n```repl\n{CODE_2}\n```"
REPLY_3 = f"FINAL({ANSWER})"


def run_events(batch: int = 64, concurrency: int = 16, sub_cost: float | None = 0.0001) -> list[Event]:
    """A realistic run: an exploring iteration, one with a `batch`-prompt fan-out, then FINAL."""
    t = T0
    start = RunStarted("Where is the retry policy?", ROOT, SUB, "docker", ts=t)
    events: list[Event] = [
        start,
        ContextLoaded("context: 412 files, 3.1 MB, 80,211 lines, ~820k tokens", "dir", parent=start.id, ts=t),
        Notice("no Docker daemon answers; using the local sandbox (weaker isolation)", warning=True, ts=t),
    ]
    it1 = IterationStarted(1, parent=start.id, ts=t + 0.1)
    cell1 = CellStarted(1, CODE_1, parent=it1.id, ts=t + 2.0)
    events += [
        it1,
        ModelCall("root", ROOT, 3200, 150, 0.0011, 1.9, "q", REPLY_1, parent=it1.id, ts=t + 2),
        cell1,
        CellFinished(1, "3212345\n" + "line\n" * 50, None, 0.02, parent=cell1.id, ts=t + 2.1),
    ]
    it2 = IterationStarted(2, parent=start.id, ts=t + 2.2)
    cell2 = CellStarted(2, CODE_2, parent=it2.id, ts=t + 4.0)
    events += [
        it2,
        ModelCall("root", ROOT, 4100, 220, 0.0014, 1.8, "out", REPLY_2, parent=it2.id, ts=t + 4),
        cell2,
        (first := SubcallProgress(batch, 0, 0, min(batch, concurrency), parent=cell2.id, ts=t + 4.01)),
    ]
    for done in range(1, batch + 1):
        ts = t + 4.01 + done * 0.05
        events.append(ModelCall("sub", SUB, 900, 40, sub_cost, 0.4, parent=cell2.id, ts=ts))
        in_flight = min(batch - done, concurrency)
        events.append(SubcallProgress(batch, done, 0, in_flight, batch=first.id, parent=cell2.id, ts=ts))
    end = t + 4.01 + batch * 0.05
    output = "['no retry here', 'retry: 5']"
    events.append(CellFinished(2, output, None, end - t - 4, parent=cell2.id, ts=end))
    it3 = IterationStarted(3, parent=start.id, ts=end + 0.1)
    events += [
        it3,
        ModelCall("root", ROOT, 5000, 60, 0.0013, 1.2, "out", REPLY_3, parent=it3.id, ts=end + 1),
        FinalAnswer(ANSWER, parent=start.id, ts=end + 1.1),
        RunFinished(
            "final", ANSWER, iterations=3, subcalls=batch, prompt_tokens=12300 + 900 * batch,
            completion_tokens=430 + 40 * batch, cost_usd=0.0038 + (sub_cost or 0) * batch,
            cost_known=sub_cost is not None, elapsed_s=end + 1.2 - t, parent=start.id, ts=end + 1.2,
        ),
    ]  # fmt: skip
    return events


def render(events: list[Event], **options) -> str:
    stream = io.StringIO()
    view = LiveView(stream=stream, force_plain=options.pop("force_plain", True), **options)
    for event in events:
        view(event)
    view.close()
    return stream.getvalue()


def test_plain_has_no_escape_codes_and_every_line_is_prefixed() -> None:
    out = render(run_events())
    assert "\x1b" not in out
    assert all(line.startswith("rlm: ") for line in out.splitlines())
    assert "context: 412 files" in out
    assert "warning: no Docker daemon answers" in out
    for n in (1, 2, 3):
        assert f"rlm: iteration {n}\n" in out


def test_plain_shows_a_batch_while_it_is_in_flight() -> None:
    out = render(run_events(batch=64))
    progress = re.findall(r"sub-calls (\d+)/64 done, (\d+) in flight, (\d+) failed", out)
    done = [int(d) for d, _, _ in progress]
    assert done[0] == 0 and done[-1] == 64
    assert any(0 < d < 64 for d in done)
    assert done == sorted(done)
    assert len(done) <= 12  # throttled: start, every 10 %, end (the events here are 50 ms apart)
    assert progress[0][1] == "16"
    assert "sub-calls 64/64 done, 0 in flight, 0 failed in 3.2s" in out


def test_plain_throttles_by_time_too() -> None:
    """Slow batch: a line at least every half second of progress even below 10 %."""
    cell = CellStarted(1, "x", ts=T0)
    first = SubcallProgress(1000, 0, 0, 16, parent=cell.id, ts=T0)
    events: list[Event] = [cell, first]
    events += [
        SubcallProgress(1000, d, 0, 16, batch=first.id, parent=cell.id, ts=T0 + d * 0.1) for d in range(1, 21)
    ]
    done = [int(d) for d in re.findall(r"sub-calls (\d+)/1000", render(events))]
    assert done == [0, 5, 10, 15, 20]


def test_plain_per_turn_usage_cells_and_totals() -> None:
    out = render(run_events())
    assert "model turn: 3,200 tokens in, 150 out, 1.9s; so far 3,350 tokens, $0.0011" in out
    assert "cell 1.1: 0.0s, 51 lines of output" in out
    assert "cell 2.1: 3.2s, 64 sub-calls, 1 line of output" in out
    assert "answer: 92 characters" in out
    last = out.splitlines()[-1]
    assert last == (
        "rlm: done: 3 iterations, 64 sub-calls, 72,890 tokens (69,900 in, 2,990 out), $0.0102, 8.4s"
    )
    # compact: the code and outputs only come with --verbose
    assert "llm_query_batched" not in out and "3212345" not in out


def test_plain_cost_unknown() -> None:
    out = render(run_events(sub_cost=None))
    assert "so far 3,350 tokens, $0.0011" in out  # root calls are priced
    assert "cost unknown" in out.splitlines()[-1]


def test_plain_verbose_shows_reply_code_and_output() -> None:
    out = render(run_events(), verbose=True)
    assert "\x1b" not in out
    assert "rlm:     The context is big; I will split it and ask sub-models." in out
    assert "rlm:     answers = llm_query_batched(" in out
    assert "rlm:     3212345" in out
    assert "```" not in out  # the code shows as a cell, not inside the reply


def test_plain_errors_limits_and_hostile_text() -> None:
    run = RunStarted("q", "m", "m", "local")
    cell = CellStarted(1, "print('\\x1b[2J')", parent=run.id)
    events = [
        run,
        cell,
        CellFinished(1, "\x1b[31mred\x1b[0m\n", "Traceback ...\nNameError: name 'x' is not defined", 0.1,
                     parent=cell.id),
        RunStopped("max_cost", "cost limit $0.01 reached"),
        RunStopped("provider_error", "401 from the provider", "check OPENAI_API_KEY"),
    ]  # fmt: skip
    out = render(events, verbose=True)
    assert "\x1b" not in out
    assert "\\x1b[31mred" in out
    assert "error: NameError: name 'x' is not defined" in out
    # Limits and errors are the CLI's one `rlm: error:` line, not the view's.
    assert "cost limit" not in out and "401" not in out and "OPENAI_API_KEY" not in out


def test_secrets_are_redacted(monkeypatch) -> None:
    secret = "sk-test-RENDER-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    cell = CellStarted(1, f"key = '{secret}'")
    events = [cell, CellFinished(1, secret, f"bad {secret}", 0.1, parent=cell.id)]
    for force_plain in (True, False):
        stream = io.StringIO()
        view = LiveView(verbose=True, stream=stream, force_plain=force_plain)
        for event in events:
            view(event)
        view.warn(f"warning with {secret}")
        view.error(f"error with {secret}")
        view.close()
        assert secret not in stream.getvalue() and "***" in stream.getvalue()


def test_quiet_prints_only_errors() -> None:
    stream = io.StringIO()
    for force_plain in (True, False):
        view = LiveView(quiet=True, stream=stream, force_plain=force_plain)
        for event in run_events():
            view(event)
        view.warn("something odd")
        assert stream.getvalue() == ""
    view = LiveView(quiet=True, stream=stream, force_plain=True)
    view.error("limit reached: out of budget")
    assert stream.getvalue() == "rlm: error: limit reached: out of budget\n"


def test_plain_is_the_default_off_a_terminal_and_with_no_color(monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert LiveView(stream=io.StringIO()).plain

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not LiveView(stream=Tty()).plain
    monkeypatch.setenv("NO_COLOR", "1")
    view = LiveView(stream=Tty())
    assert view.plain
    view(RunStarted("q", "m", "m", "local"))
    assert "\x1b" not in view.stream.getvalue()


def test_rich_view_renders_the_run() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100, color_system="truecolor")
    view = LiveView(console=console)
    events = run_events()
    mid = next(i for i, e in enumerate(events) if isinstance(e, SubcallProgress) and e.done == 32)
    for event in events[: mid + 1]:
        view(event)
    footer = Console(file=io.StringIO(), width=100, force_terminal=True)
    footer.print(view.output.footer())
    live = footer.file.getvalue()
    assert "32/64" in live and "16 in flight" in live and "cell 2.1 running" in live
    for event in events[mid + 1 :]:
        view(event)
    view.close()
    out = stream.getvalue()
    assert "\x1b[" in out  # styled
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "iteration 2" in plain and "The context is big" in plain
    assert "llm_query_batched" in plain  # the highlighted code
    assert "5 attempts, exponential backoff" in plain  # the answer panel
    assert "64 sub-calls in 3.2s" in plain
    assert "done · 3 iterations" in plain
    assert "```" not in plain


def test_rich_view_of_a_stopped_run() -> None:
    run = RunStarted("q", ROOT, ROOT, "local")
    it = IterationStarted(1, parent=run.id)
    cell = CellStarted(1, "1/0", parent=it.id)
    events = [
        run,
        it,
        ModelCall("root", ROOT, 10, 5, None, 0.1, None, "Try this.\n```repl\n1/0\n```", parent=it.id),
        cell,
        CellFinished(1, "", "ZeroDivisionError: division by zero", 0.01, parent=cell.id),
        RunStopped("max_iterations", "no answer after 1 iterations", parent=run.id),
        RunFinished("max_iterations", "best guess so far", partial=True, iterations=1, cost_known=False),
    ]
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", render(events, force_plain=False, verbose=True))
    assert "ZeroDivisionError" in out and "failed" in out
    assert "partial answer" in out and "best guess so far" in out
    assert "stopped: max_iterations" in out and "cost unknown" in out


def test_rich_view_on_a_plain_stream_when_forced() -> None:
    out = render(run_events(), force_plain=False)
    assert "\x1b[" in out and "exponential backoff" in out


def test_replay_returns_the_run_finished_and_renders() -> None:
    stream = io.StringIO()
    events = run_events()
    finished = replay(events, LiveView(stream=stream, force_plain=True))
    assert isinstance(finished, RunFinished) and finished.answer == ANSWER
    assert "rlm: done: 3 iterations" in stream.getvalue()


def test_replay_of_a_cut_off_trace() -> None:
    closed = []

    class View(LiveView):
        def close(self) -> None:
            closed.append(True)
            super().close()

    stream = io.StringIO()
    events = run_events()
    cut = next(i for i, e in enumerate(events) if isinstance(e, SubcallProgress) and e.done == 10)
    assert replay(events[:cut], View(stream=stream, force_plain=False)) is None
    assert closed == [True]
    assert "iteration 2" in stream.getvalue()
    assert replay(iter([]), View(stream=io.StringIO(), force_plain=True)) is None


@pytest.mark.parametrize("force_plain", [True, False])
def test_the_view_says_which_sandbox_auto_chose(force_plain: bool) -> None:
    from rlmcli.events import RunStarted, SandboxChosen

    for asked, shown in (("auto", True), ("docker", False)):
        start = RunStarted("q?", ROOT, ROOT, asked)
        out = render([start, SandboxChosen("local", parent=start.id)], force_plain=force_plain)
        assert ("sandbox local" in out) is shown, out
