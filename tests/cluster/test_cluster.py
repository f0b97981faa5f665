"""RedisClusterStore and PromptCache on a real Redis Cluster (3 primaries + 3 replicas on loopback).

The store contract (the same promises every store makes), then the cache on top: hits, invalidation
across every primary, single-flight across processes, how one agent's keys spread over the primaries,
and a primary SIGKILLed mid-traffic. Contents are checked node by node with plain (non-cluster) clients.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import redis
from helpers import Upstream, answer_for, check_answer, run_single_flight_workers, until
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from promptcache import CacheConfig, ConfigError, PromptCache
from promptcache._keys import agent_prefix
from promptcache.backends import BatchReadStore, CountingStore, ListingStore, LockingStore
from promptcache.backends.cluster import RedisClusterStore, cluster_url_to_redis
from promptcache.backends.redis import glob_escape

if TYPE_CHECKING:
    from redis_cluster import LocalRedisCluster

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

MODEL = "gpt-4o-mini"
NAMESPACE = "promptcache"


# -- helpers ---------------------------------------------------------------------------------------


def request_for(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0}


async def ask(cache: PromptCache, upstream: Upstream, rid: str, agent: str = "agent") -> Any:
    return await cache.get_or_call(request_for(rid), upstream.for_prompt(rid), agent_id=agent)


def count_on_primaries(cluster: LocalRedisCluster, prefix: str) -> dict[int, int]:
    """Keys starting with ``prefix`` on each live primary, by port (SCAN on that node alone)."""
    counts: dict[int, int] = {}
    for node in cluster.primaries():
        with node.client() as client:
            counts[node.port] = sum(1 for _ in client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
    return counts


def open_cache(cluster: LocalRedisCluster, **config: Any) -> PromptCache:
    return PromptCache.from_url(cluster.url, CacheConfig(**config))


def store_of(cache: PromptCache) -> RedisClusterStore:
    assert isinstance(cache.store, RedisClusterStore)
    return cache.store


# -- the store contract ------------------------------------------------------------------------------


async def test_store_is_a_locking_store_opened_from_a_cluster_url(cluster: LocalRedisCluster) -> None:
    """``redis+cluster://`` opens a RedisClusterStore that satisfies LockingStore, with a 50 ms deadline."""
    cache = open_cache(cluster)
    try:
        store = store_of(cache)
        assert isinstance(store, LockingStore)
        assert cache._guard.timeout == RedisClusterStore.default_timeout == 0.05
        assert repr(store) == f"RedisClusterStore({cluster.url!r})"
    finally:
        await cache.aclose()


async def test_get_set_overwrite_delete(cluster: LocalRedisCluster) -> None:
    """Bytes round-trip, a second set replaces the first, and delete reports whether a key was there."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        assert await store.get("t:{a}") is None
        await store.set("t:{a}", b"\x00one", 60)
        assert await store.get("t:{a}") == b"\x00one"
        await store.set("t:{a}", b"two", 60)
        assert await store.get("t:{a}") == b"two"
        assert await store.delete("t:{a}") is True
        assert await store.delete("t:{a}") is False
        assert await store.get("t:{a}") is None


async def test_get_many_reads_keys_of_every_slot_in_order(cluster: LocalRedisCluster) -> None:
    """get_many answers keys spread over every primary (no CROSSSLOT error), in order, None if absent."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        assert isinstance(store, BatchReadStore)
        assert isinstance(store, ListingStore)
        keys = [f"many:{{{i}}}" for i in range(300)]
        for i, key in enumerate(keys):
            if i % 3:
                await store.set(key, f"v{i}".encode(), 60)
        assert len({store.client.keyslot(k) for k in keys}) > 100
        assert await store.get_many(keys) == [None if i % 3 == 0 else f"v{i}".encode() for i in range(300)]
        assert await store.get_many([]) == []


