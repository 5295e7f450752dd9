"""The live view of a run on stderr: a Rich view on a terminal, plain `rlm: ` lines elsewhere.

`LiveView` is an Emit (call it with each event) with the CLI's small progress API: `warn`, `error`,
`close`. It picks Rich when stderr is a terminal and NO_COLOR is unset, plain lines otherwise (pipes,
CI logs, `force_plain=True`). Plain output holds no escape codes and moves no cursor. Both modes
show the same things: the context, each iteration, root-model turns with running tokens and cost,
each cell, sub-call batches while in flight, limits and errors, the answer and the totals.

Elapsed times come from event timestamps, so a replayed trace shows the times of the original run.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from . import events as ev
from .agent import strip_code
from .errors import redact

PLAIN_INTERVAL_S = 0.5  # plain mode: a batch's progress line at most this often...
PLAIN_STEP = 0.10  # ...or whenever this fraction of the batch has finished since the last line
OUTPUT_LINES = 30  # lines of a cell's output shown (all with verbose)
REASONING_LINES = 60  # lines of the root model's prose shown (all with verbose)
LINE_CHARS = 300  # a shown line longer than this is cut
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    """`text` safe to print: host secrets redacted, control characters (escape codes) made visible."""
    text = redact(text).replace("\r\n", "\n")
    return CONTROL.sub(lambda m: "^" + chr((ord(m.group()) + 64) % 128), text)


def clip(text: str, max_lines: int | None) -> tuple[str, int]:
    """The first `max_lines` lines of `text` (each cut to LINE_CHARS), and how many were left out."""
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    if max_lines is None:
        return "\n".join(lines), 0
    shown = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " …" for line in lines[:max_lines]]
    return "\n".join(shown), max(0, len(lines) - max_lines)


def seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    minutes, rest = divmod(int(s), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@dataclass
class Batch:
    """A batch of sub-calls under one scope (a cell), as its SubcallProgress events tell it."""

    total: int
    started_ts: float
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    ts: float = 0.0
    shown_done: int = -1  # plain mode: what the last printed line said, and when
    shown_ts: float = 0.0

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def batch_key(event: ev.SubcallProgress) -> str:
    return event.batch or event.id


class RunState:
    """Running totals and scopes, folded from the events; both renderers read it."""

    def __init__(self) -> None:
        self.start_ts: float | None = None
        self.last_ts, self.last_seen = 0.0, time.monotonic()
        self.iteration = 0
        self.cells_in_iteration = 0
        self.cells: dict[str, str] = {}  # CellStarted.id -> "2.1" (iteration.cell)
        self.cell_subcalls: dict[str, int] = {}
        self.running_cell: str | None = None
        self.tokens_in = self.tokens_out = 0
        self.cost, self.cost_known = 0.0, True
        self.batches: dict[str, Batch] = {}  # by batch id (the id of its first progress event)
        self.finished: ev.RunFinished | None = None
        self.lock = threading.Lock()  # the Live thread reads batches while events arrive

    def update(self, event: ev.Event) -> None:
        if self.start_ts is None:  # RunStarted
            self.start_ts = event.ts
        self.last_ts, self.last_seen = max(self.last_ts, event.ts), time.monotonic()
        if isinstance(event, ev.IterationStarted):
            self.iteration, self.cells_in_iteration = event.iteration, 0
        elif isinstance(event, ev.CellStarted):
            self.cells_in_iteration += 1
            self.cells[event.id] = f"{event.iteration}.{self.cells_in_iteration}"
            self.running_cell = event.id
        elif isinstance(event, ev.CellFinished):
            self.running_cell = None
        elif isinstance(event, ev.ModelCall):
            self.tokens_in += event.prompt_tokens
            self.tokens_out += event.completion_tokens
            self.cost += event.cost_usd or 0.0
            self.cost_known = self.cost_known and event.cost_usd is not None
            if event.role == "sub":
                key = event.parent or ""
                self.cell_subcalls[key] = self.cell_subcalls.get(key, 0) + 1
        elif isinstance(event, ev.SubcallProgress):
            self._progress(event)
        elif isinstance(event, ev.RunFinished):
            self.finished = event

    def _progress(self, event: ev.SubcallProgress) -> None:
        with self.lock:
            batch = self.batches.get(batch_key(event))
            if batch is None:
                batch = self.batches[batch_key(event)] = Batch(event.total, started_ts=event.ts)
            batch.done, batch.failed, batch.in_flight = event.done, event.failed, event.in_flight
            batch.ts = event.ts

    def active_batches(self) -> list[Batch]:
        with self.lock:
            return [b for b in self.batches.values() if not b.finished]

    def elapsed(self) -> float:
        """Run time so far: by the events' clock, plus the wall time since the newest one arrived."""
        if self.finished is not None:
            return self.finished.elapsed_s
        if self.start_ts is None:
            return 0.0
        return self.last_ts - self.start_ts + (time.monotonic() - self.last_seen)

    def usage(self) -> str:
        cost = f"${self.cost:.4f}" if self.cost_known else "cost unknown"
        return f"{self.tokens_in + self.tokens_out:,} tokens, {cost}"


