"""Per-iteration gap seen from the model server: previous root reply written -> next root request in.

A zero-latency fake OpenAI server (tests/fake_llm.py) answers a scripted root model: N replies each
running a trivial cell (`x = 1`), then FINAL. The `rlm` console script runs against it as a user
would (`-m openai/... --api-base URL --sandbox local`), so the gap holds everything the host does
between two model calls: reading the reply, parsing it, the cell's round trip to the sandbox, the
events (view, trace, history), the next prompt, and sending it. Asserts nothing. The fake notes a
request as received once it has read its body, before its own JSON parse (until 2026-12-03 after it:
~0.25 ms of each gap was the fake's).

`--against FLAGS` also runs with FLAGS added, alternating run by run (so that a change in the
machine's load falls on both alike), and prints the difference: `--against=--no-cache` is what the
cache of model calls costs an iteration.

    python benchmarks/iteration_gap.py [--iterations 25] [--repeat 3] [--sandbox local] [--against=--no-cache]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fake_llm import FakeLLM  # noqa: E402

MODEL = "openai/bench-model"
GOAL_MS = 3.0


def one_run(
    n: int, sandbox: str, data: Path, home: Path, trace: Path | None, extra: list[str]
) -> list[float]:
    """The n-1 gaps (seconds) between a root reply written and the next root request received."""
    script = ["```repl\nx = 1\n```"] * n + ['FINAL("done")']
    with FakeLLM(root=script) as fake:
        env = {**os.environ, "RLM_HOME": str(home), "OPENAI_API_KEY": "sk-bench-dummy", "NO_COLOR": "1"}
        argv = [
            str(Path(sys.executable).with_name("rlm")), "ask", str(data), "What is this?", "-m", MODEL,
            "--api-base", fake.url, "--sandbox", sandbox, "--max-iterations", str(n + 5),
        ]  # fmt: skip
        if trace is not None:
            argv += ["--trace", str(trace)]
        argv += extra
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        # The fake notes when it has read each request ("t_start") and written its reply ("t_end").
        roots = fake.root_requests
    return [roots[i + 1]["t_start"] - roots[i]["t_end"] for i in range(min(n, len(roots) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3, help="runs (the median is over all their gaps)")
    ap.add_argument("--sandbox", default="local")
    ap.add_argument("--trace", action="store_true", help="also write a --trace file")
    ap.add_argument("--extra", default="", help="more flags for `rlm ask`, e.g. '--no-cache --no-log'")
    ap.add_argument("--against", default=None, help="also run with these flags added, e.g. '--no-cache'")
    args = ap.parse_args()

    print("== iteration_gap ==")
    print(
        f"python {platform.python_version()}, cpus {os.cpu_count()}, {platform.system()} "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    variants = [args.extra] + ([f"{args.extra} {args.against}".strip()] if args.against else [])
    gaps: dict[str, list[float]] = {v: [] for v in variants}
    per_run: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        data = Path(tmp) / "input.txt"
        data.write_text("".join(f"line {i}: some text to ask about\n" for i in range(32)))
        trace = Path(tmp) / "trace.jsonl" if args.trace else None
        for _ in range(args.repeat):
            for n, extra in enumerate(variants):  # each variant its own RLM_HOME (its own cache file)
                run = one_run(
                    args.iterations, args.sandbox, data, Path(tmp) / f"home{n}", trace, extra.split()
                )
                gaps[extra] += run
                per_run[extra].append(statistics.median(run) * 1000)
    runs = f"{args.iterations} iterations x {args.repeat} runs"
    medians = {}
    for extra in variants:
        ms = sorted(g * 1000 for g in gaps[extra])
        median = medians[extra] = statistics.median(ms)
        print(f"\n--sandbox {args.sandbox} {extra}, {runs}, gap per iteration (ms):")
        print(
            f"  median {median:.2f}  p90 {ms[int(len(ms) * 0.9)]:.2f}  min {ms[0]:.2f}  max {ms[-1]:.2f}  "
            f"(medians per run: {', '.join(f'{m:.2f}' for m in per_run[extra])})"
        )
    if args.against:
        diff = medians[variants[0]] - medians[variants[1]]
        print(f"\nwithout {args.against} minus with it: {diff:+.2f} ms an iteration (median gaps)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    verdict = "MET" if medians[variants[0]] <= GOAL_MS else "NOT MET"
    print(f"\nGoal: median gap <= {GOAL_MS:g} ms ({args.extra or 'default flags'}) -> {verdict}")


if __name__ == "__main__":
    main()
