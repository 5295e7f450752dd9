"""Follow-up questions: `rlm ask -c QUESTION` continues the last run, `--continue RUN_ID` another.

The earlier run is read back from its trace: the inputs it loaded (as given, from the directory it
ran in) and their digests, its root conversation (each root call's newest message and the reply),
and its cells. The inputs are loaded again and checked against the recorded sha256s: a changed
input means a fresh run, with a warning, unless --force. Then the conversation is carried over, the
REPL state is rebuilt by running the earlier cells again (their sub-calls served by the cache of
model calls, so nothing is paid twice), and the new question is asked. A chain of follow-ups is
read back run by run through RunStarted.parent_run.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import prompts
from .errors import InputError
from .events import (
    CellFinished,
    CellStarted,
    ContextLoaded,
    Emit,
    Event,
    IterationStarted,
    ModelCall,
    Notice,
    RunStarted,
    cap,
)

if TYPE_CHECKING:
    from .agent import Agent
    from .context import Context

CONTINUED = "continuing run "  # how a follow-up's trace says it carried its parent over
MAX_CHAIN = 50  # follow-ups of follow-ups read back at most this far
FOLLOW_UP = (
    "A follow-up question about the same context. The REPL kept its state: the variables your "
    "earlier code defined are still there.\n\nThe query: {question}\n\n" + prompts.NEXT_TURN
)


@dataclass
class FollowUp:
    run_id: str
    cwd: str  # where the earlier run was asked: its inputs are named relative to it
    inputs: list[str]
    endpoint: str = ""
    sub_endpoint: str = ""
    model: str = ""
    sub_model: str = ""
    sources: list[list] = field(default_factory=list)  # [path, bytes, sha256] as ContextLoaded has them
    files: int = 0
    turns: list[tuple[str, str]] = field(default_factory=list)  # (newest message, reply) per root call
    cells: list[tuple[str, str | None]] = field(default_factory=list)  # (code, recorded output)
    force: bool = False

    # -- before the run ----------------------------------------------------------------------------

    def defaults(self, explicit: dict[str, Any]) -> None:
        """The earlier run's models and servers, where no flag or variable names others."""
        if explicit.get("model") is None and self.model:
            explicit["model"] = self.model
        if explicit.get("sub_model") is None and self.sub_model and self.sub_model != self.model:
            explicit["sub_model"] = self.sub_model
        if explicit.get("api_base") is None and self.endpoint:
            explicit["api_base"] = self.endpoint
        if explicit.get("sub_api_base") is None and self.sub_endpoint and self.sub_endpoint != self.endpoint:
            explicit["sub_api_base"] = self.sub_endpoint

    def checked(self, context: Context, emit: Emit) -> FollowUp | None:
        """Self when the inputs are those the earlier run read (or --force); None, with a warning,
        when they changed: the question is then answered by a fresh run."""
        now = [[f.path, f.bytes, f.sha256] for f in context.files[: len(self.sources)]]
        changed = [new[0] for new, old in zip(now, self.sources, strict=False) if new != list(old)]
        if len(now) != len(self.sources) or context.stats.files != self.files:
            changed.append(f"{context.stats.files} files, was {self.files}")
        if not changed:
            return self
        what = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        if self.force:
            emit(Notice(f"the input changed since run {self.run_id} ({what}); continuing (--force)", True))
            return self
        emit(
            Notice(
                f"the input changed since run {self.run_id} ({what}): answering as a fresh run "
                "(--force continues anyway)",
                warning=True,
            )
        )
        return None

    # -- the run -----------------------------------------------------------------------------------

    def messages(self, system: dict, turn_line: str, question: str) -> list[dict]:
        """The root conversation: the system prompt, the earlier turns, then the new question."""
        carried: list[dict] = []
        for prompt, reply in self.turns:
            carried.append({"role": "user", "content": prompt})
            if reply:
                carried.append({"role": "assistant", "content": reply})
        asked = FOLLOW_UP.format(question=question)
        return [system, *carried, {"role": "user", "content": f"{turn_line}\n\n{asked}"}]

    async def rebuild(self, agent: Agent) -> None:
        """Run the earlier cells again, in order, so the REPL holds what they defined. Their
        sub-calls go through the model client (the cache serves them); FINALs are ignored."""
        notice = Notice(
            f"{CONTINUED}{self.run_id}: {len(self.turns)} earlier turns carried over, "
            f"{len(self.cells)} cells run again",
            parent=agent.run_id,
        )
        agent.emit(notice)
        differ = []
        for n, (code, recorded) in enumerate(self.cells, 1):
            handler = functools.partial(agent.calls.llm, parent=notice.id)
            result = await agent.repl.run_cell(code, agent._cell_timeout(), agent.budget.deadline(), handler)
            agent.cells_run += 1
            if recorded is not None and cap(result.output) != recorded:
                differ.append(str(n))
        if differ:
            agent.emit(
                Notice(
                    f"cells {', '.join(differ)} of run {self.run_id} printed something else this time: "
                    "the REPL state may differ from that run's",
                    warning=True,
                    parent=agent.run_id,
                )
            )


