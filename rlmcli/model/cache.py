"""The cache of model calls: a reply already paid for is served again, at no cost.

Content-addressed: a call's key is the SHA-256 of what decides its reply (the kind of call, the
model, the identity of the API base, the exact messages), never of a credential. Entries live in
one SQLite file in the data directory (`RLM_HOME`, beside the history), created 0600, shared by
concurrent runs (WAL, a busy timeout, short transactions). Past the size cap the least recently
used entries are evicted.

A lookup and a store sit between two model calls, so they are kept off that path (issue 16: the
gap between iterations): a key hashes only the messages a conversation gained since its last call
(cache_key.py), a lookup is one indexed SELECT on the caller's thread (WAL readers never wait for a
writer), and stores and LRU touches are written behind the run: queued (a lookup sees them at once),
then written in one transaction by a job on the loop's default executor, WRITE_DELAY_S after the
first or as soon as WRITE_BATCH are queued. A write on every call cost the iteration more than its
own time: the writing thread competed with the cell for the CPU. When the run's event loop ends
(asyncio.run() closes its async generators: `_at_loop_end`), and at exit, what is queued is
written, so a run's replies are in the file when the run is over; a process killed mid-run may
lose the replies of its last second, never the file's consistency.

The model client asks `lookup` before a call and hands the reply to `store` after it (client.py).
A hit costs nothing against the budgets; it is counted in the run's usage (cache_hits, saved
tokens and cost), and the agent still emits its ModelCall event, marked cached. With --cache-only a
miss is a ProviderError (exit 4). The cache must never cost the user a run: a database that cannot
be opened or written is reported once and the run goes on without it.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ProviderError
from .cache_key import call_key, endpoint_identity, key_params  # noqa: F401 - run.py, rerun.py import them here
from .completion import Completion

if TYPE_CHECKING:
    from ..budget import Budget
    from .providers import ModelConfig

DB_NAME = "cache.sqlite3"
BUSY_TIMEOUT_S = 5.0  # a call waits at most this long for another run's write
DEFAULT_MAX_BYTES = 1024**3
EVICT_TO = 0.9  # past the cap, evict down to this fraction of it (not one entry per store)
WRITE_DELAY_S = 1.0  # a queued write waits at most this long (while the loop runs) for company...
WRITE_BATCH = 64  # ...or until this many are queued (a batch of sub-calls)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS calls (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        used REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS calls_used ON calls (used)",
    # The sum of `size`, kept as entries come and go: a SUM over the table at every store is O(n).
    "CREATE TABLE IF NOT EXISTS meta (total INTEGER NOT NULL)",
    "INSERT INTO meta SELECT COALESCE(SUM(size), 0) FROM calls WHERE NOT EXISTS (SELECT 1 FROM meta)",
)


# Every cache of this process: what is still queued is written at exit (a loop that ended without
# asyncio.run()'s clean-up, e.g. run_until_complete).
_LIVE: weakref.WeakSet[CallCache] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for cache in list(_LIVE):
        cache.flush()


def cache_path() -> Path:
    """`home()/cache.sqlite3`: it follows RLM_HOME, as the history does."""
    from ..record.history import home

    return home() / DB_NAME


@dataclass
class Stats:
    entries: int
    bytes: int
    oldest: float | None
    newest: float | None


class CacheMiss(ProviderError):
    """--cache-only, and the call's reply is not in the cache."""


