"""A Docker daemon that answers but cannot have the image (no registry, no such image): `--sandbox
auto` answers with the local sandbox and a warning naming the one command that fixes it;
`--sandbox docker` exits 5; and the image `rlm sandbox build` makes stands in for the default one.

The image name below exists nowhere: with no registry the daemon's pull fails at its DNS lookup;
with one it fails as an unknown repository. Either way the pull is refused, as on a first run
without a registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ask_args, our_containers
from fake_llm import reply

from rlmcli.repl import docker as sandbox_docker

MISSING = "rlm-test-missing:nope"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("alpha\nbeta\n")
    return path


def args_for(fake, data: Path, sandbox: str, *extra: str) -> list[str]:
    args = ask_args(fake, str(data), extra=["--json", "--image", MISSING, *extra])
    return [a if a != "local" else sandbox for a in args]


def warnings(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if "warning" in line]


def test_auto_answers_with_the_local_sandbox_when_the_image_cannot_be_pulled(
    docker_image, fake_llm, run_cli, data
):
    fake_llm.add_root(reply("", "print(context.count('beta'))"), "FINAL(1)")
    proc = run_cli(args_for(fake_llm, data, "auto"))
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert (out["answer"], out["sandbox"]) == ("1", "local")
    (warning,) = warnings(proc.stderr)
    assert f"the sandbox image {MISSING} is missing and cannot be pulled (" in warning
    assert "using the local sandbox (bubblewrap)" in warning
    assert warning.endswith(f"for Docker, run `rlm sandbox build --tag {MISSING}`")
    assert "Traceback" not in proc.stderr.decode() and our_containers() == []
    # The cell really ran: its output reached the model.
    assert "1" in fake_llm.root_requests[1]["body"]["messages"][-1]["content"]


def test_docker_still_exits_5_when_the_image_cannot_be_pulled(docker_image, fake_llm, run_cli, data):
    proc = run_cli(args_for(fake_llm, data, "docker"))
    assert proc.returncode == 5, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["exit_reason"] == "sandbox_error" and out["answer"] is None
    assert out["error"].startswith(f"cannot pull sandbox image {MISSING}: ")
    assert "\n" not in out["error"] and "rlm sandbox build" in out["hint"]
    assert fake_llm.requests == []  # nothing was spent
    assert warnings(proc.stderr) == [] and our_containers() == []


def test_the_built_image_stands_in_for_a_default_image_that_cannot_be_pulled(
    docker_image, fake_llm, run_cli, data, monkeypatch
):
    """Here the unpullable name plays the default image; what `rlm sandbox build` made (the test
    image, tagged as `rlm sandbox build` tags it) runs the cells, in Docker."""
    if docker_image != sandbox_docker.OFFLINE_IMAGE:
        pytest.skip(f"the stand-in is {sandbox_docker.OFFLINE_IMAGE}; this suite's image is {docker_image}")
    monkeypatch.setattr(sandbox_docker, "DEFAULT_IMAGE", MISSING)
    fake_llm.add_root(reply("", "import os\nprint(os.path.exists('/.dockerenv'))"), "FINAL(ok)")
    proc = run_cli(args_for(fake_llm, data, "auto"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["sandbox"] == "docker"
    stderr = proc.stderr.decode()
    assert f"cannot pull sandbox image {MISSING}" in stderr
    assert f"using {sandbox_docker.OFFLINE_IMAGE} (made by `rlm sandbox build`)" in stderr
    assert warnings(proc.stderr) == []
    assert "True" in fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
