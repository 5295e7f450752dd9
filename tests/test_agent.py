"""The loop in process: a scripted model client and a fake REPL, no HTTP, no sandbox.

Each case scripts the root model's replies and says how the run must end: the answer, the exit
reason, how many turns it took, and what the model was told along the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_llm import reply

from rlmcli import prompts
from rlmcli.agent import Agent, RunResult, Task
from rlmcli.budget import Budget, Limits
from rlmcli.context import Context, LoadOptions, load_context
from rlmcli.errors import ExitReason, LimitReached
from rlmcli.events import CellStarted, Event, IterationStarted, ModelCall, SubcallProgress
from rlmcli.model.client import Completion
from rlmcli.repl.protocol import CellResult, SubcallHandler


class ScriptedClient:
    """Answers root calls from a script; answers each sub-call prompt with "re: <prompt>"."""

    concurrency = 4

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.told: list[str] = []  # per root call, what the model was told since its last reply

    async def root(self, messages: list[dict], on_retry=None, on_sent=None) -> Completion:  # noqa: ANN001
        if on_sent is not None:  # as the transport does once the request is written
            on_sent()
        new = []
        for message in reversed(messages):
            if message["role"] == "assistant":
                break
            new.insert(0, message["content"])
        self.told.append("\n\n".join(new))
        return Completion(self.replies.pop(0), 100, 10, 0.001, 0.05, model="test/root")

    async def batch(  # noqa: ANN001
        self, prompts_: list[str], model: str | None = None, on_done=None, on_retry=None
    ) -> list[str]:
        completions = [Completion(f"re: {p}", 5, 2, None, 0.01, model="test/sub") for p in prompts_]
        for completion in completions:
            on_done(completion)
        return [c.text for c in completions]


class FakeRepl:
    """A REPL that understands four kinds of cell: `ask N` (llm_query_batched of N prompts, through
    the handler passed with the cell), `final X` (FINAL(X) called in the cell), `name = value`, and
    anything else, which prints `ran <code>`."""

    cell_timeout = 60.0

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}
        self.cells: list[str] = []

    async def run_cell(
        self,
        code: str,
        timeout: float | None = None,
        deadline: float | None = None,
        on_subcalls: SubcallHandler | None = None,
        on_children: object = None,
        on_sent: Callable[[], None] | None = None,
    ) -> CellResult:
        code = code.strip()  # a block's code ends with its newline
        self.cells.append(code)
        if on_sent is not None:  # the cell is on its way, as Repl.run_cell says
            on_sent()
        if code.startswith("ask "):
            assert on_subcalls is not None, "the loop must pass the sub-call handler with the cell"
            replies = await on_subcalls([f"p{i}" for i in range(int(code.split()[1]))], None)
            return CellResult("\n".join(replies) + "\n")
        if code.startswith("final "):
            return CellResult("", final=code.removeprefix("final "))
        if " = " in code:
            name, value = code.split(" = ", 1)
            self.variables[name] = value
            return CellResult("")
        return CellResult(f"ran {code}\n")

    async def get(self, name: str) -> tuple[str | None, str | None]:
        if name in self.variables:
            return self.variables[name], None
        return None, f"NameError: name {name!r} is not defined"


@dataclass
class Run:
    result: RunResult
    client: ScriptedClient
    repl: FakeRepl
    events: list[Event] = field(default_factory=list)


TINY = "some data\n"  # shown whole in the first message: may be answered at once
BIG = "beta line\n" * 100  # beyond the first message's prefix: look at it before answering


def make_context(tmp_path: Path, data: str = TINY) -> Context:
    (tmp_path / "in.txt").write_text(data)
    return load_context([str(tmp_path / "in.txt")], tmp_path / "share", LoadOptions())


def run_agent(tmp_path: Path, replies: list[str], data: str = TINY, **limits) -> Run:
    context = make_context(tmp_path, data)
    client, repl, events = ScriptedClient(replies), FakeRepl(), []
    budget = Budget(Limits(**limits))
    agent = Agent(Task("What is it?", context, run_id="run-1"), client, repl, budget, events.append)  # type: ignore[arg-type]
    before = (dict(vars(client)), dict(vars(repl)))
    result = asyncio.run(agent.run())
    # The loop calls its collaborators and never rewires them (no handler or listener set on them).
    assert (set(vars(client)), set(vars(repl))) == (set(before[0]), set(before[1]))
    assert client.replies == [], "the run ended before the script did"
    return Run(result, client, repl, events)


@dataclass
class Case:
    replies: list[str]
    answer: str | None
    reason: ExitReason
    iterations: int
    cells: list[str] = field(default_factory=list)  # what the REPL ran, in order
    # (n, text): the n-th root call (0: the first) was told `text` since the model's last reply
    told: list[tuple[int, str]] = field(default_factory=list)
    limits: dict = field(default_factory=dict)
    partial: bool = False
    message: str | None = None  # in the result's message
    data: str = TINY  # the input


LAST_TURN = prompts.LAST_TURN.format(question="What is it?")
CASES = {
    "code after the FINAL line is not run": Case(
        [reply("Set it, then answer.\nFINAL(42)", "x = 1")], "42", ExitReason.FINAL, 1, cells=[]
    ),
    "FINAL called inside a cell": Case(
        [reply("", "final it")], "it", ExitReason.FINAL, 1, cells=["final it"]
    ),
    "the last turn answers": Case(
        ["Let me think.", reply("", "print(1)"), "FINAL(late)"], "late", ExitReason.FINAL, 2,
        cells=["print(1)"], limits={"max_iterations": 2},
        told=[(1, prompts.NO_CODE_NUDGE), (2, "ran print(1)"), (2, LAST_TURN)],
    ),
    "the last turn answers with FINAL_VAR": Case(
        [reply("", "answer = from a variable"), "FINAL_VAR(answer)"], "from a variable", ExitReason.FINAL, 1,
        cells=["answer = from a variable"], limits={"max_iterations": 1},
    ),
    "the last turn does not answer": Case(
        ["Hmm.", "My best guess: blue."], "My best guess: blue.", ExitReason.MAX_ITERATIONS, 1,
        limits={"max_iterations": 1}, partial=True, message="no answer after 1 iterations",
    ),
    "an empty reply is re-asked once": Case(
        ["", "FINAL(ok)"], "ok", ExitReason.FINAL, 1, told=[(1, prompts.EMPTY_REPLY_NUDGE)]
    ),
    "two empty replies end the turn, not the run": Case(
        ["", "  \n", "FINAL(ok)"], "ok", ExitReason.FINAL, 2,
        told=[(1, prompts.EMPTY_REPLY_NUDGE), (2, prompts.NO_CODE_NUDGE)],
    ),
    "FINAL_VAR of a missing name: the model is told, the run goes on": Case(
        ["FINAL_VAR(answer)", reply("", "answer = found it"), "FINAL_VAR(answer)"], "found it",
        ExitReason.FINAL, 3, cells=["answer = found it"],
        told=[(1, "FINAL_VAR(answer) failed: NameError: name 'answer' is not defined")],
    ),
    "sub-calls within the budget": Case(
        [reply("", "ask 2"), "FINAL(done)"], "done", ExitReason.FINAL, 2, cells=["ask 2"],
        limits={"max_subcalls": 2}, told=[(1, "re: p0\nre: p1")],
    ),
    "a budget breach inside a cell: the partial answer": Case(
        [reply("Asking the sub-model.", "ask 3")], "Asking the sub-model.", ExitReason.MAX_SUBCALLS, 1,
        cells=["ask 3"], limits={"max_subcalls": 2}, partial=True,
        message="sub-call limit of 2 reached: a batch of 3 prompts was refused",
    ),
}  # fmt: skip


def code(*lines: str) -> str:
    return "```repl\n" + "\n".join(lines) + "\n```\n"


CONFIRM, EARLY = prompts.FINAL_CONFIRM, prompts.FINAL_BEFORE_CODE
PLACEHOLDER = prompts.FINAL_PLACEHOLDER.format(answer="answer")
# Issue 10, the answer protocol: when a FINAL is accepted, confirmed first, or refused once.
PROTOCOL = {
    "defect 1: code and FINAL(99) whose output says otherwise: asked to confirm, corrected": Case(
        [code("count 10") + "FINAL(99)", "FINAL(10)"], "10", ExitReason.FINAL, 2, cells=["count 10"],
        told=[(1, "ran count 10"), (1, CONFIRM)], data=BIG,
    ),
    "code and FINAL, confirmed as it was": Case(
        [code("count 10") + "FINAL(99)", "FINAL(99)"], "99", ExitReason.FINAL, 2, cells=["count 10"],
        told=[(1, CONFIRM)],
    ),
    "code and FINAL whose text the output shows: accepted at once": Case(
        [code("count 10") + "FINAL(count 10)"], "count 10", ExitReason.FINAL, 1, cells=["count 10"], data=BIG,
    ),
    "a confirmation that runs code again is asked again": Case(
        [code("a") + "FINAL(99)", code("b") + "FINAL(99)", "FINAL(99)"], "99", ExitReason.FINAL, 3,
        cells=["a", "b"], told=[(1, CONFIRM), (2, "ran b"), (2, CONFIRM)],
    ),
    "a FINAL after code ran in an earlier turn: accepted": Case(
        [code("count 10"), "FINAL(99)"], "99", ExitReason.FINAL, 2, cells=["count 10"], data=BIG,
    ),
    "defect 2: FINAL(name) of a variable set earlier reads it": Case(
        [code("total = 10"), "FINAL(total)"], "10", ExitReason.FINAL, 2, cells=["total = 10"], data=BIG,
    ),
    "FINAL(name) of a variable set in the same reply reads it": Case(
        [code("total = 10") + "FINAL(total)"], "10", ExitReason.FINAL, 1, cells=["total = 10"], data=BIG,
    ),
    "FINAL(word) with no such variable is the word": Case(
        [code("x"), "FINAL(blue)"], "blue", ExitReason.FINAL, 2, cells=["x"], data=BIG,
    ),
    "FINAL_VAR after code in the same reply: accepted": Case(
        [code("total = 7") + "**FINAL_VAR(total)**."], "7", ExitReason.FINAL, 1, cells=["total = 7"],
        data=BIG,
    ),
    "defect 3: a fence inside the answer is the answer, not a cell": Case(
        [code("x"), "FINAL(Use this:\n```python\nprint('x')\n```\n)"],
        "Use this:\n```python\nprint('x')\n```", ExitReason.FINAL, 2, cells=["x"], data=BIG,
    ),
    "defect 4: FINAL before any code on a big input: refused once, then looked": Case(
        ["FINAL(I will count the betas)", code("count"), "FINAL(100)"], "100", ExitReason.FINAL, 3,
        cells=["count"], told=[(1, EARLY)], data=BIG,
    ),
    "defect 4: FINAL before any code, insisted on: accepted the second time": Case(
        ["FINAL(100)", "- FINAL(100)"], "100", ExitReason.FINAL, 2, told=[(1, EARLY)], data=BIG,
    ),
    "a tiny input shown whole may be answered at once": Case(
        ["FINAL(some data)"], "some data", ExitReason.FINAL, 1
    ),
    "a decorated FINAL is a FINAL": Case(
        [code("x"), "> **FINAL(42)**"], "42", ExitReason.FINAL, 2, cells=["x"], data=BIG,
    ),
    "a placeholder copied from the prompt: refused once": Case(
        [code("x"), "FINAL(answer)", code("answer = blue"), "FINAL(answer)"], "blue", ExitReason.FINAL, 4,
        cells=["x", "answer = blue"], told=[(2, PLACEHOLDER)], data=BIG,
    ),
    "a placeholder insisted on is accepted": Case(
        ["FINAL(answer)", "FINAL(answer)"], "answer", ExitReason.FINAL, 2, told=[(1, PLACEHOLDER)]
    ),
    "a placeholder in the last turn is not an answer": Case(
        [code("x"), "FINAL(...)"], "FINAL(...)", ExitReason.MAX_ITERATIONS, 1, cells=["x"],
        limits={"max_iterations": 1}, partial=True, data=BIG,
    ),
    "an unterminated fence at the end of a reply runs": Case(
        ["Looking.\n```repl\nx", "FINAL(done)"], "done", ExitReason.FINAL, 2, cells=["x"], data=BIG,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", [*CASES.values(), *PROTOCOL.values()], ids=[*CASES, *PROTOCOL])
def test_the_loop(tmp_path, case: Case) -> None:
    run = run_agent(tmp_path, case.replies, case.data, **case.limits)
    result = run.result
    assert (result.answer, result.exit_reason, result.iterations) == (
        case.answer,
        case.reason,
        case.iterations,
    )
    assert result.partial == case.partial
    assert run.repl.cells == case.cells
    for n, text in case.told:
        assert text in run.client.told[n], f"root call {n} was told {run.client.told[n]!r}"
    if case.message is not None:
        assert case.message in (result.message or "")


def test_every_call_is_an_event_under_its_scope(tmp_path) -> None:
    """Root calls hang under their iteration, a cell's sub-calls and their progress under the cell."""
    run = run_agent(tmp_path, ["", reply("", "ask 2"), "FINAL(done)"])
    iterations = [e for e in run.events if isinstance(e, IterationStarted)]
    assert [e.parent for e in iterations] == ["run-1", "run-1"]
    roots = [e for e in run.events if isinstance(e, ModelCall) and e.role == "root"]
    # The empty reply and its re-ask in iteration 1, then one call in iteration 2.
    assert [e.parent for e in roots] == [iterations[0].id, iterations[0].id, iterations[1].id]
    assert [e.model for e in roots] == ["test/root"] * 3
    assert roots[1].prompt == prompts.EMPTY_REPLY_NUDGE and roots[2].reply == "FINAL(done)"
    (cell,) = [e for e in run.events if isinstance(e, CellStarted)]
    assert cell.parent == iterations[0].id
    subs = [e for e in run.events if isinstance(e, ModelCall) and e.role == "sub"]
    assert [(e.model, e.reply, e.parent) for e in subs] == [
        ("test/sub", "re: p0", cell.id),
        ("test/sub", "re: p1", cell.id),
    ]
    progress = [e for e in run.events if isinstance(e, SubcallProgress)]
    assert [(e.done, e.parent) for e in progress] == [(0, cell.id), (1, cell.id), (2, cell.id)]


