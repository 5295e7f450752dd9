"""Docker sandbox costs by context size: container start, context ingest vs `cat`, per-cell round trip.

    python benchmarks/docker_cells.py [--image rlm-sandbox:bookworm] [--sizes 1K,10M,100M,1G] [--cells 300]

For each size, a context file of real log lines (../shared/data/loghub, repeated) is written, then:
- host load: rlm's loader scanning that file (what `rlm ask FILE` does first; a named file is
  used in place, not copied);
- cat: `cat FILE > /dev/null` of the same bytes (warm page cache, best of 3);
- start: container create + start until the REPL server says ready;
- ingest: the server's `load` of the context (file -> one str in memory);
- per cell: round trip of a trivial cell (`x = 1`), median and p90 over --cells runs.
Prints figures only; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlmcli.context import LoadOptions, load_context, parse_size  # noqa: E402
from rlmcli.repl import docker as sandbox_docker  # noqa: E402
from rlmcli.repl.process import SandboxLimits  # noqa: E402
from rlmcli.repl.protocol import Channel, Repl  # noqa: E402

LOGS = REPO.parent / "shared" / "data" / "loghub"


def make_input(path: Path, size: int) -> None:
    """`size` bytes of real log lines, repeated."""
    sample = b"".join(p.read_bytes() for p in sorted(LOGS.glob("*/*_2k.log")))[: 8 * 2**20]
    with path.open("wb") as f:
        left = size
        while left > 0:
            piece = sample[:left]
            f.write(piece)
            left -= len(piece)


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def cat_seconds(path: Path) -> float:
    """`cat FILE > /dev/null`, best of 3 (warm page cache)."""
    return best_of(3, lambda: subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True))


async def measure_sandbox(
    client, image: str, share: Path, context_path: Path, memory: int, cells: int
) -> dict:
    limits = SandboxLimits(memory=memory)
    sandbox = sandbox_docker.DockerSandbox(client, limits, sandbox_docker.DockerOptions(image), share)

    sandbox.add_input(context_path)  # a named file is used in place, as `rlm ask FILE` does
    repl = Repl(sandbox, context_path, share / "index.json", cell_timeout=60)
    t0 = time.perf_counter()
    reader, writer = await sandbox.start()
    repl.channel = Channel(reader, writer)
    await repl.channel.recv()  # "ready"
    t1 = time.perf_counter()
    loaded = await repl._call(
        {"op": "load", "context_path": sandbox.visible_path(context_path),
         "index_path": sandbox.visible_path(share / "index.json"), "max_output_chars": 20000},
        timeout=None,
    )  # fmt: skip
    t2 = time.perf_counter()
    assert loaded.get("type") == "loaded", loaded
    rtts = []
    for _ in range(cells):
        t = time.perf_counter()
        result = await repl.run_cell("x = 1")
        rtts.append(time.perf_counter() - t)
        assert result.error is None, result.error
    await repl.close()
    rtts.sort()
    return {
        "start_s": t1 - t0,
        "ingest_s": t2 - t1,
        "cell_median_ms": statistics.median(rtts) * 1000,
        "cell_p90_ms": rtts[int(len(rtts) * 0.9)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=os.environ.get("RLM_TEST_IMAGE", "rlm-sandbox:bookworm"))
    parser.add_argument("--sizes", default="1K,10M,100M,1G")
    parser.add_argument("--cells", type=int, default=300)
    args = parser.parse_args()
    client = sandbox_docker.require(timeout=5)
    print(f"{sandbox_docker.describe_daemon(client)}; image {args.image}; {os.cpu_count()} CPUs; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    header = (f"{'size':>6} {'host load s':>11} {'cat s':>7} {'start s':>8} {'ingest s':>9} "
              f"{'ready/cat':>9} {'cell ms (median)':>16} {'p90':>6}")  # fmt: skip
    print(header)
    for label in args.sizes.split(","):
        size = parse_size(label)
        with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
            source = Path(tmp) / "input.log"
            make_input(source, size)
            subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
            share = Path(tmp) / "share"
            t = time.perf_counter()
            context = load_context([str(source)], share, LoadOptions())
            host_load = time.perf_counter() - t
            context.write_index(share / "index.json")
            cat = cat_seconds(context.path)
            memory = max(512 * 2**20, 3 * size + 256 * 2**20)  # the str, plus the bytes while decoding
            r = asyncio.run(measure_sandbox(client, args.image, share, context.path, memory, args.cells))
            ratio = r["ingest_s"] / cat
            print(f"{label:>6} {host_load:>11.3f} {cat:>7.3f} {r['start_s']:>8.3f} {r['ingest_s']:>9.3f} "
                  f"{ratio:>9.1f} {r['cell_median_ms']:>16.3f} {r['cell_p90_ms']:>6.3f}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
