"""Time from process start to the first model request for big inputs, next to `cat` of the same
bytes (issue 13, item 5).

Inputs (built once, under --workdir or a temporary folder; nothing is copied into the repository):
  big   a file of real log lines (../shared/data/loghub/*/*.log repeated) of --size bytes (1 GB);
  tree  20,000 files shaped like site-packages, --tree-size in all (177 MB), 115 of them with an
        emoji (tests/test_big_tree.py's make_tree);
  1 KB  a small file: the start-up baseline.
Each runs `rlm ask INPUT ... --yes` as a user would, `--sandbox local` (and `--sandbox docker` with
--docker), at rlm's defaults (token counting and secret scanning on, the default --memory unless
--memory is given), against a zero-latency fake server that notes when each request arrives
(benchmarks/first_request.py's Stamped). The figure is the first request's arrival minus the time
just before the process started. Next to it: `cat FILE > /dev/null` (for the tree, `find DIR -type
f -print0 | xargs -0 cat > /dev/null`), page cache warm (one untimed run of each first). A run that
fails is reported (exit status and the last lines of stderr) and the benchmark goes on.

    python benchmarks/first_request_input.py [--repeat 5] [--docker] [--skip-tree] [--size 1g]
        [--tree-size 177m] [--workdir DIR] [--memory 3g] [--source DIR]

--source DIR runs rlm from another source tree (PYTHONPATH=DIR; e.g. `git archive HEAD | tar -x -C
DIR` to measure the last commit next to a working tree). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from first_request import Stamped  # also puts tests/ on sys.path, for test_big_tree
from test_big_tree import ASTRAL_FILES, FILES, make_tree

REPO = Path(__file__).resolve().parents[1]
LOGHUB = REPO.parent / "shared" / "data" / "loghub"
MODEL = "openai/bench-model"
SCRIPT = ["```repl\nx = 1\n```", 'FINAL("ok")']  # one trivial cell, then the answer
GOAL = 3.0  # (first request(big) - first request(1 KB)) / cat(big), at most
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1:] in UNITS else int(text)


def build_log_file(path: Path, size: int) -> Path:
    """`size` bytes (cut at a line's end) of loghub's logs repeated; kept if already that size."""
    if path.is_file() and path.stat().st_size == size:
        return path
    logs = sorted(LOGHUB.glob("*/*.log"))
    if not logs:
        raise SystemExit(f"no logs under {LOGHUB} (../shared/data beside the checkout)")
    block = b"".join(p.read_bytes() for p in logs)
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as f:
        left = size
        while left > len(block):
            f.write(block)
            left -= len(block)
        tail = block[:left]
        f.write(tail[: tail.rfind(b"\n") + 1])
        if pad := size - f.tell():  # an exact size: one last filler line
            f.write(b"x" * (pad - 1) + b"\n")
    tmp.rename(path)
    return path


def build_tree(path: Path, size: int) -> Path:
    """The site-packages-shaped tree; kept if one of the same size was built here before (the
    facts file lies beside the tree, not in it)."""
    facts = path.with_name(path.name + ".json")
    if facts.is_file() and json.loads(facts.read_text()).get("bytes_asked") == size and path.is_dir():
        return path
    shutil.rmtree(path, ignore_errors=True)
    tree = make_tree(path, FILES, size, ASTRAL_FILES)
    facts.write_text(json.dumps({"bytes_asked": size, "files": tree.files, "bytes": tree.bytes,
                                 "chars": tree.chars, "astral": tree.astral}))  # fmt: skip
    return path


def clean_env(home: Path, source: Path | None) -> dict[str, str]:
    """No user config or credentials: rlm's defaults, as a first-time user gets them."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI", "ANTHROPIC", "LITELLM"))
    }
    env.update(RLM_HOME=str(home), RLM_CONFIG=str(home / "no-config.toml"), OPENAI_API_KEY="sk-bench-dummy",
               NO_COLOR="1")  # fmt: skip
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


@dataclass
class Result:
    times: list[float] = field(default_factory=list)  # start -> the first request
    ready: list[float] = field(default_factory=list)  # start -> the second (the first cell has run)
    failure: str | None = None

    def cell(self, ready: bool = False) -> str:
        if self.failure:
            return "FAILED"
        return fmt(self.ready if ready else self.times)


def fmt(times: list[float]) -> str:
    return f"{statistics.median(times):7.3f} [{min(times):.3f}..{max(times):.3f}]"


