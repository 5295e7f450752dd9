"""Ctrl-C and SIGTERM mid-run: partial answer on stdout, exit 130, no REPL process left behind.
A real `rlm` process: the signal is the point."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import ask_args, clean_env, popen_rlm
from fake_llm import reply


def repl_server_pids() -> set[int]:
    """Every REPL server on the machine (any run's, any suite's): narrow it with repl_servers_of."""
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


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])  # after "pid (comm) state"


def repl_servers_of(pid: int) -> set[int]:
    """The REPL servers descending from process `pid` (through bwrap or not): its run's alone, so
    another run on the machine cannot be mistaken for ours. Only while `pid` lives: once it is gone
    its orphans belong to init; keep what this returned and check those pids (alive_of)."""
    found = set()
    for server in repl_server_pids():
        ancestor: int | None = server
        while ancestor and ancestor != pid:
            ancestor = parent_of(ancestor)
        if ancestor == pid:
            found.add(server)
    return found


def alive_of(pids: set[int]) -> set[int]:
    """Those of `pids` still running a REPL server (a reused pid running something else is not)."""
    return pids & repl_server_pids()


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
    args = ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--cell-timeout", "300"])
    proc = popen_rlm(rlm_bin, args, clean_env(tmp_path))
    servers: set[int] = set()  # this run's REPL servers, seen while it runs

    def cell_started() -> bool:
        servers.update(repl_servers_of(proc.pid))
        return len(fake_llm.root_requests) == 1 and bool(servers)

    try:
        wait_for(cell_started)
        time.sleep(0.5)  # let the cell start sleeping
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out.decode() == "Partial: the file holds data.\n"
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    wait_for(lambda: not alive_of(servers), seconds=5)
