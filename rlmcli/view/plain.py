"""The plain renderer of the live view: `rlm: `-prefixed lines for pipes, CI logs and NO_COLOR."""

from __future__ import annotations

from typing import TextIO

from .. import events as ev
from ..errors import ExitReason
from ..reply import strip_code
from ..text import plural
from .state import Batch, RunState, batch_key, clean, clip, seconds, totals
from .tree import finished_line

PLAIN_INTERVAL_S = 0.5  # plain mode: a batch's progress line at most this often...
PLAIN_STEP = 0.10  # ...or whenever this fraction of the batch has finished since the last line


def last_line(text: str) -> str:
    lines = [line for line in text.strip().split("\n") if line.strip()]
    return clip(lines[-1], 1)[0] if lines else ""


class PlainOutput:
    """Line-oriented, `rlm: `-prefixed, no escape codes, no cursor movement."""

    def __init__(self, stream: TextIO, state: RunState, verbose: bool):
        self.stream, self.state, self.verbose = stream, state, verbose

    def show(self, event: ev.Event) -> None:
        s = self.state
        if isinstance(event, (ev.ChildStarted, ev.ChildFinished)):
            self.child(event)
        elif event.depth > 0:
            return  # inside a child RLM: its line when it ends, and the tree, say what it did
        elif isinstance(event, ev.RunStarted):
            sub = "" if event.sub_model == event.model else f", sub-calls {event.sub_model}"
            self.line(f"model {event.model}{sub}, sandbox {event.sandbox}")
            if self.verbose:
                self.line(f"run {event.id}: {event.question}")
        elif isinstance(event, ev.SandboxChosen) and s.asked_sandbox == "auto":
            self.line(f"sandbox {event.sandbox}")  # what `auto` chose
        elif isinstance(event, ev.IterationStarted):
            self.line(f"iteration {event.iteration}")
        elif isinstance(event, ev.ModelCall) and event.role == "root":
            self.line(
                f"model turn: {event.prompt_tokens:,} tokens in, {event.completion_tokens:,} out, "
                f"{seconds(event.latency_s)}; so far {s.usage()}"
            )
            if self.verbose and event.reply:
                self.block(strip_code(event.reply))
        elif isinstance(event, ev.ModelRetry) and event.role == "root":  # sub-calls': the trace
            self.line(clean(f"model turn failed ({event.reason}); retrying in {seconds(event.wait_s)}"))
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
            if s.tree.grown:
                self.tree()
            how = "done" if event.exit_reason == ExitReason.FINAL else f"stopped ({event.exit_reason})"
            partial = ", partial answer" if event.partial and event.answer else ""
            self.line(f"{how}: {totals(event)}{partial}")

    def child(self, event: ev.ChildStarted | ev.ChildFinished) -> None:
        """A line when a child RLM starts and when it ends; the tree once none is running."""
        tree = self.state.tree
        if isinstance(event, ev.ChildStarted):
            node = tree.by_start.get(event.id)
            if node is None:
                return
            cell = self.state.cells.get(event.parent or "")
            where = f"in cell {cell}" if cell else "by its parent"
            self.line(f"{node.label} (depth {node.depth}) started {where}: {last_line(event.query)}")
            return
        node = tree.by_start.get(event.parent or "")
        if node is not None:
            self.line(finished_line(node, event))
            if tree.running == 0:
                self.tree()

    def tree(self) -> None:
        self.line("tree:")
        for text in self.state.tree.lines():
            self.line("  " + text)

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