def one_run(argv: list[str], env: dict[str, str]) -> tuple[tuple[float, float] | None, str | None]:
    """((seconds from start to the first request, to the second), None) or (None, why the run
    failed). The second request comes after the first cell ran: the sandbox holds the context."""
    with Stamped() as fake:
        fake.add_root(*SCRIPT)
        full = [*argv, "--api-base", fake.url]
        started = time.time()
        try:
            done = subprocess.run(full, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, "timed out after 900 s"
        if done.returncode != 0 or len(fake.arrivals) < 2:
            tail = "\n".join("      " + line for line in done.stderr.strip().splitlines()[-4:])
            return None, f"exit {done.returncode}, {len(fake.arrivals)} requests; stderr ends:\n{tail}"
        return (fake.arrivals[0] - started, fake.arrivals[1] - started), None


def measure(argv: list[str], env: dict[str, str], repeat: int) -> Result:
    """One untimed run (page cache, image), then `repeat` timed; stops at the first failure."""
    result = Result()
    for i in range(repeat + 1):
        seconds, failure = one_run(argv, env)
        if seconds is None:
            result.failure = failure
            return result
        if i:
            result.times.append(seconds[0])
            result.ready.append(seconds[1])
    return result


def cat_times(target: Path, repeat: int) -> list[float]:
    if target.is_dir():
        command = f"find '{target}' -type f -print0 | xargs -0 cat > /dev/null"
    else:
        command = f"cat '{target}' > /dev/null"
    times = []
    for i in range(repeat + 1):
        started = time.perf_counter()
        subprocess.run(command, shell=True, check=True)
        if i:  # the first warms the page cache
            times.append(time.perf_counter() - started)
    return times


def rlm_argv(target: Path, sandbox: str, args: argparse.Namespace) -> list[str]:
    script = Path(sys.executable).with_name("rlm")
    argv = [str(script), "ask", str(target), "What is this?", "-m", MODEL, "--sandbox", sandbox,
            "--quiet", "--no-log", "--yes"]  # fmt: skip
    if sandbox == "docker":
        argv += ["--image", args.image]
    if args.memory:
        argv += ["--memory", args.memory]
    return argv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per input and sandbox (median shown)")
    ap.add_argument("--docker", action="store_true", help="also measure --sandbox docker")
    ap.add_argument("--skip-tree", action="store_true", help="leave out the 20,000-file tree")
    ap.add_argument("--size", default="1g", help="the big file's size (default 1g)")
    ap.add_argument("--tree-size", default="177m", help="the tree's bytes in all (default 177m)")
    ap.add_argument("--workdir", type=Path, help="build (and keep, and reuse) the inputs here")
    ap.add_argument("--memory", help="pass --memory to rlm (default: rlm's own default)")
    ap.add_argument("--image", default=os.environ.get("RLM_TEST_IMAGE", "rlm-sandbox:bookworm"))
    ap.add_argument("--source", type=Path, help="run rlm from this source tree (PYTHONPATH)")
    args = ap.parse_args()
    # Installed by pip, the package runs from compiled bytecode; where PYTHONDONTWRITEBYTECODE is set
    # (CI images often set it) every run would compile each module from source again (~0.14 s here).
    # The warm-up run writes the bytecode, as a user's first run does.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sandboxes = ["local", "docker"] if args.docker else ["local"]

    print("== first_request_input ==")
    print(
        f"python {platform.python_version()}, cpus {os.cpu_count()}, {platform.system()}, "
        f"load average {os.getloadavg()[0]:.2f}; rlm from {args.source or 'the installed package'}; "
        f"--memory {args.memory or 'default'}"
    )
    with tempfile.TemporaryDirectory(prefix="rlm-bench-input-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = clean_env(Path(tmp) / "home", args.source.resolve() if args.source else None)
        started = time.perf_counter()
        small = work / "small.log"
        small.write_text("".join(f"line {i}: some text to ask about\n" for i in range(32)))  # ~1 KB
        inputs = {
            "1 KB": small,
            f"file {args.size}": build_log_file(work / f"big-{args.size}.log", parse_size(args.size)),
        }
        if not args.skip_tree:
            inputs[f"tree {args.tree_size}"] = build_tree(
                work / f"tree-{args.tree_size}", parse_size(args.tree_size)
            )
        print(f"inputs under {work}, ready in {time.perf_counter() - started:.1f} s")

        cats = {label: cat_times(path, args.repeat) for label, path in inputs.items()}
        results: dict[tuple[str, str], Result] = {}
        for sandbox in sandboxes:
            for label, path in inputs.items():
                result = measure(rlm_argv(path, sandbox, args), env, args.repeat)
                results[label, sandbox] = result
                failed = f"\n    failed: {result.failure}" if result.failure else ""
                print(
                    f"  {label:<12} --sandbox {sandbox:<6} first request {result.cell()}{failed}", flush=True
                )
    report(inputs, cats, results, sandboxes, args.repeat)


def report(inputs: dict[str, Path], cats: dict[str, list[float]], results: dict[tuple[str, str], Result],
           sandboxes: list[str], repeat: int) -> None:  # fmt: skip
    print(f"\nseconds, median [min..max] of {repeat}; load average now {os.getloadavg()[0]:.2f}")
    print("first: start -> the first model request; ready: -> the second (the first cell ran in the sandbox)")
    heads = [f"{kind}, {s}" for s in sandboxes for kind in ("first", "ready")]
    print(f"  {'input':<12} {'cat':<24} " + " ".join(f"{h:<26}" for h in heads))
    for label in inputs:
        row = " ".join(f"{results[label, s].cell(ready):<26}" for s in sandboxes for ready in (False, True))
        print(f"  {label:<12} {fmt(cats[label]):<24} {row}")
    print(f"\n(figure(input) - figure(1 KB)) / cat(input); the goal: first <= {GOAL:g}x for the big file")
    for label in list(inputs)[1:]:
        cat = statistics.median(cats[label])
        for sandbox in sandboxes:
            big, base = results[label, sandbox], results["1 KB", sandbox]
            if big.failure or base.failure:
                print(f"  {label:<12} --sandbox {sandbox:<6} n/a (a run failed)")
                continue
            first = (statistics.median(big.times) - statistics.median(base.times)) / cat
            ready = (statistics.median(big.ready) - statistics.median(base.ready)) / cat
            verdict = (
                ""
                if label.startswith("tree")
                else ("   meets the goal" if first <= GOAL else "   over the goal")
            )
            print(f"  {label:<12} --sandbox {sandbox:<6} first {first:6.1f}x   ready {ready:6.1f}x{verdict}")


if __name__ == "__main__":
    main()
