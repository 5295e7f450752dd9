"""The Docker sandbox (the secure default): the same REPL server, in a locked-down container.

One container per run, reused by every cell. The REPL server file, the context and its index are
bind-mounted read-only at /rlm; the protocol runs over the container's attached stdin/stdout, so
nothing per cell grows with the context. The container gets no network, no host environment,
no capabilities, a non-root user, an init process, and caps on memory, CPU and processes.
Containers are labelled with the owning host process, so leftovers of dead runs can be pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..context import write_error
from ..errors import SandboxError
from .confine import INPUTS, MOUNT, SandboxLimits, server_path, visible_path
from .docker_stream import Attached

DEFAULT_IMAGE = "python:3.12-slim"
OFFLINE_IMAGE = "rlm-sandbox:bookworm"  # what `rlm sandbox build` makes
LABEL = "rlm.sandbox"  # every container of ours carries it
LABEL_PID, LABEL_HOST, LABEL_RUN = "rlm.pid", "rlm.host", "rlm.run"
OFFLINE_RECIPE = (
    f"build an image without a registry: `rlm sandbox build` (needs debootstrap, as root), which "
    f"stands in for the default image, or pass `--image {OFFLINE_IMAGE}` (RLM_SANDBOX_IMAGE); "
    f"or use --sandbox local"
)


@dataclass
class DockerOptions:
    image: str = DEFAULT_IMAGE
    cpus: float = 1.0
    pids_limit: int = 128
    tmp_size: str = "256m"  # the only writable place in the container


def connect(timeout: float = 1.0) -> Any | None:
    """A docker client if a daemon answers within `timeout` seconds (DOCKER_HOST honoured)."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception:
        return None
    client.api.timeout = 120  # pings are quick; image pulls and container starts are not
    return client


def no_daemon() -> SandboxError:
    return SandboxError(
        "no Docker daemon answers (checked DOCKER_HOST or the default socket)",
        hint="start Docker (e.g. `sudo systemctl start docker` or `dockerd &`), or use --sandbox local",
    )


def require(timeout: float = 1.0) -> Any:
    client = connect(timeout)
    if client is None:
        raise no_daemon()
    return client


def is_local_daemon(client: Any) -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


class ImageUnavailable(SandboxError):
    """The image is not on the daemon and cannot be pulled (no registry, no such image): `auto`
    falls back to the local sandbox on this one; `--sandbox docker` exits 5 with the recipe."""

    def __init__(self, image: str, reason: str):
        super().__init__(f"cannot pull sandbox image {image}: {reason}", hint=OFFLINE_RECIPE)
        self.image, self.cause = image, reason  # not `reason`: RlmError's is the ExitReason


