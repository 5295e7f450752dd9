"""`rlm replay RUN --rerun`: execute a recorded run again, against the current code, offline.

Every model reply comes from the record: the root model's, in the order the trace has them; each
sub-call's from the cache of model calls (its key: the recorded models and servers, the prompt the
cell now makes), since the trace keeps only the start of sub-call replies. No key, no network: a
sub-call the record has no reply for gets an error string in its cell, and is counted. The new
execution's cells and answer are then compared with the record's: that is how a bad run becomes a
regression test. Exit 0 when the re-run reproduces the record, 1 when it diverges.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExitStatus, InputError, RlmError
from ..events import Event, ModelCall, Notice, RunFinished, RunStarted, new_run_id
from ..model.cache import CacheMiss, CallCache, call_key, key_params
from ..model.client import Completion

if TYPE_CHECKING:
    from ..budget import Budget
    from ..model.providers import ModelConfig

NOT_RECORDED = "[llm_query error: the record has no reply for this prompt]"
SHOWN_CHARS = 200  # of an output or answer quoted in a divergence


class RecordedReplies(CallCache):
    """A CallCache that answers from the record: root replies in order, sub-calls by key."""

    def __init__(self, root_calls: list[ModelCall]):
        super().__init__(only=True)
        self.root_calls = root_calls
        self.next_root = 0
        self.unrecorded = 0  # sub-calls the record had no reply for

    async def lookup(self, kind: str, cfg: ModelConfig, messages: list[dict], budget: Budget) -> Completion:
        if kind == "root":
            if self.next_root >= len(self.root_calls):
                self.missed = CacheMiss(
                    "the re-run asked the root model more often than the record did "
                    f"({len(self.root_calls)} times)"
                )
                raise self.missed
            call = self.root_calls[self.next_root]
            self.next_root += 1
            recorded = Completion(
                call.reply or "", call.prompt_tokens, call.completion_tokens, call.cost_usd, 0.0,
                model=call.model, cached=True,
            )  # fmt: skip
            return self.hit(recorded, budget)
        value = await asyncio.to_thread(
            self.get, call_key(kind, cfg.model, cfg.api_base, messages, key_params(cfg))
        )
        completion = self._completion(value)
        if completion is None:
            self.unrecorded += 1
            return Completion(NOT_RECORDED, 0, 0, 0.0, 0.0, model=cfg.model, cached=True)
        return self.hit(completion, budget)

    async def store(self, kind: str, cfg: ModelConfig, messages: list[dict], completion: Completion) -> None:
        """A re-run records nothing in the cache."""


@dataclass
class Rerun:
    answer: str | None
    exit_reason: str
    divergences: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(ExitStatus.ERROR if self.divergences else ExitStatus.OK)


def rerun(trace: Path, emit_to: object) -> Rerun:
    """Run the recorded run of `trace` again; its events go to `emit_to` (a view); the comparison."""
    from ..followup import CONTINUED, _from_events, _read
    from ..run import ask
    from ..settings import resolve
    from .trace import read_trace

    events = read_trace(trace)
    started = next((e for e in events if isinstance(e, RunStarted) and e.parent is None), None)
    if started is None:
        raise InputError(f"{trace} does not start a run")
    recorded = _from_events(started.id, events)
    finished = next(
        (e for e in reversed(events) if isinstance(e, RunFinished) and e.parent == started.id), None
    )
    roots = _root_calls(events, started.id)
    subs = {e.model for e in events if isinstance(e, ModelCall) and e.role == "sub"}
    explicit = {
        "model": started.model,
        "sub_model": started.sub_model,
        "api_base": started.endpoint or None,
        "sub_api_base": started.sub_endpoint or None,
        "allow_models": sorted(subs - {started.model, started.sub_model}),
        "cache_only": True,
    }
    settings = resolve(explicit)
    follow = None
    parent = started.parent_run
    if parent and any(isinstance(e, Notice) and e.message.startswith(CONTINUED + parent) for e in events):
        from .history import History

        follow = _read(parent, History().get(parent).trace_path, 0)
        follow.force = True
    replies = RecordedReplies(roots)
    seen: list[Event] = []

    def emit(event: Event) -> None:
        seen.append(event)
        emit_to(event)  # type: ignore[operator]

    run_id = new_run_id()
    here = os.getcwd()
    try:
        os.chdir(started.cwd or here)  # the inputs are named as they were given, from where it ran
        report = ask(
            settings,
            list(started.inputs),
            started.question,
            emit,
            run_id=run_id,
            follow=follow,
            cache=replies,
        )
        answer, reason = report.result.answer, report.result.exit_reason.value
    except RlmError as exc:
        answer, reason = None, exc.reason.value
    finally:
        os.chdir(here)
    result = Rerun(answer, reason)
    result.divergences = _compare(recorded.cells, _cells(seen, run_id), finished, result, replies)
    return result


def _root_calls(events: list[Event], run_id: str) -> list[ModelCall]:
    """The run's own root calls, in order (not a recursive child's)."""
    from ..events import IterationStarted

    scopes = {e.id for e in events if isinstance(e, IterationStarted) and e.parent == run_id} | {run_id}
    return [e for e in events if isinstance(e, ModelCall) and e.role == "root" and e.parent in scopes]


def _cells(events: list[Event], run_id: str) -> list[tuple[str, str | None]]:
    from ..followup import _from_events

    try:
        return _from_events(run_id, events).cells
    except InputError:  # it made no root call (it stopped before any)
        return []


def _compare(
    old: list[tuple[str, str | None]],
    new: list[tuple[str, str | None]],
    finished: RunFinished | None,
    result: Rerun,
    replies: RecordedReplies,
) -> list[str]:
    """What differs between the record and the re-run, one line each."""
    found = []
    for n, ((_, before), (_, after)) in enumerate(zip(old, new, strict=False), 1):
        if before is not None and before != after:
            found.append(f"cell {n}: output differs at {_first_difference(before, after or '')}")
    if len(old) != len(new):
        found.append(f"the record ran {len(old)} cells, the re-run {len(new)}")
    if replies.unrecorded:
        found.append(f"{replies.unrecorded} sub-calls made prompts the record has no reply for")
    if finished is None:
        found.append("the record ends before the run did: there is no answer to compare")
    else:
        if finished.answer != result.answer:
            found.append(f"answer differs: recorded {_quote(finished.answer)}, now {_quote(result.answer)}")
        if finished.exit_reason != result.exit_reason:
            found.append(f"exit reason differs: recorded {finished.exit_reason}, now {result.exit_reason}")
    return found


def _first_difference(before: str, after: str) -> str:
    """ "line N: recorded '...', now '...'" for the first line that differs."""
    old, new = before.splitlines(), after.splitlines()
    for n in range(max(len(old), len(new))):
        a = old[n] if n < len(old) else None
        b = new[n] if n < len(new) else None
        if a != b:
            return f"line {n + 1}: recorded {_quote(a)}, now {_quote(b)}"
    return f"the end: recorded {_quote(before)}, now {_quote(after)}"  # differ in trailing newlines only


def _quote(text: str | None) -> str:
    if text is None:
        return "nothing"
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")


def rerun_command(trace: Path, view: object) -> int:
    """`rlm replay --rerun`: the re-run's answer on stdout, what diverged on stderr; the exit status."""
    from ..cli.guard import say
    from ..view.escape import echo

    try:
        result = rerun(trace, view)
    finally:
        view.close()  # type: ignore[attr-defined]
    if result.answer is not None:
        echo(result.answer)
    if not result.divergences:
        say("the re-run reproduces the record")
        return result.status
    say(f"the re-run diverges from the record ({len(result.divergences)}):")
    for line in result.divergences:
        say(f"  {line}")
    return result.status