class CallCache:
    """The cache file at `path`; `only`: a miss is an error (offline); `warn`: how problems are told."""

    def __init__(
        self,
        path: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        only: bool = False,
        warn: Callable[[str], None] | None = None,
    ):
        self.path = Path(path) if path is not None else cache_path()
        self.max_bytes = max_bytes
        self.only = only
        self.warn = warn
        self.broken = False  # a failure was reported: the run goes on without the cache
        self._untold: str | None = None  # that failure, until told on the event loop's thread
        self._threads = threading.local()  # a connection per thread (_thread_connection)
        self.missed: CacheMiss | None = None  # --cache-only: the first miss, which ends the run
        # Writes not yet in the file (see the module's docstring): ("put", key, text) and
        # ("touch", key, None), in order; the texts of the puts, which reads see; whether a drain runs.
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._queue: list[tuple[str, str, str | None]] = []
        self._pending: dict[str, str] = {}
        self._draining = False
        self._timer: asyncio.TimerHandle | None = None  # the delayed drain (WRITE_DELAY_S)
        self._ender: tuple[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] | None = None
        _LIVE.add(self)

    # -- what the model client calls -------------------------------------------------------------

    async def lookup(
        self, kind: str, cfg: ModelConfig, messages: list[dict], budget: Budget
    ) -> Completion | None:
        """The cached reply of this call (counted as a hit in `budget`), or None to make the call.
        With --cache-only a miss raises CacheMiss."""
        key = call_key(kind, cfg.model, cfg.api_base, messages, key_params(cfg))
        await self._watch_loop()
        if getattr(self._threads, "conn", None) is None and not self.broken:
            # Opening the file (creating it, its schema) may wait for another run's write: not on the
            # loop; and once, however many calls are waiting for it (a batch of sub-calls).
            opening = getattr(self._threads, "opening", None)
            if opening is None or opening.get_loop() is not asyncio.get_running_loop():
                opening = self._threads.opening = asyncio.ensure_future(asyncio.to_thread(self._open))
            self._threads.conn = await opening
        value = self._read(key)
        if value is not None:
            self._submit(("touch", key, None), asyncio.get_running_loop())
        self._tell()
        completion = self._completion(value)
        if completion is None:
            budget.usage.cache_misses += 1
            if self.only:
                what = "root call" if kind == "root" else "sub-call"
                self.missed = self.missed or CacheMiss(  # one line, no hint: it says what to do
                    f"--cache-only: no cached reply for a {what} to {cfg.model} (run without --cache-only "
                    "to make it)"
                )
                raise self.missed
            return None
        return self.hit(completion, budget)

    @staticmethod
    def hit(completion: Completion, budget: Budget) -> Completion:
        """Count a served reply: free against the limits, its tokens and cost saved."""
        budget.check_clock()  # free, but not past the run's end
        usage = budget.usage
        usage.cache_hits += 1
        usage.saved_tokens += completion.prompt_tokens + completion.completion_tokens
        usage.saved_cost_usd += completion.cost_usd or 0.0
        return completion

    async def store(self, kind: str, cfg: ModelConfig, messages: list[dict], completion: Completion) -> None:
        if not completion.text:
            return  # an empty reply is re-asked by the loop: replaying it would only repeat that
        key = call_key(kind, cfg.model, cfg.api_base, messages, key_params(cfg))
        value = {
            "text": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost_usd": completion.cost_usd,
            "usage_estimated": completion.usage_estimated,
            "model": completion.model,
        }
        await self._watch_loop()
        self._submit(("put", key, json.dumps(value, ensure_ascii=False)), asyncio.get_running_loop())
        self._tell()

    async def _watch_loop(self) -> None:
        """Have what is queued written when the running event loop ends: asyncio.run() closes the loop's
        async generators before it returns, and this one's `finally` flushes."""
        loop = asyncio.get_running_loop()
        if self._ender is None or self._ender[0] is not loop:
            self._ender = (loop, self._at_loop_end())
            await anext(self._ender[1])

    async def _at_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:  # the loop's timer dies with it: the next loop starts its own
                timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self.flush()

    @staticmethod
    def _completion(value: dict | None) -> Completion | None:
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return None
        try:
            return Completion(
                value["text"], int(value["prompt_tokens"]), int(value["completion_tokens"]),
                None if value.get("cost_usd") is None else float(value["cost_usd"]), 0.0,
                bool(value.get("usage_estimated")), str(value.get("model") or ""), cached=True,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):  # an entry of another version: a miss
            return None

    # -- the database ----------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        """The entry of `key` (its LRU time updated), or None."""
        value = self._read(key)
        if value is not None:
            self._submit(("touch", key, None))
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store an entry; in the file when this returns."""
        self._submit(("put", key, json.dumps(value, ensure_ascii=False)))
        self.flush()

    def flush(self) -> None:
        """Wait until every write asked for so far is in the file (or has failed)."""
        with self._lock:
            while self._draining:
                self._drained.wait()
            if not self._queue:
                return
            self._draining = True
        self._drain()

    def _read(self, key: str) -> dict | None:
        if self.broken:
            return None
        try:
            with self._lock:
                text = self._pending.get(key)  # written by this process, not yet in the file
            if text is None:
                row = (
                    self._thread_connection()
                    .execute("SELECT value FROM calls WHERE key = ?", (key,))
                    .fetchone()
                )
                text = None if row is None else row[0]
            return None if text is None else json.loads(text)
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._failed(exc)
            return None

    def _submit(self, op: tuple[str, str, str | None], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue a write. With a loop: written WRITE_DELAY_S later, or now on its executor once
        WRITE_BATCH are queued; without one: written here and now."""
        if self.broken:
            return
        with self._lock:
            self._queue.append(op)
            if op[0] == "put":
                self._pending[op[1]] = op[2]  # type: ignore[assignment]
            if self._draining:
                return  # the running drain takes it: it stops only with the queue empty
            if loop is not None and len(self._queue) < WRITE_BATCH:
                if self._timer is None:
                    self._timer = loop.call_later(WRITE_DELAY_S, self._kick, loop)
                return
            self._draining = True
        if loop is not None:
            try:
                loop.run_in_executor(None, self._drain)
                return
            except RuntimeError:  # the executor is shutting down: write it here and now
                pass
        self._drain()

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        """The delayed drain: on the loop's executor, unless one runs."""
        with self._lock:
            self._timer = None
            if self._draining or not self._queue:
                return
            self._draining = True
        try:
            loop.run_in_executor(None, self._drain)
        except RuntimeError:
            self._drain()

    def _drain(self) -> None:
        """Write what is queued, a batch per transaction, until the queue is empty."""
        batch: list[tuple[str, str, str | None]] = []
        try:
            while True:
                with self._lock:  # checked and cleared under one lock: a write queued now is taken
                    for kind, key, text in batch:
                        if kind == "put" and self._pending.get(key) is text:
                            del self._pending[key]
                    batch, self._queue = self._queue, []
                    if not batch or self.broken:
                        break
                try:
                    self._write(batch)
                except (sqlite3.Error, OSError) as exc:
                    self._failed(exc)
        finally:  # also after a bug: a flush must not wait forever
            with self._lock:
                self._draining = False
                self._drained.notify_all()

    def _write(self, batch: list[tuple[str, str, str | None]]) -> None:
        conn = self._thread_connection()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, key, text in batch:
                if kind == "touch":
                    conn.execute("UPDATE calls SET used = ? WHERE key = ?", (now, key))
                    continue
                text = text or ""  # a put always has its text
                size = len(key) + len(text.encode("utf-8", "surrogatepass"))
                old = conn.execute("SELECT size FROM calls WHERE key = ?", (key,)).fetchone()
                conn.execute(
                    "INSERT OR REPLACE INTO calls (key, value, size, created, used) VALUES (?, ?, ?, ?, ?)",
                    (key, text, size, now, now),
                )
                conn.execute("UPDATE meta SET total = total + ?", (size - (old[0] if old else 0),))
            self._evict(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _evict(self, conn: sqlite3.Connection) -> None:
        """Least recently used first, down to EVICT_TO of the cap (inside the caller's transaction)."""
        total = conn.execute("SELECT total FROM meta").fetchone()[0]
        if total <= self.max_bytes:
            return
        target = int(self.max_bytes * EVICT_TO)
        doomed, freed = [], 0
        for key, size in conn.execute("SELECT key, size FROM calls ORDER BY used, created"):
            if total - freed <= target:
                break
            doomed.append((key,))
            freed += size
        conn.executemany("DELETE FROM calls WHERE key = ?", doomed)
        conn.execute("UPDATE meta SET total = total - ?", (freed,))

    def stats(self) -> Stats:
        self.flush()
        if not self.path.exists():
            return Stats(0, 0, None, None)
        with closing(self._connect()) as conn:
            entries, size, oldest, newest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created), MAX(used) FROM calls"
            ).fetchone()
        return Stats(entries, size, oldest, newest)

    def clear(self) -> int:
        """Delete every entry; how many there were."""
        self.flush()
        if not self.path.exists():
            return 0
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            count = conn.execute("DELETE FROM calls").rowcount
            conn.execute("UPDATE meta SET total = 0")
            conn.execute("COMMIT")
            conn.execute("VACUUM")
        return count

    def _thread_connection(self) -> sqlite3.Connection:
        """This thread's connection, kept open: opening one costs more than the call's query (~2 ms:
        the file, the schema)."""
        conn = getattr(self._threads, "conn", None)
        if conn is None:
            conn = self._threads.conn = self._connect()
        return conn

    def _open(self) -> sqlite3.Connection | None:
        """A connection, or None when the cache cannot be used (reported)."""
        try:
            return self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return None

    def _connect(self) -> sqlite3.Connection:
        """A connection to the cache, the file created 0600 (with its directory) if missing."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # before SQLite makes it 0644
        # check_same_thread off: a lookup's connection is opened in a worker, then used on the loop's
        # thread only (and the sqlite3 module serialises calls on a connection anyway).
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # WAL: readers never wait for a writer. A property of the file, kept once set; its -wal
            # and -shm files take the database's mode. Some filesystems refuse it: the default works.
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.Error:
                    pass
            # A cache may lose its last writes to a power cut (never its consistency): no fsync per call.
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _failed(self, exc: Exception) -> None:
        if not self.broken:
            self._untold = f"cannot use the model-call cache {self.path} ({exc}); the run goes on without it"
        self.broken = True

    def _tell(self) -> None:
        """Report a failure once, from the caller's thread (events are emitted from the loop's)."""
        message, self._untold = self._untold, None
        if message is not None and self.warn is not None:
            self.warn(message)
