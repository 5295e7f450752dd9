"""Recursion (issue 12): rlm_query children in the run's own sandbox, one budget for the tree.

Every run goes through the installed console script (run_rlm / popen_rlm) against the fake model
server. Root calls of the parent and of its children interleave, so the fake answers them by
request (FakeLLM.route): who asks (the query of the first user message) and at which turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ask_args, our_containers, require_local_pids_cap
from fake_llm import Fault, reply

from rlmcli import prompts
from rlmcli.context import Context, ContextStats

QUESTION = "Which error code does the log report?"
LOG = "".join(f"line {i}: all is well\n" for i in range(40)) + "line 40: ERROR code=E42 disk full\n"


def query_of(body: dict) -> str:
    """The query of a root conversation, as its first user message states it."""
    first = next(m["content"] for m in body["messages"] if m["role"] == "user")
    found = re.search(r"^The query: (.*)$", first, re.MULTILINE)
    assert found, first[:500]
    return found.group(1)


def turn_of(body: dict) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "assistant")


def router(
    script: dict[str, list], fallback: Callable[[str], list] | None = None
) -> Callable[[dict], object]:
    """Root replies by conversation: script[query][turn] (fallback(query) for unlisted queries)."""

    def route(body: dict) -> object:
        query = query_of(body)
        replies = script.get(query) or (fallback(query) if fallback else None)
        assert replies is not None, f"no script for {query!r}"
        item = replies[min(turn_of(body), len(replies) - 1)]
        return item(body) if callable(item) else item

    return route


def args_for(fake, path, sandbox: str, image: str | None, *extra: str) -> list[str]:
    # --no-cache: children ask alike, and a cached reply would cost nothing
    extra = ("--json", "--cite", "off", "--no-cache", *extra)
    args = ask_args(fake, str(path), question=QUESTION, extra=list(extra))
    args = [sandbox if a == "local" else a for a in args]
    return args + (["--image", image] if image else [])


ROOT_DEPTH2 = [
    reply("", "part = context[-200:]\nr = rlm_query('Find the error code in this part of the log.', part)\n"
              "print('child said:', r)"),
    reply("", "FINAL('the log reports ' + r)"),
]  # fmt: skip
CHILD_DEPTH2 = [
    reply("", "hits = grep('ERROR')\nprint(hits)\nv = llm_query('the code in: ' + hits[0].text)\nprint(v)"),
    reply("", "FINAL(v)"),
]


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_depth_two_end_to_end_in_one_sandbox(sandbox, fake_llm, run_rlm, tmp_path, request):
    image = request.getfixturevalue("docker_image") if sandbox == "docker" else None
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.route = router(
        {QUESTION: ROOT_DEPTH2, "Find the error code in this part of the log.": CHILD_DEPTH2}
    )
    seen_containers: list[list[str]] = []

    def sub(prompt: str) -> str | Fault:
        if sandbox == "docker":  # the child waits on this very call: count the run's containers now
            seen_containers.append(our_containers())
        return "E42" if prompt.startswith("the code in: line 40: ERROR code=E42") else "?"

    fake_llm.sub = sub
    proc = run_rlm(args_for(fake_llm, tmp_path / "app.log", sandbox, image, "--max-depth", "2"))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert out["answer"] == "the log reports E42"
    assert out["sandbox"] == sandbox
    # The child saw the query (not only metadata), its context was the slice, and it ran code on it.
    child_calls = [r for r in fake_llm.root_requests if query_of(r["body"]) != QUESTION]
    assert len(child_calls) == 2
    first = child_calls[0]["body"]["messages"][1]["content"]
    assert "Your context is a file with 200 total characters" in first
    second = child_calls[1]["body"]["messages"][-1]["content"]
    assert "line 40: ERROR code=E42" in second and "E42" in second
    # The parent used the answer: its second turn saw it in the cell's output.
    root_calls = [r for r in fake_llm.root_requests if query_of(r["body"]) == QUESTION]
    assert "child said: E42" in root_calls[1]["body"]["messages"][-1]["content"]
    usage = out["usage_by_depth"]
    assert usage["0"]["root_calls"] == 2 and usage["1"]["root_calls"] == 2 and usage["1"]["subcalls"] == 1
    if sandbox == "docker":
        assert seen_containers and all(len(names) == 1 for names in seen_containers), seen_containers
        assert our_containers() == []


def test_max_depth_one_prompt_and_requests_are_unchanged(fake_llm, run_rlm, tmp_path):
    """At the default --max-depth 1 the system prompt is the one built before recursion existed (a
    golden copy, from prompts.system_prompt without the new argument), and rlm_query is an
    llm_query: no child starts, the request is a sub-call."""
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.add_root(reply("", "print(rlm_query('What code?', context[-60:]))"), reply("", "FINAL('done')"))
    fake_llm.sub = lambda prompt: "E42"
    proc = run_rlm(args_for(fake_llm, tmp_path / "app.log", "local", None))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    system = fake_llm.root_requests[0]["body"]["messages"][0]["content"]
    assert system == prompts.system_prompt(20000, sub_chars=_sub_chars(system))
    assert "rlm_query" not in system
    subs = fake_llm.sub_requests
    assert [s["body"]["messages"][-1]["content"] for s in subs] == ["What code?\n\n" + LOG[-60:]]
    assert len(fake_llm.root_requests) == 2
    assert "usage_by_depth" in json.loads(proc.stdout)
    # With --max-depth 2 the only change is the appended section.
    deeper = prompts.system_prompt(20000, sub_chars=_sub_chars(system), recursion=True)
    assert deeper.startswith(system.rstrip()) and prompts.RECURSION in deeper


def _sub_chars(system: str) -> int:
    found = re.search(r"it can handle around ([\d,]+) characters", system)
    assert found
    return int(found.group(1).replace(",", ""))


def test_golden_system_prompt_at_depth_one():
    """A byte-for-byte copy of the default system prompt made before recursion: unchanged."""
    golden = Path(__file__).with_name("data").joinpath("system_prompt_depth1.txt").read_text(encoding="utf-8")
    assert prompts.system_prompt(20000, sub_chars=500_000) == golden


BATCH = 8


def test_batched_children_run_at_most_max_children_at_once(fake_llm, run_rlm, tmp_path):
    (tmp_path / "app.log").write_text(LOG)
    queries = [f"Child task number {i}." for i in range(BATCH)]
    root = [
        reply("", f"slices = [context[i * 10:i * 10 + 10] for i in range(8)]\n"
                  f"answers = rlm_query_batched({queries!r}, slices)\nprint(answers)"),
        reply("", "FINAL(' | '.join(answers))"),
    ]  # fmt: skip

    def child(query: str) -> list:
        number = query.split()[-1].rstrip(".")
        # Two slow turns each: a child is alive from its first call to its last.
        return [
            Fault(delay=0.4, text=reply("", "print(len(context))")),
            Fault(delay=0.4, text=reply("", f"FINAL('answer {number}')")),
        ]

    fake_llm.route = router({QUESTION: root}, fallback=child)
    proc = run_rlm(
        args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "2", "--max-children", "4")
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert out["answer"] == " | ".join(f"answer {i}" for i in range(BATCH))
    spans: dict[str, list[float]] = {}
    for r in fake_llm.root_requests:
        query = query_of(r["body"])
        if query != QUESTION:
            spans.setdefault(query, []).extend([r["t_start"], r["t_end"]])
    assert len(spans) == BATCH
    lives = [(min(ts), max(ts)) for ts in spans.values()]
    most = max(sum(1 for s, e in lives if s <= start < e) for start, _ in lives)
    print(f"children alive at once, at most: {most}")
    assert 2 <= most <= 4


def test_tree_wide_cost_limit_stops_with_exit_3(fake_llm, run_rlm, tmp_path):
    """8 parallel children under --max-cost: the run stops with exit 3; the overshoot is at most
    the calls in flight (each call's cost is known from the fake's usage and the model's price)."""
    (tmp_path / "app.log").write_text(LOG)
    queries = [f"Costly child {i}." for i in range(BATCH)]
    root = [
        reply("", f"answers = rlm_query_batched({queries!r})\nprint(answers)"),
        reply("y" * 2000, "print(llm_query('more ' + context[:2000]))"),  # until the limit stops it
    ]
    chatty = reply("x" * 2000, "print(llm_query('summarise ' + context[:2000]))")
    fake_llm.route = router({QUESTION: root}, fallback=lambda q: [chatty])
    fake_llm.sub = lambda prompt: "s" * 400
    limit = 0.02
    trace = tmp_path / "run.jsonl"
    proc = run_rlm(
        args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "2", "--max-children", "8",
                 "--max-cost", str(limit), "--child-iterations", "30", "--trace", str(trace),
                 "--price", "0.15,0.6")  # gpt-4o-mini's price, for a model served from --api-base
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert out["exit_reason"] == "max_cost"
    spent = out["cost_usd"]
    by_depth = out["usage_by_depth"]
    assert by_depth["1"]["root_calls"] > 0  # the children did run
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    largest = max(e["cost_usd"] for e in calls if e["event"] == "ModelCall")
    overshoot = spent - limit
    # In flight at the stop, at most: one call per node (the root and its 8 children), none larger
    # than the largest seen.
    print(f"limit ${limit}, spent ${spent:.5f}, overshoot ${overshoot:.5f}, largest call ${largest:.5f}")
    assert overshoot <= (BATCH + 1) * largest


# A real fork bomb in both sandboxes: as root (the tests) the local sandbox's pids cgroup holds it.
HOSTILE_FORK = "import os\nwhile True:\n    os.fork()"
HOSTILE_MEMORY = "x = bytearray(6 * 1024**3)"


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_hostile_children_are_contained(sandbox, fake_llm, run_rlm, tmp_path, request):
    image = request.getfixturevalue("docker_image") if sandbox == "docker" else None
    if sandbox == "local":
        require_local_pids_cap()
    (tmp_path / "app.log").write_text(LOG)
    left: list[set[int]] = []

    def after_children(body: dict) -> str:  # the children have ended: nothing of theirs may run now
        left.append(_sandbox_processes() - before)
        return reply("", "print('parent alive', len(context), llm_query('ping'))")

    root = [
        reply("", "r = rlm_query_batched(['Fork.', 'Eat memory.'])\nprint(r)"),
        after_children,
        reply("", "FINAL('survived')"),
    ]
    fake_llm.route = router(
        {
            QUESTION: root,
            "Fork.": [reply("", HOSTILE_FORK), "FINAL(forked)"],
            "Eat memory.": [reply("", HOSTILE_MEMORY), "FINAL(ate)"],
        }
    )
    fake_llm.sub = lambda prompt: "pong"
    before = _sandbox_processes()
    proc = run_rlm(
        args_for(fake_llm, tmp_path / "app.log", sandbox, image, "--max-depth", "2", "--cell-timeout", "5",
                 "--memory", "1g")
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert out["answer"] == "survived"
    parent = [r for r in fake_llm.root_requests if query_of(r["body"]) == QUESTION]
    assert "['forked', 'ate']" in parent[1]["body"]["messages"][-1]["content"]
    seen = {  # what each child was told after its hostile cell
        query_of(r["body"]): r["body"]["messages"][-1]["content"]
        for r in fake_llm.root_requests
        if query_of(r["body"]) != QUESTION and turn_of(r["body"]) == 1
    }
    assert "MemoryError" in seen["Eat memory."], seen
    assert "Error" in seen["Fork."], seen
    assert "parent alive" in parent[2]["body"]["messages"][-1]["content"]
    assert left == [set()], "processes the children started outlived them"
    if sandbox == "docker":
        assert our_containers() == []
    assert _sandbox_processes() - before == set(), "processes of the run are still running"


def _sandbox_processes() -> set[int]:
    """Host pids of sandbox servers and of what they started (sleepers left by a cell)."""
    import os

    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if b"/rlm/repl_server.py" in argv and b"--child" in argv:
            found.add(int(name))
    return found


def test_plain_view_shows_the_tree(fake_llm, run_rlm, tmp_path):
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.route = router(
        {QUESTION: ROOT_DEPTH2, "Find the error code in this part of the log.": CHILD_DEPTH2}
    )
    fake_llm.sub = lambda prompt: "E42"
    proc = run_rlm(args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "2"))
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    print(err)
    assert "rlm: child 1 (depth 1) started in cell 1.1: Find the error code in this part of the log." in err
    assert re.search(r"rlm: child 1 \(depth 1\): done, 2 iterations, [\d,]+ tokens, \$[\d.]+", err), err
    tree = err[err.rindex("rlm: tree:") :]
    assert re.search(r"rlm:   root +depth 0 +2 iterations", tree), tree
    assert re.search(r"rlm:   `- child 1 +depth 1 +2 iterations +[\d,]+ tokens +\$[\d.]+ +done", tree), tree


def recorded_depth2_run(fake_llm, run_rlm, tmp_path: Path) -> Path:
    """The trace of a depth-2 run in the local sandbox: the root asks one child, which answers."""
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.route = router(
        {QUESTION: ROOT_DEPTH2, "Find the error code in this part of the log.": CHILD_DEPTH2}
    )
    fake_llm.sub = lambda prompt: "E42"
    trace = tmp_path / "run.jsonl"
    proc = run_rlm(
        args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "2", "--trace", str(trace))
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return trace


def test_replay_renders_the_tree(fake_llm, run_rlm, tmp_path):
    trace = recorded_depth2_run(fake_llm, run_rlm, tmp_path)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    started = [e for e in events if e["event"] == "ChildStarted"]
    assert len(started) == 1 and started[0]["depth"] == 1
    cells = {e["id"] for e in events if e["event"] == "CellStarted" and "depth" not in e}
    assert started[0]["parent"] in cells  # the child hangs under the cell that called it
    child_calls = [e for e in events if e["event"] == "ModelCall" and e.get("depth") == 1]
    assert len(child_calls) == 3  # two root turns and one sub-call, all at depth 1
    replayed = run_rlm(["replay", str(trace)])
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert "rlm:   `- child 1" in replayed.stderr.decode()


def test_child_context_metadata_for_a_slice():
    """A text slice's metadata as the child's first message shows it."""
    stats = ContextStats(0, 5, 5, 1, 2, 0, {})
    context = Context(Path("/x"), "file", [], stats, "hello")
    first = prompts.first_message(context, "Q?")
    assert "Your context is a file with 5 total characters" in first and "The query: Q?" in first


def test_rich_view_shows_the_tree(fake_llm, run_rlm, tmp_path):
    """The Rich view of a recorded depth-2 run (replayed into a recording console): each child's
    start and end, and the tree panel at the end (the README shows this capture)."""
    from rich.console import Console

    from rlmcli.record.replay import replay
    from rlmcli.record.trace import read_trace
    from rlmcli.view.live import LiveView

    trace = recorded_depth2_run(fake_llm, run_rlm, tmp_path)
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    replay(read_trace(trace), LiveView(console=console, live=False))
    shown = console.export_text()
    print(shown)
    assert "↳ child 1 (depth 1): Find the error code in this part of the log." in shown
    assert re.search(r"✓ child 1 \(depth 1\): done, 2 iterations", shown), shown
    panel = shown[shown.index("─ tree ─") :]
    assert re.search(r"root +depth 0 +2 iterations .*done", panel), panel
    assert re.search(r"`- child 1 +depth 1 +2 iterations +[\d,]+ tokens +\$[\d.]+ +done", panel), panel


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_a_child_is_refused_when_the_process_budget_is_nearly_spent(
    sandbox, fake_llm, run_rlm, tmp_path, request
):
    image = request.getfixturevalue("docker_image") if sandbox == "docker" else None
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.add_root(reply("", "print(rlm_query('Anything?'))"), reply("", "FINAL('went on')"))
    proc = run_rlm(
        args_for(fake_llm, tmp_path / "app.log", sandbox, image, "--max-depth", "2", "--pids-limit", "10")
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert json.loads(proc.stdout)["answer"] == "went on"
    told = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    assert (
        "[rlm_query error: the child stopped (sandbox_error): the sandbox's process budget is nearly spent"
        in told
    )
    assert len(fake_llm.root_requests) == 2  # no child's root call was made


def test_parallel_shares_split_what_is_left_and_release_it():
    """Budget.open_share: each child of a batch holds a part of what is left; a child's calls are
    refused past its part without breaching the run; unspent parts come back when children end."""
    import asyncio

    from rlmcli import shares
    from rlmcli.budget import Budget, Limits
    from rlmcli.errors import LimitReached

    budget = Budget(Limits(max_cost=1.0))
    opened = [budget.open_share(1, parts=5) for _ in range(4)]
    assert [round(s.cost, 4) for s in opened] == [0.2, 0.16, 0.128, 0.1024]
    assert budget.reserved_cost == pytest.approx(sum(s.cost for s in opened))

    async def child(share: shares.Share) -> str:
        shares.current.set(share)
        held = budget.reserve(0, share.cost / 2, subcall=False)
        budget.settle(held)
        budget.record(10, 10, share.cost / 2, subcall=False)  # spent half: its hold shrinks by as much
        try:
            budget.reserve(0, share.cost, subcall=False)  # more than the half left
        except LimitReached as exc:
            return str(exc)
        return "admitted"

    async def main() -> list[str]:
        return await asyncio.gather(*(child(s) for s in opened))

    said = asyncio.run(main())
    assert all("this child's share of --max-cost" in s for s in said), said
    assert budget.breached is None  # a child's share ran out, not the run's budget
    assert budget.usage.cost_usd == pytest.approx(sum(s.cost for s in opened) / 2)
    for share in opened:
        budget.close_share(share)
    assert budget.reserved_cost == pytest.approx(0.0)
    assert budget.by_depth[1].root_calls == 4 and budget.by_depth[1].cost_usd == pytest.approx(
        budget.usage.cost_usd
    )


def test_rich_footer_shows_the_tree_while_children_run():
    from rich.console import Console

    from rlmcli import events as ev
    from rlmcli.view.live import LiveView

    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    view = LiveView(console=console, live=False)
    run = ev.RunStarted(QUESTION, MODEL_NAME, MODEL_NAME, "local")
    iteration = ev.IterationStarted(1, parent=run.id)
    cell = ev.CellStarted(1, "rlm_query_batched(['a', 'b'])", parent=iteration.id)
    first = ev.ChildStarted("a", 10, parent=cell.id, depth=1)
    second = ev.ChildStarted("b", 10, parent=cell.id, depth=1)
    turn = ev.IterationStarted(3, parent=first.id, depth=1)
    call = ev.ModelCall("root", MODEL_NAME, 100, 20, 0.001, 0.1, parent=turn.id, depth=1)
    for event in (run, iteration, cell, first, second, turn, call):
        view(event)
    console.print(view.output.footer())
    shown = console.export_text()
    assert re.search(r"`- child 1 +depth 1 +3 iterations +120 tokens +\$0\.0010 +running", shown), shown
    assert re.search(r"`- child 2 +depth 1 +0 iterations +0 tokens +\$0\.0000 +running", shown), shown
    view(ev.ChildFinished("final", "A", 3, 120, 0.001, 0.5, parent=first.id, depth=1))
    view(ev.ChildFinished("max_iterations", None, 10, 900, 0.002, 0.5, parent=second.id, depth=1))
    after = Console(record=True, width=100, force_terminal=True, color_system=None)
    after.print(view.output.footer())
    assert "child" not in after.export_text()  # none runs: the footer has no tree


MODEL_NAME = "openai/gpt-4o-mini"


def test_bench_runs_the_depth_methods(fake_llm, run_rlm, tmp_path):
    """`rlm bench run --method rlm-d0,rlm-d2`: d0 is the REPL without sub-calls, d2 delegates to a
    child RLM; both rows solve the needle, and the d2 row's trace holds the child."""
    from rlmcli import bench

    needle = r"magic \w+ for \S+ is: (\S+)\."
    tasks = tmp_path / "sniah.jsonl"
    bench.write_jsonl(bench.generate("sniah", 1, 2048, 0), tasks)
    solve = f"import re\nvalue = re.search(r'{needle}', context).group(1)\nFINAL(value)"

    def route(body: dict) -> str:
        system = body["messages"][0]["content"]
        if query_of(body).startswith("CHILD:") or "rlm_query" not in system:
            return reply("", solve)
        return reply("", "value = rlm_query('CHILD: find the magic number.')\nFINAL(value)")

    fake_llm.route = route
    out = tmp_path / "results.jsonl"
    args = ["bench", "run", str(tasks), "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.url,
            "--sandbox", "local", "--method", "rlm-d0,rlm-d2", "--out", str(out)]  # fmt: skip
    proc = run_rlm(args)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    rows = {r["method"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"rlm-d0", "rlm-d2"}
    assert all(r["score"] == 1.0 for r in rows.values()), rows
    traces = {m: (out.parent / r["trace"]).read_text() for m, r in rows.items()}
    assert '"ChildStarted"' in traces["rlm-d2"] and '"ChildStarted"' not in traces["rlm-d0"]
    systems = [r["body"]["messages"][0]["content"] for r in fake_llm.root_requests]
    assert any("llm_query" not in s for s in systems)  # d0: the ablation's prompt


def test_depth_three_grandchild_and_the_fallback_at_the_last_level(fake_llm, run_rlm, tmp_path):
    """--max-depth 3: root -> child -> grandchild; the grandchild's rlm_query is an llm_query (the
    last level), and its system prompt has no rlm_query section; usage is reported per level."""
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.route = router(
        {
            QUESTION: [reply("", "a = rlm_query('Level one.')\nprint(a)"), reply("", "FINAL(a)")],
            "Level one.": [
                reply("", "b = rlm_query('Level two.', context[-100:])\nprint(b)"),
                reply("", "FINAL(b)"),
            ],
            "Level two.": [
                reply("", "c = rlm_query('Level three?')\nprint(c)"),
                reply("", "FINAL('deep ' + c)"),
            ],
        }
    )
    fake_llm.sub = lambda prompt: "bottom" if prompt == "Level three?" else "?"
    proc = run_rlm(args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "3"))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert out["answer"] == "deep bottom"
    systems = {query_of(r["body"]): r["body"]["messages"][0]["content"] for r in fake_llm.root_requests}
    assert "rlm_query(query" in systems[QUESTION] and "rlm_query(query" in systems["Level one."]
    assert "rlm_query" not in systems["Level two."]
    assert sorted(out["usage_by_depth"]) == ["0", "1", "2"]
    assert out["usage_by_depth"]["2"]["subcalls"] == 1
    err = proc.stderr.decode()
    assert "`- child 1" in err and "`- child 1.1" in err, err


def test_a_childs_dict_answer_comes_back_as_text_and_value(fake_llm, run_rlm, tmp_path):
    (tmp_path / "app.log").write_text(LOG)
    fake_llm.route = router(
        {
            QUESTION: [reply("", "r = rlm_query('Count.')\n"
                                 "print(type(r.value).__name__, r.value['lines'], r)"),
                       reply("", "FINAL(r.value['lines'])")],
            "Count.": [reply("", "d = {'lines': context.count(chr(10))}\nFINAL_VAR(d)")],
        }
    )  # fmt: skip
    proc = run_rlm(args_for(fake_llm, tmp_path / "app.log", "local", None, "--max-depth", "2"))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert json.loads(proc.stdout)["answer"] == "41"
    told = [r for r in fake_llm.root_requests if query_of(r["body"]) == QUESTION][1]
    assert 'dict 41 {"lines": 41}' in told["body"]["messages"][-1]["content"]
