"""SQLite-specific behaviour: expired entries are purged through an index, a bounded batch at a time."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from promptcache.backends.sqlite import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM promptcache_entries").fetchone()
    return int(n)


async def test_expiry_purge_uses_the_expires_at_index(tmp_path: Path) -> None:
    """The purge's row search goes through an index on expires_at, not a scan of the whole table."""
    path = tmp_path / "c.db"
    async with SQLiteStore(path) as store:
        await store.set("k", b"v", 60)
    with sqlite3.connect(path) as conn:
        indexed = [
            row[2]
            for (name,) in conn.execute("SELECT name FROM pragma_index_list('promptcache_entries')")
            for row in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))
        ]
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT key FROM promptcache_entries WHERE expires_at <= ? "
                "ORDER BY expires_at LIMIT 500",
                (0,),
            )
        )
    assert "expires_at" in indexed
    assert "INDEX" in plan
    assert "SCAN promptcache_entries" not in plan.replace("USING", "")  # a bare scan has no index clause


async def test_a_purge_removes_a_bounded_batch(tmp_path: Path) -> None:
    """A table full of expired entries is emptied a bounded batch per purge, never all at once."""
    path = tmp_path / "c.db"
    clock = Clock()
    async with SQLiteStore(path, clock=clock) as store:
        for i in range(1200):
            await store.set(f"old{i}", b"v", 1)
        clock.now += 10  # every one of them has expired
        before = count_rows(path)
        for i in range(256):  # the 1,280th set triggers a purge
            await store.set(f"new{i}", b"v", 3600)
        after = count_rows(path)
        purged = before + 256 - after
        assert 0 < purged < 1200
        for i in range(256 * 4):
            await store.set(f"more{i}", b"v", 3600)
        assert all([await store.get(f"new{i}") == b"v" for i in range(256)])
    with sqlite3.connect(path) as conn:
        (left,) = conn.execute("SELECT COUNT(*) FROM promptcache_entries WHERE key LIKE 'old%'").fetchone()
    assert left == 0  # later purges finished the job
