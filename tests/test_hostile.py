"""Hostile code in cells, against every sandbox: each is contained, the run goes on and ends with
the right exit status, and no container of ours is left behind.

Modes: docker; local (bubblewrap); auto with Docker unreachable, which must pick local and contain
the same cases (what CI runs where no daemon is up); process, lightly (it is the weak mode and
claims little). `rlm` runs in this process (run_cli); none of these cells signals its parent."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ask_args, our_containers, require_local_pids_cap
from fake_llm import reply

NO_DOCKER = "unix:///nonexistent/docker.sock"
HOST_SECRET = "host-secret-5a1e0c3d"  # planted in a file outside the inputs: no cell may read it

# name -> (cell, what the model must be told afterwards, sandboxes where the case is meaningful);
# "local" covers auto too. {secret} is the path of a planted file outside the inputs.
HOSTILE = {
    "network connect": (
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)", "OSError", {"docker", "local"},
    ),
    "dns lookup": ("import socket\nsocket.getaddrinfo('pypi.org', 443)", "gaierror", {"docker", "local"}),
    "read host secrets": ("print(open({secret!r}).read())", "Error", {"docker", "local"}),
    "environment secrets": (
        "import os\nprint([k for k in os.environ if 'KEY' in k or 'TOKEN' in k])", "[]",
        {"docker", "local", "process"},
    ),
    "memory bomb": ("x = bytearray(6 * 1024**3)", "MemoryError", {"docker", "local"}),
    "fork bomb": (
        # Not under process: the tests run as root, and the kernel never applies the process-count
        # rlimit to root. Docker's pids cgroup holds, and local's own (repl/pids_cgroup.py).
        "import os\nwhile True:\n    os.fork()", "Error", {"docker", "local"},
    ),
    "infinite loop": ("while True:\n    pass", "TimeoutError", {"docker", "local", "process"}),
    "cpu spin in a thread": (
        "import threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\n"
        "print('spinning')", "spinning", {"docker", "local"},
    ),
    "stdout flood": ("while True:\n    print('y' * 10000)", "output truncated", {"docker", "local"}),
    "fill /tmp": (
        "chunk = b'z' * 2**20\nwith open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(chunk)",
        "No space left", {"docker", "local"},
    ),
    "kill the server": (
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "restarted",
        {"docker", "local", "process"},
    ),
    "close the protocol descriptors": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n"
        "    except OSError:\n        pass\nprint('closed')", "restarted", {"docker", "local"},
    ),
    "sys.exit": ("import sys\nsys.exit(0)", "SystemExit", {"docker", "local"}),
    "os._exit": ("import os\nos._exit(0)", "restarted", {"docker", "local"}),
    "overwrite llm_query and context": (
        "llm_query = lambda p: 'hijacked'\ncontext = 'replaced'", "restored", {"docker", "local"},
    ),
    "huge sub-call reply": ("r = llm_query('HUGE')\nprint(len(r))", "30000000", {"docker", "local"}),
}  # fmt: skip

SURVIVOR = "print('alive', llm_query('ping'), len(context))"


def cases():
    for name, (code, expect, where) in HOSTILE.items():
        for mode in ("docker", "local", "auto", "process"):
            if (mode if mode != "auto" else "local") in where:
                yield pytest.param(mode, code, expect, id=f"{mode}: {name}")


@pytest.mark.parametrize("mode,code,expect", list(cases()))
def test_hostile_cell_is_contained(mode, code, expect, fake_llm, run_cli, tmp_path, request):
    image = request.getfixturevalue("docker_image") if mode == "docker" else None
    if "fork()" in code and mode != "docker":
        require_local_pids_cap()
    (tmp_path / "in.txt").write_text("data\n")
    secret = tmp_path / "secret.txt"
    secret.write_text(HOST_SECRET)
    fake_llm.sub = lambda prompt: "H" * 30_000_000 if prompt == "HUGE" else "pong"
    fake_llm.add_root(
        reply("", code.replace("{secret!r}", repr(str(secret)))), reply("", SURVIVOR), "FINAL(ok)"
    )
    args = ask_args(
        fake_llm, str(tmp_path / "in.txt"), extra=["--json", "--cell-timeout", "3", "--memory", "512m"]
    )
    args = [a if a != "local" else mode for a in args] + (["--image", image] if image else [])
    env = {"DOCKER_HOST": NO_DOCKER} if mode == "auto" else {}
    proc = run_cli(args, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["answer"] == "ok"
    assert result["sandbox"] == ("local" if mode == "auto" else mode)
    seen = [
        [m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"]
        for r in fake_llm.root_requests
    ]
    assert expect in seen[1], seen[1][:2000]
    assert "alive pong 5" in seen[2], seen[2][:2000]
    assert HOST_SECRET not in seen[1]
    if mode == "docker":
        assert our_containers() == []


def test_process_sandbox_warns_on_every_run(fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    for _ in range(2):
        fake_llm.add_root("FINAL(ok)")
        args = [a if a != "local" else "process" for a in ask_args(fake_llm, str(tmp_path / "in.txt"))]
        proc = run_cli(args)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == b"ok\n"
        warnings = [line for line in proc.stderr.decode().splitlines() if "warning" in line]
        assert len(warnings) == 1 and "weaker isolation" in warnings[0], proc.stderr.decode()


# Forks sleepers until refused: safe to run whatever the cap (at most 100 sleepers, gone with the run).
COUNTED_FORKS = """\
import os, time
n = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print('refused after', n, type(e).__name__)
else:
    print('forked', n)
"""


@pytest.mark.parametrize("mode", ["docker", "local"])
def test_pids_limit_holds_even_for_root(mode, fake_llm, run_cli, tmp_path, request):
    """--pids-limit caps a cell's processes in both sandboxes, also when rlm runs as root (as these
    tests do), for whom the kernel ignores RLIMIT_NPROC: Docker's cgroup, and local's own."""
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("", COUNTED_FORKS), reply("", SURVIVOR), "FINAL(ok)")
    args = ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json", "--pids-limit", "32"])
    if mode == "docker":
        args = [a if a != "local" else "docker" for a in args] + [
            "--image",
            request.getfixturevalue("docker_image"),
        ]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr.decode()
    told = [m for m in fake_llm.root_requests[1]["body"]["messages"] if m["role"] == "user"][-1]["content"]
    refused = re.search(r"refused after (\d+)", told)
    assert refused and int(refused.group(1)) < 32, told[:2000]
    assert json.loads(proc.stdout)["answer"] == "ok"
