"""The Docker sandbox against a real daemon: isolation, limits, lifecycle, selection."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from conftest import REPO, SENTINEL_KEY, ask_args, clean_env, our_containers
from fake_llm import reply
from test_interrupt import wait_for


def docker_args(fake, image, *paths, extra=()):
    args = ask_args(fake, *paths, extra=extra)
    return [a if a != "local" else "docker" for a in args] + ["--image", image]


def outputs(fake) -> list[str]:
    """What the REPL printed for each turn, as the model saw it."""
    return [
        [m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"]
        for r in fake.root_requests[1:]
    ]


@pytest.fixture(autouse=True)
def no_leftovers(request):
    yield
    if "docker_image" in request.fixturenames:
        assert our_containers() == [], "a sandbox container outlived its run"


def test_answers_with_subcalls_brokered_while_the_container_has_no_network(
    docker_image, fake_llm, run_rlm, shared_data
):
    logs = shared_data / "loghub" / "Zookeeper"
    fake_llm.add_root(
        reply("", "hits = grep('WARN')\nsummary = llm_query(f'{len(hits)} warnings, first: {hits[0].text}')"),
        reply("", "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
                  "    print('NETWORK UP')\nexcept OSError as e:\n    print('network down:', e)"),
        "FINAL_VAR(summary)",
    )  # fmt: skip
    fake_llm.sub = lambda prompt: "sub saw: " + prompt.split(",")[0]
    proc = run_rlm(docker_args(fake_llm, docker_image, str(logs), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    expected = sum("WARN" in line for f in logs.iterdir() for line in f.open(encoding="utf-8"))
    assert result["answer"] == f"sub saw: {expected} warnings"
    assert result["sandbox"] == "docker" and result["subcalls"] == 1
    assert "network down" in outputs(fake_llm)[1]


def test_a_cell_sees_no_network_no_secrets_no_host_files(docker_image, fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    home_marker = tmp_path / "home" / "marker.txt"
    home_marker.parent.mkdir()
    home_marker.write_text("host home\n")
    probe = (
        "import os, socket\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443); print('dns: resolved')\n"
        "except OSError as e:\n    print('dns: failed')\n"
        "try:\n    socket.create_connection(('10.0.0.1', 80), timeout=2); print('connect: ok')\n"
        "except OSError:\n    print('connect: failed')\n"
        f"print('env:', sorted(os.environ))\n"
        f"print('repo:', os.path.exists({str(REPO)!r}), 'home:', os.path.exists({str(home_marker)!r}))\n"
        "print('ssh:', os.path.exists('/root/.ssh'),\n"
        "      'docker.sock:', os.path.exists('/var/run/docker.sock'))\n"
        "print('key:', any('SENTINEL' in v for v in os.environ.values()))"
    )
    fake_llm.add_root(reply("", probe), "FINAL(done)")
    env = {"HOME": str(home_marker.parent), "MY_TOKEN": "x-" + SENTINEL_KEY}
    proc = run_rlm(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt")), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    seen = outputs(fake_llm)[0]
    assert "dns: failed" in seen and "connect: failed" in seen
    assert "repo: False home: False" in seen and "ssh: False docker.sock: False" in seen
    assert "key: False" in seen and "OPENAI" not in seen and "MY_TOKEN" not in seen
    for request in fake_llm.requests:
        assert SENTINEL_KEY.encode() not in request["raw"]


def test_memory_cap_and_cell_timeout_and_the_run_goes_on(docker_image, fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(
        reply("", "kept = 'state'\nbig = bytearray(6 * 1024**3)"),
        reply("", "while True:\n    pass"),
        reply("", "print(kept, len(context))"),
        "FINAL(ok)",
    )
    extra = ["--memory", "512m", "--cell-timeout", "2"]
    proc = run_rlm(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=extra))
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr.decode()
    seen = outputs(fake_llm)
    assert "MemoryError" in seen[0]
    assert "TimeoutError" in seen[1]
    assert "state 5" in seen[2]  # nothing was restarted: the namespace survived both


def test_dead_server_restarted_once_then_exit_5(docker_image, fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(
        reply("Partial: about to crash.", "x = 1\nimport os\nos._exit(1)"),
        reply("", "print('x' in dir(), len(context))"),
        reply("", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        "FINAL(unreachable)",
    )
    proc = run_rlm(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--json"]))
    assert proc.returncode == 5, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["exit_reason"] == "sandbox_error" and result["answer"] == "Partial: about to crash."
    seen = outputs(fake_llm)
    assert "restarted" in seen[0] and "variables" in seen[0] and "lost" in seen[0]
    assert "False 5" in seen[1]
    assert "rlm: error:" in proc.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_leave_no_container(sig, docker_image, fake_llm, rlm_bin, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("Partial: sleeping.", "import time\ntime.sleep(120)"))
    args = docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--cell-timeout", "300"])
    proc = subprocess.Popen(
        [rlm_bin, *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1 and our_containers())
        import time

        time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out == b"Partial: sleeping.\n"


def test_leftover_of_a_killed_run_is_pruned_on_next_start(docker_image, fake_llm, rlm_bin, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("", "import time\ntime.sleep(120)"))
    proc = subprocess.Popen(
        [rlm_bin, *docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"))],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(tmp_path),
    )  # fmt: skip
    wait_for(lambda: len(fake_llm.root_requests) == 1 and our_containers())
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=30)
    assert len(our_containers()) == 1
    fake_llm.add_root("FINAL(next run)")
    proc = run_rlm(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt")))
    assert proc.returncode == 0 and our_containers() == []


def test_sandbox_prune_command(docker_image, run_rlm):
    proc = run_rlm(["sandbox", "prune"])
    assert proc.returncode == 0 and b"removed 0" in proc.stderr


def test_sandbox_check_reports_the_limits(docker_image, run_rlm):
    proc = run_rlm(["sandbox", "check", "--image", docker_image, "--memory", "256m", "--pids-limit", "64"])
    assert proc.returncode == 0, proc.stderr.decode()
    report = proc.stdout.decode()
    assert "network: unreachable" in report and "uid=65534" in report
    assert "memory_limit: 268435456" in report and "pids_limit: 64" in report
    assert "root_fs_writable: False" in report


# ---------- selection ----------


def test_auto_picks_docker_when_a_daemon_answers(docker_image, fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root("FINAL(ok)")
    args = [
        a if a != "local" else "auto" for a in ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"])
    ]
    proc = run_rlm(args + ["--image", docker_image])
    assert json.loads(proc.stdout)["sandbox"] == "docker"
    assert b"warning" not in proc.stderr


def test_auto_falls_back_to_local_with_a_warning(fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root("FINAL(ok)")
    args = [
        a if a != "local" else "auto" for a in ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"])
    ]
    proc = run_rlm(args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["sandbox"] == "local"
    warnings = [line for line in proc.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "local" in warnings[0]


def test_docker_without_a_daemon_exits_5(fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    args = [a if a != "local" else "docker" for a in ask_args(fake_llm, str(tmp_path / "in.txt"))]
    proc = run_rlm(args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert proc.returncode == 5
    assert b"no Docker daemon" in proc.stderr and b"Traceback" not in proc.stderr


def test_missing_image_without_a_registry_exits_5_with_the_recipe(docker_image, fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    args = docker_args(fake_llm, "rlm-test/does-not-exist:never", str(tmp_path / "in.txt"))
    proc = run_rlm(args)
    assert proc.returncode == 5, proc.stderr.decode()
    assert b"rlm sandbox build" in proc.stderr


@pytest.mark.parametrize(
    "mode,group", [(0o644, 0), (0o640, 4242), (0o600, 0)], ids=["world", "group", "owner"]
)
def test_a_named_file_is_used_in_place_whatever_its_permissions(
    mode, group, docker_image, fake_llm, run_rlm, tmp_path
):
    data = "héllo wörld\r\n".encode() * 1000 + b"bad \xff\xfe bytes\n"
    source = tmp_path / "input.log"
    source.write_bytes(data)
    os.chown(source, os.getuid(), group)
    source.chmod(mode)
    probe = "print(len(context), ascii(context[-13:]), grep('bad')[0].line)"
    fake_llm.add_root(reply("", probe), "FINAL(ok)")
    proc = run_rlm(docker_args(fake_llm, docker_image, str(source), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    chars = json.loads(proc.stdout)["context"]["chars"]
    assert chars == len(data.decode("utf-8", "replace"))
    assert f"{chars} 'bad \\ufffd\\ufffd bytes\\n' 1001\n" in outputs(fake_llm)[0]
