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
    """What every backend caps: memory and processes (the rest are SandboxLimits' defaults). For
    `--memory auto`, 1 GiB until the run knows its context (run.sandbox_memory)."""
    return SandboxLimits(memory=settings.memory_bytes or SandboxLimits.memory, pids=settings.pids_limit)


def docker_options(settings: Settings) -> sandbox_docker.DockerOptions:
    return sandbox_docker.DockerOptions(settings.image, settings.cpus, settings.pids_limit)


def make_sandbox(settings: Settings, share_dir: Path, emit: Emit) -> Sandbox:
    """Docker when asked, or for `auto` when a daemon answers within a second and the image is
    there or can be pulled; else bubblewrap (`local`); else an error. The plain child process
    (`process`) only when asked for."""
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
        return _local_instead(limits, share_dir, emit, "no Docker daemon answers", sandbox_bwrap.AUTO_FIXES)
    sandbox_docker.prune(client)  # leftovers of runs that died without cleaning up
    options = docker_options(settings)
    try:
        sandbox_docker.ensure_image(client, options.image, lambda text: emit(Notice(text)))
    except sandbox_docker.ImageUnavailable as exc:
        if options.image == sandbox_docker.DEFAULT_IMAGE and sandbox_docker.has_image(client, OFFLINE):
            # What `rlm sandbox build` made stands in for the default image when that cannot be had.
            emit(Notice(f"{exc}; using {OFFLINE} (made by `rlm sandbox build`)"))
            options.image = OFFLINE
        elif settings.sandbox == "docker":
            raise
        else:
            image = options.image
            # The one command that gives Docker an image without a registry (root, debootstrap).
            build = "rlm sandbox build" + ("" if image == sandbox_docker.DEFAULT_IMAGE else f" --tag {image}")
            why = f"the sandbox image {image} is missing and cannot be pulled ({exc.cause})"
            return _local_instead(limits, share_dir, emit, why, f"`{build}` or --sandbox local", f"`{build}`")
    return sandbox_docker.DockerSandbox(client, limits, options, share_dir)


OFFLINE = sandbox_docker.OFFLINE_IMAGE


def _local_instead(
    limits: SandboxLimits, share_dir: Path, emit: Emit, why: str, fixes: str, docker_fix: str | None = None
) -> Sandbox:
    """`auto` without a usable Docker: the local sandbox, with a warning saying why (and, where one
    command gives Docker back, which); an error with `fixes` when bubblewrap cannot run either."""
    problem = sandbox_bwrap.unusable()
    if problem is not None:
        raise SandboxError(f"no sandbox is available: {why}, and bubblewrap {problem}", hint=fixes)
    fix = f"; for Docker, run {docker_fix}" if docker_fix else ""
    emit(Notice(f"{why}; using the local sandbox (bubblewrap){fix}", warning=True))
    return sandbox_bwrap.BwrapSandbox(limits, share_dir)
