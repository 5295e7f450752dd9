"""A pids cgroup for the local sandbox when rlm runs as root.

RLIMIT_NPROC bounds the processes of a real uid, and the kernel never applies it to uid 0, inside a
user namespace or not: under root, a fork bomb in a `--sandbox local` cell would fill the host's
process table. Where the kernel's `pids` controller can be written (cgroup v1's `pids` hierarchy, or
cgroup v2 with `pids` enabled below our own cgroup), the run's servers, its children's included,
join one cgroup of their own whose `pids.max` is --pids-limit, as Docker's --pids-limit does (both
count threads too). Not root, or no writable controller: nothing is done, and RLIMIT_NPROC (set by
confine.py) is the cap.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


class PidsCgroup:
    """One run's cgroup: made with its cap, joined by each server between fork and exec, removed
    once the run's processes are gone."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, limit: int) -> PidsCgroup | None:
        """A new cgroup capped at `limit` tasks, or None (not root, or no writable pids controller)."""
        if os.geteuid() != 0:
            return None
        name = f"rlm-{os.getpid()}-{secrets.token_hex(4)}"
        for parent in _pids_parents():
            path = parent / name
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(limit))
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            return cls(path)
        return None

    def joining(self, preexec: Callable[[], None]) -> Callable[[], None]:
        """`preexec`, after the forked child has joined the cgroup: nothing it starts escapes it."""
        procs = str(self.path / "cgroup.procs")

        def join_then() -> None:
            with open(procs, "w") as f:
                f.write("0")  # "0": the writing process itself
            preexec()

        return join_then

    def remove(self) -> None:
        """Best effort: a cgroup that still holds a process stays (the kernel refuses; it is empty
        and harmless once that process ends)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _pids_parents() -> Iterator[Path]:
    """Where a cgroup with a pids controller can be made: below our own cgroup, v1 first."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, own = line.split(":", 2)
        relative = own.lstrip("/")
        if "pids" in controllers.split(","):  # v1: the pids hierarchy
            yield CGROUP_FS / "pids" / relative
        elif controllers == "":  # v2: where pids is enabled for the cgroups below ours
            for root in (CGROUP_FS, CGROUP_FS / "unified"):
                here = root / relative
                with contextlib.suppress(OSError):
                    if "pids" in (here / "cgroup.subtree_control").read_text().split():
                        yield here
