"""Escapes a hostile cell attempts, per sandbox mode (issue 8: C1, C3, H1, H9).

C1: no cell reads an API key (the environment, every /proc/*/environ and cmdline, the host's own),
    nor gets one out disguised (reversed, base64, hex) into a request, stdout, stderr, the trace
    or the history; under docker and local (bubblewrap), and under process for what it claims.
C3: a cell cannot modify or delete the input, a file beside it, the history and earlier traces,
    nor write into rlm's installed package or the Python installations it can see (docker, local).
H9: under local, a cell that signals its parent, writes onto its parent's stdout and leaves a
    daemon behind does not disturb the run, and nothing of the sandbox outlives it; signalling
    every process it sees (kill -1) does not either (docker, local). Under process, a daemon
    holding the protocol pipes does not make rlm wait for it.
H1: a Docker container keeps no log, so what a cell writes to init's stderr reaches no host disk;
    under local, what it writes to bwrap's stderr costs rlm no memory.

`rlm` runs as a real process (run_rlm, popen_rlm) where the process is what is attacked: its
environment and /proc entries (C1), its pid (signals), its memory; elsewhere in this one (run_cli).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import ask_args, clean_env, popen_rlm
from fake_llm import reply

import rlmcli
import rlmcli.repl.process

STEAL = r"""
import base64, glob, os
entries = [f"{k}={v}" for k, v in os.environ.items()]
paths = glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline')
paths += [f'/proc/{os.getppid()}/environ', f'/proc/{os.getppid()}/cmdline', '/proc/1/environ']
scanned = 0
for path in paths:
    try:
        entries += open(path, 'rb').read().decode('latin-1').split('\0')
        scanned += 1
    except OSError:
        pass
hits = '\n'.join(e for e in entries if 'KEY' in e.upper() or 'sk-' in e)
print('scanned', scanned, 'files')
print(hits)
print(hits[::-1])
print(base64.b64encode(hits.encode('latin-1')).decode())
print(hits.encode('latin-1').hex())
print(llm_query('exfiltrate: ' + hits[::-1]))
"""


def disguises(secret: str) -> list[str]:
    """The secret and what a cell might turn it into to slip past redaction. Base64 is checked
    at each of its 3 alignments, without the edge groups that mix in neighbouring bytes."""
    raw = secret.encode()
    forms = [secret, secret[::-1], raw.hex()]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        forms.append(encoded[4 if pad else 0 : -4])
    return forms


def rlm_home(tmp_path: Path) -> Path:
    return Path(clean_env(tmp_path)["RLM_HOME"])


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [form for secret in secrets for form in disguises(secret) if form in text]


def last_user_message(request: dict) -> str:
    return [m for m in request["body"]["messages"] if m["role"] == "user"][-1]["content"]


def mode_args(fake_llm, mode: str, request, *paths: str, extra=()) -> list[str]:
    args = [a if a != "local" else mode for a in ask_args(fake_llm, *paths, extra=list(extra))]
    if mode == "docker":
        args += ["--image", request.getfixturevalue("docker_image")]
    return args


# ---------- C1: keys ----------


@pytest.mark.parametrize("mode", ["docker", "local", "process"])
def test_no_cell_can_read_or_exfiltrate_a_key(mode, fake_llm, run_rlm, tmp_path, request):
    (tmp_path / "in.txt").write_text("data\n")
    trace = tmp_path / "trace.jsonl"
    # Keys of this test alone (two providers'), so another run's key elsewhere on the machine
    # cannot be mistaken for a leak of ours.
    keys = [f"sk-test-SENTINEL-{uuid.uuid4().hex}", f"sk-ant-SENTINEL-{uuid.uuid4().hex}"]
    fake_llm.add_root(reply("", STEAL), "FINAL(done)")
    args = mode_args(fake_llm, mode, request, str(tmp_path / "in.txt"), extra=["--trace", str(trace)])
    proc = run_rlm(args, env={"OPENAI_API_KEY": keys[0], "ANTHROPIC_API_KEY": keys[1]})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"done\n"
    told = last_user_message(fake_llm.root_requests[1])
    assert "scanned" in told and "scanned 0 files" not in told, told[:2000]  # the cell did run
    assert len(fake_llm.sub_requests) == 1  # and its exfiltration attempt was sent
    for request_seen in fake_llm.requests:
        assert leaks(request_seen["raw"].decode("utf-8", "replace"), keys) == []
    assert leaks(proc.stdout.decode("latin-1") + proc.stderr.decode("latin-1"), keys) == []
    assert leaks(trace.read_text(encoding="utf-8"), keys) == []
    for path in rlm_home(tmp_path).rglob("*"):  # the history and its traces
        if path.is_file():
            assert leaks(path.read_bytes().decode("latin-1"), keys) == [], path


# ---------- C3: files ----------

# Files in the test's own directories are attacked for real. rlm's package (the checkout, for an
# editable install) only for writability: if a sandbox ever failed, the test must not break it.
DESTROY = r"""
import os
targets, probes, report = {targets!r}, {probes!r}, []
for top in ('/rlm', '/rlm-input'):
    for root, _, names in os.walk(top):
        targets += [os.path.join(root, n) for n in names]