def totals(done: ev.RunFinished) -> str:
    cost = f"${done.cost_usd:.4f}" if done.cost_known else "cost unknown"
    tokens = done.prompt_tokens + done.completion_tokens
    return (
        f"{plural(done.iterations, 'iteration')}, {plural(done.subcalls, 'sub-call')}, {tokens:,} tokens "
        f"({done.prompt_tokens:,} in, {done.completion_tokens:,} out), {cost}, {seconds(done.elapsed_s)}"
    )


def one_liners(event: ev.Event, verbose: bool) -> list[tuple[str, str]]:
    """(text, Rich style) of the events that read the same in both modes."""
    if isinstance(event, ev.ContextLoaded):
        skipped = [f"  skipped ({why}): {path}" for why, paths in event.skipped.items() for path in paths]
        return [(event.summary, "dim")] + [(line, "dim") for line in skipped if verbose]
    if isinstance(event, ev.Notice):
        return [(f"warning: {event.message}", "yellow") if event.warning else (event.message, "dim")]
    # LimitReached and ErrorEvent are not shown: the CLI ends a stopped run with the one
    # `rlm: error:` line, and RunFinished's own line says how the run stopped.
    return []


def last_line(text: str) -> str:
    lines = [line for line in text.strip().split("\n") if line.strip()]
    return clip(lines[-1], 1)[0] if lines else ""


class PlainOutput:
    """Line-oriented, `rlm: `-prefixed, no escape codes, no cursor movement."""

    def __init__(self, stream: TextIO, state: RunState, verbose: bool):
        self.stream, self.state, self.verbose = stream, state, verbose

    def show(self, event: ev.Event) -> None:
        s = self.state
        if isinstance(event, ev.RunStarted):
            sub = "" if event.sub_model == event.model else f", sub-calls {event.sub_model}"
            self.line(f"model {event.model}{sub}, sandbox {event.sandbox}")
            if self.verbose:
                self.line(f"run {event.id}: {event.question}")
        elif isinstance(event, ev.IterationStarted):
            self.line(f"iteration {event.iteration}")
        elif isinstance(event, ev.ModelCall) and event.role == "root":
            self.line(
                f"model turn: {event.prompt_tokens:,} tokens in, {event.completion_tokens:,} out, "
                f"{seconds(event.latency_s)}; so far {s.usage()}"
            )
            if self.verbose and event.reply:
                self.block(strip_code(event.reply))
        elif isinstance(event, ev.CellStarted) and self.verbose:
            self.line(f"cell {s.cells.get(event.id, '?')}:")
            self.block(event.code)
        elif isinstance(event, ev.CellFinished):
            self.cell(event)
        elif isinstance(event, ev.SubcallProgress):
            self.progress(s.batches[batch_key(event)], event.ts)
        elif isinstance(event, ev.FinalAnswer):
            self.line(f"answer: {plural(len(event.answer), 'character')}")
        elif isinstance(event, ev.RunFinished):
            how = "done" if event.exit_reason == "final" else f"stopped ({event.exit_reason})"
            partial = ", partial answer" if event.partial and event.answer else ""
            self.line(f"{how}: {totals(event)}{partial}")

    def cell(self, event: ev.CellFinished) -> None:
        label = self.state.cells.get(event.parent or "", "?")
        subcalls = self.state.cell_subcalls.get(event.parent or "", 0)
        parts = [seconds(event.duration_s)]
        if subcalls:
            parts.append(plural(subcalls, "sub-call"))
        lines = len(event.output.rstrip("\n").split("\n")) if event.output.strip() else 0
        parts.append(f"{plural(lines, 'line')} of output" if lines else "no output")
        if event.error:
            parts.append(f"error: {last_line(event.error)}")
        self.line(f"cell {label}: {', '.join(parts)}")
        if self.verbose:
            self.block(event.output)
            if event.error:
                self.block(event.error)

    def progress(self, batch: Batch, ts: float) -> None:
        """A line when a batch starts, when it ends, and in between at most every PLAIN_INTERVAL_S
        or PLAIN_STEP of the batch. Single calls (llm_query) only count in their cell's line."""
        if batch.total <= 1 or batch.done == batch.shown_done:
            return
        first, last = batch.shown_done < 0, batch.finished
        stepped = batch.done - batch.shown_done >= max(1.0, PLAIN_STEP * batch.total)
        if not (first or last or stepped or ts - batch.shown_ts >= PLAIN_INTERVAL_S):
            return
        batch.shown_done, batch.shown_ts = batch.done, ts
        took = f" in {seconds(batch.ts - batch.started_ts)}" if last else ""
        self.line(
            f"sub-calls {batch.done}/{batch.total} done, {batch.in_flight} in flight, "
            f"{batch.failed} failed{took}"
        )

    def block(self, text: str) -> None:
        for line in clip(text, None)[0].split("\n"):
            self.line("    " + line)

    def line(self, text: str, style: str = "") -> None:
        self.stream.write(f"rlm: {clean(text)}".rstrip() + "\n")
        self.stream.flush()

    def before(self, event: ev.Event) -> None:
        pass

    def close(self) -> None:
        pass


