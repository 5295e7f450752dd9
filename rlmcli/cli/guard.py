"""How every command ends on an error: one `rlm: error:` line (and a hint), the exit status of
the error, never a traceback for a user's mistake. Every command is decorated with `@guarded`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

import typer

from ..errors import ExitStatus, RlmError, redact
from ..view.escape import safe

P = ParamSpec("P")


def guarded(command: Callable[P, None]) -> Callable[P, None]:
    """The command, mapping its errors to one line and an exit status. Goes under `@app.command()`;
    Typer reads the options from the command's own signature (functools.wraps keeps it)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except RlmError as exc:
            fail(str(exc), exc.hint, exc.exit_status)
        except KeyboardInterrupt:
            fail("interrupted", None, ExitStatus.INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("RLM_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc}", "this is a bug; RLM_DEBUG=1 shows the traceback",
                 ExitStatus.ERROR)  # fmt: skip

    return run


def fail(message: str, hint: str | None, status: int) -> None:
    say(f"error: {message}")
    if hint:
        say(f"hint: {hint}")
    raise typer.Exit(int(status))


def say(text: str) -> None:
    """One `rlm: ` line on stderr: redacted, and with control and bidi characters escaped (a
    message can quote a file name or a model's words). A stderr that is gone (the terminal was
    closed) must not turn the exit status into a crash."""
    try:
        sys.stderr.write(f"rlm: {safe(redact(text))}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
