"""Shared fixtures: the fake model server, `rlm` in this process or as the installed console
script, real data, and this suite's own sandbox containers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_llm import FakeLLM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# A credential the tests plant in the environment; it must never surface anywhere but the
# Authorization header of requests to the (fake) provider.
SENTINEL_KEY = "sk-test-SENTINEL-7f3a9c1e5b2d4680"
MODEL = "openai/gpt-4o-mini"  # priced in litellm's table, so cost limits can be exercised


@pytest.fixture
def fake_llm():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture(scope="session")
def rlm_bin() -> str:
    """The `rlm` console script installed next to this interpreter (pip install .)."""
    candidate = Path(sys.executable).with_name("rlm")
    path = str(candidate) if candidate.exists() else shutil.which("rlm")
    if not path:
        pytest.fail("the rlm console script is not installed: run `pip install .` first")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child environment with no real credentials or user config: only what tests choose."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI", "ANTHROPIC", "LITELLM"))
    }
    env.update(
        OPENAI_API_KEY=SENTINEL_KEY,
        RLM_CONFIG=str(tmp_path / "no-config.toml"),
        RLM_HOME=str(tmp_path.parent / f"{tmp_path.name}-rlm-home"),  # outside inputs tests build in tmp_path
        NO_COLOR="1",
    )
    env.update(extra)
    return env


# The pids of the `rlm` processes the running test started: their sandbox containers are this
# suite's too (see our_containers). Emptied before each test.
STARTED: list[int] = []


@pytest.fixture(autouse=True)
def _forget_started_processes():
    STARTED.clear()
    yield


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    """A test that sets no RLM_HOME (some fixtures drop every RLM_* variable) keeps its history and
    its cache of model calls in a directory of its own, never in the user's data directory (nor the
    token counter's cache of parsed ranks in the user's cache directory: tokens.py)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


def popen_rlm(rlm_bin: str, args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start the console script as a real process (for signals, pids, memory), as this test's own."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(
        [rlm_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kwargs
    )
    STARTED.append(proc.pid)
    return proc


@pytest.fixture
def run_rlm(rlm_bin, tmp_path):
    """Run the installed console script: run_rlm(args, input=b"...", env={...}) -> CompletedProcess.
    A real process costs seconds (litellm's import): use it where the process is the point."""

    def run(args: list[str], input: bytes | None = None, env: dict | None = None, stdin=None, timeout=120):
        full_env = clean_env(tmp_path, **(env or {}))
        if stdin is None:
            stdin, input = subprocess.PIPE, input if input is not None else b""
        proc = popen_rlm(rlm_bin, args, full_env, stdin=stdin, cwd=tmp_path)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        finally:
            proc.kill()
        return subprocess.CompletedProcess([rlm_bin, *args], proc.returncode, out, err)

    return run


@dataclass
class Ran:
    """What an in-process command did, shaped like the CompletedProcess run_rlm returns."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """run_cli(args, input=b"...", env={...}) -> Ran: `rlm` in this process (Typer's CliRunner),
    with the environment and working directory run_rlm gives the console script. CliRunner sets
    os.environ for the call and restores it after; the sandbox never sees it (it gets a scrubbed
    environment). An exception that escaped the command is appended to stderr, as Python would
    print it."""
    from typer.testing import CliRunner

    from rlmcli.cli.app import app

    monkeypatch.chdir(tmp_path)

    def run(args: list[str], input: bytes | None = None, env: dict | None = None) -> Ran:
        wanted = clean_env(tmp_path, **(env or {}))
        unset = {name: None for name in os.environ if name not in wanted}
        result = CliRunner().invoke(app, args, input=input or b"", env={**unset, **wanted})
        stderr = result.stderr_bytes
        if result.exc_info is not None and not isinstance(result.exc_info[1], SystemExit):
            stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
        return Ran(args, result.exit_code, result.stdout_bytes, stderr)

    return run


# gpt-4o-mini's table price (USD per million tokens): the fake at 127.0.0.1 is not OpenAI's API, so
# without --price its calls are priced as unknown (issue 16, item 4).
MODEL_PRICE = "0.15,0.60"


def ask_args(fake: FakeLLM, *paths: str, question: str = "What is in there?", extra=()) -> list[str]:
    return [
        "ask", *paths, question, "--model", MODEL, "--api-base", fake.url, "--price", MODEL_PRICE,
        "--sandbox", "local", *extra,
    ]  # fmt: skip


TEST_IMAGE = os.environ.get("RLM_TEST_IMAGE", "rlm-sandbox:bookworm")


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The offline sandbox image on a live daemon. Skips with the reason when there is none —
    except where Docker is required (CI, scripts/test.sh after provisioning): there it fails."""
    import docker

    required = os.environ.get("RLM_REQUIRE_DOCKER") == "1"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.images.get(TEST_IMAGE)
    except Exception as exc:
        reason = f"Docker tests need a daemon and the image {TEST_IMAGE} (scripts/provision.sh): {exc}"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    return TEST_IMAGE


def our_containers(*pids: int) -> list[str]:
    """Names of this suite's sandbox containers on this host: those whose owner (label rlm.pid) is
    this process (in-process runs), an `rlm` the running test started (popen_rlm, run_rlm), or one
    of `pids`. Another suite on the same daemon has containers of its own: they are not counted."""
    import docker

    owners = {str(pid) for pid in (os.getpid(), *STARTED, *pids)}
    # Sparse: one list call, no inspect per container (a loaded daemon answers that slowly), and
    # a generous timeout: a fork bomb's container being torn down can hold the daemon for seconds.
    client = docker.from_env(timeout=60)
    names = []
    for container in client.containers.list(all=True, filters={"label": "rlm.sandbox"}, sparse=True):
        labels = container.attrs.get("Labels") or {}
        if labels.get("rlm.pid") in owners and labels.get("rlm.host") == socket.gethostname():
            names.append(container.attrs["Names"][0].lstrip("/"))
    return names


def require_local_pids_cap() -> None:
    """Before a real fork bomb in the local sandbox: as root only a pids cgroup caps it, so fail (not
    bomb the machine) where none can be made."""
    from rlmcli.repl.pids_cgroup import PidsCgroup

    if os.geteuid() != 0:
        return  # RLIMIT_NPROC holds
    cgroup = PidsCgroup.create(8)
    if cgroup is None:
        pytest.fail("running as root with no writable pids cgroup: the local sandbox cannot cap a fork bomb")
    cgroup.remove()
