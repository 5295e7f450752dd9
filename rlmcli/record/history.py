"""The run history: one SQLite row per run, written as the run starts and again as it ends.

The row is written at RunStarted (exit_reason "running") so that a run killed hard still leaves a
trace of itself, and rewritten whole at RunFinished. Every write is its own short transaction on
a fresh connection: two writes per run cost nothing, and nothing is held open across a run that
another `rlm` process might be waiting on. The history must never cost the user a run: a locked,
read-only or missing database is reported once through a callback and the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from ..errors import InputError, redact
from ..events import Event, RunFinished, RunStarted, SandboxChosen

DB_NAME = "history.sqlite3"
WRITE_TIMEOUT_S = 2.0  # a run waits at most this long for another process's write lock
READ_TIMEOUT_S = 5.0

# Schema migrations, applied in order; PRAGMA user_version counts those applied. Append, never
# edit: a database at version N gets MIGRATIONS[N:], each in one transaction with the version bump.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the runs table
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            cwd TEXT,
            inputs TEXT,
            question TEXT,
            model TEXT,
            sub_model TEXT,
            sandbox TEXT,
            answer TEXT,
            exit_reason TEXT NOT NULL,
            partial INTEGER,
            iterations INTEGER,
            subcalls INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd REAL,
            cost_known INTEGER,
            elapsed_s REAL,
            trace_path TEXT
        )""",
        "CREATE INDEX runs_started_at ON runs (started_at)",
    ),
    (  # 2: follow-up chains (`rlm ask -c`) and the cache of model calls
        "ALTER TABLE runs ADD COLUMN parent_run TEXT",
        "ALTER TABLE runs ADD COLUMN cache_hits INTEGER",
        "ALTER TABLE runs ADD COLUMN cache_saved_tokens INTEGER",
        "ALTER TABLE runs ADD COLUMN cache_saved_cost_usd REAL",
    ),
]


def home() -> Path:
    """Where rlm keeps its history and traces: `RLM_HOME`, else the user data dir."""
    return Path(os.environ.get("RLM_HOME") or platformdirs.user_data_path("rlm"))


@dataclass
class RunRecord:
    """One row of `runs`. Totals are None while a run is (or was, when it died) "running"."""

    id: str
    started_at: float
    cwd: str = ""
    inputs: list[str] = field(default_factory=list)
    question: str = ""
    model: str = ""
    sub_model: str = ""
    sandbox: str = ""
    answer: str | None = None
    exit_reason: str = "running"
    partial: bool | None = None
    iterations: int | None = None
    subcalls: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cost_known: bool | None = None
    elapsed_s: float | None = None
    trace_path: str | None = None
    parent_run: str | None = None  # the run this one follows up (`rlm ask -c`)
    cache_hits: int | None = None  # calls the cache of model calls served, and what they saved
    cache_saved_tokens: int | None = None
    cache_saved_cost_usd: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def _row(self) -> dict:
        row = self.to_dict()
        row["inputs"] = json.dumps(self.inputs, ensure_ascii=False)
        return {key: _storable(value) for key, value in row.items()}

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> RunRecord:
        data = dict(row)
        try:
            data["inputs"] = json.loads(data["inputs"] or "[]")
        except ValueError:
            data["inputs"] = []
        for flag in ("partial", "cost_known"):
            if data[flag] is not None:
                data[flag] = bool(data[flag])
        return cls(**{k: v for k, v in data.items() if k in COLUMNS})


SQLITE_INT_MAX = 2**63 - 1


