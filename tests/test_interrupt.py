"""Ctrl-C and SIGTERM mid-run: partial answer on stdout, exit 130, no REPL process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import ask_args, clean_env
from fake_llm import reply


def repl_server_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"repl_server.py" in f.read():
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


def wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_cell_leaves_partial_answer_and_no_process(sig, fake_llm, rlm_bin, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(reply("Partial: the file holds data.", "import time\ntime.sleep(120)"))
    before = repl_server_pids()
    proc = subprocess.Popen(
        [rlm_bin, *ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--cell-timeout", "300"])],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1 and repl_server_pids() - before)
        time.sleep(0.5)  # let the cell start sleeping
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out.decode() == "Partial: the file holds data.\n"
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    wait_for(lambda: not (repl_server_pids() - before), seconds=5)
