"""The Rich renderer of the live view: renderables in the scrollback under a transient live footer."""

from __future__ import annotations

import atexit
import sys

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .. import events as ev
from ..errors import ExitReason
from ..reply import strip_code
from ..text import plural
from .state import RunState, batch_key, clean, clip, seconds, totals
from .tree import finished_line

OUTPUT_LINES = 30  # lines of a cell's output shown (all with verbose)
REASONING_LINES = 60  # lines of the root model's prose shown (all with verbose)


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
        if isinstance(event, (ev.ChildStarted, ev.ChildFinished)):
            return True
        if event.depth > 0:  # inside a child RLM: the footer's tree shows it
            return False
        if isinstance(event, ev.ModelCall):
            return event.role == "root"
        if isinstance(event, ev.SubcallProgress):
            return self.state.batches[batch_key(event)].finished
        return True

    def show(self, event: ev.Event) -> None:
        print_ = self.console.print
        if isinstance(event, (ev.ChildStarted, ev.ChildFinished)):
            self.child(event)
        elif event.depth > 0:
            return
        elif isinstance(event, ev.RunStarted):
            sub = "" if event.sub_model == event.model else f" · sub-calls {event.sub_model}"
            print_(Text.assemble(("rlm ", "bold"), clean(f"{event.model}{sub} · sandbox {event.sandbox}")))
            print_(Text(clean(event.question), style="bold cyan"))
        elif isinstance(event, ev.SandboxChosen) and self.state.asked_sandbox == "auto":
            print_(Text(f"sandbox {event.sandbox}", style="dim"))  # what `auto` chose
        elif isinstance(event, ev.IterationStarted):
            print_()
            self.console.rule(Text(f"iteration {event.iteration}", style="bold"), style="blue")
        elif isinstance(event, ev.ModelCall) and event.role == "root":
            self.reasoning(event)
        elif isinstance(event, ev.ModelRetry) and event.role == "root":  # sub-calls': the trace
            text = clean(f"model turn failed ({event.reason}); retrying in {seconds(event.wait_s)}")
            print_(Text(text, style="yellow dim"))
        elif isinstance(event, ev.CellStarted):
            code, more = clip(clean(event.code), None if self.verbose else 80)
            title = f"cell {self.state.cells.get(event.id, '?')}" + (f" ({more} more lines)" if more else "")
            from rich.syntax import Syntax  # pygments (~20 ms): not before the first cell is shown

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
        elif isinstance(event, ev.Sources) and self.answer_panel and event.citations:
            from ..cite import Citation, sources_block

            block = sources_block([Citation.from_dict(c) for c in event.citations])
            self.panel(block.removeprefix("Sources:\n"), "sources", "green")
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

    def child(self, event: ev.ChildStarted | ev.ChildFinished) -> None:
        tree = self.state.tree
        if isinstance(event, ev.ChildStarted):
            node = tree.by_start.get(event.id)
            if node is not None:
                text = f"  ↳ {node.label} (depth {node.depth}): {clip(clean(event.query), 1)[0]}"
                self.console.print(Text(text, style="magenta"))
            return
        node = tree.by_start.get(event.parent or "")
        if node is not None:
            style = "green dim" if event.exit_reason == ExitReason.FINAL else "yellow"
            self.console.print(Text(clean(f"  ✓ {finished_line(node, event)}"), style=style))

    def tree(self) -> Table:
        """The tree of the run and its children: node, depth, turns, tokens, cost, state."""
        table = Table.grid(padding=(0, 2))
        with self.state.lock:
            rows = self.state.tree.rows()
            for name, node in rows:
                style = "cyan" if node.state == "running" else ("green" if node.state == "done" else "yellow")
                table.add_row(
                    Text(name, style="" if node.depth else "bold"), Text(f"depth {node.depth}", style="dim"),
                    Text(plural(node.iterations, "iteration")), Text(node.usage(), style="dim"),
                    Text(node.state, style=style),
                )  # fmt: skip
        return table

    def finished(self, event: ev.RunFinished) -> None:
        self.close()
        if self.state.tree.grown:
            self.console.print(Panel(self.tree(), title="tree", title_align="left", border_style="magenta"))
        if event.partial and event.answer:
            self.panel(event.answer, "partial answer", "yellow")
        answered = event.exit_reason == ExitReason.FINAL
        style = "green" if answered else "yellow"
        how = "done" if answered else clean(f"stopped: {event.exit_reason}")
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
        parts: list[RenderableType] = [bars] if bars.row_count else []
        if s.tree.running:
            parts.append(self.tree())
        return Group(*parts, line) if parts else line

    def line(self, text: str, style: str = "") -> None:
        self.console.print(Text(clean(text), style=style))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            atexit.unregister(self.close)
