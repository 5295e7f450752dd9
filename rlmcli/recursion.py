"""Child RLMs: what a cell's `rlm_query` / `rlm_query_batched` run on the host (--max-depth > 1).

A child is a whole RLM one level down: its own root-model loop (an Agent) over its own REPL, which
is one more server in the run's sandbox (Repl.child: no new container, no network). Its root sees
the query and the metadata of its `context`: the parent's whole input (the same file, no copy) or
the text the cell passed. It shares the run's model client and its one Budget, so every call at
every depth is counted and the run's limits bound the tree; it has its own turn cap
(--child-iterations) and, under --max-cost/--max-tokens, a share of what is left (shares.py),
reserved before it starts and released when it ends. A batch runs --max-children at a time.

A child never ends its parent: whatever stops it (its turns, its share, a dead server, a model
error) comes back to the calling cell as an error string; only a limit of the whole run (the run's
budget breached, --timeout) ends the run, as it would for a sub-call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import shares
from .agent import Agent, RunResult, Task
from .budget import Budget, tokens_in_chars
from .context import PREFIX_CHARS, Context, ContextStats
from .errors import ExitReason, LimitReached, RlmError
from .events import SUB_TEXT_CAP, ChildFinished, ChildStarted, Emit, Event, cap
from .repl.protocol import Repl

if TYPE_CHECKING:
    from .model.client import Completion, ModelClient

MIN_CHILD_MEMORY = 256 * 2**20  # address space a child's server gets at least (Python and its context)


@dataclass(frozen=True)
class Settings:
    """How deep and wide the tree may grow (settings.Settings: --max-depth and its kin)."""

    max_depth: int = 1  # levels of RLMs, the root's included: 1 means no children
    max_children: int = 4  # children of one batch running at once
    child_iterations: int = 10  # a child's root-model turns
    memory: int = 1024**3  # address space of a server at this level; a child gets a share


class ChildBudget:
    """The budget a child's Agent sees: the run's Budget in all but its turns (its own count and
    cap) and its breach (its share spent, or the run's budget)."""

    def __init__(self, budget: Budget, share: shares.Share, max_iterations: int):
        self._budget, self.share = budget, share
        self.iterations = 0
        self.limits = dataclasses.replace(budget.limits, max_iterations=max_iterations)

    def __getattr__(self, name: str) -> Any:  # everything else is the run's
        return getattr(self._budget, name)

    @property
    def breached(self) -> LimitReached | None:
        return self._budget.breached or self.share.breached

    def check(self, subcall: bool = False) -> None:
        self._budget.check(subcall)
        if self.share.breached is not None:
            raise self.share.breached

    def check_batch(self, size: int) -> None:
        self._budget.check_batch(size)
        if self.share.breached is not None:
            raise self.share.breached


class ModelFor:
    """The run's model client, with a child's root calls made to `model` (rlm_query(model=...))."""

    def __init__(self, client: ModelClient, model: str):
        self._client, self.model = client, model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def root(self, messages: list[dict], **options: Any) -> Completion:
        config = self._client.router.config_for(self.model)  # ModelNotAllowed: the child fails
        return await self._client._call(config, messages, kind="root", **options)


def child_context(text: str, parent: Context, repl: Repl) -> Context:
    """The Context a child's first message describes, for a text the cell passed."""
    assert repl.context_path is not None
    stats = ContextStats(
        files=0, bytes=len(text.encode("utf-8", "replace")), chars=len(text),
        lines=text.count("\n") + (1 if text and not text.endswith("\n") else 0),
        est_tokens=tokens_in_chars(len(text)), invalid_utf8_files=0, skipped={},
    )  # fmt: skip
    return Context(repl.context_path, "file", [], stats, text[:PREFIX_CHARS])


class Recursion:
    """Runs the children of one RLM (the root run, or a child that may have children itself)."""

    def __init__(
        self, settings: Settings, task: Task, repl: Repl, client: ModelClient, budget: Budget, emit: Emit
    ):
        self.settings, self.task, self.repl = settings, task, repl
        self.client, self.budget, self.emit = client, budget, emit
        self.depth = task.depth + 1  # of the children
        # Each child's server gets a share of this level's memory: the children of one batch
        # together, and this level's own server, fit in it.
        share = settings.memory // (settings.max_children + 1)
        self.child_memory = min(settings.memory, max(MIN_CHILD_MEMORY, share))

    async def run(
        self, queries: list[str], contexts: list[str | None], model: str | None, parent: str
    ) -> list[str]:
        """One answer per query, in order, from children run --max-children at a time."""
        gate = asyncio.Semaphore(self.settings.max_children)
        parts = min(len(queries), self.settings.max_children) + 1  # +1: the caller keeps a share

        async def one(query: str, text: str | None) -> str:
            async with gate:
                return await self.child(query, text, model, parent, parts)

        # One task each: a child's budget share (shares.current) is set in its own task only.
        answers = await asyncio.gather(*(one(q, c) for q, c in zip(queries, contexts, strict=True)))
        if self.budget.breached is not None:  # a limit of the whole run: it ends here, as for llm_query
            raise self.budget.breached
        return list(answers)

    async def child(self, query: str, text: str | None, model: str | None, parent: str, parts: int) -> str:
        """Run one child to its end; its answer, or an error string saying why there is none."""
        context = self.task.context if text is None else None
        started = ChildStarted(
            cap(query, SUB_TEXT_CAP), context.stats.chars if context else len(text or ""),
            whole_input=text is None, parent=parent, depth=self.depth,
        )  # fmt: skip
        self.emit(started)
        clock = time.monotonic()
        share: shares.Share | None = None
        result: RunResult | None = None
        view: ChildBudget | None = None
        try:
            share = self.budget.open_share(self.depth, parts)
            shares.current.set(share)  # this task's calls, and its children's, draw on the share
            repl = await self.repl.child(text, self.child_memory)
            try:
                task = Task(
                    query, context or child_context(text or "", self.task.context, repl), started.id,
                    self.task.max_output_chars, windows=self.task.windows, cite="off",
                    depth=self.depth, max_depth=self.task.max_depth,
                )  # fmt: skip
                view = ChildBudget(self.budget, share, self.settings.child_iterations)
                client = self.client if model is None else ModelFor(self.client, model)
                agent = Agent(task, client, repl, view, self._emit)  # type: ignore[arg-type]
                if self.depth + 1 < self.settings.max_depth:
                    deeper = dataclasses.replace(self.settings, memory=self.child_memory)
                    agent.calls.recursion = Recursion(deeper, task, repl, self.client, self.budget, self.emit)
                result = await agent.run()
            finally:
                await asyncio.shield(repl.close())
        except LimitReached as exc:  # no share left for it, or the run's wall time ran out
            answer, reason, message = None, exc.reason.value, str(exc)
        except RlmError as exc:  # a sandbox or provider failure: this child's, not the run's
            answer, reason, message = None, exc.reason.value, str(exc)
        else:
            assert result is not None
            answer, reason, message = result.answer, result.exit_reason.value, result.message
        finally:
            if share is not None:
                self.budget.close_share(share)
        final = reason == ExitReason.FINAL.value
        reply = answer if final and answer is not None else failed(reason, message, answer)
        self.emit(
            ChildFinished(
                reason, cap(reply, SUB_TEXT_CAP), view.iterations if view else 0,
                share.spent_tokens if share else 0, share.spent_cost if share else 0.0,
                time.monotonic() - clock, None if final else message, parent=started.id, depth=self.depth,
            )
        )  # fmt: skip
        return reply

    def _emit(self, event: Event) -> None:
        """A child's events: at its depth (their parents lead up to its ChildStarted)."""
        event.depth = self.depth
        self.emit(event)


def failed(reason: str, message: str | None, partial: str | None) -> str:
    """The string a cell gets for a child that did not answer: why, and its best partial answer."""
    text = f"[rlm_query error: the child stopped ({reason}): {message or 'no answer'}]"
    return f"{text}\nIts partial answer: {partial}" if partial else text


def for_run(
    settings: Any, task: Task, repl: Repl, client: ModelClient, budget: Budget, emit: Emit, memory: int
) -> Recursion | None:
    """The children of a run's root (settings.Settings) whose server has `memory` bytes (run.py sizes
    it), or None at --max-depth 1."""
    if settings.max_depth <= 1:
        return None
    tree = Settings(settings.max_depth, settings.max_children, settings.child_iterations, memory)
    return Recursion(tree, task, repl, client, budget, emit)
