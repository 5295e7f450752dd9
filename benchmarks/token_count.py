"""What counting tokens costs: the encoding's load, the count's share of loading a large file, the
sampled estimate's error, and the per-call estimate the budget makes before every model call.

For each size a file of real loghub lines (all of loghub's *_2k.log files, repeated) is loaded by
rlm's loader as a named file (scanned in place); the count (tokens.count_file) is timed apart and
compared with tiktoken's exact count of the whole text (itself timed: what counting everything
would cost). Prints figures; asserts nothing.

First, the encoding's load in fresh processes: parsed from litellm's file (as before the cache)
and from rlm's cache of the parsed ranks (tokens.py), step by step.

    python benchmarks/token_count.py [--sizes 10M,100M,1G] [--data ../shared/data/loghub] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlmcli import tokens  # noqa: E402
from rlmcli.context import load_context  # noqa: E402
from rlmcli.settings import parse_size  # noqa: E402
from rlmcli.walk import LoadOptions  # noqa: E402

EXACT_UP_TO = 200 * 2**20


def best_of(n: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(n):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


# In a fresh process: seconds to import tiktoken, to get the ranks (parse or cache), to build the
# Encoding (tiktoken's Rust CoreBPE), and encoding() in all; what tokens._load does, step by step.
LOAD_STEPS = """
import hashlib, json, sys, time
t0 = time.perf_counter()
from rlmcli import tokens
import tiktoken
t1 = time.perf_counter()
source = tokens.tokenizers_dir() / hashlib.sha1(tokens.ENCODING_URL.encode()).hexdigest()
cached = tokens._cache_file(source)
args = tokens._read_cache(cached) if cached is not None else None
if args is None:
    import os
    os.environ["TIKTOKEN_CACHE_DIR"] = str(source.parent)
    from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS
    args = ENCODING_CONSTRUCTORS[tokens.ENCODING]()
t2 = time.perf_counter()
tiktoken.Encoding(**args)
t3 = time.perf_counter()
tokens.reset()
tokens.encoding()  # the real thing (tiktoken is imported already: its import is not counted again)
t4 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, t4 - t3 + (t1 - t0)]))
"""


def load_steps(home: Path) -> list[float]:
    env = {**os.environ, "RLM_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_STEPS], env=env, check=True, capture_output=True, text=True, cwd=REPO
    )
    return json.loads(done.stdout)


def load_figures(repeat: int) -> None:
    """The encoding's load in fresh processes: without the cache (its dir unwritable: parsed every
    time, as before the cache) and from the cache."""
    print(f"loading {tokens.ENCODING} in a fresh process, median of {repeat} [min..max], seconds:")
    print(f"  {'':18} {'import tiktoken':>18} {'ranks':>18} {'CoreBPE':>18} {'encoding()':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        unwritable = Path(tmp) / "not-a-dir"
        unwritable.write_text("")
        homes = {"parsed (no cache)": unwritable, "from the cache": Path(tmp) / "home"}
        load_steps(homes["from the cache"])  # writes the cache
        for label, home in homes.items():
            runs = [load_steps(home) for _ in range(repeat)]
            cells = [
                f"{statistics.median(column):.3f} [{min(column):.2f}..{max(column):.2f}]"
                for column in zip(*runs, strict=True)
            ]
            print(f"  {label:18} " + " ".join(f"{c:>18}" for c in cells))
    print()


def make_file(folder: Path, logs: bytes, size: int) -> Path:
    path = folder / f"logs-{size}.log"
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = logs[: size - written]
            f.write(chunk)
            written += len(chunk)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,100M,1G")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "loghub"))
    parser.add_argument(
        "--repeat", type=int, default=5, help="fresh processes per figure of the encoding's load"
    )
    args = parser.parse_args()
    logs = b"".join(p.read_bytes() for p in sorted(Path(args.data).glob("*/*_2k.log")))

    load_figures(args.repeat)
    enc = tokens.encoding()
    assert enc is not None, "litellm's copy of the encoding is missing"

    # The budget's estimate before each model call, on a 100 KB prompt of each kind of text.
    texts = {
        "log": logs.decode("utf-8", "replace"),
        "prose": (REPO / "README.md").read_text(encoding="utf-8"),
        "code": "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "rlmcli").glob("*.py"))),
    }
    for kind, text in texts.items():
        prompt = (text * (100_000 // len(text) + 1))[:100_000]
        # count_text, not estimate_tokens: that one remembers a text's count, and 19 of 20 would be hits.
        runs = [best_of(1, lambda p=prompt: tokens.count_text(p))[0] for _ in range(20)]
        print(f"a new 100 KB text of {kind:5}: {statistics.median(runs) * 1000:6.1f} ms (median of 20)")

    print()
    print("  size   load s  count s  share  exact-count s  tokens (sampled)  exact tokens  error")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in (parse_size(s) for s in args.sizes.split(",")):
            path = make_file(folder, logs, size)
            load_s, ctx = best_of(3, lambda p=path: load_context([str(p)], folder / "work", LoadOptions()))
            chars = ctx.stats.chars
            count_s, counted = best_of(3, lambda p=path, c=chars: tokens.count_file(p, c))
            row = f"{size / 2**20:5.0f}M {load_s:8.3f} {count_s:8.3f} {count_s / load_s:6.1%}"
            if size <= EXACT_UP_TO:  # beyond, the exact count takes minutes and GBs of memory
                text = path.read_bytes().decode("utf-8", "replace")
                exact_s, exact = best_of(1, lambda t=text: len(enc.encode_ordinary(t)))
                error = (counted.tokens - exact) / exact * 100
                row += f" {exact_s:14.3f} {counted.tokens:17,} {exact:13,} {error:+6.2f}%"
                del text
            else:
                row += f" {'-':>14} {counted.tokens:17,} {'-':>13} {'-':>7}"
            print(row)
            path.unlink()


if __name__ == "__main__":
    main()
