"""The options `ask` and `bench run` share are declared once (cli/options.py), and `@guarded` maps
a command's errors to one line and an exit status without hiding its signature from Typer."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from rlmcli.cli import options
from rlmcli.cli.app import app
from rlmcli.cli.guard import guarded
from rlmcli.errors import ExitStatus, InputError

SHARED = ("model", "sub_model", "api_base", "sub_api_base", "request_timeout", "max_retries",
          "max_iterations", "max_cost", "max_tokens", "timeout", "sandbox", "image")  # fmt: skip


def params(*path: str) -> dict:
    command = typer.main.get_command(app)
    ctx = typer.Context(command)
    for name in path:
        command = command.get_command(ctx, name)
    return {p.name: p for p in command.params}


def test_shared_options_are_the_same_in_ask_and_bench_run():
    ask, bench_run = params("ask"), params("bench", "run")
    for name in SHARED:
        a, b = ask[name], bench_run[name]
        assert (a.opts, a.envvar, a.help) == (b.opts, b.envvar, b.help), name
    # The default shown is the built-in one, from the settings.
    assert f"[default: {options.D.model}]" in ask["model"].help
    assert "--api-base if the sub model has the root model's provider" in bench_run["sub_api_base"].help


def test_help_lists_the_shared_options_under_their_panels():
    result = CliRunner().invoke(app, ["bench", "run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--model", "--sub-api-base", "--max-cost", "--sandbox", "--image", "--context-window"):
        assert flag in result.output
    assert "Limits" in result.output and "Sandbox" in result.output


def test_guarded_keeps_the_signature_and_maps_errors():
    demo = typer.Typer()

    @demo.command()
    @guarded
    def fail(name: Annotated[str, typer.Option(help="Whose file.")] = "x") -> None:
        """Fails as a user's input error."""
        raise InputError(f"cannot read {name}'s file", hint="check the path")

    @demo.command()
    @guarded
    def crash() -> None:
        raise RuntimeError("boom")

    runner = CliRunner()
    assert "--name" in runner.invoke(demo, ["fail", "--help"]).output
    result = runner.invoke(demo, ["fail", "--name", "ann"])
    assert result.exit_code == ExitStatus.USAGE
    assert "rlm: error: cannot read ann's file" in result.output
    assert "rlm: hint: check the path" in result.output
    result = runner.invoke(demo, ["crash"], env={"RLM_DEBUG": ""})
    assert result.exit_code == ExitStatus.ERROR and "unexpected RuntimeError: boom" in result.output


def test_the_entry_point_parses_ask_as_the_whole_app_does(monkeypatch, capsys):
    """main() builds a command tree with `ask` alone for `rlm ask ...` (a faster start): its help,
    and so its options, are the same as the whole app's."""
    import sys

    from rlmcli.cli import app as app_module
    from rlmcli.cli import ask as ask_module

    whole = CliRunner().invoke(app, ["ask", "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert whole.exit_code == 0 and "--max-iterations" in whole.output
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "argv", ["rlm", "ask", "--help"])
    # main() sets the process's start for --json's elapsed_s: in-process runs after this one count from
    # their own start, as without main() (else each later test's elapsed_s is this process's age).
    monkeypatch.setattr(ask_module, "PROCESS_START", None)
    with pytest.raises(SystemExit) as stop:
        app_module.main()
    assert stop.value.code == 0
    out = capsys.readouterr().out
    # The usage line names the program as click finds it (under pytest: "python -m pytest"); the rest
    # (every option, panel and line of help) must be the same.
    assert "rlm ask [OPTIONS] [PATH] {QUESTION}" in out
    assert out.split("{QUESTION}", 1)[1].lstrip() == whole.output.split("{QUESTION}", 1)[1].lstrip()
