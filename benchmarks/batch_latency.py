"""Wall time of llm_query_batched(64 prompts) against a fake model with 0.5 s latency per request.

Measured as the user experiences it: a REPL cell in the real local sandbox runs
`llm_query_batched([...64 prompts...])`; the host brokers the request to ModelClient.batch (via
Agent.subcalls, passed with each cell as the Agent passes it) -> the direct OpenAI-protocol path
(rlmcli/model/openai_http.py on http1.py: h11 over asyncio streams) -> HTTP -> FakeLLM(latency=0.5).
Then the same batch through ModelClient.batch directly (REPL brokering vs client cost), and a
diagnosis: where requests reach the server, and the same batch through each client layer (rlm's
http1 transport, raw aiohttp for comparison, raw httpx, openai SDK, litellm, ModelClient.sub)
against a fake server in a separate process, with the client's CPU time per call. Prints figures
only.

    python benchmarks/batch_latency.py [--prompts 64] [--latency 0.5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import fake_llm  # noqa: E402
from fake_llm import FakeLLM  # noqa: E402

from rlmcli.agent import Agent, Task  # noqa: E402
from rlmcli.budget import Budget, Limits  # noqa: E402
from rlmcli.context import LoadOptions, load_context  # noqa: E402
from rlmcli.events import Event, SubcallProgress  # noqa: E402
from rlmcli.model import http1  # noqa: E402
from rlmcli.model.client import ModelClient, ModelConfig, load_litellm  # noqa: E402
from rlmcli.repl.confine import SandboxLimits  # noqa: E402
from rlmcli.repl.process import ProcessSandbox  # noqa: E402
from rlmcli.repl.protocol import Repl  # noqa: E402

MODEL = "openai/gpt-4o-mini"
GOAL_S = 0.7


def stats(values: list[float]) -> str:
    med = statistics.median(values)
    return f"min {min(values):.3f}  median {med:.3f}  max {max(values):.3f} s  (n={len(values)})"


def make_client(url: str, concurrency: int) -> ModelClient:
    budget = Budget(Limits(max_iterations=1000))
    cfg = ModelConfig(MODEL, url)
    client = ModelClient(cfg, cfg, budget, concurrency=concurrency)
    client.check_credentials()  # imports litellm outside the timings
    return client


def make_context(workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "input.txt"
    src.write_text("".join(f"record {i}: some text\n" for i in range(64)), encoding="utf-8")
    ctx = load_context([str(src)], workdir / "run", LoadOptions())
    index = workdir / "run" / "index.json"
    ctx.write_index(index)
    return ctx, index


# -- as the user experiences it ------------------------------------------------------------------


async def via_repl_cell(url: str, n: int, repeat: int, concurrency: int, workdir: Path) -> dict:
    client = make_client(url, concurrency)
    ctx, index = make_context(workdir)
    repl = Repl(ProcessSandbox(SandboxLimits()), ctx.path, index)
    batches: list[float] = []
    started: list[float] = []

    def emit(event: Event) -> None:
        # The agent emits SubcallProgress when a batch starts (done == 0) and ends (done == total).
        if isinstance(event, SubcallProgress) and event.done == 0:
            started.append(time.perf_counter())
        elif isinstance(event, SubcallProgress) and event.done == event.total and started:
            batches.append(time.perf_counter() - started.pop())

    agent = Agent(Task("benchmark", ctx), client, repl, client.budget, emit)
    code = f"answers = llm_query_batched([f'summarise record {{i}}' for i in range({n})])\nlen(answers)"
    walls, outputs = [], []
    await repl.start()
    try:
        t0 = time.perf_counter()
        await client.sub("warm up")  # like the root call that precedes any cell in a real run
        first_call = time.perf_counter() - t0
        t0 = time.perf_counter()
        await repl.run_cell(code, on_subcalls=agent.calls.llm)  # first batch: opens the other connections
        cold = time.perf_counter() - t0
        batches.clear()
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = await repl.run_cell(code, on_subcalls=agent.calls.llm)
            walls.append(time.perf_counter() - t0)
            outputs.append((r.output.strip(), r.error))
    finally:
        await repl.close()
        await client.aclose()
    return {"wall": walls, "batch": batches, "outputs": outputs, "cold": cold, "first_call": first_call}


async def via_client_batch(url: str, n: int, repeat: int, concurrency: int, probe=None) -> dict:
    """ModelClient.batch directly. `probe` (in-process fake only) records server-side timestamps."""
    client = make_client(url, concurrency)
    prompts = [f"summarise record {i}" for i in range(n)]
    walls, spans = [], []
    try:
        await client.batch(prompts)  # warm-up
        cpu0 = time.process_time()
        for _ in range(repeat):
            if probe is not None:
                probe.clear()
            t0 = time.perf_counter()
            replies = await client.batch(prompts)
            t1 = time.perf_counter()
            walls.append(t1 - t0)
            if any(r.startswith("[llm_query error") for r in replies):
                raise RuntimeError(f"sub-call failed: {next(r for r in replies if r.startswith('[llm'))}")
            if probe is not None:
                spans.append(probe.spans(t0, t1))
        cpu = (time.process_time() - cpu0) / (repeat * n)
    finally:
        await client.aclose()
    return {"wall": walls, "spans": spans, "cpu_per_call": cpu}


class ServerProbe:
    """Timestamps of request arrival and response send inside the in-process fake server."""

    def __init__(self, fake: FakeLLM):
        self.arrive: list[float] = []
        self.send: list[float] = []
        lock = threading.Lock()
        record, send = fake._record, fake_llm._Handler._send

        def timed_record(body, raw, headers):
            with lock:
                self.arrive.append(time.perf_counter())
            return record(body, raw, headers)

        def timed_send(handler, *a, **kw):
            with lock:
                self.send.append(time.perf_counter())
            return send(handler, *a, **kw)

        fake._record = timed_record  # type: ignore[method-assign]
        fake_llm._Handler._send = timed_send  # type: ignore[method-assign]
        self._restore = lambda: setattr(fake_llm._Handler, "_send", send)

    def clear(self) -> None:
        self.arrive.clear()
        self.send.clear()

    def spans(self, t0: float, t1: float) -> tuple[float, float, float, float]:
        """(first arrival, last arrival, last send, end of batch), seconds after batch start."""
        return (min(self.arrive) - t0, max(self.arrive) - t0, max(self.send) - t0, t1 - t0)

    def close(self) -> None:
        self._restore()


# -- diagnosis: the same batch through each client layer -----------------------------------------


async def layer(n: int, repeat: int, one: Callable[[int], Awaitable[object]]) -> tuple[list[float], float]:
    await asyncio.gather(*(one(i) for i in range(n)))  # warm-up, opens the connections
    walls = []
    cpu0 = time.process_time()
    for _ in range(repeat):
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        walls.append(time.perf_counter() - t0)
    return walls, (time.process_time() - cpu0) / (repeat * n)


async def all_layers(url: str, n: int, repeat: int, concurrency: int) -> dict[str, tuple[list[float], float]]:
    import aiohttp
    import httpx
    import openai

    litellm = load_litellm()
    out: dict[str, tuple[list[float], float]] = {}

    def msgs(i: int) -> list[dict]:
        return [{"role": "user", "content": f"summarise record {i}"}]

    pool = http1.Pool()
    where = http1.target(url + "/chat/completions")

    async def raw_http1(i: int):
        body = json.dumps({"model": "gpt-4o-mini", "messages": msgs(i)}).encode()
        r = await pool.post(where, body, {"Content-Type": "application/json"}, None, lambda: None)
        return json.loads(r.body)

    out["raw http1 POST (rlm's transport)"] = await layer(n, repeat, raw_http1)
    await pool.aclose()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:

        async def raw_aiohttp(i: int):
            body = {"model": "gpt-4o-mini", "messages": msgs(i)}
            async with session.post(url + "/chat/completions", json=body) as r:
                return await r.json()

        out["raw aiohttp POST"] = await layer(n, repeat, raw_aiohttp)

        async def direct_sketch(i: int):
            # What a direct OpenAI-compatible path in ModelClient would do per call: POST, parse
            # text and usage, price it. (Sketch for sizing the fix; no retries/error mapping.)
            body = {"model": "gpt-4o-mini", "messages": msgs(i)}
            headers = {"Authorization": "Bearer sk-benchmark-dummy"}
            async with session.post(url + "/chat/completions", json=body, headers=headers) as r:
                data = await r.json()
            usage = data.get("usage") or {}
            litellm.cost_per_token(
                model=MODEL,
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            )
            return data["choices"][0]["message"].get("content") or ""

        out["aiohttp + parse + cost_per_token"] = await layer(n, repeat, direct_sketch)

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:

        async def raw_httpx(i: int):
            r = await http.post(url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": msgs(i)})
            return r.json()

        out["raw httpx POST"] = await layer(n, repeat, raw_httpx)

    sdk = openai.AsyncOpenAI(base_url=url, api_key="sk-benchmark-dummy", max_retries=0)

    async def sdk_call(i: int):
        return await sdk.chat.completions.create(model="gpt-4o-mini", messages=msgs(i))

    out["openai SDK (httpx transport)"] = await layer(n, repeat, sdk_call)
    await sdk.close()

    kw = dict(model=MODEL, api_base=url, timeout=120.0, num_retries=0, max_retries=0)

    async def litellm_call(i: int):
        return await litellm.acompletion(messages=msgs(i), **kw)

    out["litellm.acompletion"] = await layer(n, repeat, litellm_call)

    client = make_client(url, concurrency)

    async def client_sub(i: int):
        return await client.sub(f"summarise record {i}")

    out["ModelClient.sub (rlm, direct path)"] = await layer(n, repeat, client_sub)
    await client.aclose()
    return out


class ExternalFake:
    """FakeLLM in a child process, so its threads do not share the benchmark's GIL."""

    def __init__(self, latency: float, nodelay: bool):
        cmd = [sys.executable, __file__, "--serve", str(latency), "1" if nodelay else "0"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def serve(latency: float, nodelay: bool) -> None:
    fake_llm._Handler.disable_nagle_algorithm = nodelay
    with FakeLLM(latency=latency) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-diagnosis", action="store_true", help="only the user-facing figures")
    ap.add_argument("--serve", nargs=2, metavar=("LATENCY", "NODELAY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(float(args.serve[0]), args.serve[1] == "1")
        return
    os.environ["OPENAI_API_KEY"] = "sk-benchmark-dummy"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    n, lat, rep, conc = args.prompts, args.latency, args.repeat, args.concurrency

    print("== batch_latency ==")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"cpus {os.cpu_count()}, {platform.system()} {platform.machine()}"
    )
    print(
        f"{n} prompts, fake latency {lat:g} s per request, concurrency {conc}, {rep} timed repetitions "
        f"after one warm-up; ideal wall = {lat:g} s"
    )

    # 1. As specified: in-process FakeLLM(latency=0.5), as shipped.
    with FakeLLM(latency=lat) as fake, tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        cell = asyncio.run(via_repl_cell(fake.url, n, rep, conc, Path(tmp)))
        probe = ServerProbe(fake)
        try:
            direct = asyncio.run(via_client_batch(fake.url, n, rep, conc, probe))
        finally:
            probe.close()

    print(
        f"\nREPL cell `llm_query_batched([...{n}...])`, wall around Repl.run_cell "
        "[in-process fake as shipped]:"
    )
    print(f"  cell wall                         {stats(cell['wall'])}")
    print(f"  host batch (SubcallProgress)      {stats(cell['batch'])}")
    brokering = [w - b for w, b in zip(cell["wall"], cell["batch"], strict=False)]
    print(f"  REPL brokering (wall - batch)     {stats(brokering)}")
    print(
        f"  not in the figures above: the process's first sub-call {cell['first_call']:.3f} s "
        f"(transport import, route lookup + {lat:g} s latency); then the first batch cell "
        f"{cell['cold']:.3f} s (opens the other connections)"
    )
    print(f"  cell output/error of last run     {cell['outputs'][-1]!r}")
    print(f"\nModelClient.batch({n} prompts) directly [in-process fake as shipped]:")
    print(f"  wall                              {stats(direct['wall'])}")
    print("  server-side timeline per repetition (ms after the batch starts):")
    for first, last, sent, end in direct["spans"]:
        print(
            f"    requests arrive {first * 1000:5.0f}..{last * 1000:5.0f} "
            f"| last reply sent {sent * 1000:5.0f} "
            f"| batch returns {end * 1000:5.0f}  (client time before 1st arrival {first * 1000:4.0f}, "
            f"after last reply {(end - sent) * 1000:4.0f})"
        )

    med = statistics.median(cell["wall"])
    dmed = statistics.median(direct["wall"])
    if not args.no_diagnosis:
        print(
            f"\nDiagnosis: fake server in a separate process (its threads off this GIL), "
            f"{n} concurrent calls:"
        )
        for nodelay in (False, True):
            ext = ExternalFake(lat, nodelay)
            try:
                d = asyncio.run(via_client_batch(ext.url, n, rep, conc))
            finally:
                ext.close()
            label = "with TCP_NODELAY   " if nodelay else "without TCP_NODELAY"
            print(
                f"  ModelClient.batch, fake {label}   {stats(d['wall'])}; "
                f"client CPU {d['cpu_per_call'] * 1000:.2f} ms/call"
            )
        for latency in (lat, 0.0):
            ext = ExternalFake(latency, True)
            try:
                layers = asyncio.run(all_layers(ext.url, n, rep, conc))
            finally:
                ext.close()
            print(f"  by client layer, fake latency {latency:g} s, TCP_NODELAY:")
            for name, (walls, cpu) in layers.items():
                print(f"    {name:<34} {stats(walls)}; client CPU {cpu * 1000:5.2f} ms/call")

    print(f"\nGoal: {n}-prompt llm_query_batched cell <= {GOAL_S:g} s")
    print(
        f"  REPL cell: median {med:.3f} s, max {max(cell['wall']):.3f} s -> "
        f"{'MET' if med <= GOAL_S else 'NOT MET'} (judged on the median)"
    )
    print(f"  ModelClient.batch directly: median {dmed:.3f} s -> {'MET' if dmed <= GOAL_S else 'NOT MET'}")


if __name__ == "__main__":
    main()
