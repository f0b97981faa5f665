"""The hot tier on a real Redis Cluster: every primary pushes the changes it applies, and a failover
empties the tiers before anything its lost subscription may have missed could be served."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import pytest
import redis
from helpers import attempts, chat_body, fence_invalidate, fence_race, fence_refresh, until
from tier_worker import AGENT, request_for

from promptcache import PromptCache

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis_cluster import LocalRedisCluster

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

PROMPTS = [f"q{i}" for i in range(24)]  # spread over every primary's slots


async def content(cache: PromptCache, prompt: str) -> str | None:
    body = await cache.get(request_for(prompt), agent_id=AGENT)
    return None if body is None else str(body["choices"][0]["message"]["content"])


async def write_all(cache: PromptCache, value: str) -> None:
    for prompt in PROMPTS:
        assert await cache.set(request_for(prompt), chat_body(f"{value} {prompt}"), agent_id=AGENT)


async def warm(cache: PromptCache, value: str) -> None:
    """Read every prompt until each one is served from the tier (subscriptions connect in the background)."""

    async def all_from_tier() -> bool:
        before = cache.stats().tier_hits
        for prompt in PROMPTS:
            assert await content(cache, prompt) == f"{value} {prompt}"
        return cache.stats().tier_hits - before == len(PROMPTS)

    for _ in attempts():
        if await all_from_tier():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"the tier never served every prompt: {cache.stats()}")


async def test_writes_on_every_primary_reach_another_cache_tier(cluster: LocalRedisCluster) -> None:
    reader = PromptCache.from_url(cluster.url)
    writer = PromptCache.from_url(cluster.url, hot_tier_bytes=0)
    try:
        await write_all(writer, "v1")
        await warm(reader, "v1")
        wrong = 0
        for round_ in range(2, 5):
            await write_all(writer, f"v{round_}")
            for prompt in PROMPTS:
                wrong += await content(reader, prompt) != f"v{round_} {prompt}"
            await warm(reader, f"v{round_}")
        await writer.invalidate(AGENT)
        for prompt in PROMPTS:
            wrong += await content(reader, prompt) is not None
        assert wrong == 0
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_a_failover_empties_the_tier_and_nothing_stale_is_served(cluster: LocalRedisCluster) -> None:
    """A primary is killed: the reader's subscription to it is lost, so its tier empties; once a replica
    is promoted, a write there reaches the reader through its new subscriptions."""
    reader = PromptCache.from_url(cluster.url, breaker_cooldown=0.2)
    writer = PromptCache.from_url(cluster.url, hot_tier_bytes=0, breaker_cooldown=0.2)
    victim = cluster.primaries()[0].port
    try:
        await write_all(writer, "v1")
        await until(lambda: _replicated(cluster), "every write replicated")  # the entries survive the kill
        await warm(reader, "v1")
        served = reader.stats().tier_hits
        cluster.kill(victim)
        await until(
            lambda: _tier_empty(reader), "the reader's tier emptied after the primary died", within=10
        )
        await asyncio.to_thread(cluster.wait_failover, victim)
        assert reader.stats().tier_hits >= served
        # Overwrite everything on the new topology: the reader never answers with v1 again.
        for _ in range(100):
            try:
                await write_all(writer, "v2")
                break
            except AssertionError:  # the writer's breaker may still be open: try again
                await asyncio.sleep(0.1)
        wrong = 0
        for _ in range(3):
            for prompt in PROMPTS:
                wrong += await content(reader, prompt) == f"v1 {prompt}"
        assert wrong == 0
        await warm(reader, "v2")  # and the tier serves again
    finally:
        await reader.aclose()
        await writer.aclose()
        await asyncio.to_thread(cluster.revive, victim)


def _tier_empty(cache: PromptCache) -> bool:
    tier = cache._guard.tier
    assert tier is not None
    tier.refresh()  # applies what the subscriptions saw
    return len(tier) == 0


def _replicated(cluster: LocalRedisCluster) -> bool:
    for node in cluster.primaries():
        info = node.replication()
        replicas = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
        want = info.get("master_repl_offset")
        if not replicas or not all(isinstance(r, dict) and r.get("offset") == want for r in replicas):
            return False
    return True


async def test_a_manual_failover_never_serves_an_old_answer(cluster: LocalRedisCluster) -> None:
    """``CLUSTER FAILOVER`` on a replica: its old primary stays up (now a replica that pushes nothing), yet
    a write on the new primary is never followed by the old answer from the reader's tier."""
    reader = PromptCache.from_url(cluster.url)
    writer = PromptCache.from_url(cluster.url, hot_tier_bytes=0)
    old_primary = cluster.primaries()[0]
    replica_port = _replica_of(cluster, old_primary.port)
    try:
        await write_all(writer, "v1")
        await until(lambda: _replicated(cluster), "every write replicated")
        await warm(reader, "v1")
        with cluster.node(replica_port).client() as client:
            client.execute_command("CLUSTER", "FAILOVER")
        # Write as soon as the replica calls itself primary: no wait for the reader to notice the change.
        await until(
            lambda: cluster.node(replica_port).replication().get("role") == "master",
            "the failover",
            within=15,
        )
        for _ in range(100):
            try:
                await write_all(writer, "v2")
                break
            except AssertionError:
                await asyncio.sleep(0.05)
        wrong = 0
        for prompt in PROMPTS:
            wrong += await content(reader, prompt) == f"v1 {prompt}"
        assert wrong == 0
        await warm(reader, "v2")
    finally:
        await reader.aclose()
        await writer.aclose()
        await asyncio.to_thread(_fail_back, cluster, old_primary.port)


