"""Signals a real `rlm` process gets from outside: SIGTERM, SIGHUP (terminal closed, SSH dropped)
and SIGINT, while the input is loading and while the loop runs. Each ends the run as interrupted
(exit 130) and leaves nothing behind: no temp dir, no sandbox, a finished history row and trace."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ask_args, clean_env
from fake_llm import Fault, reply
from test_interrupt import alive_of, repl_servers_of, wait_for

from rlmcli.record.history import DB_NAME, History
from rlmcli.record.trace import read_trace


def last_run(env: dict[str, str]):
    return History(Path(env["RLM_HOME"]) / DB_NAME).get("last")


def context_copy_growing(tmpdir: Path) -> bool:
    """The run's copy of stdin exists and holds the first chunk: loading is under way."""
    return any(p.stat().st_size > 0 for p in tmpdir.glob("rlm-run-*/share-*/context.txt"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_while_stdin_loads_exits_130_and_leaves_no_temp_dir(sig, fake_llm, rlm_bin, tmp_path):
    tmpdir = tmp_path / "tmp"  # private, so "no rlm-run-* left" is exact
    tmpdir.mkdir()
    env = clean_env(tmp_path, TMPDIR=str(tmpdir))
    proc = subprocess.Popen(
        [rlm_bin, *ask_args(fake_llm, "-")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        # 3 MB of lines, and the pipe stays open: rlm has copied some and waits in read() for more.
        proc.stdin.write(b"log line that goes on and on\n" * 100_000)
        proc.stdin.flush()
        wait_for(lambda: context_copy_growing(tmpdir))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)  # closes stdin too: a missed signal can't hang the test
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "rlm: error: interrupted" in err.decode() and "Traceback" not in err.decode()
    assert list(tmpdir.iterdir()) == []  # the 3 MB copy went with its temp dir
    assert last_run(env).exit_reason == "interrupted"
    assert fake_llm.requests == []  # it never got as far as the model


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_hangup_while_the_model_thinks_ends_the_run_as_interrupted(sig, fake_llm, rlm_bin, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(Fault(delay=30, text="too late"))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = clean_env(tmp_path, TMPDIR=str(tmpdir))
    proc = subprocess.Popen(
        [rlm_bin, *ask_args(fake_llm, str(tmp_path / "a.txt"))],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1)
        # This run's REPL server: it starts while the model thinks (once the input's tokens are counted).
        wait_for(lambda: bool(repl_servers_of(proc.pid)))
        servers = repl_servers_of(proc.pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out == b""  # nothing answered yet
    assert list(tmpdir.iterdir()) == []
    record = last_run(env)
    assert record.exit_reason == "interrupted"
    events = read_trace(record.trace_path)
    assert events[-1].name == "RunFinished" and events[-1].exit_reason == "interrupted"
    wait_for(lambda: not alive_of(servers), seconds=5)


def test_a_hangup_ignored_by_nohup_stays_ignored(fake_llm, rlm_bin, tmp_path):
    (tmp_path / "a.txt").write_text("data\n")
    fake_llm.add_root(Fault(delay=2, text=reply("", 'FINAL("still here")')))

    def like_nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(
        [rlm_bin, *ask_args(fake_llm, str(tmp_path / "a.txt"))], preexec_fn=like_nohup,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert out == b"still here\n"


def our_pid_containers(pid: int) -> list[str]:
    """Containers labelled with this rlm process's pid: only the ones this test started."""
    import docker

    client = docker.from_env(timeout=10)
    found = client.containers.list(all=True, filters={"label": f"rlm.pid={pid}"})
    return [c.name for c in found]


def test_hangup_stops_the_docker_container(docker_image, fake_llm, rlm_bin, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("Partial: sleeping.", "import time\ntime.sleep(120)"))
    args = ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--cell-timeout", "300"])
    args = [a if a != "local" else "docker" for a in args] + ["--image", docker_image]
    env = clean_env(tmp_path)
    proc = subprocess.Popen(
        [rlm_bin, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1 and our_pid_containers(proc.pid), seconds=60)
        time.sleep(0.5)  # the cell is sleeping in the container
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out == b"Partial: sleeping.\n"
    assert our_pid_containers(proc.pid) == [], "the container outlived a hung-up run"
    assert last_run(env).exit_reason == "interrupted"
