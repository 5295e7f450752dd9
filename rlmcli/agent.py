"""The RLM loop: the root model writes code, the REPL runs it, until FINAL.

Each turn: one root completion -> its ```repl``` blocks (those before its FINAL line) run in order
-> their outputs go back as the next user message. The run ends at FINAL()/FINAL_VAR() called
inside a cell, or at a FINAL(...) / FINAL_VAR(name) in the reply text that the answer protocol
accepts (Agent._refusal: a text answer must not be a guess made before the code's output was seen,
nor the prompt's placeholder). With --schema an accepted answer must also be JSON valid against
the schema (Agent._accept: one repair turn, then exit 6). Limits surface as LimitReached from the
budget; the loop turns them into a result carrying the best partial answer.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import compact, prompts, turns
from .budget import Budget
from .context import Context
from .errors import ExitReason, LimitReached
from .events import (
    CellFinished,
    CellStarted,
    Emit,
    Event,
    FinalAnswer,
    HistoryCompacted,
    IterationStarted,
    Sources,
    cap,
    discard,
)
from .model.client import Completion, ModelClient
from .repl.frames import clip
from .repl.protocol import CellResult, Repl
from .reply import Final, is_name, is_placeholder, parse, strip_code
from .subcalls import Subcalls, model_call
from .windows import Windows

if TYPE_CHECKING:
    from . import cite  # imported where an answer is checked (--cite): nothing before the first request
    from .schema import Schema


class FollowUp(Protocol):
    """`rlm ask -c`: the earlier run this one continues (followup.FollowUp)."""

    def messages(self, system: dict, turn_line: str, question: str) -> list[dict]: ...

    async def rebuild(self, agent: Agent) -> None: ...


# Host-side caps on what one reply can put into the next prompt, whatever the sandbox sends: the
# blocks run per reply, and the characters of their outputs together (at least two full cells).
MAX_BLOCKS_PER_REPLY = 16
TURN_OUTPUT_CHARS = 100_000
SOURCE_TEXT_CAP = 4_000  # characters of each cited text kept in the trace (the Sources block shows less)


@dataclass
class RunResult:
    answer: str | None
    exit_reason: ExitReason  # FINAL, or what stopped the run: a limit, an error, an interruption
    iterations: int
    partial: bool = False  # True when `answer` is the best partial answer of an unfinished run
    message: str | None = None  # why a run stopped early
    hint: str | None = None  # what the user can do about it
    evidence: cite.Evidence | None = None  # --cite check|require: the answer's checked citations


@dataclass
class Task:
    """What one run asks of the loop."""

    question: str
    context: Context
    run_id: str | None = None  # the run's id: every event of the loop descends from it
    max_output_chars: int = 20000  # of a cell's output; the system prompt tells the model
    subcalls: bool = True  # False: the paper's ablation, llm_query answers that it is off
    instructions: str | None = None  # --instructions: appended to the system prompt
    schema: Schema | None = None  # --schema: the answer must be JSON valid against it (exit 6 if not)
    windows: Windows = Windows()  # the models' context windows (windows.resolve; default: unknown)
    cite: str = "off"  # --cite: off | check | require (cite/check.py)
    depth: int = 0  # in the tree of a recursive run: 0 the root run, 1 an rlm_query child, ...
    max_depth: int = 1  # --max-depth: rlm_query starts a child only where depth + 1 < max_depth
    follow: FollowUp | None = None  # `rlm ask -c`: the earlier run this one continues (followup.py)


class Agent:
    """Drives one run: asks the client, runs cells in the REPL, emits events. It only calls its
    collaborators: the sub-call handler goes with each cell, and each event names its parent."""

    def __init__(self, task: Task, client: ModelClient, repl: Repl, budget: Budget, emit: Emit = discard):
        self.task, self.client, self.repl, self.budget, self.emit = task, client, repl, budget, emit
        self.run_id = task.run_id
        system = prompts.system_prompt(
            task.max_output_chars,
            sub_chars=task.windows.sub.capacity_chars,
            subcalls=task.subcalls,
            instructions=task.instructions,
            answer_format=task.schema.prompt_section() if task.schema else None,
            citations=task.cite != "off",
            recursion=task.depth + 1 < task.max_depth,
        )
        first = prompts.first_message(task.context, task.question)
        self.messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{turns.turn_line(1, budget)}\n\n{first}"},
        ]
        self.partial: str | None = None  # the best answer so far, should the run stop early
        # Events made but not written yet (see _hold): the reply's ModelCall and its cell's start.
        self._held: list[Event] = []
        # The cells' llm_query and rlm_query calls (subcalls.py); rlm_query's children are set on it
        # (calls.recursion) once the run's memory is known, maybe while the first cell runs.
        self.calls = Subcalls(client, budget, self._emit, task.run_id, task.windows, task.subcalls)
        # The answer protocol's state: cells run so far, and the one-time refusals already spent.
        self.cells_run = 0
        self.cut = False  # the latest root reply was cut at its max_tokens (finish_reason "length")
        self.refused: set[str] = set()  # "early" (FINAL before any code), "placeholder", "schema"
        # An input shown whole in the first message (its prefix is all of it) may be answered at
        # once; any larger one must be looked at with code before a text FINAL counts.
        self.shown_whole = task.context.stats.chars <= len(task.context.prefix)
        if task.follow is not None:  # the earlier run's conversation, then the new question
            self.messages = task.follow.messages(self.messages[0], turns.turn_line(1, budget), task.question)

    async def run(self) -> RunResult:
        try:
            if self.task.follow is not None:  # the earlier run's REPL state, rebuilt from its cells
                await self.task.follow.rebuild(self)
            return await self._loop()
        except LimitReached as limit:
            return self._stopped(limit)
        finally:
            self._release()  # an error or an interruption between a reply and its cell loses nothing

    async def _loop(self) -> RunResult:
        limit = self.budget.limits.max_iterations
        scope = self.run_id  # where the root calls hang: the latest iteration
        while self.budget.iterations < limit:
            self.budget.iterations += 1
            started = IterationStarted(self.budget.iterations, parent=self.run_id)
            self._hold(started)  # written once the turn's request is out (see _complete)
            scope = started.id
            answer = await self._turn(self.budget.iterations, scope)
            if answer is not None:
                ended = await self._answer(answer)
                if ended is not None:
                    return ended
        # Out of iterations: one last turn that asks for the answer, without running code.
        last_turn = prompts.LAST_TURN.format(question=self.task.question)
        self.messages.append({"role": "user", "content": last_turn})
        reply = await self._ask(scope)
        self._release()  # no cell follows: the reply's event is not held over the REPL's answer
        found = parse(reply).final
        if found is not None:
            answer = await self._resolve(found)
            # No turn is left to re-ask: a placeholder counts only if the model already insisted on it.
            if answer is not None and not (self._is_literal(found, answer) and self._placeholder(answer)):
                ended = await self._answer(answer, repair=False)  # no turn is left for a repair either
                if ended is not None:
                    return ended
        self.partial = strip_code(reply) or self.partial
        raise LimitReached("iterations", f"no answer after {limit} iterations")

    async def _turn(self, iteration: int, scope: str) -> str | None:
        """One root completion and its cells (events under `scope`, the iteration); the final
        answer if the turn produced one.

        At most MAX_BLOCKS_PER_REPLY blocks run, and their outputs together take at most the
        turn's room in the next message; blocks past either cap are not run, and the model is told.
        """
        reply = await self._ask(scope)
        self.partial = strip_code(reply) or self.partial
        parsed = parse(reply)  # the blocks before the FINAL line only: an answer's fences never run
        blocks, found = parsed.blocks, parsed.final
        outputs: list[str] = []
        if self.cut:  # cut at max_tokens: what it was writing when cut is neither run nor an answer
            blocks, found, note = compact.cut_reply(parsed)
            outputs.append(note)
        if not blocks:
            self._release()  # no cell to wait for (nor the REPL, should a FINAL_VAR need it)
        room = max(TURN_OUTPUT_CHARS, 2 * self.task.max_output_chars)
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
            cell = CellStarted(iteration, cap(code), parent=scope)
            self._hold(cell)  # written while the cell runs, with the reply's ModelCall
            # The cell's sub-calls, and their events, hang under the cell.
            handler = functools.partial(self.calls.llm, parent=cell.id)
            # Always given: calls.recursion may be set after this cell was sent (run.before_start, while
            # the REPL starts), and children() itself answers with llm_query calls where it is None.
            children = functools.partial(self.calls.children, parent=cell.id)
            timeout, deadline = self._cell_timeout(), self.budget.deadline()
            try:
                result = await self.repl.run_cell(
                    code, timeout, deadline, handler, on_children=children, on_sent=self._release
                )
            finally:
                self._release()  # the cell never went out (a dead server, a limit)
            self.cells_run += 1
            # Held: written by the next event, or once the next request is out (see _complete).
            self._hold(
                CellFinished(iteration, cap(result.output), result.error, result.duration, parent=cell.id)
            )
            if result.final is not None:
                return result.final
            text = clip(self._format_cell(n, len(blocks), result), room)
            room -= len(text)
            outputs.append(text)
            if self.budget.breached:  # a sub-call inside the cell hit a limit
                raise self.budget.breached
        if found is not None:
            answer = await self._resolve(found, outputs)
            if answer is not None:
                refusal = self._refusal(found, answer, ran=bool(blocks), outputs=outputs)
                if refusal is None:
                    return answer
                outputs.append(refusal)
                self._tell(iteration, outputs)
                return None
        if blocks:
            outputs.append(prompts.NEXT_TURN.format(question=self.task.question))
            self._tell(iteration, outputs)
        else:
            self._tell(iteration, outputs if self.cut else outputs + [prompts.NO_CODE_NUDGE])
        return None

    def _tell(self, iteration: int, parts: list[str]) -> None:
        """The user message after turn `iteration`: the next turn's line (turns.py), then `parts`.
        After the last turn, LAST_TURN follows instead of another turn."""
        if iteration < self.budget.limits.max_iterations:
            parts = [turns.turn_line(iteration + 1, self.budget), *parts]
        self.messages.append({"role": "user", "content": "\n\n".join(parts)})

    async def _ask(self, scope: str | None) -> str:
        """A root completion; an empty reply is re-asked once, never a crash."""
        completion = await self._complete(scope)
        if not completion.text.strip():
            self.messages.append({"role": "user", "content": prompts.EMPTY_REPLY_NUDGE})
            completion = await self._complete(scope)
        self.cut = completion.truncated
        # A very long reply is kept shortened: it would crowd out the next turns' outputs.
        self.messages.append({"role": "assistant", "content": compact.cap_reply(completion.text)})
        return completion.text

    async def _complete(self, scope: str | None) -> Completion:
        """One root call, and its ModelCall event (the prompt shown: the newest message), held
        until the reply's first cell is sent (or the next event). The events held from the turn
        before (its last cell's end, this iteration's start) are written once the request is out,
        while the model replies: every event is written before the reply is awaited."""
        prompt = self.messages[-1]["content"]
        self._fit_window(scope)
        try:
            completion = await self.client.root(
                self.messages, on_retry=functools.partial(self.calls.retry, scope), on_sent=self._release
            )
        finally:
            self._release()  # a reply from the cache, a failure before sending
        self._hold(model_call("root", completion, cap(prompt), cap(completion.text), scope))
        return completion

    def _hold(self, event: Event) -> None:
        """Keep `event` to be written once the next cell or request is on its way (Repl.run_cell's and
        ModelClient.root's on_sent), by the next event, or when the run ends: the trace and the view
        then do their work while the sandbox or the model works, not between a reply and its cell or
        a cell and the next request (issue 16: the gap between two model calls). Events keep their
        order, and none is held while the loop waits on anything else: the REPL's start, a
        variable's value, the answer's citations."""
        self._held.append(event)

    def _release(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self.emit(event)

    def _emit(self, event: Event) -> None:
        """Every event of the loop goes out here: after those held."""
        if self._held:
            self._release()
        self.emit(event)

    def _fit_window(self, scope: str | None) -> None:
        """Near the root model's window, compact older cell outputs (compact.py) and say so."""
        window = self.task.windows.root
        done = compact.compact(self.messages, window.prompt_limit)
        if done is not None:
            self.messages = done.messages
            self._emit(
                HistoryCompacted(
                    done.before_tokens, done.after_tokens, done.compacted, done.chars_dropped,
                    window.tokens, parent=scope,
                )
            )  # fmt: skip

    async def _resolve(self, found: Final, outputs: list[str] | None = None) -> str | None:
        """The answer a FINAL names: FINAL_VAR(name) reads the REPL; so does FINAL(x) when x is a
        bare identifier bound there (models confuse the two); any other FINAL is its text."""
        self._release()  # the REPL may be read: nothing waits on it unwritten
        if found.kind == "FINAL_VAR":
            return await self._read_var(found.value, outputs)
        if is_name(found.value):
            value, error = await self.repl.get(found.value)
            if error is None and value is not None:
                return value
        return found.value

    def _is_literal(self, found: Final, answer: str) -> bool:
        """A text answer (not a variable's value, even one reached through FINAL(x))."""
        return found.kind == "FINAL" and answer == found.value

    def _placeholder(self, answer: str) -> bool:
        return is_placeholder(answer) and "placeholder" not in self.refused

    def _refusal(self, found: Final, answer: str, ran: bool, outputs: list[str]) -> str | None:
        """Why a FINAL is not accepted yet (the message to the model), or None to accept it.

        A variable's value is accepted: the code that made it ran. A text answer is refused once
        when it comes before any cell ran on an input not shown whole (the paper's "plan given as
        the answer"), and once when it is the prompt's placeholder; given in a reply whose code
        just ran, it counts only if this turn's output holds it (the model has not seen that
        output yet), else the model is asked to confirm it.
        """
        if not self._is_literal(found, answer):
            return None
        if self.cells_run == 0 and not self.shown_whole and "early" not in self.refused:
            self.refused.add("early")
            return prompts.FINAL_BEFORE_CODE
        if self._placeholder(answer):
            self.refused.add("placeholder")
            return prompts.FINAL_PLACEHOLDER.format(answer=answer)
        turn_output = "\n".join(outputs)
        if ran and not (answer.strip() and answer.strip() in turn_output):
            return prompts.FINAL_CONFIRM
        return None

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
        self._emit(FinalAnswer(answer, parent=self.run_id))
        return RunResult(answer, ExitReason.FINAL, self.budget.iterations)

    async def _answer(self, answer: str, repair: bool = True) -> RunResult | None:
        """`_accept`, with the answer's evidence checked first (--cite, cite/): under `require`, an
        answer with no verified citation or with claims the input does not bear out gets one repair
        turn listing them (None: the message is queued), then ends the run with exit 6."""
        mode = self.task.cite
        if mode == "off":
            return self._accept(answer, repair)
        from . import cite

        self._release()
        spans = await self.repl.citations()
        evidence = await asyncio.to_thread(cite.check, answer, spans, self.task.context)
        failures = evidence.failures(mode)
        if failures and repair and "cite" not in self.refused:
            self.refused.add("cite")
            self.partial = answer
            self._tell(self.budget.iterations, [cite.repair_message(failures)])
            return None
        ended = self._accept(answer, repair)
        if ended is None:
            return None
        if evidence.citations or evidence.unverified or evidence.notes:  # nothing to say: no event
            self._emit(Sources(**evidence.to_dict(text_cap=SOURCE_TEXT_CAP), parent=self.run_id))
        ended.evidence = evidence
        if failures and ended.exit_reason == ExitReason.FINAL:
            ended.exit_reason, ended.partial = ExitReason.INVALID_ANSWER, True
            ended.message = "the answer's evidence failed --cite require: " + "; ".join(failures)
            ended.hint = "the answer is printed with what failed; --cite check reports without failing"
        return ended

    def _accept(self, answer: str, repair: bool = True) -> RunResult | None:
        """The end of the run for an answer the protocol accepted. With --schema it must be JSON
        valid against the schema: then it ends the run as normalised JSON; an invalid one gets one
        repair turn quoting the errors (None: the message is queued), then ends the run (exit 6)."""
        schema = self.task.schema
        if schema is None:
            return self._answered(answer)
        checked = schema.check(answer)
        if checked.ok and checked.text is not None:
            return self._answered(checked.text)
        self.partial = answer
        if repair and "schema" not in self.refused:
            self.refused.add("schema")
            self._tell(self.budget.iterations, [schema.repair_message(checked.errors)])
            return None
        why = "; ".join(checked.errors)
        return RunResult(
            answer, ExitReason.INVALID_ANSWER, self.budget.iterations, partial=True,
            message=f"the answer failed validation against {schema.source}: {why}",
            hint="the invalid answer is printed (with --json: partial_answer); a stronger --model or a "
            "simpler schema may help",
        )  # fmt: skip

    def _stopped(self, limit: LimitReached) -> RunResult:
        return RunResult(self.partial, limit.reason, self.budget.iterations, partial=True, message=str(limit))