class WatchedClient(ScriptedClient):
    """Notes the names of the events written when each root request is out (its on_sent), and
    of those written once its reply came back."""

    def __init__(self, replies: list[str], events: list[Event]):
        super().__init__(replies)
        self.events, self.out_at_call, self.at_reply = events, [], []

    async def root(self, messages: list[dict], on_retry=None, on_sent=None) -> Completion:  # noqa: ANN001
        def sent() -> None:
            on_sent()
            self.out_at_call.append([e.name for e in self.events])

        completion = await super().root(messages, on_retry, sent)
        self.at_reply.append([e.name for e in self.events])
        return completion


class DyingRepl(FakeRepl):
    """`dies`: the cell never reaches the server (a limit hit before it was sent)."""

    async def run_cell(self, code: str, *args, **kwargs) -> CellResult:  # noqa: ANN002, ANN003
        if code.strip() == "dies":
            raise LimitReached("timeout", "the run's wall-time limit (--timeout) was reached")
        return await super().run_cell(code, *args, **kwargs)


def watched_run(tmp_path: Path, replies: list[str]) -> tuple[RunResult, list[str], list[list[str]]]:
    events: list[Event] = []
    client = WatchedClient(replies, events)
    agent = Agent(Task("q", make_context(tmp_path)), client, DyingRepl(), Budget(Limits()), events.append)  # type: ignore[arg-type]
    result = asyncio.run(agent.run())
    assert client.at_reply == client.out_at_call  # all written once the request was out, before its reply
    return result, [e.name for e in events], client.out_at_call