async def test_ttl_is_set_in_milliseconds_and_expires(cluster: LocalRedisCluster) -> None:
    """A set carries its TTL to the owning primary (PTTL within it) and the key is gone once it passes."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        await store.set("ttl:{long}", b"v", 60)
        pttl = await store.client.pttl("ttl:{long}")
        assert 0 < pttl <= 60_000
        await store.set("ttl:{short}", b"v", 0.05)

        async def expired() -> bool:
            return await store.get("ttl:{short}") is None

        await until(expired, "the key expiring")
        with pytest.raises(ValueError, match="ttl"):
            await store.set("ttl:{bad}", b"v", 0)


async def test_delete_prefix_is_literal_and_reaches_every_primary(cluster: LocalRedisCluster) -> None:
    """delete_prefix takes glob characters literally, deletes on every primary (also many keys of one
    slot and more than one batch), and leaves other prefixes alone."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        for i in range(600):
            await store.set(f"p*[x]:{{{i}}}", b"v", 60)  # one slot per key
        for i in range(300):
            await store.set(f"p*[x]:{{shared}}:{i}", b"v", 60)  # 300 keys in one slot
        for i in range(50):
            await store.set(f"pA[x]:{{{i}}}", b"keep", 60)  # what the prefix would match as a glob
            await store.set(f"p*[y]:{{{i}}}", b"keep", 60)
        spread = count_on_primaries(cluster, "p*[x]:")
        assert len(spread) == 3
        assert all(n > 0 for n in spread.values())

        assert await store.delete_prefix("p*[x]:") == 900
        assert count_on_primaries(cluster, "p*[x]:") == dict.fromkeys(spread, 0)
        assert sorted(await store.keys("pA[x]:")) == sorted(f"pA[x]:{{{i}}}" for i in range(50))
        assert len(await store.keys("p*[y]:")) == 50
        assert await store.delete_prefix("p*[x]:") == 0
        with pytest.raises(ValueError, match="non-empty"):
            await store.delete_prefix("")


async def test_lock_is_exclusive_token_checked_and_expires(cluster: LocalRedisCluster) -> None:
    """try_lock succeeds once, unlock needs the holder's token, and an unreleased lock lapses by its TTL."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        assert await store.try_lock("l:{a}", "t1", 30) is True
        assert await store.try_lock("l:{a}", "t2", 30) is False
        assert await store.unlock("l:{a}", "t2") is False
        assert await store.unlock("l:{a}", "t1") is True
        assert await store.unlock("l:{a}", "t1") is False
        assert await store.try_lock("l:{a}", "t2", 0.05) is True

        async def relocked() -> bool:
            return await store.try_lock("l:{a}", "t3", 30)

        await until(relocked, "the lock expiring")


async def test_delete_if_deletes_only_the_exact_value_on_its_slot(cluster: LocalRedisCluster) -> None:
    """delete_if (a superseded write taken back) compares and deletes in one step, on whichever primary
    owns each key."""
    value = bytes(range(256)) * 8
    async with RedisClusterStore.from_url(cluster.url) as store:
        keys = [f"e:{{{n}}}" for n in range(12)]  # hash tags spread over the primaries
        for key in keys:
            await store.set(key, value, 60)
        for key in keys:
            assert await store.delete_if(key, value + b"x") is False
            assert await store.get(key) == value
            assert await store.delete_if(key, value) is True
            assert await store.get(key) is None


async def test_aclose_is_idempotent_and_spares_a_borrowed_client(cluster: LocalRedisCluster) -> None:
    """A store over the caller's RedisCluster leaves it open on aclose (twice); an owned one closes it."""
    client = RedisCluster.from_url(cluster.redis_url, retry=Retry(NoBackoff(), 0))
    try:
        cache = PromptCache(RedisClusterStore(client, owns_client=False), CacheConfig())
        upstream = Upstream()
        check_answer(await ask(cache, upstream, "borrowed"), "borrowed")
        await cache.aclose()
        await cache.aclose()
        assert await client.ping() is True
    finally:
        await client.aclose()
    owned = RedisClusterStore.from_url(cluster.url)
    await owned.set("own:{1}", b"v", 60)
    nodes = owned.client.get_nodes()
    assert any(conn.is_connected for node in nodes for conn in node._connections)
    await owned.aclose()
    await owned.aclose()
    assert not any(conn.is_connected for node in nodes for conn in node._connections)


def test_cluster_urls_parse_or_fail_with_config_error() -> None:
    """Cluster URLs become redis-py URLs plus extra seeds; a bad one is a ConfigError naming the problem."""
    assert cluster_url_to_redis("redis+cluster://u:pw@h1:7000,h2:7001/0?socket_timeout=2") == (
        "redis://u:pw@h1:7000?socket_timeout=2",
        [("h2", 7001)],
    )
    assert cluster_url_to_redis("rediss+cluster://h1")[0] == "rediss://h1:6379"
    assert cluster_url_to_redis("redis+cluster://[::1]:7000,[::1]:7001") == (
        "redis://[::1]:7000",
        [("::1", 7001)],
    )
    for bad in (
        "redis+cluster://h1:7000/3",
        "redis+cluster://",
        "redis+cluster://h1:port",
        "redis+cluster://h:0",
    ):
        with pytest.raises(ConfigError, match="bad Redis Cluster URL"):
            PromptCache.from_url(bad)
    with pytest.raises(ConfigError) as info:
        PromptCache.from_url("redis+cluster://user:s3cret@h1:7000/9")
    assert "s3cret" not in str(info.value)


