"""The GET lane of a RedisStore on a real redis-server: its own connections beside the pool, bounded,
checked before reuse like the pool's, and closed with the store or the loop.

Private attributes of redis-py used here: ``ConnectionPool._in_use_connections`` (through
``in_use_connections``) and ``_available_connections`` (there is no public count of a pool's connections),
and ``Connection._reader`` (to see that a killed connection's end of stream has arrived).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import until
from redis_server import free_port
from reliability_support import in_use_connections

from promptcache import CacheConfig, PromptCache
from promptcache.backends._lane import FULL, GetLane
from promptcache.backends.redis import RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def warm_lane(store: RedisStore, connections: int) -> GetLane:
    """This loop's lane of ``store`` grown to ``connections``: concurrent GETs that find no idle lane
    connection each let it open one more (one at a time)."""

    async def grown() -> bool:
        await asyncio.gather(*(store.get("absent") for _ in range(connections)))
        lane: GetLane = store._clients.get().extras["lane"]
        return lane.connections >= connections

    await until(grown, f"the lane grown to {connections}")
    lane = store._clients.get().extras["lane"]
    assert isinstance(lane, GetLane)
    return lane


async def test_a_get_on_an_idle_lane_connection_never_asks_the_pool(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the lane has grown, concurrent guarded GETs each get their entry without the pool lending a
    connection, and the lane opens no more connections than the pool is wide."""
    store = RedisStore.from_url(redis_url, max_connections=8)
    cache = PromptCache(store, CacheConfig(hot_tier_bytes=0))
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.gather(*(raw.set(f"k{i}", f"v{i}") for i in range(64)))
        assert await store.preconnect(100) == 8  # at most the pool's width
        lane = store._clients.get().extras["lane"]

        async def no_pool() -> None:
            raise AssertionError("the pool was asked for a connection")

        monkeypatch.setattr(store.client.connection_pool, "get_connection", no_pool)
        got = await asyncio.gather(
            *(cache._guard.run("get", functools.partial(store.get, f"k{i}")) for i in range(64))
        )
        assert got == [(True, f"v{i}".encode()) for i in range(64)]
        assert lane.connections == 8
        assert in_use_connections(cache) == 0
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_a_get_finding_no_idle_lane_connection_goes_through_the_pool_and_the_lane_grows(
    redis_url: str,
) -> None:
    """A cold lane: the GET is answered through the client's pool (no connection set-up of the lane's under
    its deadline), and the lane opens a connection in the background for the next one; never more than
    the pool is wide."""
    raw = aioredis.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url, max_connections=2)
    try:
        await raw.set("k", "v")
        assert await asyncio.gather(*(store.get("k") for _ in range(10))) == [b"v"] * 10
        assert len(store.client.connection_pool._available_connections) > 0  # they went through it
        lane = store._clients.get().extras["lane"]
        assert lane.connections <= 1  # one opened at a time, in the background
        await warm_lane(store, 2)
        assert await asyncio.gather(*(store.get("k") for _ in range(10))) == [b"v"] * 10
        assert lane.connections == 2
    finally:
        await raw.aclose()
        await store.aclose()


