"""The GET lane of a RedisStore on a real redis-server: its own connections beside the pool, bounded,
checked before reuse like the pool's, and closed with the store or the loop.

Private attributes of redis-py used here: ``ConnectionPool._in_use_connections`` (through
``in_use_connections``) and ``_available_connections`` (there is no public count of a pool's connections),
and ``Connection._reader`` (to see that a killed connection's end of stream has arrived).
"""

from __future__ import annotations

import asyncio
import functools

import pytest
import redis.asyncio as aioredis
from helpers import until
from reliability_support import in_use_connections

from promptcache import CacheConfig, PromptCache
from promptcache.backends._lane import FULL, GetLane
from promptcache.backends.redis import RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def test_gets_use_their_own_connections_and_never_hold_the_pools(redis_url: str) -> None:
    """64 concurrent guarded GETs each get their entry, the pool lends no connection for them, and the
    lane opens no more connections than the pool is wide."""
    store = RedisStore.from_url(redis_url, max_connections=8)
    cache = PromptCache(store, CacheConfig(hot_tier_bytes=0))
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.gather(*(raw.set(f"k{i}", f"v{i}") for i in range(64)))
        got = await asyncio.gather(
            *(cache._guard.run("get", functools.partial(store.get, f"k{i}")) for i in range(64))
        )
        assert got == [(True, f"v{i}".encode()) for i in range(64)]
        lane = store._clients.get().extras["lane"]
        assert isinstance(lane, GetLane)
        assert 1 <= lane.connections <= 8
        assert in_use_connections(cache) == 0
        assert len(store.client.connection_pool._available_connections) == 0  # the pool was never asked
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_a_full_lane_sends_the_get_through_the_client(redis_url: str) -> None:
    """A GET past the lane's width (a caller outside the guard) still gets its value, through the pool."""
    raw = aioredis.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url, max_connections=2)
    try:
        await raw.set("k", "v")
        assert await asyncio.gather(*(store.get("k") for _ in range(10))) == [b"v"] * 10
        lane = store._clients.get().extras["lane"]
        assert lane.connections == 2
        assert len(store.client.connection_pool._available_connections) > 0  # the rest went through it
    finally:
        await raw.aclose()
        await store.aclose()


async def test_a_lane_connection_the_server_closed_is_reconnected_not_an_error(redis_url: str) -> None:
    """Like the pool's check before lending: an idle lane connection killed by the server (a restart, an
    idle timeout) reconnects on its next GET, which is a hit, not a counted store error."""
    raw = aioredis.Redis.from_url(redis_url)
    cache = PromptCache(RedisStore.from_url(redis_url, max_connections=1), CacheConfig(hot_tier_bytes=0))
    store = cache.store
    assert isinstance(store, RedisStore)
    try:
        await raw.set("k", "v")
        assert await cache._guard.run("get", lambda: store.get("k")) == (True, b"v")
        (conn,) = store._clients.get().extras["lane"]._idle
        assert await raw.client_kill_filter(_type="normal", skipme=True) >= 1
        await until(conn._reader.at_eof, "the killed connection's end of stream")
        assert await cache._guard.run("get", lambda: store.get("k")) == (True, b"v")
        stats = cache.stats()
        assert (stats.store_errors, stats.store_timeouts) == (0, 0)
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_closing_the_store_closes_the_lane_and_later_gets_use_the_client(redis_url: str) -> None:
    """aclose disconnects every lane connection (the server sees them go); a GET on the closed lane
    says FULL, so the store falls back to its client."""
    raw = aioredis.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url)
    try:
        await raw.set("k", "v")
        await raw.client_setname("observer")
        assert await store.get("k") == b"v"
        lane = store._clients.get().extras["lane"]
        before = len(await raw.client_list())
        await store.aclose()
        assert len(await raw.client_list()) < before
        assert lane.connections == 0
        assert await lane.get("k") is FULL
    finally:
        await raw.aclose()


def test_each_event_loop_gets_its_own_lane_closed_with_the_loop(redis_url: str) -> None:
    """One store used from two successive asyncio.run loops: each loop's GETs work on its own lane, and
    each lane is closed when its loop ends."""
    store = RedisStore.from_url(redis_url)
    lanes: list[GetLane] = []

    async def read() -> bytes | None:
        await store.client.set("k", "v")
        value = await store.get("k")
        lanes.append(store._clients.get().extras["lane"])
        return value

    assert asyncio.run(read()) == b"v"
    assert asyncio.run(read()) == b"v"
    assert lanes[0] is not lanes[1]
    assert all(lane.closed and lane.connections == 0 for lane in lanes)


async def test_a_single_connection_client_keeps_its_gets_on_its_connection(redis_url: str) -> None:
    """A client built with single_connection_client has no lane: its GETs use its one connection."""
    raw = aioredis.Redis.from_url(redis_url)
    client = aioredis.Redis.from_url(redis_url, single_connection_client=True)
    store = RedisStore(client)
    try:
        await raw.set("k", "v")
        assert await store.get("k") == b"v"
        assert store._clients.get().extras["lane"] is False
    finally:
        await raw.aclose()
        await store.aclose()
