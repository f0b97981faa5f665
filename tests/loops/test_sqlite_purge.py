"""Issue #13, row 8: the SQLite store purges expired entries through an index, not a full-table scan.

Looked at from outside, with the stdlib ``sqlite3`` module on the file named in the URL: the table holding
the entries is found by its contents (the one table with an ``expires_at`` column and one row per entry),
so the test does not depend on the store's table names.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

from loops_support import AGENT, answer_body, chat_request

from promptcache import PromptCache

if TYPE_CHECKING:
    from pathlib import Path

ENTRIES = 3


def _entry_table(conn: sqlite3.Connection) -> str:
    """The table with an ``expires_at`` column holding exactly one row per stored entry."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    found = [
        t
        for t in tables
        if "expires_at" in {c[1] for c in conn.execute(f'PRAGMA table_info("{t}")')}
        and conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == ENTRIES  # noqa: S608 - a table name
    ]
    assert len(found) == 1, (tables, found)
    return str(found[0])


def test_sqlite_entries_have_an_index_on_expires_at(tmp_path: Path) -> None:
    """After the store is created and written to, the entries table has an index led by ``expires_at``,
    and SQLite's plan for deleting expired entries uses it instead of scanning the table."""
    path = tmp_path / "cache.db"

    async def store_some() -> None:
        async with PromptCache.from_url(f"sqlite:///{path}") as cache:
            for i in range(ENTRIES):
                prompt = f"indexed question {i}"
                assert await cache.set(chat_request(prompt), answer_body(prompt, i), agent_id=AGENT)

    asyncio.run(store_some())
    with closing(sqlite3.connect(path)) as conn:
        table = _entry_table(conn)
        leading = {
            index[1]: [c[2] for c in conn.execute(f'PRAGMA index_info("{index[1]}")')][:1]
            for index in conn.execute(f'PRAGMA index_list("{table}")')
        }
        assert ["expires_at"] in leading.values(), f"indexes of {table}: {leading}"
        purge = f'EXPLAIN QUERY PLAN DELETE FROM "{table}" WHERE expires_at <= ?'  # noqa: S608 - a table name
        plan = " ".join(str(row[-1]) for row in conn.execute(purge, (0.0,)))
        assert plan.startswith("SEARCH"), plan  # not "SCAN <table>"
        assert "(expires_at<?)" in plan, plan
