"""`rlm files PATH...` and `rlm ask ... --dry-run`: what would be loaded, with per-file tokens, the
skipped files by reason, totals and an estimated cost range; no sandbox, no model call. Also what
every load shows on stderr: its progress, and the confirmation a large load asks for on a terminal.

Registered by cli/app.py. The work is in preview.py; this module prints it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from ..errors import ExitReason, RlmError
from . import options as o
from .guard import guarded
from .options import OUTPUT

if TYPE_CHECKING:
    from ..context import Context
    from ..preview import Preview
    from ..settings import Settings

TOP = 20  # files listed by default
SKIPPED_SHOWN = 5  # paths named per skip reason (--verbose: all)

Top = Annotated[int, typer.Option("--top", "-n", min=0, rich_help_panel=OUTPUT, metavar="N",
    help="How many files to list, largest first (rlm files, --dry-run).")]  # fmt: skip


class Declined(RlmError):
    """The user said no at the confirmation of a large load."""

    reason = ExitReason.INTERRUPTED


@guarded
def files(
    paths: Annotated[list[str], typer.Argument(help="Files, directories, or - for stdin.", metavar="PATH")],
    model: o.Model = None,
    sub_model: o.SubModel = None,
    root_window: o.RootWindow = None,
    sub_window: o.SubWindow = None,
    max_iterations: o.MaxIterations = None,
    include: o.Include = None,
    exclude: o.Exclude = None,
    no_ignore: o.NoIgnore = False,
    hidden: o.Hidden = False,
    max_file_size: o.MaxFileSize = None,
    top: Top = TOP,
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT,
        help="Print one JSON object: files (all, largest first), skipped, totals, secrets, cost_usd.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=OUTPUT,
        help="List every skipped path.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT,
        help="No progress on stderr.")] = False,
) -> None:  # fmt: skip
    """Show what `rlm ask PATH...` would load: files with their tokens (largest first), what is skipped
    and why, totals, and an estimated cost range for the models. Loads nothing into a sandbox and calls
    no model."""
    from ..settings import resolve

    settings = resolve(dict(
        model=model, sub_model=sub_model, root_window=root_window, sub_window=sub_window,
        max_iterations=max_iterations, include=include or [], exclude=exclude or [],
        no_ignore=no_ignore or None, hidden=hidden or None, max_file_size=max_file_size,
    ))  # fmt: skip
    show_preview(settings, paths, top=top, as_json=as_json, verbose=verbose, quiet=quiet)


def show_preview(
    settings: Settings, paths: list[str], top: int, as_json: bool, verbose: bool, quiet: bool
) -> None:
    """Print the preview of `paths` (stdout), with the loading progress on stderr."""
    from .. import tokens
    from ..preview import preview
    from ..run import run_windows

    tokens.preload()  # the token counter loads while the main thread waits (stdin, disk)
    progress = LoadProgress(sys.stderr, quiet=quiet or as_json)
    try:
        result = preview(settings, paths, run_windows(settings), stdin=sys.stdin.buffer, progress=progress)
    finally:
        progress.close()
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    typer.echo(render(result, settings, top, verbose))
    if result.context.secrets_warning and not quiet:
        print(f"rlm: warning: {result.context.secrets_warning}", file=sys.stderr)


def render(result: Preview, settings: Settings, top: int, verbose: bool) -> str:
    from ..text import human_bytes

    stats, cost = result.context.stats, result.cost
    approx = "~" if result.tokens_estimated or stats.tokens_sampled else ""
    lines = [f"{'tokens':>12}  {'bytes':>9}  file"]
    for f in result.files[:top]:
        lines.append(f"{approx}{f.tokens:>{12 - len(approx)},}  {human_bytes(f.bytes):>9}  {f.path}")
    if len(result.files) > top:
        lines.append(f"  … {len(result.files) - top:,} more files (-n {len(result.files)} lists them all)")
    lines.append("")
    total_tokens = f"{approx}{stats.est_tokens:,} tokens" + (" (estimated)" if approx else "")
    lines.append(
        f"total: {stats.files:,} files, {human_bytes(stats.bytes)}, {stats.lines:,} lines, {total_tokens}"
    )
    for reason, paths in stats.skipped.items():
        shown = paths if verbose else paths[:SKIPPED_SHOWN]
        more = f" … and {len(paths) - len(shown):,} more (--verbose)" if len(paths) > len(shown) else ""
        lines.append(f"skipped {reason}: {len(paths):,} — {', '.join(shown)}{more}")
    lines.append("")
    models = f"root {settings.model}, sub {settings.effective_sub_model}"
    if cost.low is not None and cost.high is not None:
        lines.append(f"estimated cost ({models}): ${cost.low:,.4f} – ${cost.high:,.4f}")
    else:
        lines.append(f"estimated cost ({models}): unknown — no price in litellm's table for "
                     f"{', '.join(cost.unpriced)} (a local server costs nothing)")  # fmt: skip
    lines += [f"  assumes {a}" for a in cost.assumptions]
    return "\n".join(lines)


class LoadProgress:
    """Files and bytes read so far, on stderr while a large input loads: a transient Rich status
    line on a terminal, else a plain line every PLAIN_EVERY seconds. Nothing for loads under
    QUIET_FOR seconds."""

    QUIET_FOR = 1.0
    PLAIN_EVERY = 5.0

    def __init__(self, stream: TextIO, quiet: bool = False):
        from ..view.live import rich_wanted

        self.stream = stream
        self.quiet = quiet
        self.rich = rich_wanted(stream)
        self.started = time.monotonic()
        self.next_at = self.started + self.QUIET_FOR
        self.status = None  # rich.status.Status once shown
        self.shown = False

    def __call__(self, files: int, nbytes: int) -> None:
        now = time.monotonic()
        if self.quiet or now < self.next_at:
            return
        from ..text import human_bytes

        text = f"loading: {files:,} files, {human_bytes(nbytes)} read"
        try:
            if self.rich:
                self.next_at = now + 0.1
                if self.status is None:
                    from rich.console import Console

                    self.status = Console(file=self.stream).status(text)
                    self.status.start()
                else:
                    self.status.update(text)
            else:
                self.next_at = now + self.PLAIN_EVERY
                self.stream.write(f"rlm: {text} …\n")
                self.stream.flush()
            self.shown = True
        except (OSError, ValueError):  # stderr is gone: loading goes on
            self.quiet = True

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def confirm_load(context: Context, settings: Settings, yes: bool, before_prompt=None) -> None:  # noqa: ANN001
    """Ask before a load above `confirm-tokens` goes on (a terminal and no --yes); off a terminal,
    go on and say so on stderr. Raises Declined on a no. The tokens are counted only for an input
    that may pass the threshold (Context.tokens_at_most, from its bytes): a smaller one's first
    request need not wait for the tokenizer (run.py counts them once it is out)."""
    if yes or settings.confirm_tokens <= 0 or context.tokens_at_most() <= settings.confirm_tokens:
        return
    tokens = context.count_tokens()
    if tokens <= settings.confirm_tokens:
        return
    size = f"the input is ~{tokens:,} tokens, above confirm-tokens ({settings.confirm_tokens:,})"
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        print(
            f"rlm: note: {size}; going on without asking (not a terminal; --yes skips this)", file=sys.stderr
        )
        return
    if before_prompt is not None:
        before_prompt()
    answer = typer.confirm(
        f"rlm: {size}. Go on? (rlm files PATH... shows what and what it may cost)", err=True
    )
    if not answer:
        raise Declined("stopped before the run: the load was not confirmed", hint="--yes skips the question")
