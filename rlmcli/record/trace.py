"""The JSONL trace: one event per line, appended and flushed as it happens, read back for replay.

Invariant 5 of the design ("nothing is lost") is why every event is flushed on its own: a crash,
Ctrl-C or SIGKILL leaves every event emitted before it on disk, at worst with the last line cut
short, which `read_trace` tolerates. Flushing hands the line to the OS; it is not an fsync, so a
power loss may still drop the tail (an fsync per event would cost more than the run's own work).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TextIO

from ..errors import InputError, secret_values
from ..events import EVENT_TYPES, RENAMED, Event, from_dict


def _redacted_line(event: Event) -> str:
    """`event` as one JSON line with host credentials replaced by '***'.

    Redacting the serialised line catches a secret in any field, nested or not. A value that JSON
    escapes (a quote, a backslash, non-ASCII) appears escaped in the line, so that form is
    replaced too. `ensure_ascii` keeps the line pure ASCII: a lone surrogate from a
    surrogate-escaped file name cannot make the write fail, and a cut line never splits a
    multi-byte character.
    """
    line = json.dumps(event.to_dict(), ensure_ascii=True, default=str)
    values = secret_values()  # errors.redact's scan, once for both forms (several events a turn)
    for value in values:
        if value in line:
            line = line.replace(value, "***")
    for value in values:
        escaped = _escaped(value)
        if escaped != value and escaped in line:
            line = line.replace(escaped, "***")
    return line


@functools.lru_cache(maxsize=64)
def _escaped(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)[1:-1]


class TraceWriter:
    """An Emit that appends each event to `path` as one JSON line, flushed immediately.

    Opening fails loudly (`InputError`: a `--trace` path that can't be written is the user's to
    fix, before any money is spent). Writing fails quietly: a full disk must not end a run that
    is otherwise fine, so the first write error is reported once through `on_error` (if given)
    and the writer stops writing; the run goes on without a trace.
    """

    def __init__(self, path: Path | str, on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.on_error = on_error
        self.failed = False
        # Should two threads ever emit at once, the lock keeps each line whole.
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write the trace {self.path}: {exc.strerror or exc}") from exc

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._file is None or self.failed:
                return
            try:
                self._file.write(_redacted_line(event) + "\n")
                self._file.flush()
            except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
                self.failed = True
                if self.on_error is not None:
                    self.on_error(f"cannot write the trace {self.path} ({exc}); the run goes on without it")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass  # the flush on close failed: already reported by __call__ if it mattered
                self._file = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: Path | str) -> list[Event]:
    """The events of a trace file, in order.

    A garbled last line (the writer died mid-line) is dropped. Events of types this version
    doesn't know (a newer rlm wrote them) are skipped. Any other line that isn't an event means
    the file is not an rlm trace: `InputError`, as for a missing or empty file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        raise InputError(f"no trace at {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not an rlm trace") from None
    except OSError as exc:
        raise InputError(f"cannot read the trace {path}: {exc.strerror or exc}") from exc
    numbered = [(n, raw) for n, raw in enumerate(lines, start=1) if raw.strip()]
    events: list[Event] = []
    for number, raw in numbered:
        event = _parse(raw)
        if event is None:
            if number == numbered[-1][0]:
                break  # the writer died mid-line: everything before it is intact
            raise InputError(f"{path} is not an rlm trace (line {number} is not an event)")
        if isinstance(event, Event):
            events.append(event)
    if not events:
        raise InputError(
            f"{path} holds no complete rlm event", hint="is it empty, or a trace of a newer rlm?"
        )
    return events


def _parse(raw: bytes) -> Event | bool | None:
    """The event on one line; True for a well-formed event of an unknown type; None otherwise."""
    try:
        data = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    if data["event"] not in EVENT_TYPES and data["event"] not in RENAMED:  # RENAMED: older traces
        return True
    try:
        event = from_dict(data)
    except TypeError:  # required fields missing: not something rlm wrote
        return None
    return event if _well_typed(event) else None


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),),
    "list": (list,), "dict": (dict,),
}  # fmt: skip


def _well_typed(event: Event) -> bool:
    """Each field holds what its annotation names (the outer type: `list[str]` is a list). A trace
    is a file anyone can hand to `rlm replay`: a string where the view formats a number would end
    the replay with a traceback."""
    for f in fields(event):
        names = [part.strip().split("[")[0] for part in str(f.type).split("|")]
        allowed = tuple(t for name in names for t in _TYPES.get(name, (object,)))
        if not isinstance(getattr(event, f.name), allowed):
            return False
    return True
