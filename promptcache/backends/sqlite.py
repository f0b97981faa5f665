"""The embedded persistent store: one SQLite file, safe for several processes (WAL, busy timeout).

SQLite calls block, so they run on one dedicated worker thread per store; the event loop only awaits.
Expiry uses wall-clock time because several processes share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from promptcache._validate import positive
from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS promptcache_entries (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS promptcache_locks (
    name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS promptcache_counters (
    key TEXT NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (key, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS promptcache_entries_expires_at ON promptcache_entries (expires_at);
"""
_PURGE_EVERY: Final = 256
# At most this many expired rows go per purge: the purge runs on the store's only worker thread, inside a
# set, so an unbounded one (a table full of expired entries) would hold up every read queued behind it.
_PURGE_BATCH: Final = 500


class SQLiteStore:
    """A persistent store in one SQLite file.

    Args:
        path: The database file; created with its parent folder if missing.
        busy_timeout: Seconds a writer waits for another process's lock.
        clock: Wall-clock seconds; injectable for tests.

    .. versionadded:: 0.1.0
    """

    # A WAL checkpoint on a slow disk can take a while; it is still better than an upstream call.
    default_timeout: float = 0.25

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        if str(path) in {"", ":memory:"}:
            raise ConfigError("SQLiteStore needs a file path; use MemoryStore for an in-memory cache")
        self._busy_ms = int(positive(busy_timeout, "busy_timeout") * 1000)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptcache-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._sets = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._connect()))

    async def get(self, key: str) -> bytes | None:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM promptcache_entries WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(op)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        now = self._clock()
        expires = now + positive(ttl, "ttl")
        self._sets += 1
        purge = self._sets % _PURGE_EVERY == 0

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO promptcache_entries (key, value, expires_at) VALUES (?, ?, ?)",
                (key, sqlite3.Binary(value), expires),
            )
            if purge:  # the index on expires_at finds the expired rows without scanning the table
                conn.execute(
                    "DELETE FROM promptcache_entries WHERE key IN (SELECT key FROM promptcache_entries"
                    " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                    (now, _PURGE_BATCH),
                )

        await self._run(op)

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        rows = [(key, name, int(n)) for name, n in counts.items()]

        def op(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction: every field of the batch or none
                conn.executemany(
                    "INSERT INTO promptcache_counters (key, field, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (key, field) DO UPDATE SET value = value + excluded.value",
                    rows,
                )

        await self._run(op)

    async def read_counts(self, key: str) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            found = conn.execute("SELECT field, value FROM promptcache_counters WHERE key = ?", (key,))
            return {str(name): int(value) for name, value in found.fetchall()}

        return await self._run(op)

    async def delete(self, key: str) -> bool:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            live = conn.execute(
                "SELECT 1 FROM promptcache_entries WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            conn.execute("DELETE FROM promptcache_entries WHERE key = ?", (key,))
            return live is not None

        return await self._run(op)

    async def set_fenced(
        self, key: str, value: bytes, ttl: float, fences: Sequence[str], after: float
    ) -> bool:
        now = self._clock()
        expires = now + positive(ttl, "ttl")
        marks = ", ".join("?" * len(fences)) or "NULL"
        sql = (  # only "?" placeholders are formatted in
            "INSERT OR REPLACE INTO promptcache_entries (key, value, expires_at) SELECT ?, ?, ?"  # noqa: S608
            f" WHERE NOT EXISTS (SELECT 1 FROM promptcache_entries WHERE key IN ({marks})"
            " AND expires_at > ? AND CAST(CAST(value AS TEXT) AS REAL) > ?)"
        )

        def op(conn: sqlite3.Connection) -> bool:
            # One statement: SQLite runs it atomically, so no fence lands between its check and its write.
            cur = conn.execute(sql, (key, sqlite3.Binary(value), expires, *fences, now, after))
            return cur.rowcount > 0

        return await self._run(op)

    async def delete_if(self, key: str, value: bytes) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM promptcache_entries WHERE key = ? AND value = ?", (key, value))
            return cur.rowcount > 0

        return await self._run(op)

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        now = self._clock()
        match = (len(prefix), prefix)

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (live,) = conn.execute(
                    "SELECT COUNT(*) FROM promptcache_entries WHERE substr(key, 1, ?) = ? AND expires_at > ?",
                    (*match, now),
                ).fetchone()
                conn.execute("DELETE FROM promptcache_entries WHERE substr(key, 1, ?) = ?", match)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return int(live)

        return await self._run(op)

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:
        now = self._clock()
        expires = now + positive(ttl, "ttl")

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM promptcache_locks WHERE name = ? AND expires_at <= ?", (name, now))
            cur = conn.execute(
                "INSERT OR IGNORE INTO promptcache_locks (name, token, expires_at) VALUES (?, ?, ?)",
                (name, token, expires),
            )
            return cur.rowcount > 0

        return await self._run(op)

    async def unlock(self, name: str, token: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM promptcache_locks WHERE name = ? AND token = ?", (name, token))
            return cur.rowcount > 0

        return await self._run(op)

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix`` (for the CLI and tests)."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> list[str]:
            rows: Any = conn.execute(
                "SELECT key FROM promptcache_entries WHERE expires_at > ? AND substr(key, 1, ?) = ?",
                (now, len(prefix), prefix),
            )
            return [r[0] for r in rows]

        return await self._run(op)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