def test_events_keep_their_order_and_are_all_out_before_each_request(tmp_path) -> None:
    """The reply's ModelCall and its cell's start are written once the cell is on its way (while it
    runs), a cell's end and the next iteration's start once the next request is (while the model
    replies); never after a later event, and all of them before a reply is awaited."""
    result, names, out_at_call = watched_run(tmp_path, [reply("", "ask 1"), "no code", "FINAL(done)"])
    assert result.answer == "done"
    subcall = ["SubcallProgress", "ModelCall", "SubcallProgress"]
    turn1 = ["IterationStarted", "ModelCall", "CellStarted", *subcall]
    turn2 = ["IterationStarted", "ModelCall"]
    assert names == [*turn1, "CellFinished", *turn2, "IterationStarted", "ModelCall", "FinalAnswer"]
    # At each request: everything before it, the previous reply's ModelCall included.
    assert out_at_call == [["IterationStarted"], [*turn1, "CellFinished", "IterationStarted"], names[:-2]]


def test_a_cell_that_never_went_out_still_leaves_its_events(tmp_path) -> None:
    result, names, _ = watched_run(tmp_path, [reply("", "dies")])
    assert result.exit_reason == ExitReason.TIMEOUT
    assert names == ["IterationStarted", "ModelCall", "CellStarted"]


def test_without_subcalls_the_cell_is_told_they_are_off(tmp_path) -> None:
    context = make_context(tmp_path)
    client, repl = ScriptedClient([reply("", "ask 2"), "FINAL(done)"]), FakeRepl()
    agent = Agent(Task("q", context, subcalls=False), client, repl, Budget(Limits()))  # type: ignore[arg-type]
    assert asyncio.run(agent.run()).answer == "done"
    assert f"{prompts.SUBCALLS_DISABLED}\n{prompts.SUBCALLS_DISABLED}" in client.told[1]
