"""The command line's root: `rlm`, its version, and one module per command or command group
(ask, replay, logs, bench, sandbox, completion). `main` is the console entry point.

Nothing heavy is imported at module level: `rlm --help` must not pay for litellm.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from .ask import EPILOG as ASK_EPILOG
from .ask import ask
from .bench import bench_app
from .cache_commands import cache_app
from .completion import EPILOG as COMPLETION_EPILOG
from .completion import completion
from .files import files
from .logs import logs_app
from .replay import replay
from .sandbox_commands import sandbox_app

APP_SETTINGS: dict = dict(
    name="rlm",
    help=(
        "Answer questions about inputs far larger than a model's context window, with Recursive "
        "Language Models: the input becomes a variable in a sandboxed Python REPL that the model "
        "explores with code and sub-model calls."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app = typer.Typer(**APP_SETTINGS)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rlm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """rlm: ask questions of repositories, log directories, huge files and pipes."""


app.command(epilog=ASK_EPILOG)(ask)
app.command()(replay)
app.add_typer(logs_app, name="logs")
app.add_typer(bench_app, name="bench")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(cache_app, name="cache")
app.command(epilog=COMPLETION_EPILOG)(completion)
app.command()(files)


def main() -> None:
    """Console entry point. Typer maps usage errors to exit 2; `@guarded` (cli/guard.py) maps ours."""
    import sys

    from . import ask as ask_module

    ask_module.PROCESS_START = ask_module.process_start()  # --json's elapsed_s counts from here
    command = _ask_only() if sys.argv[1:2] == ["ask"] else app
    if sys.argv[1:2] == ["ask"] and "--json" in sys.argv[2:]:
        sys.exit(_ask_json(command))
    command()


def _ask_only() -> typer.Typer:
    """`rlm` with its one command `ask`, for a command line that starts with `ask`: what it parses
    and prints is the same, but Typer builds click commands for every command of an app before
    parsing, and the whole tree took ~33 ms of each `rlm ask`'s start (the ask command alone ~20 ms)."""
    only = typer.Typer(**APP_SETTINGS)
    only.callback()(root)
    only.command(epilog=ASK_EPILOG)(ask)
    return only


def _ask_json(command: typer.Typer) -> int:
    """`rlm ask --json`: Typer's own usage errors (an unknown option, a missing argument) print the
    --json object too. They happen before our code runs, so they are caught here. Typer ships its
    own copy of click, so its errors are known by their shape: a ClickException has both."""
    from ..errors import ExitReason, ExitStatus
    from .ask import Output, _print_json, started_at

    try:
        return command(standalone_mode=False) or 0
    except Exception as exc:
        status = getattr(exc, "exit_code", None)
        if not hasattr(exc, "format_message") or not isinstance(status, int):
            raise
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # the message Typer would have shown
        message = exc.format_message()
        reason = (ExitReason.USAGE_ERROR if status == ExitStatus.USAGE else ExitReason.ERROR).value
        _print_json(Output(as_json=True, started=started_at()), {"exit_reason": reason, "message": message, "error": message,
                                           "hint": "rlm ask --help lists the options"})  # fmt: skip
        return status