# -- the cache on a cluster ---------------------------------------------------------------------------


async def test_hit_after_miss(cluster: LocalRedisCluster) -> None:
    """The second identical request is answered from the cluster without an upstream call."""
    cache = open_cache(cluster)
    upstream = Upstream()
    try:
        check_answer(await ask(cache, upstream, "q1"), "q1")
        await cache.drain()
        check_answer(await ask(cache, upstream, "q1"), "q1")
        stats = cache.stats()
        assert (upstream.calls, stats.hits, stats.misses, stats.writes) == (1, 1, 1, 1)
        assert stats.store_errors + stats.store_timeouts == 0
    finally:
        await cache.aclose()


async def test_entry_and_lock_share_a_slot_while_requests_spread(cluster: LocalRedisCluster) -> None:
    """An entry, the stream of the same request and its lock hash to one slot (so they live on one node),
    and different requests do not."""
    cache = open_cache(cluster)
    try:
        client = store_of(cache).client
        keys = [cache.key(request_for(f"q{i}"), agent_id="agent") for i in range(20)]
        for key in keys:
            assert client.keyslot(key.store_key) == client.keyslot(key.lock_key)
            assert client.keyslot(key.stream_store_key) == client.keyslot(key.store_key)
        assert len({client.keyslot(key.store_key) for key in keys}) == 20
    finally:
        await cache.aclose()


async def test_invalidate_deletes_one_agent_on_every_primary(cluster: LocalRedisCluster) -> None:
    """invalidate("a") deletes a's 200 entries from all three primaries and leaves b's 200 where they were."""
    cache = open_cache(cluster)
    try:
        for agent in ("a", "b"):
            for i in range(200):
                assert await cache.set(
                    request_for(f"{agent}-{i}"), answer_for(f"{agent}-{i}"), agent_id=agent
                )
        a_prefix, b_prefix = agent_prefix(NAMESPACE, "a"), agent_prefix(NAMESPACE, "b")
        a_before, b_before = count_on_primaries(cluster, a_prefix), count_on_primaries(cluster, b_prefix)
        assert len(a_before) == 3
        assert all(n > 0 for n in a_before.values()), a_before
        assert sum(a_before.values()) == sum(b_before.values()) == 200

        assert await cache.invalidate("a") == 200

        assert count_on_primaries(cluster, a_prefix) == dict.fromkeys(a_before, 0)
        assert count_on_primaries(cluster, b_prefix) == b_before
        counts = await store_of(cache).key_counts()  # the store's own cluster-wide view agrees
        assert sum(counts.values()) == 200 + 1  # b's entries, and the invalidation's write fence
        assert len(counts) == 3
    finally:
        await cache.aclose()


async def test_one_agents_keys_spread_over_all_primaries(cluster: LocalRedisCluster) -> None:
    """300 distinct requests of one agent land on all 3 primaries, none holding more than 60% of them."""
    cache = open_cache(cluster)
    upstream = Upstream()
    try:
        for i in range(300):
            check_answer(await ask(cache, upstream, f"spread-{i}", agent="one-agent"), f"spread-{i}")
        await cache.drain()
        per_primary = {node.port: cluster.dbsize(node.port) for node in cluster.primaries()}
        assert sum(per_primary.values()) == 300, per_primary  # entries only: every lock was released
        assert len(per_primary) == 3
        assert all(n > 0 for n in per_primary.values()), per_primary
        assert max(per_primary.values()) <= 0.6 * 300, per_primary
    finally:
        await cache.aclose()


def test_four_processes_share_one_upstream_call(cluster: LocalRedisCluster) -> None:
    """4 processes x 10 concurrent identical misses make one upstream call through the cluster's lock."""
    processes, callers, prefix = 4, 10, "mp-test:{counters}:"
    args = [cluster.url, cluster.redis_url, prefix, str(callers), "cold"]
    counters = redis.RedisCluster.from_url(cluster.redis_url)
    results, upstream_count = run_single_flight_workers(counters, prefix, processes, args)
    answers = [answer for result in results for answer in result["answers"]]
    assert upstream_count == 1, [r["stats"] for r in results]
    assert sum(result["stats"]["upstream_calls"] for result in results) == 1
    assert len(answers) == processes * callers
    assert all(answer == answers[0] for answer in answers)


