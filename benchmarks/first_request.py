"""Time from process start to the first model request, for `rlm ask -m openai/... --api-base URL`.

Starts a zero-latency OpenAI-compatible server in this process (tests/fake_llm.py) that notes the
wall time at which each request arrives, then runs the installed `rlm` console script as a user
would, `--sandbox local` (and `--sandbox docker` with --docker), on a 1 KB input. The figure is the
arrival time of the first chat request minus the time just before the process was started.

It prints the figure for the path a run takes today (the direct OpenAI-protocol path, no litellm)
next to the litellm path's: the same command, in a wrapper that makes every call go through litellm
(Router.direct_route patched to None), as every root call did before. Asserts nothing.

    python benchmarks/first_request.py [--repeat 7] [--docker]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fake_llm import FakeLLM  # noqa: E402

MODEL = "openai/bench-model"
# One trivial cell, then the answer (an answer before any code ran is questioned once).
SCRIPT = ["```repl\nx = 1\n```", 'FINAL("ok")']
# The same CLI, with every model call sent through litellm (the path root calls took before).
LITELLM_WRAPPER = (
    "import sys\n"
    "from rlmcli.model import providers\n"
    "providers.Router.direct_route = lambda self, cfg: None\n"
    "from rlmcli.cli.app import main\n"
    "sys.argv[0] = 'rlm'\n"
    "main()\n"
)


class Stamped(FakeLLM):
    """FakeLLM that notes the wall time each chat request arrives (before it is answered)."""

    def __init__(self) -> None:
        super().__init__(root=[])
        self.arrivals: list[float] = []

    def _record(self, body: dict, raw: bytes, headers: dict[str, str], received: float | None = None) -> dict:
        self.arrivals.append(time.time())  # after the fake's JSON parse: errs late, as it always did
        return super()._record(body, raw, headers, received)


def rlm_command(path: str) -> list[str]:
    script = Path(sys.executable).with_name("rlm")
    if path == "direct":
        return [str(script)]
    return [sys.executable, "-c", LITELLM_WRAPPER]


def one_run(path: str, sandbox: str, data: Path, home: Path) -> tuple[float, float]:
    """(seconds from process start to the first request, seconds the whole run took)."""
    with Stamped() as fake:
        fake.add_root(*SCRIPT)
        env = {
            **os.environ,
            "RLM_HOME": str(home),
            "OPENAI_API_KEY": "sk-bench-dummy",
            "NO_COLOR": "1",
        }
        argv = [
            *rlm_command(path), "ask", str(data), "What is this?", "-m", MODEL, "--api-base", fake.url,
            "--sandbox", sandbox, "--quiet", "--no-log",
        ]  # fmt: skip
        started = time.time()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        ended = time.time()
        if done.returncode != 0 or not fake.arrivals:
            raise SystemExit(f"run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        return fake.arrivals[0] - started, ended - started


def imports_litellm(sandbox: str, data: Path, home: Path) -> bool:
    """Whether the run's process imported litellm at all (python -X importtime, read from stderr)."""
    with Stamped() as fake:
        fake.add_root(*SCRIPT)
        env = {**os.environ, "RLM_HOME": str(home), "OPENAI_API_KEY": "sk-bench-dummy", "NO_COLOR": "1"}
        script = Path(sys.executable).with_name("rlm")
        argv = [
            sys.executable, "-X", "importtime", str(script), "ask", str(data), "What is this?", "-m", MODEL,
            "--api-base", fake.url, "--sandbox", sandbox, "--quiet", "--no-log",
        ]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    return any(line.rstrip().endswith("| litellm") for line in done.stderr.splitlines())


PARTS = {
    "python itself (python -c pass)": "pass",
    "imports of the ask path (cli.app, cli.ask, run)": "import rlmcli.cli.app, rlmcli.cli.ask, rlmcli.run",
    "the token counter's encoding (tokens.encoding)": "from rlmcli import tokens; tokens.encoding()",
    "the direct path's HTTP client (http1, on h11)": "from rlmcli.model import http1",
    "litellm's price table, read as JSON": "from rlmcli.model import prices; prices.table()",
}


def part_seconds(code: str, repeat: int) -> float:
    """Median wall time of a fresh `python -c code` (python's own start included)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs per path and sandbox (median shown)")
    ap.add_argument("--docker", action="store_true", help="also measure --sandbox docker")
    args = ap.parse_args()
    # Installed by pip, the package runs from compiled bytecode; where PYTHONDONTWRITEBYTECODE is set
    # (CI images often set it) every run would compile each module from source again (~0.14 s here).
    # The warm-up run writes the bytecode, as a user's first run does.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sandboxes = ["local", "docker"] if args.docker else ["local"]

    print("== first_request ==")
    print(
        f"python {platform.python_version()}, cpus {os.cpu_count()}, {platform.system()} "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        data = Path(tmp) / "input.txt"
        data.write_text("".join(f"line {i}: some text to ask about\n" for i in range(32)))  # ~1 KB
        home = Path(tmp) / "home"
        for sandbox in sandboxes:
            one_run("direct", sandbox, data, home)  # warm the page cache (and the image, for docker)
            print(f"\n--sandbox {sandbox}, {args.repeat} runs per path, seconds (median [min..max]):")
            for path in ("direct", "litellm"):
                firsts, totals = [], []
                for _ in range(args.repeat):
                    first, total = one_run(path, sandbox, data, home)
                    firsts.append(first)
                    totals.append(total)
                label = "direct path (today)" if path == "direct" else "litellm path (before)"
                print(
                    f"  {label:<22} start -> first request {statistics.median(firsts):6.3f} "
                    f"[{min(firsts):.3f}..{max(firsts):.3f}]   whole run {statistics.median(totals):6.3f}"
                )
            print(f"  litellm imported by the direct path's process: {imports_litellm(sandbox, data, home)}")
    print("\nWhere the time goes: each part in a fresh process, median seconds (python's start included):")
    for label, code in PARTS.items():
        print(f"  {label:<50} {part_seconds(code, args.repeat):6.3f}")
    print("\nGoal: start -> first request <= 0.5 s on an idle machine, --sandbox local, direct path")


if __name__ == "__main__":
    main()
