"""The session's real redis-server answers redis-py and is private to this test run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

if TYPE_CHECKING:
    from redis_server import RedisServer

pytestmark = pytest.mark.redis


async def _roundtrip(url: str) -> object:
    client = aioredis.from_url(url)
    try:
        await client.set("promptcache-fixture-check", b"ok", ex=10)
        return await client.get("promptcache-fixture-check")
    finally:
        await client.aclose()


def test_session_server_roundtrips_through_redis_py(redis_url: str) -> None:
    """A value written through redis.asyncio is read back from the fixture's server."""
    assert asyncio.run(_roundtrip(redis_url)) == b"ok"


def test_session_server_has_no_persistence(redis_server: RedisServer) -> None:
    """The server runs with RDB saves and AOF disabled, so tests never write dumps."""
    assert b"appendonly\r\n$2\r\nno" in redis_server.command("CONFIG", "GET", "appendonly")
    save = redis_server.command("CONFIG", "GET", "save")
    assert save.endswith(b"$0\r\n\r\n"), save