async def test_preconnect_to_a_redis_that_refuses_opens_nothing_and_raises_nothing() -> None:
    """preconnect is a warm-up: with nothing listening it opens no connection and raises nothing."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert await store.preconnect(4) == 0
    finally:
        await store.aclose()


async def test_one_burst_opens_one_lane_connection_not_the_lanes_limit(redis_url: str) -> None:
    """The lane grows to the concurrency its GETs keep meeting: one burst of 64 GETs on a cold lane (the
    pool is 64 wide) opens one lane connection, not 64 (each idle connection costs Redis memory)."""
    store = RedisStore.from_url(redis_url)
    try:
        await asyncio.gather(*(store.get("absent") for _ in range(64)))
        lane = store._clients.get().extras["lane"]
        await until(lambda: lane.connections == 1, "the lane's first connection open")
        assert lane._growing is None  # and no other on its way: no GET is left to ask for one
    finally:
        await store.aclose()


async def test_a_lane_connection_opens_outside_the_gets_deadline(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane connection whose set-up hangs never holds up a GET: the GET is answered through the pool
    within its deadline (no timeout counted), and the connection joins the lane once it is open."""
    cache = PromptCache(RedisStore.from_url(redis_url), CacheConfig(hot_tier_bytes=0, store_timeout=0.05))
    store = cache.store
    assert isinstance(store, RedisStore)
    pool = store.client.connection_pool
    opened = asyncio.Event()
    make = pool.make_connection

    def slow_to_open() -> Any:
        conn = make()  # type: ignore[no-untyped-call] # redis-py leaves it untyped
        connect = conn.connect_check_health

        async def held(*args: Any, **kwargs: Any) -> None:
            await opened.wait()
            await connect(*args, **kwargs)

        conn.connect_check_health = held
        return conn

    try:
        await store.client.set("k", "v")
        monkeypatch.setattr(pool, "make_connection", slow_to_open)
        assert await cache._guard.run("get", lambda: store.get("k")) == (True, b"v")
        stats = cache.stats()
        assert (stats.store_timeouts, stats.store_errors) == (0, 0)
        lane = store._clients.get().extras["lane"]
        assert lane.connections == 0
        opened.set()
        await until(lambda: lane.connections == 1, "the lane's connection open")
        assert await cache._guard.run("get", lambda: store.get("k")) == (True, b"v")
    finally:
        await cache.aclose()


async def test_a_burst_of_hits_on_a_cold_lane_stays_hits(redis_url: str) -> None:
    """1,000 concurrent hits on a warm pool and a cold lane (the store's default 50 ms deadline): every
    one is a hit, none a store timeout; the lane's connections open outside their deadlines."""
    cache = PromptCache(RedisStore.from_url(redis_url), CacheConfig(hot_tier_bytes=0))
    store = cache.store
    assert isinstance(store, RedisStore)
    requests = [{"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(1_000)]
    answer: dict[str, Any] = {
        "choices": [{"message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"}]
    }

    async def upstream() -> dict[str, Any]:
        return answer

    try:
        for request in requests:
            assert await cache.set(request, answer, agent_id="a")
        await asyncio.gather(*(store.client.ping() for _ in range(64)))  # the pool warm, the lane not
        got = await asyncio.gather(*(cache.get_or_call(r, upstream, agent_id="a") for r in requests))
        assert got == [answer] * 1_000
        stats = cache.stats()
        assert (stats.hits, stats.store_timeouts, stats.store_errors) == (1_000, 0, 0)
    finally:
        await cache.aclose()


async def test_a_lane_connection_the_server_closed_is_reconnected_not_an_error(redis_url: str) -> None:
    """Like the pool's check before lending: an idle lane connection killed by the server (a restart, an
    idle timeout) reconnects on its next GET, which is a hit, not a counted store error."""
    raw = aioredis.Redis.from_url(redis_url)
    cache = PromptCache(RedisStore.from_url(redis_url, max_connections=1), CacheConfig(hot_tier_bytes=0))
    store = cache.store
    assert isinstance(store, RedisStore)
    try:
        await raw.set("k", "v")
        await warm_lane(store, 1)
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
        lane = await warm_lane(store, 2)
        assert await store.get("k") == b"v"
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
        lanes.append(await warm_lane(store, 1))
        return await store.get("k")

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


@pytest.mark.parametrize("interval", [0, 30])
async def test_a_lane_get_health_checks_only_where_the_client_asks(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, interval: int
) -> None:
    """A client built with health_check_interval gets redis-py's health check before each lane GET, as
    its own commands do; at interval 0 (the store's default) the lane skips the no-op."""
    store = RedisStore(aioredis.Redis.from_url(redis_url, health_check_interval=interval))
    try:
        await store.client.set("k", "v")
        lane = await warm_lane(store, 1)
        (conn,) = lane._idle
        checks = 0
        check = conn.check_health

        async def counted() -> None:
            nonlocal checks
            checks += 1
            await check()  # type: ignore[no-untyped-call] # redis-py leaves it untyped

        monkeypatch.setattr(conn, "check_health", counted)
        assert await store.get("k") == b"v"
        assert checks == (1 if interval else 0)
    finally:
        await store.aclose()