def has_image(client: Any, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException as exc:
        raise SandboxError(f"cannot inspect image {image}: {exc}") from exc


def ensure_image(client: Any, image: str, progress: Any = None) -> None:
    """Pull `image` when missing, reporting progress; ImageUnavailable (exit 5, with the offline
    recipe) when it cannot be had."""
    import docker

    if has_image(client, image):
        return
    if progress is not None:
        progress(f"pulling sandbox image {image} ...")
    repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    try:
        for line in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if progress is not None and line.get("status") in ("Downloading", "Extracting"):
                detail = line.get("progressDetail") or {}
                if detail.get("total"):
                    progress(f"  {line['status'].lower()} {line.get('id', '')}: "
                             f"{detail.get('current', 0) * 100 // detail['total']}%")  # fmt: skip
            if "error" in line:
                raise ImageUnavailable(image, str(line["error"]))
    except docker.errors.DockerException as exc:
        raise ImageUnavailable(image, _reason(exc)) from exc


def _reason(exc: Exception) -> str:
    """The daemon's own words for a failed request (`explanation`), without docker-py's prefix of
    status code and URL; the exception's text otherwise."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation) if explanation else str(exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(client: Any, everything: bool = False) -> list[str]:
    """Remove our containers whose owning process on this host is gone (all of ours if
    `everything`). Returns the names removed."""
    removed = []
    # ignore_removed: another run may remove its container between the listing and the inspection.
    for container in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
        labels = container.labels or {}
        mine = labels.get(LABEL_HOST) == socket.gethostname()
        pid = int(labels.get(LABEL_PID, "0") or 0)
        if everything or (mine and not _pid_alive(pid)):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(container.name)
    return removed


async def _finish(job: asyncio.Future) -> None:
    """Wait for an executor job to end, whatever cancels arrive meanwhile: its thread runs on."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([job])


class DockerSandbox:
    name = "docker"

    def __init__(self, client: Any, limits: SandboxLimits, options: DockerOptions, share_dir: Path):
        if not is_local_daemon(client):
            raise SandboxError(
                "the Docker daemon is remote (DOCKER_HOST); only a local daemon is supported so far",
                hint="unset DOCKER_HOST for a local daemon, or use --sandbox local",
            )
        self.client, self.limits, self.options = client, limits, options
        self.share_dir = share_dir
        # The container user (nobody) must read the shared files: the directory is traversable but
        # not listable by others, and has an unguessable name (see run.py).
        try:
            shutil.copyfile(server_path(), share_dir / "repl_server.py")
        except OSError as exc:  # a full disk is the user's to fix (exit 2), not a bug
            raise write_error(share_dir / "repl_server.py", exc) from exc
        for path in share_dir.iterdir():
            path.chmod(0o644)
        share_dir.chmod(0o711)
        self.inputs: dict[Path, str] = {}  # host files outside share_dir -> where the container sees them
        self.group_add: list[int] = []
        self.container: Any = None
        self._stream = Attached()  # the attach socket; its stderr tail is the container's only log
        self._last_state: dict = {}

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        # One executor job, awaited through a shield: a signal (a cancel) cannot stop the thread,
        # and a container it made must not be lost to us, or it would outlive the run.
        loop = asyncio.get_running_loop()
        launch = loop.run_in_executor(None, self._launch)
        try:
            self.container, sock = await asyncio.shield(launch)
        except asyncio.CancelledError:
            await _finish(launch)
            if not launch.cancelled() and launch.exception() is None:
                container, sock = launch.result()
                with contextlib.suppress(Exception):
                    sock.close()
                await _finish(loop.run_in_executor(None, self._record_and_remove, container))
            raise
        except Exception as exc:
            raise SandboxError(f"cannot start the sandbox container: {exc}") from exc
        return await self._stream.open(sock)

    def _launch(self) -> tuple[Any, Any]:
        """Create, attach to and start the container (in a thread); remove it if a step fails."""
        container = self._create()
        try:
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container.start()
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return container, sock

    def _create(self) -> Any:
        memory = self.limits.memory
        return self.client.containers.create(
            self.options.image,
            ["python3", "-I", f"{MOUNT}/repl_server.py", "--max-memory", str(memory)],
            stdin_open=True,
            tty=False,
            network_mode="none",
            mem_limit=memory,
            memswap_limit=memory,  # no swap beyond the memory cap
            nano_cpus=int(self.options.cpus * 1e9),
            pids_limit=self.options.pids_limit,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.options.tmp_size},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="65534:65534",
            init=True,
            # No log: a cell writing to stderr (even init's, /proc/1/fd/2) must not fill the host's
            # disk. The server's stderr still reaches us, bounded, over the attached stream.
            log_config={"type": "none"},
            environment={},  # nothing from the host: the image's own PATH and HOME only
            working_dir="/tmp",
            hostname="rlm-sandbox",
            volumes={
                str(self.share_dir): {"bind": MOUNT, "mode": "ro"},
                **{
                    str(host): {"bind": seen, "mode": "ro"}
                    for host, seen in self.inputs.items()
                    if seen.startswith(INPUTS)
                },
            },  # fmt: skip
            group_add=self.group_add or None,
            labels={
                LABEL: "1",
                LABEL_PID: str(os.getpid()),
                LABEL_HOST: socket.gethostname(),
                LABEL_RUN: self.share_dir.parent.name,
            },
        )

    def spawn(self, memory: int) -> Any:
        """A child RLM's server: `docker exec` into this container (docker_exec.DockerChild)."""
        from .docker_exec import DockerChild

        return DockerChild(self, memory)

    def add_input(self, host_path: Path) -> None:
        """Make a host file outside the share directory (a named input used in place) visible,
        read-only. The container user must be able to read it: world-readable files are mounted
        as they are, group-readable ones with that group added; others are copied in once."""
        st = host_path.stat()
        if st.st_mode & stat.S_IROTH:
            self.inputs[host_path] = f"{INPUTS}/{host_path.name}"
        elif st.st_mode & stat.S_IRGRP and st.st_gid != 0:
            self.inputs[host_path] = f"{INPUTS}/{host_path.name}"
            self.group_add.append(st.st_gid)
        else:
            copy = self.share_dir / "context-copy.txt"
            try:
                shutil.copyfile(host_path, copy)
            except OSError as exc:
                copy.unlink(missing_ok=True)  # a partial copy is of no use
                raise write_error(copy, exc) from exc
            copy.chmod(0o644)
            self.inputs[host_path] = f"{MOUNT}/{copy.name}"

    def visible_path(self, host_path: Path) -> str:
        return visible_path(host_path, self.inputs, self.share_dir)

    async def stop(self) -> None:
        self._stream.close()
        container, self.container = self.container, None
        if container is not None:
            await asyncio.to_thread(self._record_and_remove, container)

    def _record_and_remove(self, container: Any) -> None:
        """Keep how the server ended (for messages), then remove the container for good."""
        try:
            container.reload()
            self._last_state = dict(container.attrs.get("State") or {})
        except Exception:
            self._last_state = {}
        with contextlib.suppress(Exception):
            container.remove(force=True)

    def exit_description(self) -> str:
        state = self._last_state
        if not state:
            return "the container is gone"
        if state.get("OOMKilled"):
            status = f"the container was killed for exceeding its memory limit ({self.limits.memory} bytes)"
        elif state.get("Running"):
            status = "the server had not exited"
        else:
            status = f"the server exited with status {state.get('ExitCode')}"
        tail = self._stream.stderr.decode("utf-8", "replace").strip()
        return status + (f"; its last words: {tail[-200:]}" if tail else "")


def describe_daemon(client: Any) -> str:
    version = client.version()
    return f"Docker {version.get('Version')} (API {version.get('ApiVersion')}) on {sys.platform}"
