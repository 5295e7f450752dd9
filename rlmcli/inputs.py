"""The inputs as the user named them: checked from metadata before anything is read, opened
without blocking or following a link swapped in, read with errors that name the file; and the
error for a failed write of rlm's copy of them."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import InputError
from .walk import display_name

BINARY_SNIFF = 8192  # a NUL byte in this many leading bytes marks a file as binary


# Why a write fails when the disk is the problem, as the error line says it.
_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for the file system"}  # fmt: skip


def write_error(path: Path, exc: OSError) -> InputError:
    """The error (exit 2) for a failed write of rlm's copy of the input: a full disk is the
    user's to fix, not a bug."""
    full = exc.errno in _NO_ROOM
    reason = _NO_ROOM[exc.errno] if full else (exc.strerror or str(exc)).lower()
    where = "on a larger disk" if full else "that can be written"
    return InputError(
        f"{reason} writing {display_name(str(path))}",
        hint=("free some space, or " if full else "")
        + f"set TMPDIR to a directory {where} (rlm copies directory and stdin inputs there)",
    )


def read_chunk(stream: BinaryIO, display: str, chunk: int) -> bytes:
    try:
        return stream.read(chunk)
    except OSError as e:
        raise InputError(f"error reading {display}: {e.strerror or e}") from e


def is_binary(head: bytes) -> bool:
    return b"\0" in head[:BINARY_SNIFF]


def open_regular(path: Path, follow: bool) -> BinaryIO:
    """Open for reading without ever blocking (O_NONBLOCK: a FIFO swapped in after the walk
    won't hang us) and refuse anything that isn't a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def check_paths(paths: list[str], stdin: BinaryIO | None) -> BinaryIO | None:
    """Fail fast, before reading anything, on every mistake we can see from metadata alone."""
    if not paths:
        raise InputError("no input given", hint="pass files, directories, or - for stdin")
    if paths.count("-") > 1:
        raise InputError("- (stdin) can be given only once")
    for p in paths:
        if p == "-":
            continue
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise InputError(f"no such file or directory: {display_name(p)}") from None
        except OSError as e:
            raise InputError(f"cannot access {display_name(p)}: {e.strerror or e}") from e
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise InputError(
                f"{display_name(p)} is not a regular file or directory",
                hint="to read from a pipe or device, pipe it in and pass - (stdin)",
            )
    if "-" not in paths:
        return None
    if stdin is None:
        stdin = sys.stdin.buffer if sys.stdin is not None else None
    if stdin is None:
        raise InputError("- was given but there is no stdin")
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        raise InputError(
            "- means stdin, but stdin is a terminal",
            hint='pipe data in: `cat app.log | rlm ask - "..."`',
        )
    return stdin
