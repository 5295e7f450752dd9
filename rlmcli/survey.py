"""A first look at a big named file: enough for the first prompt, while the full pass goes on.

Reading a 1 GB log once on the host takes seconds on a small machine (2 CPUs, 2026-12-02, loghub
lines): the secrets scan 4.7 s, sha256 0.9 s, counting lines 0.8 s, decoding 0.2-1.2 s, where
`cat` reads it in 0.13 s; the REPL's own decode is 1.2 s more. The first prompt needs none of it
exactly: its size is known, its characters and lines can be sampled, its first characters read
(and no prompt states tokens: the tokenizer loads after the first request, tokens.py). So a single
named file above DEFER_BYTES is surveyed here (its head and 64 slices, ~1 MiB read) and the run's
first request goes out at once, while the full pass (context.load_context) runs in a process of its
own (load_pass.py), which counts the tokens. Only a confirmation of a large input
(cli/files.confirm_load) counts the survey's tokens before the first request (Context.count_tokens:
the same 64 slices, tokens.count_file).
The REPL starts when that
pass is done (run.py), and every use of the REPL waits for the start (Repl.begin): so the file
index, citations, the record and the secrets warning all come from the full pass, and only the
first prompt says "about".

Not surveyed: directories and several inputs (the prompt lists their files), stdin (it is read
once), --redact-secrets (the sandbox and the prompt may only see the redacted copy), a follow-up
run (`-c` compares digests first), and `--dry-run`/`rlm files` (they show the exact figures).
"""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

from . import load_pass, tokens
from .context import (
    CHUNK,
    PREFIX_CHARS,
    Context,
    ContextStats,
    FileEntry,
    str_width,
    write_error,
)
from .errors import InputError
from .inputs import is_binary
from .text import human_bytes
from .walk import LoadOptions, display_name

DEFER_BYTES = 64 * 2**20  # below this, the full pass takes well under a second: the prompt is exact


def deferrable(paths: list[str], options: LoadOptions) -> bool:
    """Whether `paths` is one named file big enough to survey (see the module's list of exceptions;
    the caller leaves out follow-ups and previews)."""
    if len(paths) != 1 or paths[0] == "-" or options.redact_secrets:
        return False
    try:
        st = os.stat(paths[0])
    except OSError:
        return False  # load_context says what is wrong
    named = str(Path(paths[0]).resolve())
    # A path that is not UTF-8 is copied, not used in place (context.py): the full pass writes it.
    return st.st_size > DEFER_BYTES and os.path.isfile(paths[0]) and display_name(named) == named


def survey(paths: list[str], workdir: Path, options: LoadOptions) -> Context:
    """A Context of estimated figures for one named file, its full pass running in a process: the
    Context's `pending` (Context.finish takes the exact figures; Context.cancel stops the pass)."""
    path = Path(paths[0]).resolve()
    shown = display_name(paths[0])
    try:
        workdir.mkdir(parents=True, exist_ok=True)  # the sandbox's share, made before the pass is done
    except OSError as exc:
        raise write_error(workdir, exc) from exc
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(CHUNK)
            slices = tokens.file_slices(f, size)
    except OSError as e:
        raise InputError(f"cannot read {shown}: {e.strerror or e}") from e
    if is_binary(head):
        raise InputError(f"{shown} is a binary file", hint="rlm reads text; convert it to text first")
    sampled = sum(len(raw) for raw, _ in slices) or 1
    chars = round(size * sum(len(text) for _, text in slices) / sampled)
    lines = max(1, round(size * sum(raw.count(b"\n") for raw, _ in slices) / sampled))
    prefix = codecs.getincrementaldecoder("utf-8")("replace").decode(head[: PREFIX_CHARS * 4])[:PREFIX_CHARS]
    stats = ContextStats(
        files=1, bytes=size, chars=chars, lines=lines, est_tokens=None, invalid_utf8_files=0, skipped={},
        char_width=max(str_width(t) for _, t in slices), estimated=True,
    )  # fmt: skip
    context = Context(path, "file", [FileEntry(shown, 0, chars, lines, size)], stats, prefix)
    context.stop = threading.Event()
    context.pending = load_pass.start(paths, workdir, options, context.stop)
    return context


def notice(context: Context) -> str:
    """The line said while a surveyed file's full pass runs: why the first cell may wait."""
    return (
        f"reading {context.files[0].path} ({human_bytes(context.stats.bytes)}) in full in the background: "
        "the first request goes out now, the first cell waits for the load"
    )
