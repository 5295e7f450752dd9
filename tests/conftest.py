"""Shared fixtures: the fake model server, the installed `rlm` console script, real data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


@pytest.fixture
def run_rlm(rlm_bin, tmp_path):
    """Run the installed console script: run_rlm(args, input=b"...", env={...}) -> CompletedProcess."""

    def run(args: list[str], input: bytes | None = None, env: dict | None = None, stdin=None, timeout=120):
        full_env = clean_env(tmp_path, **(env or {}))
        kwargs = {"stdin": stdin} if stdin is not None else {"input": input if input is not None else b""}
        return subprocess.run(
            [rlm_bin, *args], capture_output=True, env=full_env, timeout=timeout, cwd=tmp_path, **kwargs
        )

    return run


def ask_args(fake: FakeLLM, *paths: str, question: str = "What is in there?", extra=()) -> list[str]:
    return ["ask", *paths, question, "--model", MODEL, "--api-base", fake.url, "--sandbox", "local", *extra]


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


def our_containers() -> list[str]:
    import docker

    client = docker.from_env(timeout=10)
    return [c.name for c in client.containers.list(all=True, filters={"label": "rlm.sandbox"})]
