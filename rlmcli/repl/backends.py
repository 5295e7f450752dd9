"""Which sandbox a run gets: `--sandbox` names a backend; `auto` takes Docker, else bubblewrap."""

from __future__ import annotations

from pathlib import Path

from ..errors import SandboxError
from ..events import Emit, Notice
from ..settings import Settings
from . import bwrap as sandbox_bwrap
from . import docker as sandbox_docker
from .confine import SandboxLimits, protect_host
from .process import ProcessSandbox
from .protocol import Sandbox

PROCESS_WARNING = (
    "--sandbox process: the REPL is a plain child process (weaker isolation): model-written code can "
    "read what your user can read, reach the network, and signal your processes"
)


def sandbox_limits(settings: Settings) -> SandboxLimits:
    """What every backend caps: memory and processes (the rest are SandboxLimits' defaults)."""
    return SandboxLimits(memory=settings.memory_bytes, pids=settings.pids_limit)


def docker_options(settings: Settings) -> sandbox_docker.DockerOptions:
    return sandbox_docker.DockerOptions(settings.image, settings.cpus, settings.pids_limit)


def make_sandbox(settings: Settings, share_dir: Path, emit: Emit) -> Sandbox:
    """Docker when asked, or for `auto` when a daemon answers within a second; else bubblewrap
    (`local`); else an error. The plain child process (`process`) only when asked for."""
    protect_host()  # once per run, before any sandbox starts: the keys in our memory stay ours
    limits = sandbox_limits(settings)
    if settings.sandbox == "process":
        emit(Notice(PROCESS_WARNING, warning=True))
        return ProcessSandbox(limits)
    if settings.sandbox == "local":
        return sandbox_bwrap.BwrapSandbox(limits, share_dir)
    client = sandbox_docker.connect(timeout=1.0)
    if client is None:
        if settings.sandbox == "docker":
            raise sandbox_docker.no_daemon()
        problem = sandbox_bwrap.unusable()
        if problem is not None:
            raise SandboxError(
                f"no sandbox is available: no Docker daemon answers, and bubblewrap {problem}",
                hint=sandbox_bwrap.AUTO_FIXES,
            )
        emit(Notice("no Docker daemon answers; using the local sandbox (bubblewrap)", warning=True))
        return sandbox_bwrap.BwrapSandbox(limits, share_dir)
    sandbox_docker.prune(client)  # leftovers of runs that died without cleaning up
    sandbox_docker.ensure_image(client, settings.image, lambda text: emit(Notice(text)))
    return sandbox_docker.DockerSandbox(client, limits, docker_options(settings), share_dir)
