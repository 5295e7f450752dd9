"""`rlm sandbox build|check`: make an image without a registry, and show what a cell sees."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import SandboxError
from . import docker as sandbox_docker
from .confine import SandboxLimits
from .protocol import Repl

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_image(tag: str, suite: str, mirror: str | None, say: Callable[[str], None]) -> str:
    """debootstrap a minimal Debian with python3, then `docker import` it as `tag`."""
    client = sandbox_docker.require()
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed", hint="apt-get install debootstrap")
    if os.geteuid() != 0:
        raise SandboxError("debootstrap must run as root", hint="run `sudo rlm sandbox build`")
    with tempfile.TemporaryDirectory(prefix="rlm-rootfs-") as tmp:
        rootfs, archive = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        command = ["debootstrap", "--variant=minbase", "--include=python3", suite, str(rootfs)]
        say(f"$ {' '.join(command + ([mirror] if mirror else []))}  (about a minute)")
        done = subprocess.run(command + ([mirror] if mirror else []), capture_output=True, text=True)
        if done.returncode != 0:
            raise SandboxError(
                f"debootstrap failed: {done.stderr.strip()[-300:] or done.stdout.strip()[-300:]}"
            )
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        repository, _, version = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        say(f"importing {archive.stat().st_size // 2**20} MiB as {tag}")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version, changes=[f"ENV {PATH_ENV}", 'CMD ["python3"]']
        )
    return tag


PROBE = r"""
import json, os, platform, socket, sys
def can_connect():
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        return "reachable (!)"
    except OSError as e:
        return f"unreachable ({e.strerror or e})"
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return "?"
print(json.dumps({
    "python": platform.python_version(),
    "user": f"uid={os.getuid()} gid={os.getgid()}",
    "network": can_connect(),
    "environment": sorted(os.environ),
    "memory_limit": read("/sys/fs/cgroup/memory.max") if os.path.exists("/sys/fs/cgroup/memory.max")
                    else read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "pids_limit": read("/sys/fs/cgroup/pids.max") if os.path.exists("/sys/fs/cgroup/pids.max")
                  else read("/sys/fs/cgroup/pids/pids.max"),
    "root_fs_writable": os.access("/", os.W_OK),
    "context_chars": len(context),
}))
"""


def check(options: sandbox_docker.DockerOptions, limits: SandboxLimits) -> dict:
    """Start a real sandbox on a tiny context and report what a cell sees."""
    client = sandbox_docker.require()
    sandbox_docker.ensure_image(client, options.image)
    with tempfile.TemporaryDirectory(prefix="rlm-check-") as tmp:
        share = Path(tmp) / "share"
        share.mkdir()
        (share / "context.txt").write_text("rlm sandbox check\n")
        (share / "index.json").write_text(json.dumps({"files": {"check.txt": [0, 18]}}))
        sandbox = sandbox_docker.DockerSandbox(client, limits, options, share)

        async def probe() -> dict:
            repl = Repl(sandbox, share / "context.txt", share / "index.json", cell_timeout=30)
            try:
                await repl.start()
                result = await repl.run_cell(PROBE)
            finally:
                await repl.close()
            if result.error:
                raise SandboxError(f"the probe cell failed: {result.error}")
            return json.loads(result.output)

        seen = asyncio.run(probe())
    return {"daemon": sandbox_docker.describe_daemon(client), "image": options.image, **seen}