def load(ref: str, force: bool = False) -> FollowUp:
    """The follow-up of the run `ref` names (an id, a unique prefix, or `last`)."""
    from .record.history import History

    record = History().get(ref)
    follow = _read(record.id, record.trace_path, 0)
    follow.force = force
    if "-" in follow.inputs:
        raise InputError(
            f"run {record.id} read stdin, which cannot be read again",
            hint="ask a new question with the input: rlm ask PATH... QUESTION",
        )
    if not Path(follow.cwd).is_dir():
        raise InputError(f"cannot continue run {record.id}: the directory it ran in ({follow.cwd}) is gone")
    return follow


def _read(run_id: str, trace_path: str | None, depth: int) -> FollowUp:
    from .record.trace import read_trace

    if not trace_path:
        raise InputError(f"run {run_id} has no trace (it ran with --no-log): it cannot be continued")
    events = read_trace(trace_path)
    follow = _from_events(run_id, events)
    parent = _started(events, run_id).parent_run
    carried = any(isinstance(e, Notice) and e.message.startswith(CONTINUED + str(parent)) for e in events)
    if parent and carried and depth < MAX_CHAIN:  # the earlier links of the chain come first
        from .record.history import History

        earlier = _read(parent, History().get(parent).trace_path, depth + 1)
        follow.turns = earlier.turns + follow.turns
        follow.cells = earlier.cells + follow.cells
    return follow


def _started(events: list[Event], run_id: str) -> RunStarted:
    for event in events:
        if isinstance(event, RunStarted) and event.id == run_id:
            return event
    raise InputError(f"the trace of run {run_id} does not start it")


def _from_events(run_id: str, events: list[Event]) -> FollowUp:
    """The run's own turns and cells: those under its iterations (not a recursive child's)."""
    started = _started(events, run_id)
    follow = FollowUp(
        run_id, started.cwd or os.getcwd(), list(started.inputs), started.endpoint, started.sub_endpoint,
        started.model, started.sub_model,
    )  # fmt: skip
    iterations = {e.id for e in events if isinstance(e, IterationStarted) and e.parent == run_id}
    outputs = {e.parent: e.output for e in events if isinstance(e, CellFinished)}
    for event in events:
        if isinstance(event, ContextLoaded) and event.parent == run_id:
            follow.sources, follow.files = [list(s) for s in event.sources], event.files
        elif isinstance(event, ModelCall) and event.role == "root" and event.parent in iterations | {run_id}:
            follow.turns.append((event.prompt or "", event.reply or ""))
        elif isinstance(event, CellStarted) and event.parent in iterations:
            follow.cells.append((event.code, outputs.get(event.id)))
    if not follow.turns:
        raise InputError(f"run {run_id} made no model call: there is nothing to continue")
    return follow
