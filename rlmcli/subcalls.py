"""The REPL's calls for help from a model, brokered on the host: llm_query / llm_query_batched to
the run's model client, rlm_query / rlm_query_batched to child RLMs (recursion.py) below
--max-depth, and at it to llm_query calls, as the paper does. Their events (SubcallProgress, each
call's ModelCall, retries) hang under the cell that made the calls.

Split from agent.py, which owns the loop and hands these to each cell (Repl.run_cell's handlers).
"""

from __future__ import annotations

from typing import Protocol

from . import prompts
from .budget import Budget
from .events import SUB_TEXT_CAP, Emit, ModelCall, ModelRetry, SubcallProgress, cap
from .model.client import Completion, ModelClient
from .repl.protocol import fallback_prompt
from .windows import Windows, subcall_too_large


class Recursion(Protocol):
    """rlm_query's child RLMs (recursion.Recursion): answers for `queries`, in order."""

    async def run(
        self, queries: list[str], contexts: list[str | None], model: str | None, parent: str
    ) -> list[str]: ...


class Subcalls:
    """One run's sub-calls. `emit` is the loop's own (it writes the events the loop holds first);
    `run_id` is where calls made outside a cell hang; `enabled` False: the paper's ablation
    (--no-subcalls), llm_query answers that it is off."""

    def __init__(
        self,
        client: ModelClient,
        budget: Budget,
        emit: Emit,
        run_id: str | None,
        windows: Windows,
        enabled: bool,
    ):
        self.client, self.budget, self.emit = client, budget, emit
        self.run_id, self.windows, self.enabled = run_id, windows, enabled
        self.recursion: Recursion | None = None  # rlm_query's children (None: each is an llm_query)

    async def llm(self, prompts_: list[str], model: str | None, parent: str | None = None) -> list[str]:
        """The REPL's llm_query / llm_query_batched, brokered to the host's model client; events
        hang under `parent` (the cell), else the run."""
        if not self.enabled:
            return [prompts.SUBCALLS_DISABLED] * len(prompts_)
        parent = parent or self.run_id
        # A prompt beyond its model's window gets an error string, not a request; the rest go.
        window = self.windows.for_subcall(model)
        refused = [subcall_too_large(p, window) for p in prompts_]
        if any(refused):
            sent = [p for p, error in zip(prompts_, refused, strict=True) if error is None]
            replies = iter(await self.llm(sent, model, parent) if sent else [])
            return [error or next(replies) for error in refused]
        # A limit already reached (the wall clock included), or a batch larger than the sub-calls
        # left, ends the run here: LimitReached goes up through the REPL to the loop, so a cell
        # looping on llm_query cannot spin on error strings, and a huge batch costs nothing.
        self.budget.check_batch(len(prompts_))
        total, done, failed, retried = len(prompts_), 0, 0, 0
        first = SubcallProgress(total, 0, 0, min(total, self.client.concurrency), parent=parent)
        self.emit(first)

        def call_done(completion: Completion | None) -> None:  # None: the call failed
            nonlocal done, failed
            if completion is not None:
                self.emit(model_call("sub", completion, None, cap(completion.text, SUB_TEXT_CAP), parent))
            done, failed = done + 1, failed + (completion is None)
            in_flight = min(total - done, self.client.concurrency)
            self.emit(SubcallProgress(total, done, failed, in_flight, first.id, retried, parent=parent))

        def call_retried(event: ModelRetry) -> None:
            nonlocal retried
            retried += event.attempt == 1  # a call counts once, however many times it is retried
            self.retry(parent, event)

        replies = await self.client.batch(prompts_, model, on_done=call_done, on_retry=call_retried)
        if done < total:  # a limit stopped the batch: one event closes it, not one per slot
            unsent = total - done
            self.emit(SubcallProgress(total, total, failed + unsent, 0, first.id, retried, parent=parent))
        if self.budget.breached is not None:
            raise self.budget.breached
        return replies

    async def children(
        self, queries: list[str], contexts: list[str | None], model: str | None, parent: str | None = None
    ) -> list[str]:
        """The REPL's rlm_query / rlm_query_batched: child RLMs (recursion.py) below --max-depth;
        at it, llm_query calls of each query (and its context), as the paper does."""
        if self.recursion is None:
            prompts_ = [fallback_prompt(q, c) for q, c in zip(queries, contexts, strict=True)]
            return await self.llm(prompts_, model, parent)
        return await self.recursion.run(queries, contexts, model, parent or self.run_id or "")

    def retry(self, parent: str | None, event: ModelRetry) -> None:
        """A model call will be tried again: its event, under the call's scope."""
        event.parent = parent
        self.emit(event)


def model_call(
    role: str, c: Completion, prompt: str | None, reply: str | None, parent: str | None
) -> ModelCall:
    """The event of one finished model call; `prompt` and `reply` as the trace keeps them."""
    return ModelCall(
        role, c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.latency_s, prompt, reply,
        cached=c.cached, parent=parent,
    )  # fmt: skip