async def hits_resume(cache: PromptCache, upstream: Upstream, within: float = 10.0) -> bool:
    """Store a new entry and read it back as a hit (no upstream call); retry until ``within`` passes."""
    deadline = time.monotonic() + within
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        rid = f"after-failover-{attempt}"
        check_answer(await ask(cache, upstream, rid), rid)
        await cache.drain()
        hits, calls = cache.stats().hits, upstream.calls
        check_answer(await ask(cache, upstream, rid), rid)
        if cache.stats().hits == hits + 1 and upstream.calls == calls:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_reads_cut_off_by_the_deadline_give_their_connections_back(cluster: LocalRedisCluster) -> None:
    """A pipelined read the cache's deadline cancels mid-reply returns its connection to the node's pool:
    with two connections per node, five cancelled reads during a pause leave the store working after it.

    redis-py 8.0.0 kept a cancelled pipeline's connection for good; once a node's pool was used up, every
    command to it raised MaxConnectionsError, and a cache never recovered from a failover (seen in CI)."""
    keys = [f"cut-off-{i}" for i in range(6)]  # spread over the slots, so over every primary
    async with RedisClusterStore.from_url(cluster.url, max_connections=2) as store:
        for key in keys:
            await store.set(key, key.encode(), 60)
        for node in cluster.primaries():
            with node.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
        try:
            for _ in range(5):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(store.get_many(keys), 0.05)
        finally:
            for node in cluster.primaries():
                with node.client() as admin:
                    admin.execute_command("CLIENT", "UNPAUSE")
        assert await store.get_many(keys) == [key.encode() for key in keys]


# -- a primary dies mid-traffic (last: it changes which nodes are primaries) ------------------------------


async def test_primary_killed_mid_traffic_every_request_is_answered(cluster: LocalRedisCluster) -> None:
    """SIGKILLing a primary under load loses no answer and raises nothing; the breaker opens, and once its
    replica is promoted a new entry is stored and read back as a hit."""
    cache = open_cache(cluster, breaker_cooldown=0.2, lock_wait=0.5)
    upstream = Upstream(delay=0.001)
    answers: Counter[str] = Counter()
    wrong: list[tuple[str, Any]] = []
    errors: list[BaseException] = []
    stop, warm = asyncio.Event(), asyncio.Event()

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            # Two in three requests repeat one of 40 prompts (hits once stored); the rest are new (misses).
            rid = f"new-{w}-{i}" if i % 3 == 0 else f"repeat-{i % 40}"
            i += 1
            try:
                body = await ask(cache, upstream, rid)
            except Exception as exc:  # noqa: BLE001 - any exception reaching a caller fails the test
                errors.append(exc)
                continue
            answers[rid] += 1
            if not isinstance(body, dict) or body.get("id") != f"chatcmpl-{rid}":
                wrong.append((rid, body))
            if cache.stats().hits >= 500:  # traffic is flowing and hitting: time to kill
                warm.set()

    victim = cluster.primaries()[0].port
    workers = [asyncio.create_task(worker(w)) for w in range(32)]
    try:
        await warm.wait()
        hits_before = cache.stats().hits
        cluster.kill(victim)
        await asyncio.to_thread(cluster.wait_failover, victim)
        at_failover = cache.stats().requests
        await until(lambda: cache.stats().requests >= at_failover + 100, "traffic against the new topology")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    try:
        await cache.drain()
        assert errors == []
        assert wrong == []
        stats = cache.stats()
        assert hits_before > 0
        assert stats.store_errors + stats.store_timeouts > 0
        assert stats.breaker_opened >= 1
        assert stats.hits + stats.misses == stats.requests == sum(answers.values())

        assert await hits_resume(cache, upstream), f"no hit within 10 s of the failover: {cache.stats()}"
        assert cache.stats().breaker_state == "closed"
    finally:
        await cache.aclose()
        await asyncio.to_thread(cluster.revive, victim)


async def test_counters_add_up_on_a_cluster(cluster: LocalRedisCluster) -> None:
    """``count_in_store`` works on a cluster: the counters are one hash, in one slot."""
    async with RedisClusterStore.from_url(cluster.url) as store:
        assert isinstance(store, CountingStore)
        await store.add_counts("c:counters", {"a\tm\thit": 2})
        await store.add_counts("c:counters", {"a\tm\thit": 1, "a\tm\tmiss": 4})
        assert await store.read_counts("c:counters") == {"a\tm\thit": 3, "a\tm\tmiss": 4}
