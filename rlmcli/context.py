"""Turn CLI paths (files, directories, `-` for stdin) into one UTF-8 context file plus an index.

Everything is streamed in ~1 MiB chunks so a multi-GB input costs flat memory. Offsets are in
Python `str` characters (what the sandbox slices), counted from the decoded chunks as they are
written. No newline translation happens anywhere: bytes in, decoded text out, `newline=""`.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from . import tokens
from .errors import InputError
from .inputs import BINARY_SNIFF as BINARY_SNIFF  # re-exported: it was defined here
from .inputs import check_paths, is_binary, open_regular, read_chunk
from .inputs import write_error as write_error  # re-exported: it was defined here
from .secrets_scan import Scanner
from .secrets_scan import warning as secrets_warning
from .settings import parse_size as parse_size  # re-exported: it was defined here
from .text import human_bytes as human_bytes  # re-exported: it was defined here
from .text import human_count, plural
from .walk import IGNORE_FILES as IGNORE_FILES  # re-exported: it was defined here
from .walk import LoadOptions, Walker, display_name

# Told of the loading as it goes: (files loaded so far, bytes read so far); called per chunk read,
# so it must be cheap (the CLI's renderer throttles itself: cli/files.py).
Progress = Callable[[int, int], None]
CHUNK = 1024 * 1024
CANCEL_WAIT = 10.0  # seconds Context.cancel waits for a stopped pass (load_pass.py: a kill, milliseconds)
PREFIX_CHARS = 500  # of the context, shown to the model in its first message (prompts.py)
CONTEXT_FILENAME = "context.txt"
STDIN_NAME = "<stdin>"
SKIP_REASONS = ("ignored", "hidden", "binary", "too-large", "symlink", "unreadable", "special", "excluded")
NO_FILES_HINT = "try --no-ignore, --hidden or --include"

# Counting replacement handler: behaves like errors="replace" but lets us report which files held
# invalid UTF-8. Codec error handlers are process-global, so the count lives in a thread-local.
_ERRORS = "rlmcli-count-replace"
_decode_state = threading.local()


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _decode_state.invalid = getattr(_decode_state, "invalid", 0) + 1
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _count_and_replace)


@dataclass
class FileEntry:
    path: str  # display path ("repo/src/a.py", the path as given, or "<stdin>")
    start: int  # character offset of the file's text in the context (header excluded)
    end: int  # exclusive character offset
    lines: int
    bytes: int
    sha256: str = ""  # of the raw bytes read: traces name inputs by digest, never copy them
    redacted: list[tuple[int, int]] = field(default_factory=list)  # line ranges with a secret replaced


@dataclass
class ContextStats:
    files: int
    bytes: int  # raw bytes read
    chars: int  # len(context), headers included
    lines: int  # sum of the files' lines (headers not counted)
    # tokens.count_file: exact up to 1 MiB, else from a sample (tokens_sampled). None until counted
    # (Context.count_tokens): a run counts after its first request is out (run.py).
    est_tokens: int | None
    invalid_utf8_files: int
    skipped: dict[str, list[str]]  # reason -> display paths (directories end in "/"); non-empty only
    tokens_sampled: bool = False  # est_tokens was scaled from a sample of the text
    secrets: int = 0  # possible secrets found (secrets_scan.py)
    secrets_redacted: bool = False  # ... and replaced in the context (--redact-secrets)
    char_width: int = 1  # bytes per character of the context as a Python str: 1, 2 or 4 (str_width)
    estimated: bool = False  # chars and lines sampled, the full pass still running (survey.py)

    @property
    def chars_per_token(self) -> float:
        assert self.est_tokens is not None, "count the tokens first (Context.count_tokens)"
        return tokens.chars_per_token(self.chars, self.est_tokens)


@dataclass
class Context:
    path: Path  # the whole context text: the input itself for one named file, else a file in workdir
    kind: str  # "file" | "stdin" | "directory" | "multiple"
    files: list[FileEntry]
    stats: ContextStats
    prefix: str  # first PREFIX_CHARS characters of the context
    secrets_warning: str | None = None  # counts and path:line of possible secrets, never one of them
    pending: Future[Context] | None = None  # survey.py: the full pass, whose figures finish() takes
    stop: threading.Event | None = None  # set by cancel(): the pending pass is stopped (load_pass.py)

    def finish(self) -> None:
        """Wait for the full pass of a surveyed input (survey.py) and take its exact figures; its
        InputError, if any, is raised here."""
        if self.pending is None:
            return
        full = self.pending.result()
        self.files, self.stats, self.prefix = full.files, full.stats, full.prefix
        self.secrets_warning, self.pending = full.secrets_warning, None

    def cancel(self) -> None:
        """Stop a pending pass (load_pass.py) and wait until it has: no process is left behind."""
        if self.stop is not None:
            self.stop.set()
        if self.pending is not None:
            with contextlib.suppress(BaseException):
                self.pending.exception(timeout=CANCEL_WAIT)

    def count_tokens(self) -> int:
        """The context's tokens (stats.est_tokens), counted the first time: loading the tokenizer
        costs ~0.4 s of CPU, holding the GIL, which a run spends after its first request (run.py)."""
        if self.stats.est_tokens is None:
            counted = tokens.count_file(self.path, self.stats.chars)
            self.stats.est_tokens, self.stats.tokens_sampled = counted.tokens, counted.estimated
        return self.stats.est_tokens

    def tokens_at_most(self) -> int:
        """A bound on count_tokens() without the tokenizer (tokens.most_in_file); the count once known."""
        if self.stats.est_tokens is not None:
            return self.stats.est_tokens
        return tokens.most_in_file(self.path, self.stats.chars)

    def spans(self) -> dict[str, tuple[int, int]]:
        return {f.path: (f.start, f.end) for f in self.files}

    def write_index(self, path: Path) -> None:
        # The REPL's count_tokens divides by chars_per_token: the host's count, calibrated on this
        # context, as the sandbox has no tokenizer (sandbox/repl_server.py).
        index = {
            "files": {f.path: [f.start, f.end] for f in self.files},
            "chars_per_token": round(self.stats.chars_per_token, 4),
        }
        try:
            path.write_text(json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")
        except OSError as exc:
            raise write_error(path, exc) from exc

    def summary(self) -> str:
        s = self.stats
        assert s.est_tokens is not None, "count the tokens first (Context.count_tokens)"
        text = (
            f"context: {plural(s.files, 'file')}, {human_bytes(s.bytes)}, "
            f"{plural(s.lines, 'line')}, ~{human_count(s.est_tokens)} tokens"
            + (" (estimated)" if s.tokens_sampled else "")
        )
        if s.invalid_utf8_files:
            text += f", {s.invalid_utf8_files} with invalid UTF-8"
        total, detail = _skip_counts(s.skipped)
        return f"{text}; skipped {total} ({detail})" if total else text


def str_width(text: str) -> int:
    """Bytes per character CPython stores `text` with (PEP 393): 1 up to U+00FF, 2 up to U+FFFF,
    else 4. One character beyond the BMP (an emoji) makes a whole str four bytes a character."""
    top = ord(max(text)) if text else 0
    return 1 if top < 0x100 else 2 if top < 0x10000 else 4


def str_bytes(stats: ContextStats) -> int:
    """The memory the REPL's `context` str takes: characters x width, not the bytes on disk (a
    177 MB tree with one emoji is a ~710 MB str). What a --memory hint should be sized by."""
    return stats.chars * stats.char_width


def _skip_counts(skipped: dict[str, list[str]]) -> tuple[int, str]:
    """(12, '10 ignored, 2 binary'): the total and the reasons, biggest first."""
    counts = sorted(((len(v), k) for k, v in skipped.items() if v), key=lambda c: (-c[0], c[1]))
    return sum(n for n, _ in counts), ", ".join(f"{n} {k}" for n, k in counts)


class _Discard(contextlib.nullcontext):
    """A text sink that keeps nothing: used when the input file itself is the context."""

    def __enter__(self) -> _Discard:
        return self

    def write(self, text: str) -> int:
        return len(text)


class _Writer:
    """Appends decoded text to the context file, tracking character offsets and the prefix."""

    def __init__(
        self,
        out: TextIO | _Discard,
        headers: bool,
        scanner: Scanner,
        progress: Progress | None,
    ):
        self.out = out
        self.progress = progress
        self.bytes_read = 0
        self.width = 1  # the widest character so far, as str_width
        self.scanner = scanner  # sees the raw bytes first; hands back what is decoded (redacted)
        self.headers = headers
        self.offset = 0
        self.prefix = ""
        self.files: list[FileEntry] = []
        self.invalid_files = 0

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.offset += len(text)
        if self.width < 4 and not text.isascii():  # isascii is O(1) on a str; max() only when not
            self.width = max(self.width, str_width(text))
        if len(self.prefix) < PREFIX_CHARS:
            self.prefix += text[: PREFIX_CHARS - len(self.prefix)]

    def add(self, display: str, stream: BinaryIO, head: bytes) -> None:
        """Copy `head` (already read, used for binary sniffing) and the rest of `stream`."""
        if self.headers:
            self._write(f"==> {display} <==\n")
        start = self.offset
        decoder = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
        _decode_state.invalid = 0
        nbytes = newlines = 0
        last = b""
        digest = hashlib.sha256()
        scanner = self.scanner
        scanner.start(display)
        chunk = head
        while chunk:
            digest.update(chunk)
            nbytes += len(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
            self._write(decoder.decode(scanner.feed(chunk)))
            self.bytes_read += len(chunk)
            if self.progress is not None:
                self.progress(len(self.files), self.bytes_read)
            chunk = read_chunk(stream, display, CHUNK)
        self._write(decoder.decode(scanner.finish(), final=True))  # and a truncated trailing sequence
        end = self.offset
        if _decode_state.invalid:
            self.invalid_files += 1
        if self.headers and last != b"\n":
            self._write("\n")
        lines = newlines + (1 if nbytes and last != b"\n" else 0)
        redacted = list(scanner.redacted_lines)
        self.files.append(FileEntry(display, start, end, lines, nbytes, digest.hexdigest(), redacted))


def _load_explicit(writer: _Writer, p: str, seen: set[tuple[int, int]]) -> None:
    shown = display_name(p)
    try:
        f = open_regular(Path(p), follow=True)
    except PermissionError:
        raise InputError(f"cannot read {shown}: permission denied") from None
    except OSError as e:
        raise InputError(f"cannot read {shown}: {e.strerror or e}") from e
    with f:
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in seen:  # the same file named twice: load it once
            return
        seen.add((st.st_dev, st.st_ino))
        head = read_chunk(f, shown, CHUNK)
        if is_binary(head):
            raise InputError(f"{shown} is a binary file", hint="rlm reads text; convert it to text first")
        writer.add(shown, f, head)


def _load_stdin(writer: _Writer, stdin: BinaryIO) -> None:
    head = read_chunk(stdin, STDIN_NAME, CHUNK)
    if not head:
        raise InputError("stdin was empty", hint='pipe data in: `cat app.log | rlm ask - "..."`')
    if is_binary(head):
        raise InputError("stdin looks binary (it contains NUL bytes)", hint="rlm reads text")
    writer.add(STDIN_NAME, stdin, head)


def _load_directory(writer: _Writer, walker: Walker, seen: set[tuple[int, int]]) -> None:
    for display, path in walker.files():
        try:
            f = open_regular(path, follow=False)
        except OSError:  # permission denied, vanished, or replaced by a symlink/FIFO meanwhile
            walker.skip("unreadable", display)
            continue
        with f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) in seen:
                continue
            try:
                head = f.read(CHUNK)
            except OSError:
                walker.skip("unreadable", display)
                continue
            if is_binary(head):
                walker.skip("binary", display)
                continue
            seen.add((st.st_dev, st.st_ino))
            writer.add(display, f, head)


def load_context(
    paths: list[str],
    workdir: Path,
    options: LoadOptions,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
    count: bool = True,
) -> Context:
    """Read `paths` into `workdir`/context.txt. Raises InputError for every user mistake. Without
    `count`, its tokens are left for Context.count_tokens (stats.est_tokens None)."""
    stdin = check_paths(paths, stdin)
    if len(paths) == 1:
        kind = "stdin" if paths[0] == "-" else "directory" if os.path.isdir(paths[0]) else "file"
    else:
        kind = "multiple"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(workdir, exc) from exc
    # A single named file is its own context (the REPL decodes it the same way): it is scanned for
    # offsets and stats but never copied, so a 2 GB log costs no second 2 GB on disk. Unless its
    # path is not UTF-8: the sandbox is told paths in UTF-8 frames, so that file is copied instead.
    # Or it holds a secret to redact: the sandbox then reads a redacted copy.
    named = Path(paths[0]).resolve()
    in_place = kind == "file" and display_name(str(named)) == str(named)
    out_path = named if in_place else workdir / CONTEXT_FILENAME
    writer, skipped = _load(paths, kind, out_path, in_place, options, stdin, progress)
    if in_place and options.redact_secrets and writer.scanner.count:
        out_path = workdir / CONTEXT_FILENAME
        writer, skipped = _load(paths, kind, out_path, False, options, stdin, progress)
    files = writer.files
    counted = tokens.count_file(out_path, writer.offset) if count else None
    scanner = writer.scanner
    stats = ContextStats(
        files=len(files),
        bytes=sum(f.bytes for f in files),
        chars=writer.offset,
        lines=sum(f.lines for f in files),
        est_tokens=counted.tokens if counted else None,
        invalid_utf8_files=writer.invalid_files,
        skipped={r: skipped[r] for r in SKIP_REASONS if r in skipped},
        tokens_sampled=counted.estimated if counted else False,
        secrets=scanner.count,
        secrets_redacted=scanner.redact and scanner.count > 0,
        char_width=writer.width,
    )
    warning = secrets_warning(scanner, redacted=scanner.redact)
    return Context(out_path, kind, files, stats, writer.prefix, warning)


def _load(
    paths: list[str],
    kind: str,
    out_path: Path,
    in_place: bool,
    options: LoadOptions,
    stdin: BinaryIO | None,
    progress: Progress | None,
) -> tuple[_Writer, dict[str, list[str]]]:
    """One pass over the inputs: the context written to `out_path` (unless `in_place`), scanned."""
    skipped: dict[str, list[str]] = {}
    seen: set[tuple[int, int]] = set()
    scanner = Scanner(redact=options.redact_secrets and not in_place)
    try:
        with _Discard() if in_place else open(out_path, "w", encoding="utf-8", newline="") as out:
            writer = _Writer(out, kind in ("directory", "multiple"), scanner, progress)
            if not in_place:  # workdir inside a directory being read: never read the context into itself
                st = os.fstat(out.fileno())
                seen.add((st.st_dev, st.st_ino))
            for p in paths:
                if p == "-":
                    assert stdin is not None
                    _load_stdin(writer, stdin)
                elif os.path.isdir(p):
                    _load_directory(writer, Walker(Path(p), p, options, skipped), seen)
                else:
                    _load_explicit(writer, p, seen)
            if not writer.files:
                # Only directories can come up empty: files and stdin either load or raise.
                dirs = ", ".join(display_name(p if p.endswith("/") else p + "/") for p in paths)
                total, detail = _skip_counts(skipped)
                raise InputError(
                    f"no files to read in {dirs}" + (f" ({total} skipped: {detail})" if total else ""),
                    hint=NO_FILES_HINT if total else "the directory is empty",
                )
    except BaseException as exc:
        if not in_place:
            out_path.unlink(missing_ok=True)  # never leave a half-written context behind
        if isinstance(exc, OSError):  # every read raises InputError: this is a write of the copy
            raise write_error(out_path, exc) from exc
        raise
    return writer, skipped
