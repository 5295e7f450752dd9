"""The RLM loop: the root model writes code, the REPL runs it, until FINAL.

Each turn: one root completion -> its ```repl``` blocks run in order -> their outputs go back as
the next user message. The run ends at FINAL(...) / FINAL_VAR(name) in the reply text (checked
after its code ran) or FINAL()/FINAL_VAR() called inside a cell. Limits surface as LimitReached
from the budget; the loop turns them into a result carrying the best partial answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import prompts
from .budget import Budget
from .context import Context
from .errors import LimitReached
from .events import (
    SUB_TEXT_CAP,
    CellFinished,
    CellStarted,
    Emit,
    FinalAnswer,
    IterationStarted,
    ModelCall,
    SubcallProgress,
    cap,
    discard,
)
from .model.client import Completion, ModelClient
from .repl.frames import clip
from .repl.protocol import CellResult, Repl
from .reply import code_blocks, find_final, strip_code

# Host-side caps on what one reply can put into the next prompt, whatever the sandbox sends: the
# blocks run per reply, and the characters of their outputs together (at least two full cells).
MAX_BLOCKS_PER_REPLY = 16
TURN_OUTPUT_CHARS = 100_000


@dataclass
class RunResult:
    answer: str | None
    exit_reason: str  # "final", or the limit that stopped the run: "max_iterations", "max_cost", ...
    iterations: int
    partial: bool = False  # True when `answer` is the best partial answer of an unfinished run
    message: str | None = None  # why a run stopped early
    hint: str | None = None  # what the user can do about it


class Agent:
    def __init__(
        self,
        client: ModelClient,
        repl: Repl,
        context: Context,
        question: str,
        budget: Budget,
        emit: Emit = discard,
        max_output_chars: int = 20000,
        run_id: str | None = None,
        subcalls: bool = True,
    ):
        self.client, self.repl, self.context = client, repl, context
        self.question, self.budget, self.emit = question, budget, emit
        self.run_id = run_id
        self.subcalls_enabled = subcalls
        self.scope = run_id  # the id new events hang under: the run, an iteration, or a cell
        client.on_call = self._on_call
        self.messages = [
            {"role": "system", "content": prompts.system_prompt(max_output_chars, subcalls=subcalls)},
            {"role": "user", "content": prompts.first_message(context, question)},
        ]
        self.partial: str | None = None  # the best answer so far, should the run stop early

    async def run(self) -> RunResult:
        try:
            return await self._loop()
        except LimitReached as limit:
            return self._stopped(limit)

    async def _loop(self) -> RunResult:
        limit = self.budget.limits.max_iterations
        while self.budget.iterations < limit:
            self.budget.iterations += 1
            started = IterationStarted(self.budget.iterations, parent=self.run_id)
            self.emit(started)
            self.scope = started.id
            answer = await self._turn(self.budget.iterations)
            if answer is not None:
                return self._answered(answer)
        # Out of iterations: one last turn that asks for the answer, without running code.
        self.messages.append({"role": "user", "content": prompts.LAST_TURN.format(question=self.question)})
        reply = await self._ask()
        found = find_final(reply)
        if found is not None:
            answer = found[1] if found[0] == "FINAL" else await self._read_var(found[1])
            if answer is not None:
                return self._answered(answer)
        self.partial = strip_code(reply) or self.partial
        raise LimitReached("iterations", f"no answer after {limit} iterations")

    async def _turn(self, iteration: int) -> str | None:
        """One root completion and its cells; the final answer if the turn produced one.

        At most MAX_BLOCKS_PER_REPLY blocks run, and their outputs together take at most the
        turn's room in the next message; blocks past either cap are not run, and the model is told.
        """
        reply = await self._ask()
        self.partial = strip_code(reply) or self.partial
        blocks = code_blocks(reply)
        outputs: list[str] = []
        room = max(TURN_OUTPUT_CHARS, 2 * self.repl.max_output_chars)
        turn_scope = self.scope
        for n, code in enumerate(blocks, 1):
            if n > MAX_BLOCKS_PER_REPLY:
                outputs.append(
                    f"(blocks {n}-{len(blocks)} of {len(blocks)} were not run: at most "
                    f"{MAX_BLOCKS_PER_REPLY} blocks run per reply; put the code in fewer blocks)"
                )
                break
            if room <= 0:
                outputs.append(
                    f"(blocks {n}-{len(blocks)} of {len(blocks)} were not run: the outputs of this "
                    "reply's blocks filled the room for them; print less)"
                )
                break
            cell = CellStarted(iteration, cap(code), parent=turn_scope)
            self.emit(cell)
            self.scope = cell.id
            result = await self.repl.run_cell(code, self._cell_timeout(), self.budget.deadline())
            self.scope = turn_scope
            self.emit(
                CellFinished(iteration, cap(result.output), result.error, result.duration, parent=cell.id)
            )
            if result.final is not None:
                return result.final
            text = clip(self._format_cell(n, len(blocks), result), room)
            room -= len(text)
            outputs.append(text)
            if self.budget.breached:  # a sub-call inside the cell hit a limit
                raise self.budget.breached
        found = find_final(reply)
        if found is not None:
            if found[0] == "FINAL":
                return found[1]
            value = await self._read_var(found[1], outputs)
            if value is not None:
                return value
        if blocks:
            outputs.append(prompts.NEXT_TURN.format(question=self.question))
            self.messages.append({"role": "user", "content": "\n\n".join(outputs)})
        else:
            self.messages.append({"role": "user", "content": "\n\n".join(outputs + [prompts.NO_CODE_NUDGE])})
        return None

    async def _ask(self) -> str:
        """A root completion; an empty reply is re-asked once, never a crash."""
        completion = await self._complete()
        if not completion.text.strip():
            self.messages.append({"role": "user", "content": prompts.EMPTY_REPLY_NUDGE})
            completion = await self._complete()
        self.messages.append({"role": "assistant", "content": completion.text})
        return completion.text

    async def _complete(self) -> Completion:
        return await self.client.root(self.messages)

    def _on_call(self, role: str, model: str, completion: Completion) -> None:
        """The model client reports every finished call, root or sub."""
        if role == "root":
            prompt, reply = cap(self.messages[-1]["content"]), cap(completion.text)
        else:
            prompt, reply = None, cap(completion.text, SUB_TEXT_CAP)
        self.emit(
            ModelCall(
                role, model, completion.prompt_tokens, completion.completion_tokens, completion.cost_usd,
                completion.latency_s, prompt, reply, parent=self.scope,
            )
        )  # fmt: skip

    async def subcalls(self, prompts_: list[str], model: str | None) -> list[str]:
        """The REPL's llm_query / llm_query_batched, brokered to the host's model client."""
        if not self.subcalls_enabled:
            return [prompts.SUBCALLS_DISABLED] * len(prompts_)
        # A limit already reached (the wall clock included), or a batch larger than the sub-calls
        # left, ends the run here: LimitReached goes up through the REPL to the loop, so a cell
        # looping on llm_query cannot spin on error strings, and a huge batch costs nothing.
        self.budget.check_batch(len(prompts_))
        total, done, failed = len(prompts_), 0, 0
        first = SubcallProgress(total, 0, 0, min(total, self.client.concurrency), parent=self.scope)
        self.emit(first)

        def progress(call_failed: bool) -> None:
            nonlocal done, failed
            done, failed = done + 1, failed + call_failed
            in_flight = min(total - done, self.client.concurrency)
            self.emit(SubcallProgress(total, done, failed, in_flight, batch=first.id, parent=self.scope))

        replies = await self.client.batch(prompts_, model, on_done=progress)
        if done < total:  # a limit stopped the batch: one event closes it, not one per slot
            unsent = total - done
            self.emit(SubcallProgress(total, total, failed + unsent, 0, batch=first.id, parent=self.scope))
        if self.budget.breached is not None:
            raise self.budget.breached
        return replies

    async def _read_var(self, name: str, outputs: list[str] | None = None) -> str | None:
        value, error = await self.repl.get(name)
        if error is not None and outputs is not None:
            outputs.append(f"FINAL_VAR({name}) failed: {error}. Assign the variable in a repl block first.")
        return value

    def _cell_timeout(self) -> float | None:
        left = self.budget.remaining_time()
        if left is None:
            return None
        if left <= 0:
            self.budget.check()
        return min(self.repl.cell_timeout, max(left, 0.1))

    def _format_cell(self, n: int, total: int, result: CellResult) -> str:
        head = f"REPL output (block {n} of {total}):" if total > 1 else "REPL output:"
        parts = [head, result.output.rstrip("\n") or "(no output)"]
        if result.error:
            parts.append(result.error.rstrip("\n"))
        if result.restored:
            names = ", ".join(result.restored)
            parts.append(
                f"(note: the reserved name(s) {names} were restored after the cell; use other names)"
            )
        return "\n".join(parts)

    def _answered(self, answer: str) -> RunResult:
        self.emit(FinalAnswer(answer, parent=self.run_id))
        return RunResult(answer, "final", self.budget.iterations)

    def _stopped(self, limit: LimitReached) -> RunResult:
        reason = {"iterations": "max_iterations", "subcalls": "max_subcalls", "cost": "max_cost"}.get(
            limit.limit, "max_tokens" if limit.limit == "tokens" else limit.limit
        )
        return RunResult(self.partial, reason, self.budget.iterations, partial=True, message=str(limit))
