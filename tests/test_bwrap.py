"""The local sandbox under bubblewrap: what a cell sees, and how rlm chooses a sandbox (auto:
Docker, else bubblewrap, else a clear error; never the plain process unless asked)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import SENTINEL_KEY, ask_args
from fake_llm import reply
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.repl import bwrap as sandbox_bwrap

NO_DOCKER = "unix:///nonexistent/docker.sock"


def with_sandbox(args: list[str], sandbox: str) -> list[str]:
    return [a if a != "local" else sandbox for a in args]


@pytest.fixture
def probe_bwrap_afresh():
    """In-process runs with another bwrap on PATH: what this process found out about the real one
    is forgotten before, and what it finds out about the stand-in after."""
    for cached in (sandbox_bwrap.unusable, sandbox_bwrap.sizes_tmpfs):
        cached.cache_clear()
    yield
    for cached in (sandbox_bwrap.unusable, sandbox_bwrap.sizes_tmpfs):
        cached.cache_clear()


def fake_bwrap(folder: Path, script: str | None) -> dict[str, str]:
    """An environment whose PATH has no real bwrap: none at all, or a stand-in running `script`."""
    folder.mkdir()
    if script is not None:
        (folder / "bwrap").write_text(f"#!/bin/sh\n{script}\n")
        (folder / "bwrap").chmod(0o755)
    return {"PATH": str(folder), "DOCKER_HOST": NO_DOCKER}


def test_a_cell_sees_no_host_files_and_can_write_only_its_tmp(fake_llm, run_cli, tmp_path):
    (tmp_path / "in.txt").write_text("data\n")
    probe = (
        "import json, os\n"
        "writable = []\n"
        "folders = ['/', '/usr', '/etc', '/dev', '/rlm', '/rlm-input', '/root', '/tmp', '/dev/shm']\n"
        "for d in folders + [os.getcwd()]:\n"
        "    try:\n"
        "        open(os.path.join(d, 'probe'), 'w').close()\n"
        "        writable.append(d)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'root': sorted(os.listdir('/')), 'etc': sorted(os.listdir('/etc')),\n"
        "    'tmp_path': os.path.exists(" + repr(str(tmp_path)) + "), 'writable': writable,\n"
        "    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))"
    )
    fake_llm.add_root(reply("", probe), "FINAL(ok)")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["sandbox"] == "local"
    told = [m for m in fake_llm.root_requests[1]["body"]["messages"] if m["role"] == "user"][-1]["content"]
    seen = json.loads(next(line for line in told.splitlines() if line.startswith("{")))
    system = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "etc", "proc", "dev", "tmp"}
    # rlm's own folders, and /root only when Python lives there (pyenv): nothing else of the host.
    assert set(seen["root"]) <= system | {"rlm", "rlm-input", "root"}, seen["root"]
    assert set(seen["etc"]) <= {"ld.so.cache", "localtime"}, seen["etc"]
    assert seen["tmp_path"] is False  # the input's folder on the host is not there
    assert sorted(seen["writable"]) == ["/dev/shm", "/tmp", "/tmp"]  # cwd is /tmp
    assert len(seen["pids"]) <= 3  # bwrap's init, the server (and the cell's process): no host process


def test_auto_without_docker_or_bubblewrap_is_one_clear_error(
    fake_llm, run_cli, tmp_path, probe_bwrap_afresh
):
    (tmp_path / "in.txt").write_text("data\n")
    env = fake_bwrap(tmp_path / "bin", None)
    proc = run_cli(with_sandbox(ask_args(fake_llm, str(tmp_path / "in.txt")), "auto"), env=env)
    assert proc.returncode == 5, proc.stderr.decode()
    assert proc.stdout == b""
    said = proc.stderr.decode()
    assert "no Docker daemon" in said and "bubblewrap" in said and "not installed" in said
    assert "start Docker" in said and "apt-get install bubblewrap" in said and "--sandbox process" in said
    assert "Traceback" not in said
    assert fake_llm.root_requests == []  # nothing ran: no silent fall-back to the plain process


def test_local_when_bubblewrap_cannot_start_names_its_message_and_the_fixes(
    fake_llm, run_cli, tmp_path, probe_bwrap_afresh
):
    (tmp_path / "in.txt").write_text("data\n")
    env = fake_bwrap(tmp_path / "bin", "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1")
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "in.txt")), env=env)
    assert proc.returncode == 5, proc.stderr.decode()
    said = proc.stderr.decode()
    assert "setting up uid map: Permission denied" in said
    assert "user namespaces" in said and "--sandbox docker" in said and "--sandbox process" in said
    assert proc.stdout == b""


def test_process_sandbox_is_used_only_when_asked(fake_llm, run_cli, tmp_path, probe_bwrap_afresh):
    (tmp_path / "in.txt").write_text("data\n")
    fake_llm.add_root("FINAL(ok)")
    env = fake_bwrap(tmp_path / "bin", None)  # no bubblewrap: process still works, when asked
    proc = run_cli(
        with_sandbox(ask_args(fake_llm, str(tmp_path / "in.txt"), extra=["--json"]), "process"), env=env
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["sandbox"] == "process"
    assert "weaker isolation" in proc.stderr.decode()


def test_starting_a_sandbox_makes_the_host_non_dumpable(tmp_path):
    # In a child interpreter: the flag is process-wide and this test process must keep its own.
    code = (
        "import ctypes, sys\n"
        "from pathlib import Path\n"
        "from rlmcli.repl.backends import make_sandbox\n"
        "from rlmcli.settings import Settings\n"
        "prctl = ctypes.CDLL(None).prctl\n"
        "before = prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE\n"
        "make_sandbox(Settings(sandbox='process'), Path(sys.argv[1]), lambda event: None)\n"
        "print(before, prctl(3, 0, 0, 0, 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0"]


# ---------- /tmp's size: only where bwrap can cap it ----------


def before(args: list[str], option: str, value: str) -> list[str]:
    """The two arguments before `option value` (["--size", N] for a sized tmpfs)."""
    at = next(i for i in range(len(args) - 1) if args[i : i + 2] == [option, value])
    return args[at - 2 : at]


def test_command_sizes_tmp_only_where_bwrap_supports_it(monkeypatch):
    monkeypatch.setattr(sandbox_bwrap, "sizes_tmpfs", lambda: True)
    sized = sandbox_bwrap.command(123456, {}, ["-c", "pass"])
    assert before(sized, "--tmpfs", "/tmp") == ["--size", "123456"]
    assert before(sized, "--tmpfs", "/dev/shm") == ["--size", str(sandbox_bwrap.SHM_SIZE)]

    monkeypatch.setattr(sandbox_bwrap, "sizes_tmpfs", lambda: False)  # bubblewrap 0.6 (Ubuntu 22.04)
    unsized = sandbox_bwrap.command(123456, {}, ["-c", "pass"])
    assert "--size" not in unsized and "123456" not in unsized
    assert before(unsized, "--tmpfs", "/tmp") and before(unsized, "--tmpfs", "/dev/shm")
    if shutil.which("bwrap") and sandbox_bwrap.unusable() is None:  # and a real bwrap takes it
        done = subprocess.run(
            sandbox_bwrap.command(0, {}, ["-I", "-S", "-c", "open('/tmp/x', 'w').write('ok')"]),
            env=sandbox_bwrap.ENV, capture_output=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize(
    "help_text,expected", [("--tmpfs DEST\n--size BYTES\n", True), ("--tmpfs DEST\n", False)]
)
def test_size_support_is_read_from_bwraps_help(help_text, expected, monkeypatch, tmp_path):
    fake_bwrap(tmp_path / "bin", f"cat <<'EOF'\nusage: bwrap [OPTIONS...]\n{help_text}EOF")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    sandbox_bwrap.sizes_tmpfs.cache_clear()
    try:
        assert sandbox_bwrap.sizes_tmpfs() is expected
    finally:
        sandbox_bwrap.sizes_tmpfs.cache_clear()


# ---------- a full disk while the sandbox is prepared: exit 2 with the path ----------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def ask_in_process(tmp_path, monkeypatch, fake_llm):
    """invoke(sandbox) -> click Result of `rlm ask in.txt ... --sandbox SANDBOX`, in this process."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    (tmp_path / "in.txt").write_text("data\n")
    env = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "none.toml"),
           "RLM_HOME": str(tmp_path / "home"), "DOCKER_HOST": NO_DOCKER}  # fmt: skip

    def invoke(sandbox: str):  # noqa: ANN202
        args = with_sandbox(ask_args(fake_llm, "in.txt"), sandbox)
        return CliRunner().invoke(app, args, env=env)

    return invoke


def test_full_disk_while_the_local_sandbox_copies_its_server_is_exit_2(ask_in_process, monkeypatch):
    monkeypatch.setattr(sandbox_bwrap.shutil, "copyfile", no_space)
    result = ask_in_process("local")
    assert result.exit_code == 2, result.output
    assert "no space left on device writing" in result.output and "repl_server.py" in result.output


def test_full_disk_for_the_process_sandboxs_directory_is_exit_2(ask_in_process, monkeypatch, fake_llm):
    mkdtemp = tempfile.mkdtemp

    def cell_dir_fails(*args, prefix=None, **kwargs):
        if prefix == "rlm-cell-":
            no_space()
        return mkdtemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", cell_dir_fails)
    result = ask_in_process("process")
    assert result.exit_code == 2, result.output
    assert "no space left on device writing" in result.output
    # The sandbox starts while the first request is out: that one request may have gone; no other did.
    assert "Traceback" not in result.output and len(fake_llm.root_requests) <= 1
