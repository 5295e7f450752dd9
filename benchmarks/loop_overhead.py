"""Loop overhead per iteration: zero-latency scripted root model, trivial cells.

Drives the real loop as a library (Context, Budget, ModelClient -> litellm -> FakeLLM over HTTP,
Repl over ProcessSandbox, Agent), the way rlmcli/run.py wires them. Prints figures; asserts nothing.

    python benchmarks/loop_overhead.py [--iterations 200] [--cells 1000]

Per-iteration timing comes from the `emit` events plus thin timing wrappers (set on the instances
in this script, nothing in rlmcli/ is changed) around `client.root` and `repl.run_cell`:

  iteration        time between consecutive IterationStarted events (one full turn: model call + cell)
  model call       ModelCall.latency_s (litellm + HTTP to the local fake server, as rlmcli measures)
  client.root      wall time of ModelClient.root (model call + what rlmcli does after it, e.g. cost)
  cell round trip  wall time of Repl.run_cell (host -> framed JSON -> server exec -> back)
  loop overhead    iteration - ModelCall.latency_s   <- the figure compared with the 5 ms goal

The loop runs twice: against tests/fake_llm.py as shipped, and with TCP_NODELAY set on the fake's
handler class in this process (as shipped, every fake response waits ~40 ms for a delayed ACK).
Also printed: a direct Repl.run_cell micro-benchmark, the cell round trip right after a model call,
the process's first litellm call, and one mid-run root request through each client layer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import fake_llm  # noqa: E402
from fake_llm import FakeLLM, reply  # noqa: E402

from rlmcli.agent import Agent, Task  # noqa: E402
from rlmcli.budget import Budget, Limits  # noqa: E402
from rlmcli.context import LoadOptions, load_context  # noqa: E402
from rlmcli.events import Event  # noqa: E402
from rlmcli.model.client import ModelClient, ModelConfig  # noqa: E402
from rlmcli.repl.confine import SandboxLimits  # noqa: E402
from rlmcli.repl.process import ProcessSandbox  # noqa: E402
from rlmcli.repl.protocol import Repl  # noqa: E402

MODEL = "openai/gpt-4o-mini"
GOAL_MS = 5.0


def ms(seconds: float) -> float:
    return seconds * 1000.0


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def row(name: str, values_s: list[float]) -> str:
    v = [ms(x) for x in values_s]
    return (
        f"  {name:<34} median {statistics.median(v):8.3f}  p90 {pct(v, 90):8.3f}  "
        f"mean {statistics.fmean(v):8.3f}  min {min(v):8.3f}  max {max(v):8.3f}"
    )


def start_fake(script: list, nodelay: bool) -> FakeLLM:
    """FakeLLM as shipped, or with TCP_NODELAY on its sockets (set on the handler class for
    this process only; tests/fake_llm.py is not modified). As shipped, the server writes the
    headers and the body of each response in two send() calls; Nagle holds the second until the
    client's delayed ACK (~40 ms on Linux), which then dominates a zero-latency model call."""
    fake_llm._Handler.disable_nagle_algorithm = nodelay
    return FakeLLM(root=script).start()