def _storable(value: object) -> object:
    """`value` as SQLite takes it. Totals come from providers, which can send anything (another
    layer validates usage; this one only must not fail): an int beyond 64 bits is clamped, a NaN
    or infinite float is stored as unknown (NULL), text with lone surrogates is escaped."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return max(-SQLITE_INT_MAX, min(value, SQLITE_INT_MAX))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return str(value)


COLUMNS = tuple(RunRecord.__dataclass_fields__)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM runs"


class History:
    """The run history database, `home()/history.sqlite3` unless `path` says otherwise.

    Nothing touches the disk until it is needed: reading a history that doesn't exist yet finds
    no runs instead of creating an empty database.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else home() / DB_NAME

    def traces_dir(self) -> Path:
        """Traces live beside the database (`home()/traces` by default)."""
        return self.path.parent / "traces"

    def trace_path_for(self, run_id: str) -> Path:
        return self.traces_dir() / f"{run_id}.jsonl"

    # -- connections -------------------------------------------------------------------------

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """A connection to an up-to-date database, created (with its directory) if missing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, so a migration and its version
        # bump commit together.
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
            return  # the common case: no write lock taken. A newer rlm's schema is left alone.
        # WAL lets `rlm logs` read while a run writes. It is a property of the file, set once;
        # some filesystems refuse it, and the default journal works too.
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error:
            pass
        conn.execute("BEGIN IMMEDIATE")  # the write lock, so two first runs don't both migrate
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number:d}")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # nothing to roll back: the failure ended the transaction
            raise

    def _read(self) -> sqlite3.Connection | None:
        """A connection for reading, or None when no history exists yet."""
        if not self.path.exists():
            return None
        try:
            return self._connect(READ_TIMEOUT_S)
        except (sqlite3.Error, OSError) as exc:
            raise _unreadable(self.path, exc) from exc

    def _write(self, record: RunRecord, timeout: float = WRITE_TIMEOUT_S) -> None:
        row = record._row()
        with closing(self._connect(timeout)) as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )

    # -- recording -----------------------------------------------------------------------------

    def recorder(self, trace_path: Path | None, on_error: Callable[[str], None] | None = None) -> Recorder:
        """An Emit that records the top-level run it sees (RunStarted with no parent)."""
        return Recorder(self, trace_path, on_error)

    # -- reading -------------------------------------------------------------------------------

    def recent(self, n: int = 20) -> list[RunRecord]:
        """The `n` newest runs, newest first."""
        conn = self._read()
        if conn is None:
            return []
        with closing(conn):
            rows = self._query(conn, f"{_SELECT} ORDER BY started_at DESC, id DESC LIMIT ?", (n,))
        return [RunRecord._from_row(row) for row in rows]

    def get(self, id_or_prefix: str) -> RunRecord:
        """The run with this id, else the one whose id starts with it, else the one whose random
        suffix starts with it (ids look like 20261122-112233-3fa9c1: `3fa9` is enough); `last`
        is the newest run. Unknown or ambiguous: `InputError`."""
        key = id_or_prefix.strip()
        if not key:
            raise InputError("no run id given")
        conn = self._read()
        if conn is None:
            raise InputError(f"no run {key!r}: no runs recorded yet", hint=f"the history is {self.path}")
        with closing(conn):
            if key == "last":
                rows = self._query(conn, f"{_SELECT} ORDER BY started_at DESC, id DESC LIMIT 1", ())
            else:
                rows = self._query(conn, f"{_SELECT} WHERE id = ?", (key,))
            like = _like_escape(key)
            if not rows:
                rows = self._query(conn, f"{_SELECT} WHERE id LIKE ? ESCAPE '\\' ORDER BY id", (like + "%",))
            if not rows:
                rows = self._query(
                    conn, f"{_SELECT} WHERE id LIKE ? ESCAPE '\\' ORDER BY id", (f"%-{like}%",)
                )
                rows = [row for row in rows if row["id"].rsplit("-", 1)[-1].startswith(key)]
        if not rows:
            raise InputError(f"no run {key!r} in the history", hint="`rlm logs` lists recent runs")
        if len(rows) > 1:
            some = ", ".join(row["id"] for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise InputError(f"run id {key!r} is ambiguous: it matches {some}")
        return RunRecord._from_row(rows[0])

    def _query(self, conn: sqlite3.Connection, sql: str, params: tuple) -> list[sqlite3.Row]:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _unreadable(self.path, exc) from exc


class Recorder:
    """The Emit `History.recorder` returns. Warns once through `on_error`, never raises."""

    def __init__(self, history: History, trace_path: Path | None, on_error: Callable[[str], None] | None):
        self.history = history
        self.trace_path = str(Path(trace_path).resolve()) if trace_path is not None else None
        self.on_error = on_error
        self.record: RunRecord | None = None
        self.warned = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted) and event.parent is None and self.record is None:
            self.record = RunRecord(
                id=event.id,
                started_at=event.ts,
                cwd=redact(event.cwd),
                inputs=[redact(p) for p in event.inputs],
                question=redact(event.question),
                model=event.model,
                sub_model=event.sub_model,
                sandbox=event.sandbox,
                trace_path=self.trace_path,
                parent_run=event.parent_run,
            )
            self._save()
        elif isinstance(event, SandboxChosen) and self.record is not None and event.parent == self.record.id:
            self.record.sandbox = event.sandbox  # the one used, where RunStarted may say "auto"
            self._save()
        elif isinstance(event, RunFinished) and self.record is not None and event.parent == self.record.id:
            # The whole row again, not an UPDATE: if the first write was lost to a lock, this one
            # still records the run.
            r = self.record
            r.exit_reason, r.partial, r.iterations = event.exit_reason, event.partial, event.iterations
            r.answer = redact(event.answer) if event.answer is not None else None
            r.subcalls, r.prompt_tokens = event.subcalls, event.prompt_tokens
            r.completion_tokens, r.cost_usd = event.completion_tokens, event.cost_usd
            r.cost_known, r.elapsed_s = event.cost_known, event.elapsed_s
            r.cache_hits, r.cache_saved_tokens = event.cache_hits, event.cache_saved_tokens
            r.cache_saved_cost_usd = event.cache_saved_cost_usd
            self._save()

    def _save(self) -> None:
        assert self.record is not None
        try:
            self.history._write(self.record)
        except Exception as exc:  # any failure of the record is a warning, never the end of the run
            if not self.warned and self.on_error is not None:
                self.on_error(f"cannot record the run in {self.history.path} ({exc}); the run goes on")
            self.warned = True


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(
        f"cannot read the run history {path}: {exc}",
        hint="if it is damaged, move it away; rlm starts a new one on the next run",
    )
