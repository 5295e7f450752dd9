"""The cache of model calls: a reply already paid for is served again, at no cost.

Content-addressed: a call's key is the SHA-256 of what decides its reply (the kind of call, the
model, the identity of the API base, the exact messages), never of a credential. Entries live in
one SQLite file in the data directory (`RLM_HOME`, beside the history), created 0600, shared by
concurrent runs (WAL, a busy timeout, one short transaction per operation). Past the size cap the
least recently used entries are evicted.

The model client asks `lookup` before a call and hands the reply to `store` after it (client.py).
A hit costs nothing against the budgets; it is counted in the run's usage (cache_hits, saved
tokens and cost), and the agent still emits its ModelCall event, marked cached. With --cache-only a
miss is a ProviderError (exit 4). The cache must never cost the user a run: a database that cannot
be opened or written is reported once and the run goes on without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ProviderError
from .completion import Completion

if TYPE_CHECKING:
    from ..budget import Budget
    from .providers import ModelConfig

DB_NAME = "cache.sqlite3"
BUSY_TIMEOUT_S = 5.0  # a call waits at most this long for another run's write
DEFAULT_MAX_BYTES = 1024**3
EVICT_TO = 0.9  # past the cap, evict down to this fraction of it (not one entry per store)
KEY_VERSION = 1  # bump when what a key covers changes: old entries then simply miss

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


def cache_path() -> Path:
    """`home()/cache.sqlite3`: it follows RLM_HOME, as the history does."""
    from ..record.history import home

    return home() / DB_NAME


def endpoint_identity(api_base: str | None) -> str:
    """Which server answers: scheme, host, port and path of the API base, without credentials or a
    query string (a key may hide in either), nor a trailing slash. "" is the provider's default."""
    if not api_base:
        return ""
    try:
        parts = urlsplit(api_base.strip())
        host = (parts.hostname or "").lower()
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL at all: the text, as given, is its identity
        return api_base.strip().rstrip("/")
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


# The line opening each root user message (turns.py) says what is left of the limits: seconds,
# tokens, dollars. It changes from one run to the next (hits cost nothing, time passes), so it is left
# out of the key; "Turn i of N." stays.
BUDGET_LEFT = re.compile(r"\A(Turn \d+ of \d+[^\n]*?\.) Budget left: [^\n]*")


def call_key(
    kind: str, model: str, api_base: str | None, messages: list[dict], params: dict | None = None
) -> str:
    """The key of one call. `kind` counts: a sub-call's reply may fall back to the reasoning text;
    `params`: the request's parameters that change the reply (key_params)."""
    document = {
        "v": KEY_VERSION,
        "kind": kind,
        "model": model,
        "endpoint": endpoint_identity(api_base),
        "messages": [{"role": m.get("role"), "content": _stable(kind, m)} for m in messages],
        "params": params or {},
    }
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def key_params(cfg: ModelConfig) -> dict:
    """What of a model's configuration changes its replies: the cap on a reply's tokens (a shorter
    cap cuts a reply short). Timeouts and retries do not."""
    cap = getattr(cfg, "max_reply_tokens", None)
    return {} if cap is None else {"max_reply_tokens": cap}


def _stable(kind: str, message: dict) -> object:
    content = message.get("content")
    if kind == "root" and message.get("role") == "user" and isinstance(content, str):
        return BUDGET_LEFT.sub(r"\1", content, count=1)
    return content


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

    # -- what the model client calls -------------------------------------------------------------

    async def lookup(
        self, kind: str, cfg: ModelConfig, messages: list[dict], budget: Budget
    ) -> Completion | None:
        """The cached reply of this call (counted as a hit in `budget`), or None to make the call.
        With --cache-only a miss raises CacheMiss."""
        key = call_key(kind, cfg.model, cfg.api_base, messages, key_params(cfg))
        value = await asyncio.to_thread(self.get, key)
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
        await asyncio.to_thread(self.put, key, value)
        self._tell()

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
        if self.broken:
            return None
        try:
            conn = self._thread_connection()
            row = conn.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE calls SET used = ? WHERE key = ?", (time.time(), key))
            return json.loads(row[0])
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._failed(exc)
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.broken:
            return
        text = json.dumps(value, ensure_ascii=False)
        size = len(key) + len(text.encode("utf-8", "surrogatepass"))
        now = time.time()
        try:
            conn = self._thread_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
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
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)

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
        if not self.path.exists():
            return Stats(0, 0, None, None)
        with closing(self._connect()) as conn:
            entries, size, oldest, newest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created), MAX(used) FROM calls"
            ).fetchone()
        return Stats(entries, size, oldest, newest)

    def clear(self) -> int:
        """Delete every entry; how many there were."""
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
        """This thread's connection, kept open: lookups run on a few worker threads, and opening a
        connection per call costs more than the call's query."""
        conn = getattr(self._threads, "conn", None)
        if conn is None:
            conn = self._threads.conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        """A connection to the cache, the file created 0600 (with its directory) if missing."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # before SQLite makes it 0644
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
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