def _fail_back(cluster: LocalRedisCluster, port: int) -> None:
    """Make ``port`` a primary again (the session's cluster keeps its layout), once it has caught up."""
    for _ in range(150):
        if _is_primary(cluster, port):
            return
        info = cluster.node(port).replication()
        if info.get("role") == "slave" and info.get("master_link_status") == "up":
            with cluster.node(port).client() as client, contextlib.suppress(redis.RedisError):
                client.execute_command("CLUSTER", "FAILOVER")
        time.sleep(0.2)
    raise AssertionError(f"node {port} did not become a primary again")


def _replica_of(cluster: LocalRedisCluster, primary_port: int) -> int:
    for node in cluster.live_nodes():
        info = node.replication()
        if info.get("role") == "slave" and int(str(info.get("master_port"))) == primary_port:
            return node.port
    raise AssertionError(f"no replica of {primary_port}")


def _is_primary(cluster: LocalRedisCluster, port: int) -> bool:
    return cluster.node(port).replication().get("role") == "master" and all(
        n.cluster_state() == "ok" for n in cluster.live_nodes()
    )


def test_cluster_nodes_output_names_every_reachable_node() -> None:
    from promptcache.backends._cluster_tracking import nodes_of  # noqa: PLC0415

    text = (
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922\n"
        "c3 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected 10923-16383\n"
        "d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected\n"
        "e5 :7004@17004 myself,slave b2 0 1 2 connected\n"
        "f6 127.0.0.1:7005@17005 handshake - 0 0 0 connected\n"
    )
    assert nodes_of(text, ("10.0.0.9", 7004)) == {
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7003),
        ("10.0.0.9", 7004),
    }


@pytest.mark.parametrize(("change", "expected"), [(fence_refresh, "new"), (fence_invalidate, None)])
def test_an_older_answer_never_lands_after_a_change_on_a_cluster(
    cluster: LocalRedisCluster, change: Callable[[PromptCache], Awaitable[object]], expected: str | None
) -> None:
    """Entries and write fences live in different slots: the fence read gathers them from their nodes."""
    assert asyncio.run(fence_race(cluster.url, change)) == [expected] * 3
