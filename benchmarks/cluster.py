"""Cache-hit throughput on a Redis Cluster against a single redis-server, in one run, 64 concurrent tasks.

Run it with ``.venv/bin/python benchmarks/cluster.py``. It starts a single redis-server and a 6-node cluster
(3 primaries + 3 replicas, the test suite's :class:`RedisServer` and :class:`LocalRedisCluster`) on
loopback, stores the same 512 entries (~1.5 KB chat.completion bodies, 512 distinct requests of one agent,
so the cluster's entries spread over all three primaries) through ``PromptCache`` on each, and then
measures ``get_or_call`` hits with 64 concurrent tasks, alternating single and cluster rounds to cancel
drift. A raw ``GET`` of the same keys through each client (store settings, no cache) is measured the same
way, so the cache's own cost and the cluster client's routing cost can be told apart.

Everything runs in one Python process on one event loop: on loopback the client's CPU, not Redis, is
the bottleneck, so this measures what the cluster client costs per call, not what a cluster can serve.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_cluster import LocalRedisCluster
from redis_server import RedisServer

from promptcache import CacheConfig, PromptCache
from promptcache.backends.cluster import RedisClusterStore
from promptcache.backends.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache.backends import Store

AGENT_ID = "support-bot"
ENTRIES = 512
CONCURRENCY = 64
CALLS_PER_ROUND = 25_600  # 400 per task
ROUNDS = 5


def request_for(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a support assistant for an online shop. Answer briefly."},
            {
                "role": "user",
                "content": f"Where is my order 18-{i:04d}? Tracking has not moved since Monday.",
            },
        ],
        "temperature": 0,
    }


def chat_body(i: int) -> dict[str, Any]:
    text = (
        f"Thanks for reaching out about order 18-{i:04d}. The parcel left our warehouse on Friday and the "
        "carrier scanned it at the regional hub on Saturday; a missing scan since then usually means the "
        "label was not read at the next depot, not that the parcel is lost. "
    ) * 4
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 151, "completion_tokens": 187, "total_tokens": 338},
    }


REQUESTS = [request_for(i) for i in range(ENTRIES)]


class Target:
    """One store under test: a cache over it, and a raw client with the store's own settings."""

    def __init__(self, name: str, make_store: Callable[[], Store]) -> None:
        self.name = name
        self.cache = PromptCache(make_store(), CacheConfig())
        self.raw_store = make_store()
        self.keys = [self.cache.key(r, agent_id=AGENT_ID).store_key for r in REQUESTS]
        self.hit_rates: list[float] = []
        self.raw_rates: list[float] = []

    async def prime(self) -> None:
        for i, request in enumerate(REQUESTS):

            async def call(i: int = i) -> dict[str, Any]:
                return chat_body(i)

            await self.cache.get_or_call(request, call, agent_id=AGENT_ID)
        await self.cache.drain()
        # Open the connections the concurrent rounds need in both clients first: 64 connections opened at
        # once make some calls overrun their 50 ms deadline, which is not what this measures.
        for start in range(0, ENTRIES, CONCURRENCY):
            batch = range(start, start + CONCURRENCY)
            await asyncio.gather(*(self.raw_get(i) for i in batch))
            await asyncio.gather(*(self.hit(i) for i in batch))

    async def hit(self, i: int) -> object:
        return await self.cache.get_or_call(REQUESTS[i], _never_called, agent_id=AGENT_ID)

    async def raw_get(self, i: int) -> object:
        return await self.raw_store.get(self.keys[i])

    async def aclose(self) -> None:
        await self.cache.aclose()
        await self.raw_store.aclose()


async def _never_called() -> dict[str, Any]:
    raise AssertionError("a hit was expected; the benchmark primed every entry")


async def throughput(fn: Callable[[int], Awaitable[object]]) -> float:
    per_task = CALLS_PER_ROUND // CONCURRENCY

    async def worker(w: int) -> None:
        for n in range(per_task):
            await fn((w * per_task + n) % ENTRIES)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return per_task * CONCURRENCY / (time.perf_counter() - started)


async def measure(single: Target, cluster: Target) -> None:
    for _ in range(ROUNDS):
        for target in (single, cluster):
            target.hit_rates.append(await throughput(target.hit))
            target.raw_rates.append(await throughput(target.raw_get))


async def run(server: RedisServer, nodes: LocalRedisCluster) -> None:
    single = Target("single redis-server", lambda: RedisStore.from_url(server.url))
    cluster = Target("Redis Cluster (3+3)", lambda: RedisClusterStore.from_url(nodes.url))
    try:
        await single.prime()
        await cluster.prime()
        store = cluster.cache.store
        assert isinstance(store, RedisClusterStore)
        spread = await store.key_counts()
        await measure(single, cluster)
        print(f"{ENTRIES} entries of one agent; on the cluster's primaries: {sorted(spread.values())}")
        print(f"{CONCURRENCY} tasks, {CALLS_PER_ROUND:,} calls per round, {ROUNDS} rounds alternated")
        print(f"{'':24}{'hits/s (median)':>18}{'best':>10}{'raw GET/s':>12}{'hit/raw':>9}")
        for t in (single, cluster):
            hit, raw = statistics.median(t.hit_rates), statistics.median(t.raw_rates)
            print(f"{t.name:24}{hit:18,.0f}{max(t.hit_rates):10,.0f}{raw:12,.0f}{hit / raw:9.2f}")
        hit_ratio = statistics.median(cluster.hit_rates) / statistics.median(single.hit_rates)
        raw_ratio = statistics.median(cluster.raw_rates) / statistics.median(single.raw_rates)
        print(f"cluster / single, hits: {hit_ratio:.2f}x   raw GET: {raw_ratio:.2f}x")
        for t in (single, cluster):
            s = t.cache.stats()
            faults = s.store_timeouts + s.store_errors
            print(f"{t.name}: {s.hits:,} hits, {s.misses} misses, {faults} store timeouts/errors")
    finally:
        await single.aclose()
        await cluster.aclose()


def main() -> None:
    server_binary, cli_binary = shutil.which("redis-server"), shutil.which("redis-cli")
    if server_binary is None or cli_binary is None:
        print(
            "redis-server / redis-cli not found; install them with `apt-get install redis-server redis-tools`"
        )
        return
    started = time.perf_counter()
    with RedisServer(server_binary) as server, LocalRedisCluster(server_binary, cli_binary) as nodes:
        asyncio.run(run(server, nodes))
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