class RichOutput:
    """Rich renderables in the scrollback, and a transient footer (sub-call bars, usage, time)."""

    def __init__(
        self, console: Console, state: RunState, verbose: bool, live: bool, answer_panel: bool = True
    ):
        self.answer_panel = answer_panel
        self.console, self.state, self.verbose = console, state, verbose
        self.spinner = Spinner("dots", style="cyan")
        self.live: Live | None = None
        self.use_live = live and console.is_terminal and not console.is_dumb_terminal

    def before(self, event: ev.Event) -> None:
        """Show the footer (from the first event until RunFinished or close()), brought up to date
        before anything is printed above it (printing repaints the footer as last refreshed)."""
        if self.live is not None:
            if self.prints(event):
                self.live.refresh()
        elif self.use_live and self.state.finished is None:
            self.live = Live(
                get_renderable=self.footer, console=self.console, transient=True, refresh_per_second=8,
                redirect_stdout=False, redirect_stderr=self.console.file is sys.stderr,
            )  # fmt: skip
            self.live.start()
            atexit.register(self.close)  # restore the cursor even if nobody calls close()

    def prints(self, event: ev.Event) -> bool:
        """Whether `event` prints a line (sub-calls and batch progress only move the footer)."""
        if isinstance(event, ev.ModelCall):
            return event.role == "root"
        if isinstance(event, ev.SubcallProgress):
            return self.state.batches[batch_key(event)].finished
        return True

    def show(self, event: ev.Event) -> None:
        print_ = self.console.print
        if isinstance(event, ev.RunStarted):
            sub = "" if event.sub_model == event.model else f" · sub-calls {event.sub_model}"
            print_(Text.assemble(("rlm ", "bold"), clean(f"{event.model}{sub} · sandbox {event.sandbox}")))
            print_(Text(clean(event.question), style="bold cyan"))
        elif isinstance(event, ev.IterationStarted):
            print_()
            self.console.rule(Text(f"iteration {event.iteration}", style="bold"), style="blue")
        elif isinstance(event, ev.ModelCall) and event.role == "root":
            self.reasoning(event)
        elif isinstance(event, ev.CellStarted):
            code, more = clip(clean(event.code), None if self.verbose else 80)
            title = f"cell {self.state.cells.get(event.id, '?')}" + (f" ({more} more lines)" if more else "")
            syntax = Syntax(code, "python", theme="monokai", word_wrap=True, background_color="default")
            print_(Panel(syntax, title=title, title_align="left", border_style="blue", expand=True))
        elif isinstance(event, ev.CellFinished):
            self.cell(event)
        elif isinstance(event, ev.SubcallProgress):
            batch = self.state.batches.get(batch_key(event))
            if batch is not None and batch.finished and batch.total > 1:
                failed = f", {batch.failed} failed" if batch.failed else ""
                took = seconds(batch.ts - batch.started_ts)
                print_(Text(f"  ✓ {batch.total} sub-calls in {took}{failed}", style="green dim"))
        elif isinstance(event, ev.FinalAnswer) and self.answer_panel:
            self.panel(event.answer, "answer", "green")
        elif isinstance(event, ev.RunFinished):
            self.finished(event)

    def reasoning(self, event: ev.ModelCall) -> None:
        prose, more = clip(clean(strip_code(event.reply or "")), None if self.verbose else REASONING_LINES)
        if prose:
            self.console.print(Text(prose))
            if more:
                self.console.print(Text(f"… {plural(more, 'more line')}", style="dim"))
        meta = (
            f"{event.model} · {event.prompt_tokens:,} → {event.completion_tokens:,} tokens · "
            f"{seconds(event.latency_s)} · so far {self.state.usage()}"
        )
        self.console.print(Text(clean(meta), style="dim"))

    def cell(self, event: ev.CellFinished) -> None:
        output, more = clip(clean(event.output), None if self.verbose else OUTPUT_LINES)
        if output:
            self.console.print(Padding(Text(output, style="dim"), (0, 0, 0, 2)))
        if more:
            self.console.print(Text(f"  … {plural(more, 'more line')} of output", style="dim"))
        if event.error:
            error, _ = clip(clean(event.error), None if self.verbose else OUTPUT_LINES)
            self.console.print(Padding(Text(error, style="red"), (0, 0, 0, 2)))
        subcalls = self.state.cell_subcalls.get(event.parent or "", 0)
        tail = f" · {plural(subcalls, 'sub-call')}" if subcalls else ""
        status = ("failed", "red") if event.error else ("ok", "green")
        self.console.print(
            Text.assemble("  ", status, (f" · {seconds(event.duration_s)}{tail}", "dim")), highlight=False
        )

    def panel(self, text: str, title: str, style: str) -> None:
        self.console.print(Panel(Text(clean(text)), title=title, title_align="left", border_style=style))

    def finished(self, event: ev.RunFinished) -> None:
        self.close()
        if event.partial and event.answer:
            self.panel(event.answer, "partial answer", "yellow")
        style = "green" if event.exit_reason == "final" else "yellow"
        how = "done" if event.exit_reason == "final" else f"stopped: {event.exit_reason}"
        self.console.print(Text.assemble((how, f"bold {style}"), (f" · {totals(event)}", "dim")))

    def footer(self) -> RenderableType:
        """The live part: one bar per sub-call batch in flight, then usage and elapsed time."""
        s = self.state
        bars = Table.grid(padding=(0, 1))
        for batch in s.active_batches():
            failed = f" · {batch.failed} failed" if batch.failed else ""
            bars.add_row(
                Text("  sub-calls", style="cyan"),
                ProgressBar(total=max(batch.total, 1), completed=batch.done, width=32),
                Text(f"{batch.done}/{batch.total} · {batch.in_flight} in flight{failed}"),
            )
        doing = f"cell {s.cells.get(s.running_cell, '?')} running" if s.running_cell else "model thinking"
        status = f"iteration {s.iteration} · {doing} · {s.usage()} · {seconds(s.elapsed())}"
        line = Table.grid(padding=(0, 1))
        line.add_row(self.spinner, Text(status, style="dim"))
        return Group(bars, line) if bars.row_count else line

    def line(self, text: str, style: str = "") -> None:
        self.console.print(Text(clean(text), style=style))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            atexit.unregister(self.close)


