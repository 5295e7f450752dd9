"""The Docker sandbox against a real daemon: isolation, limits, lifecycle, selection.

`rlm` runs in this process (run_cli) but where its process is the point: signals, a SIGKILL that
leaves a container behind, its memory. Containers are counted by owner (our_containers): another
suite on the same daemon has its own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, SENTINEL_KEY, ask_args, clean_env, our_containers, popen_rlm
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
    docker_image, fake_llm, run_cli, shared_data
):
    logs = shared_data / "loghub" / "Zookeeper"
    fake_llm.add_root(
        reply("", "hits = grep('WARN')\nsummary = llm_query(f'{len(hits)} warnings, first: {hits[0].text}')"),
        reply("", "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
                  "    print('NETWORK UP')\nexcept OSError as e:\n    print('network down:', e)"),
        "FINAL_VAR(summary)",
    )  # fmt: skip
    fake_llm.sub = lambda prompt: "sub saw: " + prompt.split(",")[0]
    proc = run_cli(docker_args(fake_llm, docker_image, str(logs), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    expected = sum("WARN" in line for f in logs.iterdir() for line in f.open(encoding="utf-8"))
    assert result["answer"] == f"sub saw: {expected} warnings"
    assert result["sandbox"] == "docker" and result["subcalls"] == 1
    assert "network down" in outputs(fake_llm)[1]


def test_a_cell_sees_no_network_no_secrets_no_host_files(docker_image, fake_llm, run_cli, tmp_path):
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
    proc = run_cli(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt")), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    seen = outputs(fake_llm)[0]
    assert "dns: failed" in seen and "connect: failed" in seen
    assert "repo: False home: False" in seen and "ssh: False docker.sock: False" in seen
    assert "key: False" in seen and "OPENAI" not in seen and "MY_TOKEN" not in seen
    for request in fake_llm.requests:
        assert SENTINEL_KEY.encode() not in request["raw"]


def test_memory_cap_and_cell_timeout_and_the_run_goes_on(docker_image, fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(
        reply("", "kept = 'state'\nbig = bytearray(6 * 1024**3)"),
        reply("", "while True:\n    pass"),
        reply("", "print(kept, len(context))"),
        "FINAL(ok)",
    )
    extra = ["--memory", "512m", "--cell-timeout", "2"]
    proc = run_cli(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=extra))
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr.decode()
    seen = outputs(fake_llm)
    assert "MemoryError" in seen[0]
    assert "TimeoutError" in seen[1]
    assert "state 5" in seen[2]  # nothing was restarted: the namespace survived both


def test_dead_server_restarted_once_then_exit_5(docker_image, fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(
        reply("Partial: about to crash.", "x = 1\nimport os\nos._exit(1)"),
        reply("", "print('x' in dir(), len(context))"),
        reply("", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        "FINAL(unreachable)",
    )
    proc = run_cli(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--json"]))
    assert proc.returncode == 5, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["exit_reason"] == "sandbox_error" and result["partial_answer"] == "Partial: about to crash."
    seen = outputs(fake_llm)
    assert "restarted" in seen[0] and "variables" in seen[0] and "lost" in seen[0]
    assert "False 5" in seen[1]
    assert "rlm: error:" in proc.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_leave_no_container(sig, docker_image, fake_llm, rlm_bin, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("Partial: sleeping.", "import time\ntime.sleep(120)"))
    args = docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--cell-timeout", "300"])
    proc = popen_rlm(rlm_bin, args, clean_env(tmp_path))
    try:
        wait_for(lambda: len(fake_llm.root_requests) == 1 and our_containers(proc.pid))
        time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert out == b"Partial: sleeping.\n"
    assert our_containers(proc.pid) == []


def test_leftover_of_a_killed_run_is_pruned_on_next_start(docker_image, fake_llm, rlm_bin, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(reply("", "import time\ntime.sleep(120)"))
    proc = popen_rlm(
        rlm_bin, docker_args(fake_llm, docker_image, str(tmp_path / "in.txt")), clean_env(tmp_path)
    )
    wait_for(lambda: len(fake_llm.root_requests) == 1 and our_containers(proc.pid))
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=30)
    assert len(our_containers(proc.pid)) == 1
    fake_llm.add_root("FINAL(next run)")
    # --no-cache: the same question would replay the killed run's cached first reply (its 120 s sleep)
    again = run_cli(docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--no-cache"]))
    assert (again.returncode, again.stdout) == (0, b"next run\n"), again.stderr.decode()
    assert our_containers(proc.pid) == []


def test_sandbox_prune_command_removes_the_container_of_a_dead_run(docker_image, run_cli):
    import docker

    client = docker.from_env(timeout=10)
    gone = subprocess.Popen(["true"])  # a pid whose process has ended: the owner of a leftover
    gone.wait()
    name = f"rlm-test-leftover-{uuid.uuid4().hex[:12]}"
    labels = {"rlm.sandbox": "1", "rlm.pid": str(gone.pid), "rlm.host": socket.gethostname(), "rlm.run": name}
    client.containers.create(docker_image, ["true"], name=name, labels=labels)
    try:
        proc = run_cli(["sandbox", "prune"])
        assert proc.returncode == 0, proc.stderr.decode()
        assert name in proc.stdout.decode().split()  # other suites' dead runs may be removed too
        assert re.search(rb"removed [1-9]\d* container", proc.stderr), proc.stderr
        assert client.containers.list(all=True, filters={"name": name}) == []
    finally:
        for container in client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)


def test_sandbox_check_reports_the_limits(docker_image, run_cli):
    proc = run_cli(["sandbox", "check", "--image", docker_image, "--memory", "256m", "--pids-limit", "64"])
    assert proc.returncode == 0, proc.stderr.decode()
    report = proc.stdout.decode()
    assert "network: unreachable" in report and "uid=65534" in report
    assert "memory_limit: 268435456" in report and "pids_limit: 64" in report
    assert "root_fs_writable: False" in report


# ---------- selection ----------


def test_auto_picks_docker_when_a_daemon_answers(docker_image, fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root("FINAL(ok)")
    args = [
        a if a != "local" else "auto" for a in ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"])
    ]
    proc = run_cli(args + ["--image", docker_image])
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["sandbox"] == "docker"
    assert b"warning" not in proc.stderr


def test_auto_falls_back_to_local_with_a_warning(fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root("FINAL(ok)")
    args = [
        a if a != "local" else "auto" for a in ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"])
    ]
    proc = run_cli(args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["sandbox"] == "local"
    warnings = [line for line in proc.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "local" in warnings[0]


def test_docker_without_a_daemon_exits_5(fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    args = [a if a != "local" else "docker" for a in ask_args(fake_llm, str(tmp_path / "in.txt"))]
    proc = run_cli(args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert proc.returncode == 5
    assert b"no Docker daemon" in proc.stderr and b"Traceback" not in proc.stderr


def test_missing_image_without_a_registry_exits_5_with_the_recipe(docker_image, fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    args = docker_args(fake_llm, "rlm-test/does-not-exist:never", str(tmp_path / "in.txt"))
    proc = run_cli(args)
    assert proc.returncode == 5, proc.stderr.decode()
    assert b"rlm sandbox build" in proc.stderr


@pytest.mark.parametrize(
    "mode,group", [(0o644, 0), (0o640, 4242), (0o600, 0)], ids=["world", "group", "owner"]
)
def test_a_named_file_is_used_in_place_whatever_its_permissions(
    mode, group, docker_image, fake_llm, run_cli, tmp_path
):
    data = "héllo wörld\r\n".encode() * 1000 + b"bad \xff\xfe bytes\n"
    source = tmp_path / "input.log"
    source.write_bytes(data)
    os.chown(source, os.getuid(), group)
    source.chmod(mode)
    probe = "print(len(context), ascii(context[-13:]), grep('bad')[0].line)"
    fake_llm.add_root(reply("", probe), "FINAL(ok)")
    proc = run_cli(docker_args(fake_llm, docker_image, str(source), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    chars = json.loads(proc.stdout)["context"]["chars"]
    assert chars == len(data.decode("utf-8", "replace"))
    assert f"{chars} 'bad \\ufffd\\ufffd bytes\\n' 1001\n" in outputs(fake_llm)[0]


# ---------- a cell floods the protocol channel ----------

FLOOD = (
    "import gc, threading, time\n"
    "channel = next(o for o in gc.get_objects() if type(o).__name__ == 'Channel')\n"
    "def flood():\n"
    "    time.sleep(1)  # after this cell's result: the host is waiting for the model, not reading\n"
    "    for _ in range(300):\n"
    "        channel.fout.write(b'\\0' * 2**20)\n"
    "threading.Thread(target=flood, daemon=True).start()\n"
    "print('flooding')"
)


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def test_a_cell_flooding_the_channel_between_cells_cannot_fill_the_hosts_memory(
    docker_image, fake_llm, rlm_bin, tmp_path
):
    (tmp_path / "in.txt").write_text("data\n")
    seen: dict[str, int] = {}
    rlm: list[subprocess.Popen] = []

    def first(body: dict) -> str:
        seen["before"] = rss(rlm[0].pid)
        return reply("", FLOOD)

    def between_cells(body: dict) -> str:
        # The model "thinks" while a cell's thread writes 300 MB of junk on the channel: the host
        # must not buffer it. Up to 8 s, or until the host has clearly taken it all in.
        seen["peak"] = seen["before"]
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and seen["peak"] - seen["before"] < 200 * 2**20:
            seen["peak"] = max(seen["peak"], rss(rlm[0].pid))
            time.sleep(0.05)
        return reply("", "print('next cell')")

    fake_llm.add_root(first, between_cells, reply("", "print('alive', len(context))"), "FINAL(survived)")
    args = docker_args(fake_llm, docker_image, str(tmp_path / "in.txt"), extra=["--json"])
    rlm.append(popen_rlm(rlm_bin, args, clean_env(tmp_path), cwd=tmp_path))  # its own memory is measured
    try:
        out, err = rlm[0].communicate(timeout=120)
    finally:
        rlm[0].kill()
    grown = seen["peak"] - seen["before"]
    print(f"host memory grew by {grown / 2**20:.1f} MB while a cell wrote 300 MB on the channel")
    assert grown < 100 * 2**20
    assert rlm[0].returncode == 0, err.decode()
    assert json.loads(out)["answer"] == "survived"
    seen_by_model = outputs(fake_llm)
    assert "flooding" in seen_by_model[0]
    assert "broke the protocol" in seen_by_model[1] and "restarted" in seen_by_model[1]
    assert "alive 5" in seen_by_model[2]


def test_a_legit_frame_far_larger_than_the_read_buffer_still_arrives(docker_image, tmp_path):
    # The flow control above must not stall a frame bigger than what it lets the host buffer.
    from rlmcli.repl import docker as sandbox_docker
    from rlmcli.repl.confine import SandboxLimits
    from rlmcli.repl.protocol import Repl

    share = tmp_path / "share"
    share.mkdir()
    (share / "context.txt").write_text("hello\n")
    (share / "index.json").write_text(json.dumps({"files": {"a.txt": [0, 6]}}))
    sandbox = sandbox_docker.DockerSandbox(
        sandbox_docker.require(), SandboxLimits(memory=512 * 2**20),
        sandbox_docker.DockerOptions(docker_image), share,
    )  # fmt: skip
    sizes: list[int] = []

    async def subcalls(prompts: list[str], model: str | None) -> list[str]:
        sizes.extend(len(p) for p in prompts)
        return ["ok"] * len(prompts)

    async def run() -> tuple[str, str | None]:
        repl = Repl(sandbox, share / "context.txt", share / "index.json")
        await repl.start()
        try:
            cell = "print(llm_query_batched(['x' * 7_000_000] * 5))"  # one frame of 35 MB
            result = await asyncio.wait_for(repl.run_cell(cell, on_subcalls=subcalls), 60)
        finally:
            await repl.close()
        return result.output, result.error

    assert asyncio.run(run()) == ("['ok', 'ok', 'ok', 'ok', 'ok']\n", None)
    assert sizes == [7_000_000] * 5


# ---------- a signal while the container is being made ----------


def test_a_cancel_while_the_container_is_made_leaves_no_container(docker_image, tmp_path):
    import threading
    import uuid

    from rlmcli.repl import docker as sandbox_docker
    from rlmcli.repl.confine import SandboxLimits

    run = f"rlm-run-test-{uuid.uuid4().hex}"  # the label rlm.run of this test's container alone
    share = tmp_path / run / "share"
    share.mkdir(parents=True)
    client = sandbox_docker.require()
    sandbox = sandbox_docker.DockerSandbox(
        client, SandboxLimits(memory=256 * 2**20), sandbox_docker.DockerOptions(docker_image), share
    )
    made = threading.Event()
    create = sandbox._create

    def slow_create():  # a daemon that takes its time: the signal lands mid-start
        container = create()
        made.set()
        time.sleep(1)
        return container

    sandbox._create = slow_create

    def ours() -> list:
        return client.containers.list(all=True, filters={"label": f"{sandbox_docker.LABEL_RUN}={run}"})

    async def cancel_mid_start() -> None:
        task = asyncio.create_task(sandbox.start())
        while not made.is_set():
            await asyncio.sleep(0.01)
        assert len(ours()) == 1  # the container exists, and start() has not returned it yet
        task.cancel()
        await asyncio.sleep(0.1)
        task.cancel()  # a second signal (Ctrl-C twice) must not lose it either
        with pytest.raises(asyncio.CancelledError):
            await task
        await sandbox.stop()  # what the run's clean-up does next

    try:
        asyncio.run(cancel_mid_start())
        assert ours() == []
    finally:
        for container in ours():
            container.remove(force=True)


# ---------- a full disk while the container's files are prepared ----------


def test_full_disk_while_copying_an_unreadable_input_is_an_input_error(tmp_path, monkeypatch):
    import errno

    from rlmcli.errors import ExitStatus, InputError
    from rlmcli.repl import docker as sandbox_docker
    from rlmcli.repl.confine import SandboxLimits

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    share = tmp_path / "share"
    share.mkdir()
    sandbox = sandbox_docker.DockerSandbox(object(), SandboxLimits(), sandbox_docker.DockerOptions(), share)
    source = tmp_path / "private.log"  # readable by its owner only: copied for the container's user
    source.write_text("secret\n")
    source.chmod(0o600)

    def no_space(src, dst, **kwargs):
        Path(dst).write_text("half")  # a partial copy, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sandbox_docker.shutil, "copyfile", no_space)
    with pytest.raises(InputError) as raised:
        sandbox.add_input(source)
    assert raised.value.exit_status == ExitStatus.USAGE  # exit 2, not "this is a bug"
    assert "no space left on device writing" in str(raised.value) and "context-copy.txt" in str(raised.value)
    assert not (share / "context-copy.txt").exists()
    with pytest.raises(InputError):  # and the same when the server file itself is copied in
        sandbox_docker.DockerSandbox(object(), SandboxLimits(), sandbox_docker.DockerOptions(), share)
