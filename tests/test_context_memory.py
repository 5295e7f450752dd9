"""The --memory hint (issue 16, item 8): a context that does not fit in the sandbox's memory gets a
hint computed from what loading it really takes (repl/context_memory.py), and the hinted value works.

The issue's case: for a 450 MB input the old hint said "about 2g", 2g failed with the same hint, and
3g worked. Text with one non-ASCII character per line block (a ’ in logs) makes Python's decoder hold
3 bytes per byte of input on top of the mapped file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import reply

from rlmcli.repl import context_memory

MiB = 2**20
LOG_LINE = b"2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: started\n"


def write_logs(path: Path, mib: int, odd: str = "it\u2019s\n") -> Path:
    """`mib` MiB of log lines with `odd` once per ~12 KiB."""
    block = LOG_LINE * 128 + odd.encode()
    chunk = (block * (MiB // len(block) + 1))[:MiB]
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(chunk)
    return path


@pytest.mark.parametrize("odd,factor", [("", 1), ("caf\u00e9\n", 3), ("it\u2019s\n", 3), ("\U0001f600\n", 5)])
def test_the_decode_factor_follows_the_widest_character(tmp_path, odd, factor):
    path = write_logs(tmp_path / "in.log", 2, odd)
    assert context_memory.decode_factor(path) == factor
    need = context_memory.needed_bytes(path)
    assert need == int((context_memory.BASE_BYTES + 2 * MiB * (1 + factor)) * context_memory.MARGIN)


def hinted(stderr: bytes) -> str:
    text = stderr.decode()
    assert "does not fit in the sandbox's memory limit" in text, text
    return text.split("raise --memory to at least ", 1)[1].split(":", 1)[0]


@pytest.mark.parametrize("mib,too_small,expected", [(64, "256m", "384m"), (450, "1g", "3g")])
def test_the_hinted_memory_loads_the_context(fake_llm, run_cli, tmp_path, mib, too_small, expected):
    """64 MiB (the proportional case: 281 MiB measured) and the issue's 450 MB: the load fails with
    the memory given, the hint names a value that works."""
    big = write_logs(tmp_path / "big.log", mib)
    fake_llm.add_root(reply("", "FINAL('loaded ' + str(len(context) > 10**6))"))
    failed = run_cli(ask_args(fake_llm, str(big), extra=["--memory", too_small]))
    assert failed.returncode == 5
    assert hinted(failed.stderr) == expected
    assert f"loading {mib:,} MiB of non-ASCII text" in failed.stderr.decode()
    worked = run_cli(ask_args(fake_llm, str(big), extra=["--memory", expected]))
    assert (worked.returncode, worked.stdout.decode()) == (0, "loaded True\n"), worked.stderr.decode()
