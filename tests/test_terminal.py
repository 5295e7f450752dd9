"""Terminal safety: escape sequences and bidi overrides from a model or an input never reach a
terminal raw (the live view, `rlm ask`, `rlm replay`, `rlm logs show`), while a pipe and --json get
the text intact."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
from pathlib import Path

import pytest
from conftest import SENTINEL_KEY, ask_args, clean_env
from fake_llm import reply
from rich.console import Console
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.events import (
    CellFinished,
    CellStarted,
    ContextLoaded,
    FinalAnswer,
    IterationStarted,
    ModelCall,
    Notice,
    RunFinished,
    RunStarted,
)
from rlmcli.view.escape import safe, safe_json
from rlmcli.view.live import LiveView

TITLE = "\x1b]0;pwned\x07"  # OSC: sets the terminal's title
FLIP = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "\u202egnp.exe" reads as "exe.png"
HOSTILE = f"{TITLE}answer {FLIP}gnp.exe \x1b[2Jdone"
SHOWN = "\\x1b]0;pwned\\x07answer \\u202egnp.exe \\x1b[2Jdone"  # what a terminal shows instead
RAW = ("\x1b", "\x07", FLIP, "\x9b")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, tabs\tand\nnewlines", "plain text, tabs\tand\nnewlines"),
        ("héllo 日本語 👩\u200d💻", "héllo 日本語 👩\u200d💻"),  # non-ASCII and the emoji joiner stay
        (TITLE, "\\x1b]0;pwned\\x07"),  # OSC
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # CSI
        ("\x9b2J\x85\x90", "\\x9b2J\\x85\\x90"),  # C1: CSI, NEL, DCS in one character each
        ("a\x00b\x08c\x0bd\x0ce\x7ff", "a\\x00b\\x08c\\x0bd\\x0ce\\x7ff"),  # other C0 and DEL
        ("line\r\nnext", "line\nnext"),  # CRLF is a newline
        ("safe\rEVIL", "safe\\x0dEVIL"),  # a lone CR would overwrite the line
        (f"{FLIP}gnp.exe", "\\u202egnp.exe"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),  # embeddings, pop, override
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # isolates
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # marks
        ("caf\udce9.txt", "caf\\udce9.txt"),  # a lone surrogate cannot be printed at all
    ],
)
def test_safe(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_json_is_the_same_document_with_nothing_raw() -> None:
    value = {"answer": HOSTILE + "\x85 caf\udce9 é", "n": 1}
    dumped = safe_json(json.dumps(value, ensure_ascii=False))
    assert json.loads(dumped) == value
    assert not any(c in dumped for c in RAW) and "é" in dumped


# -- the live view ---------------------------------------------------------------------------------


def hostile_run() -> list:
    run = RunStarted(f"question {FLIP}?", "m", "m", "local")
    it = IterationStarted(1, parent=run.id)
    cell = CellStarted(1, f"print('{TITLE}')", parent=it.id)
    return [
        run,
        ContextLoaded(f"context: 1 file ({TITLE})", "directory", skipped={"binary": [f"d/{TITLE}.bin"]}),
        Notice(f"notice {TITLE}", warning=True),
        it,
        ModelCall(
            "root", "m", 10, 5, 0.0, 0.1, "q", f"I think {HOSTILE}\n```repl\nprint(1)\n```", parent=it.id
        ),
        cell,
        CellFinished(1, f"out {HOSTILE}\n", f"Error {TITLE}", 0.1, parent=cell.id),
        FinalAnswer(HOSTILE, parent=run.id),
        RunFinished(f"max_iterations {TITLE}", HOSTILE, partial=True, parent=run.id),  # a crafted trace
    ]


@pytest.mark.parametrize("plain", [True, False])
def test_the_live_view_shows_hostile_text_escaped(plain: bool) -> None:
    stream = io.StringIO()
    if plain:
        view = LiveView(verbose=True, stream=stream, force_plain=True)
    else:  # Rich, as on a terminal: its own colour codes are CSI, never OSC or BEL
        console = Console(file=stream, force_terminal=True, width=200, color_system="standard")
        view = LiveView(verbose=True, console=console, live=False)
    for event in hostile_run():
        view(event)
    view.warn(f"warned {TITLE}")
    view.error(f"failed {FLIP}")
    view.close()
    out = stream.getvalue()
    assert "\x1b]" not in out and "\x07" not in out and FLIP not in out
    if plain:
        assert "\x1b" not in out
    for shown in ("\\x1b]0;pwned\\x07", "\\u202egnp.exe", "d/\\x1b]0;pwned\\x07.bin", "failed \\u202e"):
        assert shown in out, shown


# -- rlm ask, replay and logs: intact in a pipe, escaped on a terminal -----------------------------


@pytest.fixture
def cli(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "none.toml"), "NO_COLOR": "1"}
    env["RLM_HOME"] = str(tmp_path / "home")

    def invoke(args: list[str]):
        return CliRunner().invoke(app, args, env=env)

    return invoke


def hostile_answer(fake_llm) -> None:
    fake_llm.add_root(reply("", f"FINAL({HOSTILE!r})"))


def test_ask_in_a_pipe_prints_the_answer_intact_and_the_view_escaped(cli, fake_llm, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    hostile_answer(fake_llm)
    result = cli(ask_args(fake_llm, "a.txt"))
    assert result.exit_code == 0, result.output
    assert result.stdout == HOSTILE + "\n"  # byte for byte, escape codes and all
    assert FLIP not in result.stderr and "\x1b" not in result.stderr

    hostile_answer(fake_llm)
    result = cli([*ask_args(fake_llm, "a.txt"), "--json"])
    assert json.loads(result.stdout)["answer"] == HOSTILE
    assert not any(c in result.stdout for c in RAW)  # JSON escapes keep the terminal safe too

    for args in (["replay", "last"], ["logs", "show", "last"]):
        result = cli(args)
        assert result.exit_code == 0, result.output
        assert HOSTILE in result.stdout  # a pipe gets the recorded text as it was


def on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `args` with stdout on a real pseudo-terminal; (status, what the terminal got, stderr)."""
    main, sub = os.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=sub, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    os.close(sub)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 60)
            if not ready:
                raise AssertionError("no output from the terminal in 60 s")
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        err = proc.stderr.read() if proc.stderr else b""
        status = proc.wait(timeout=60)
    finally:
        os.close(main)
        proc.kill()
    return status, seen.decode("utf-8", "replace").replace("\r\n", "\n"), err.decode()


def test_on_a_terminal_ask_replay_and_logs_show_the_answer_escaped(rlm_bin, fake_llm, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    hostile_answer(fake_llm)
    env = clean_env(tmp_path)
    status, screen, err = on_a_terminal([rlm_bin, *ask_args(fake_llm, "a.txt")], env, tmp_path)
    assert status == 0, err
    assert screen == SHOWN + "\n"
    for args in (["replay", "last"], ["logs", "show", "last"]):
        status, screen, err = on_a_terminal([rlm_bin, *args], env, tmp_path)
        assert status == 0, err
        assert SHOWN in screen and not any(c in screen for c in RAW), args


def test_replay_refuses_a_crafted_trace_with_a_field_of_the_wrong_type(cli, tmp_path):
    run = RunStarted("q", "m", "m", "local")
    lines = [run.to_dict(), {**IterationStarted(1, parent=run.id).to_dict(), "iteration": TITLE}]
    lines.append(RunFinished("final", "ok", parent=run.id).to_dict())
    (tmp_path / "crafted.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli(["replay", str(tmp_path / "crafted.jsonl")])
    assert result.exit_code == 2, result.output
    assert "crafted.jsonl is not an rlm trace (line 2 is not an event)" in result.stderr
    assert "\x1b" not in result.output