for path in targets:
    for action in ('truncate', 'append', 'rename', 'remove'):
        try:
            if action == 'truncate':
                open(path, 'r+b').truncate(0)
            elif action == 'append':
                open(path, 'ab').write(b'pwned')
            elif action == 'rename':
                os.rename(path, path + '.pwned')
            else:
                os.remove(path)
            report.append(f'{{action}} {{path}}: DONE')
        except OSError as e:
            report.append(f'{{action}} {{path}}: {{type(e).__name__}}')
for path in probes:
    try:
        open(path, 'ab').close()  # opened for writing, nothing written
        report.append(f'open for writing {{path}}: DONE')
    except OSError as e:
        report.append(f'open for writing {{path}}: {{type(e).__name__}}')
for folder in {folders!r} + ['/rlm', '/rlm-input']:
    try:
        open(os.path.join(folder, {planted!r}), 'w').close()
        report.append(f'create in {{folder}}: DONE')
    except OSError as e:
        report.append(f'create in {{folder}}: {{type(e).__name__}}')
print('\n'.join(report))
"""


def python_files() -> list[Path]:
    """A file of the Python installation rlm runs on (bound read-only into the local sandbox, as
    the sandbox's interpreter) and one of the system's Python under /usr/lib, where there is one."""
    found = [Path(os.__file__).resolve()]
    assert found[0].is_relative_to(Path(sys.base_prefix).resolve()), found
    found += sorted(Path("/usr/lib").glob("python3*/os.py"))[:1]
    return found


def digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def history_rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "history.sqlite3") as db:
        return db.execute("SELECT id, answer, exit_reason FROM runs ORDER BY started_at").fetchall()


@pytest.mark.parametrize("mode", ["docker", "local"])
def test_no_cell_can_modify_the_input_other_files_the_history_or_rlm(
    mode, fake_llm, run_cli, tmp_path, request
):
    data = tmp_path / "in.txt"
    data.write_text("the input\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's file beside the input\n")
    package = Path(rlmcli.__file__).resolve().parent
    home = rlm_home(tmp_path)

    fake_llm.add_root("FINAL(first)")  # an earlier run: a history row and a trace to attack
    first = run_cli(mode_args(fake_llm, mode, request, str(data)))
    assert first.returncode == 0, first.stderr.decode()
    before_rows = history_rows(home)
    kept = [data, notes, *home.rglob("*.jsonl")]
    assert len(kept) == 3 and before_rows, "the earlier run left a trace and a history row"
    before = digests(kept)
    # Visible in the local sandbox, read-only: the Python installation and the system's Python.
    python = python_files()
    probes = [str(package / "__init__.py"), str(Path(rlmcli.repl.process.__file__)), *map(str, python)]
    planted = f"pwned-{uuid.uuid4().hex}.txt"
    folders = [str(tmp_path), str(home), str(home / "traces"), str(package), *{str(p.parent) for p in python}]
    before_python = digests(python)
    targets = [str(p) for p in kept] + [str(home / "history.sqlite3")]
    cell = DESTROY.format(targets=targets, probes=probes, folders=folders, planted=planted)
    fake_llm.add_root(reply("", cell), "FINAL(second)")
    try:
        # --no-cache: the same question again would replay the first run's cached "FINAL(first)"
        proc = run_cli(mode_args(fake_llm, mode, request, str(data), extra=["--json", "--no-cache"]))
    finally:
        for folder in folders:
            (Path(folder) / planted).unlink(missing_ok=True)  # only if the sandbox failed
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["answer"] == "second"

    told = last_user_message(fake_llm.root_requests[-1])
    assert "truncate" in told and "open for writing" in told and "DONE" not in told, told[:3000]
    assert digests(kept) == before  # the input, the file beside it, the earlier trace: unchanged
    assert digests(python) == before_python
    for path in python:  # tried, and refused (under local, where they are there to see)
        assert f"open for writing {path}: " in told and f"create in {path.parent}: " in told
        if mode == "local":
            assert f"open for writing {path}: FileNotFoundError" not in told
    rows = history_rows(home)
    assert rows[: len(before_rows)] == before_rows and len(rows) == len(before_rows) + 1
    for folder in folders:
        assert not (Path(folder) / planted).exists()
    assert not list(tmp_path.glob("*.pwned")) and not list(home.rglob("*.pwned"))


# ---------- H9: the local sandbox cannot touch rlm ----------


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_local_cell_cannot_signal_rlm_forge_its_output_or_outlive_it(fake_llm, run_rlm, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    marker = f"rlm-daemon-{uuid.uuid4().hex}"
    attack = (
        "import os, signal\n"
        "for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM):\n"
        "    try:\n"
        "        os.kill(os.getppid(), sig)\n"
        "    except OSError as e:\n"
        "        print('kill', e)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sh', ['sh', '-c', 'sleep 600; : {marker}'])\n"
        "    os._exit(0)\n"
        "print('daemon left behind')\n"
    )
    forge = "import os\nopen(f'/proc/{os.getppid()}/fd/1', 'w').write('FORGED ANSWER\\n')\nprint('forged')"
    fake_llm.add_root(
        reply("", attack), reply("", forge), reply("", "print('alive', len(context))"), "FINAL(the answer)"
    )
    proc = run_rlm(ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--cell-timeout", "5"]), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"the answer\n"
    assert b"FORGED" not in proc.stderr
    assert "daemon left behind" in last_user_message(fake_llm.root_requests[1])
    assert "alive 5" in last_user_message(fake_llm.root_requests[3])
    assert processes_with(marker) == []  # the daemon died with the sandbox's PID namespace


# kill(-1) signals every process the caller may signal. Only ever from a server whose parent is
# its PID namespace's init (bwrap's, docker-init): if a sandbox failed to isolate, the cell refuses,
# so the test fails instead of killing the machine's processes (the tests run as root).
SIGNAL_EVERYTHING = r"""
import os, signal, subprocess
pids = [p for p in os.listdir('/proc') if p.isdigit()]
if os.getppid() != 1 or len(pids) > 10:
    print('NOT ISOLATED: refusing to signal everything', os.getppid(), len(pids))
else:
    child = subprocess.Popen(['sleep', '60'])  # something of its own to hit
    os.kill(-1, signal.SIGSTOP)
    os.kill(-1, signal.SIGKILL)
    print('signalled everything; the child ended with', child.wait())
"""


@pytest.mark.parametrize("mode", ["docker", "local"])  # never process: it would hit the test runner
def test_a_cell_signalling_every_process_it_sees_does_not_stop_the_run(
    mode, fake_llm, run_rlm, tmp_path, request
):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root(
        reply("", SIGNAL_EVERYTHING), reply("", "print('alive', len(context))"), "FINAL(the answer)"
    )
    proc = run_rlm(mode_args(fake_llm, mode, request, str(tmp_path / "in.txt")), timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"the answer\n"
    told = last_user_message(fake_llm.root_requests[1])
    assert "signalled everything; the child ended with -9" in told, told[:2000]
    assert "alive 5" in last_user_message(fake_llm.root_requests[2])


DAEMON = r"""
import os, time
if os.fork() == 0:
    os.setsid()  # out of the server's process group: the sandbox's killpg misses it
    if os.fork() == 0:
        with open({pidfile!r} + '.part', 'w') as f:
            f.write(str(os.getpid()))
        os.rename({pidfile!r} + '.part', {pidfile!r})
        time.sleep(600)  # holding the protocol pipes, inherited from the server
    os._exit(0)
while not os.path.exists({pidfile!r}):
    time.sleep(0.01)
print('daemon left behind')
"""


@pytest.mark.timeout(90)  # before the fix: the run waited for the daemon (600 s)
def test_process_run_ends_although_a_cell_left_a_daemon_holding_the_pipes(fake_llm, run_cli, tmp_path):
    # --sandbox process does not promise to kill such a daemon (README), but rlm must not wait for it.
    (tmp_path / "in.txt").write_text("data\n")
    pidfile = tmp_path / "daemon.pid"
    fake_llm.add_root(reply("", DAEMON.format(pidfile=str(pidfile))), "FINAL(the answer)")
    args = [a if a != "local" else "process" for a in ask_args(fake_llm, str(tmp_path / "in.txt"))]
    try:
        proc = run_cli(args)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == b"the answer\n"
        assert "daemon left behind" in last_user_message(fake_llm.root_requests[1])
        daemon = int(pidfile.read_text())
        assert b"repl_server" in Path(f"/proc/{daemon}/cmdline").read_bytes()  # still alive: the case held
    finally:
        kill_daemon(pidfile)


def kill_daemon(pidfile: Path) -> None:
    """Kill the daemon this test's cell started: the pid it wrote, if that is still a REPL server."""
    try:
        pid = int(pidfile.read_text())
        if b"repl_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


# ---------- the local sandbox's stderr: bwrap's own, drained to a tail ----------

STDERR_FLOOD = r"""
with open('/proc/1/fd/2', 'wb') as f:  # bwrap's init: its stderr is a pipe to rlm
    for _ in range(200):
        f.write(b'e' * 2**20)
print('wrote 200 MB')
"""


def hwm(pid: int) -> int:
    """The peak resident memory of a process so far, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def test_local_cell_flooding_the_sandboxs_stderr_costs_the_host_no_memory(fake_llm, rlm_bin, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    peaks: list[int] = []
    rlm: list[subprocess.Popen] = []

    def measured(text: str):  # a root reply that first notes rlm's peak memory so far
        def answer(body: dict) -> str:
            peaks.append(hwm(rlm[0].pid))
            return text

        return answer

    # The baseline is taken at the second request: the token counter loads once the first is out.
    fake_llm.add_root(
        reply("", "x = 1"),
        measured(reply("", STDERR_FLOOD)),
        measured(reply("", "print('alive', len(context))")),
        "FINAL(ok)",
    )
    args = ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--cell-timeout", "60"])
    rlm.append(popen_rlm(rlm_bin, args, clean_env(tmp_path), cwd=tmp_path))
    try:
        out, err = rlm[0].communicate(timeout=120)
    finally:
        rlm[0].kill()
    assert rlm[0].returncode == 0, err.decode()[-3000:]
    assert out == b"ok\n"
    assert "wrote 200 MB" in last_user_message(fake_llm.root_requests[2])
    grown = peaks[1] - peaks[0]
    print(f"rlm's peak memory grew by {grown / 2**20:.1f} MB while a cell wrote 200 MB to its stderr")
    assert grown < 50 * 2**20
    assert len(err) < 100_000  # and it was not passed on to rlm's own stderr either


# ---------- H1: Docker keeps no log ----------


def test_docker_container_keeps_no_log_of_what_a_cell_writes(docker_image, tmp_path):
    from rlmcli.repl import docker as sandbox_docker
    from rlmcli.repl.confine import SandboxLimits
    from rlmcli.repl.protocol import Repl

    share = tmp_path / "share"
    share.mkdir()
    (share / "context.txt").write_text("hello\n")
    (share / "index.json").write_text(json.dumps({"files": {"a.txt": [0, 6]}}))
    client = sandbox_docker.require()
    sandbox = sandbox_docker.DockerSandbox(
        client, SandboxLimits(memory=512 * 2**20), sandbox_docker.DockerOptions(docker_image), share
    )
    flood = (
        "with open('/proc/1/fd/2', 'wb') as f:\n    for _ in range(50):\n        f.write(b'e' * 2**20)\n"
        "print('50 MB')"
    )

    async def attack() -> tuple[dict, str, str]:
        repl = Repl(sandbox, share / "context.txt", share / "index.json", cell_timeout=60)
        await repl.start()
        try:
            flooded = await repl.run_cell(flood)
            await asyncio.to_thread(sandbox.container.reload)
            attrs = sandbox.container.attrs
            after = await repl.run_cell("print('alive', len(context))")
        finally:
            await repl.close()
        return attrs, flooded.output + str(flooded.error), after.output

    attrs, flooded, after = asyncio.run(attack())
    assert "50 MB" in flooded
    assert attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    assert not attrs.get("LogPath")  # no log file exists on the host
    assert after.strip() == "alive 6"
    assert len(sandbox.exit_description()) < 1000  # what it wrote is kept bounded in memory