def make_context(workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "input.txt"
    src.write_text("".join(f"line {i}: hello world\n" for i in range(200)), encoding="utf-8")
    ctx = load_context([str(src)], workdir / "run", LoadOptions())
    index = workdir / "run" / "index.json"
    ctx.write_index(index)
    return ctx, index


async def run_loop(n: int, workdir: Path, nodelay: bool) -> dict:
    script = [reply("", "x = 1") for _ in range(n)] + ['FINAL("done")']
    fake = start_fake(script, nodelay)
    try:
        ctx, index = make_context(workdir)
        budget = Budget(Limits(max_iterations=n + 5))
        cfg = ModelConfig(MODEL, fake.url)
        client = ModelClient(cfg, cfg, budget)
        client.check_credentials()  # imports litellm: not part of the timing
        repl = Repl(ProcessSandbox(SandboxLimits()), ctx.path, index)

        marks: list[tuple[str, float, Event]] = []

        def emit(event: Event) -> None:
            marks.append((event.name, time.perf_counter(), event))

        agent = Agent(Task("benchmark question", ctx), client, repl, budget, emit)

        # Timing wrappers on the instances (the library code itself is untouched).
        root_wall: list[float] = []
        cell_wall: list[float] = []
        orig_root, orig_cell = client.root, repl.run_cell

        async def timed_root(messages):
            t0 = time.perf_counter()
            try:
                return await orig_root(messages)
            finally:
                root_wall.append(time.perf_counter() - t0)

        async def timed_cell(code, *args):
            t0 = time.perf_counter()
            try:
                return await orig_cell(code, *args)
            finally:
                cell_wall.append(time.perf_counter() - t0)

        client.root = timed_root  # type: ignore[method-assign]
        repl.run_cell = timed_cell  # type: ignore[method-assign]

        await repl.start()
        try:
            # One warm-up round trip each way so connection set-up / first-import costs are not
            # charged to iteration 1. (The warm-up consumes nothing from the root script.)
            await orig_cell("pass")
            budget.restart_clock()
            t_start = time.perf_counter()
            result = await agent.run()
            t_end = time.perf_counter()
        finally:
            await repl.close()
    finally:
        fake.stop()

    iters, model_lat, cell_server = [], [], []
    prev = None
    for kind, t, ev in marks:
        if kind == "IterationStarted":  # an iteration ends where the next one starts
            if prev is not None:
                iters.append(t - prev)
            prev = t
        elif kind == "ModelCall" and ev.role == "root":  # type: ignore[attr-defined]
            model_lat.append(ev.latency_s)  # type: ignore[attr-defined]
        elif kind == "CellFinished":
            cell_server.append(ev.duration_s)  # type: ignore[attr-defined]
    return {
        "result": result,
        "total": t_end - t_start,
        "iters": iters,
        # ModelCall/root/cell lists include the final FINAL turn; align on the N iterations.
        "model": model_lat[: len(iters)],
        "root_wall": root_wall[: len(iters)],
        "cell_wall": cell_wall[: len(iters)],
        "cell_server": cell_server[: len(iters)],
        "root_requests": len(fake.root_requests),
        "last_request_bytes": len(fake.root_requests[-1]["raw"]) if fake.root_requests else 0,
        "mid_messages": fake.root_requests[len(iters) // 2]["body"]["messages"],
    }


async def run_cells(count: int, workdir: Path) -> tuple[list[float], list[float]]:
    """Direct micro-benchmark of Repl.run_cell("x = 1"): host round trip vs. server-side time."""
    ctx, index = make_context(workdir)
    repl = Repl(ProcessSandbox(SandboxLimits()), ctx.path, index)
    await repl.start()
    wall, server = [], []
    try:
        for _ in range(20):  # warm-up
            await repl.run_cell("x = 1")
        for _ in range(count):
            t0 = time.perf_counter()
            r = await repl.run_cell("x = 1")
            wall.append(time.perf_counter() - t0)
            server.append(r.duration)
    finally:
        await repl.close()
    return wall, server


async def model_call_layers(messages: list[dict], count: int, nodelay: bool) -> dict[str, list[float]]:
    """The same chat request through each client layer, against the fake server."""
    import httpx
    import openai

    from rlmcli.model.client import load_litellm

    litellm = load_litellm()
    fake = start_fake(["ok"] * (3 * count + 10), nodelay)
    out: dict[str, list[float]] = {"httpx": [], "openai": [], "litellm": [], "cost": []}
    body = {"model": "gpt-4o-mini", "messages": messages}
    try:
        async with httpx.AsyncClient() as http:
            await http.post(fake.url + "/chat/completions", json=body)
            for _ in range(count):
                t0 = time.perf_counter()
                (await http.post(fake.url + "/chat/completions", json=body)).json()
                out["httpx"].append(time.perf_counter() - t0)
        sdk = openai.AsyncOpenAI(base_url=fake.url, api_key="sk-benchmark-dummy", max_retries=0)
        await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
        for _ in range(count):
            t0 = time.perf_counter()
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
            out["openai"].append(time.perf_counter() - t0)
        await sdk.close()
        kw = dict(
            model=MODEL, messages=messages, api_base=fake.url, timeout=120.0, num_retries=0, max_retries=0
        )
        await litellm.acompletion(**kw)
        for _ in range(count):
            t0 = time.perf_counter()
            resp = await litellm.acompletion(**kw)
            t1 = time.perf_counter()
            litellm.completion_cost(completion_response=resp)
            out["litellm"].append(t1 - t0)
            out["cost"].append(time.perf_counter() - t1)
    finally:
        fake.stop()
    return out


def report_loop(d: dict, n_scripted: int, label: str) -> float:
    n = len(d["iters"])
    res = d["result"]
    print(f"\nAgent loop [{label}]: {n_scripted} scripted root replies with ```repl x = 1```, then FINAL")
    print(
        f"  exit_reason={res.exit_reason} answer={res.answer!r} iterations={res.iterations} "
        f"root requests={d['root_requests']} total wall={d['total']:.3f}s"
    )
    print(
        f"  size of the last root request body: {d['last_request_bytes']} bytes "
        f"(the message history grows each iteration)"
    )
    iters, model = d["iters"], d["model"]
    other = [i - m for i, m in zip(iters, model, strict=False)]
    root_extra = [r - m for r, m in zip(d["root_wall"], model, strict=False)]
    rest = [i - r - c for i, r, c in zip(iters, d["root_wall"], d["cell_wall"], strict=False)]
    print(f"  iteration 1: total {ms(iters[0]):.1f} ms, model call {ms(model[0]):.1f} ms")
    print(f"  per iteration over {n} iterations (ms):")
    print(row("iteration total", iters))
    print(row("model call (ModelCall.latency_s)", model))
    print(row("client.root wall", d["root_wall"]))
    print(row("  of which after latency_s (cost..)", root_extra))
    print(row("cell round trip (Repl.run_cell)", d["cell_wall"]))
    print(row("  server exec (CellFinished.dur)", d["cell_server"]))
    print(row("agent bookkeeping (rest)", rest))
    print(row("LOOP OVERHEAD = iteration - model", other))
    k = min(20, n // 2)
    if k:
        print(f"  drift as the history grows: first {k} -> last {k} iterations, median ms:")
        for name, v in (("iteration total", iters), ("model call", model), ("loop overhead", other)):
            print(
                f"    {name:<16} {statistics.median(map(ms, v[:k])):8.3f} -> "
                f"{statistics.median(map(ms, v[-k:])):8.3f}"
            )
    return statistics.median(map(ms, other))


async def cells_after_model_call(count: int, workdir: Path) -> dict[str, list[float]]:
    """Repl.run_cell('x = 1') right after a litellm.acompletion returns, vs. after 100 ms idle:
    litellm finishes its success logging (an asyncio task and a thread-pool job) after returning,
    and that work overlaps whatever the loop awaits next, i.e. the cell round trip."""
    from rlmcli.model.client import load_litellm

    litellm = load_litellm()
    fake = start_fake(["ok"] * (3 * count + 10), nodelay=True)
    ctx, index = make_context(workdir)
    repl = Repl(ProcessSandbox(SandboxLimits()), ctx.path, index)
    kw = dict(
        model=MODEL,
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        api_base=fake.url,
        timeout=120.0,
        num_retries=0,
        max_retries=0,
    )
    out: dict[str, list[float]] = {"immediately": [], "after 100 ms idle": []}
    await repl.start()
    try:
        t0 = time.perf_counter()
        await litellm.acompletion(**kw)
        out["first"] = [time.perf_counter() - t0]
        for _ in range(count):
            for label, pause in (("immediately", 0.0), ("after 100 ms idle", 0.1)):
                await litellm.acompletion(**kw)
                if pause:
                    await asyncio.sleep(pause)
                t0 = time.perf_counter()
                await repl.run_cell("x = 1")
                out[label].append(time.perf_counter() - t0)
    finally:
        await repl.close()
        fake.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--layer-calls", type=int, default=50, help="calls per client layer in the breakdown")
    args = ap.parse_args()
    os.environ["OPENAI_API_KEY"] = "sk-benchmark-dummy"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    print("== loop_overhead ==")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"cpus {os.cpu_count()}, {platform.system()} {platform.machine()}"
    )

    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        wall, server = asyncio.run(run_cells(args.cells, Path(tmp) / "cells"))
        print(f"\nRepl.run_cell('x = 1') x {args.cells} (direct, no model; ms):")
        print(row("round trip (host wall)", wall))
        print(row("server exec (CellResult.duration)", server))
        print(row("transport+framing (wall - exec)", [w - s for w, s in zip(wall, server, strict=False)]))

        after = asyncio.run(cells_after_model_call(50, Path(tmp) / "after"))
        first = after.pop("first")[0]
        print(
            f"\nFirst litellm.acompletion of the process (zero-latency fake): {ms(first):.1f} ms "
            "(lazy imports; paid once per run, by its first root call)"
        )
        print("Repl.run_cell('x = 1') right after a litellm.acompletion returned (ms):")
        for label, v in after.items():
            print(row(label, v))

        runs = {}
        for nodelay in (False, True):
            label = "fake server with TCP_NODELAY" if nodelay else "fake server as shipped"
            d = asyncio.run(run_loop(args.iterations, Path(tmp) / f"loop{int(nodelay)}", nodelay))
            runs[nodelay] = (report_loop(d, args.iterations, label), d)

    mid = runs[False][1]["mid_messages"]
    print(
        f"\nModel call by client layer: one mid-run root request ({len(mid)} messages), "
        f"{args.layer_calls} calls each, median ms"
    )
    for nodelay in (False, True):
        layers = asyncio.run(model_call_layers(mid, args.layer_calls, nodelay))
        label = "TCP_NODELAY" if nodelay else "as shipped "
        print(
            f"  fake {label}: httpx raw POST {statistics.median(map(ms, layers['httpx'])):7.3f} | "
            f"openai SDK {statistics.median(map(ms, layers['openai'])):7.3f} | "
            f"litellm.acompletion {statistics.median(map(ms, layers['litellm'])):7.3f} | "
            f"litellm.completion_cost {statistics.median(map(ms, layers['cost'])):6.3f}"
        )

    print(f"\nGoal: loop overhead per iteration (iteration time - ModelCall.latency_s) <= {GOAL_MS:g} ms")
    for nodelay in (False, True):
        med, d = runs[nodelay]
        other = [ms(i - m) for i, m in zip(d["iters"], d["model"], strict=False)]
        label = "fake with TCP_NODELAY" if nodelay else "fake as shipped     "
        verdict = "MET" if med <= GOAL_MS else "NOT MET"
        print(
            f"  [{label}] median {med:.3f} ms, p90 {pct(other, 90):.3f} ms -> {verdict} "
            "(judged on the median); "
            f"iteration incl. model call: median {statistics.median(map(ms, d['iters'])):.3f} ms"
        )


if __name__ == "__main__":
    main()