def rich_wanted(stream: TextIO) -> bool:
    """Rich on a terminal, unless NO_COLOR is set (to anything non-empty, per no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LiveView:
    """An Emit rendering a run on stderr (Rich on a terminal, plain lines otherwise).

    `quiet`: nothing but `error()`. `verbose`: the full replies, code and outputs (plain mode) and
    nothing truncated (Rich). `force_plain`: True for plain lines, False for Rich even off a terminal;
    None decides from the stream and NO_COLOR. `console` (Rich only) replaces the one made on
    `stream`, e.g. a recording console; `live=False` prints no transient footer; `answer_panel=False`
    leaves the answer to stdout alone (when stdout is the same terminal, it would show twice).
    """

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        force_plain: bool | None = None,
        *,
        console: Console | None = None,
        live: bool = True,
        answer_panel: bool = True,
    ):
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stderr
        self.state = RunState()
        plain = not rich_wanted(self.stream) if force_plain is None else force_plain
        self.plain = plain and console is None
        self.output: PlainOutput | RichOutput
        if self.plain:
            self.output = PlainOutput(self.stream, self.state, verbose)
        else:
            terminal = True if force_plain is False else None
            console = console or Console(file=self.stream, force_terminal=terminal)
            self.output = RichOutput(console, self.state, verbose, live, answer_panel)

    def __call__(self, event: ev.Event) -> None:
        self.state.update(event)
        if self.quiet:
            return
        self.output.before(event)
        for text, style in one_liners(event, self.verbose):
            self.output.line(text, style)
        self.output.show(event)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.output.line(f"warning: {message}", "yellow")

    def error(self, message: str) -> None:
        self.output.line(f"error: {message}", "bold red")

    def close(self) -> None:
        """Stop the live footer, if any; the view still prints warnings and errors after this."""
        self.output.close()
