"""Hostile code in cells, against both sandboxes: each is contained, the run goes on and ends
with the right exit status, and no container of ours is left behind."""

from __future__ import annotations

import json

import pytest
from conftest import ask_args, our_containers
from fake_llm import reply

# name -> (cell, what the model must be told afterwards, sandboxes where the case is meaningful)
HOSTILE = {
    "network connect": (
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)",
        "OSError", {"docker"},  # the local sandbox does not cut the network (documented)
    ),
    "dns lookup": ("import socket\nsocket.getaddrinfo('pypi.org', 443)", "gaierror", {"docker"}),
    "read host secrets": ("print(open('/root/.ssh/id_rsa').read())", "Error", {"docker"}),
    "environment secrets": (
        "import os\nprint([k for k in os.environ if 'KEY' in k or 'TOKEN' in k])", "[]", {"docker", "local"},
    ),
    "memory bomb": ("x = bytearray(6 * 1024**3)", "MemoryError", {"docker", "local"}),
    "fork bomb": (
        "import os\nwhile True:\n    os.fork()", "Error", {"docker"},  # root ignores RLIMIT_NPROC locally
    ),
    "infinite loop": ("while True:\n    pass", "TimeoutError", {"docker", "local"}),
    "cpu spin in a thread": (
        "import threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\n"
        "print('spinning')", "spinning", {"docker", "local"},
    ),
    "stdout flood": ("while True:\n    print('y' * 10000)", "output truncated", {"docker", "local"}),
    "fill /tmp": (
        "chunk = b'z' * 2**20\nwith open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(chunk)",
        "No space left", {"docker"},  # the local sandbox writes to the host's disk (documented)
    ),
    "kill the server": (
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "restarted", {"docker", "local"},
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
        for sandbox in ("docker", "local"):
            if sandbox in where:
                yield pytest.param(sandbox, code, expect, id=f"{sandbox}: {name}")


@pytest.mark.parametrize("sandbox,code,expect", list(cases()))
def test_hostile_cell_is_contained(sandbox, code, expect, fake_llm, run_rlm, tmp_path, request):
    image = request.getfixturevalue("docker_image") if sandbox == "docker" else None
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.sub = lambda prompt: "H" * 30_000_000 if prompt == "HUGE" else "pong"
    fake_llm.add_root(reply("", code), reply("", SURVIVOR), "FINAL(contained)")
    args = ask_args(
        fake_llm, str(tmp_path / "in.txt"), extra=["--json", "--cell-timeout", "3", "--memory", "512m"]
    )
    args = [a if a != "local" else sandbox for a in args] + (["--image", image] if image else [])
    proc = run_rlm(args, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["answer"] == "contained"
    seen = [
        [m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"]
        for r in fake_llm.root_requests
    ]
    assert expect in seen[1], seen[1][:2000]
    assert "alive pong 5" in seen[2], seen[2][:2000]
    if sandbox == "docker":
        assert our_containers() == []
