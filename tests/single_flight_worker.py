"""One process of the cross-process single-flight tests (started by ``helpers.run_single_flight_workers``).

Usage: ``single_flight_worker.py CACHE_URL RAW_URL PREFIX CALLERS warm|cold``. ``RAW_URL`` is a plain
``redis://`` URL (a cluster's when ``CACHE_URL`` is ``redis+cluster://``) where the process counts itself
ready, waits for ``<PREFIX>go`` and counts its upstream calls. Then ``CALLERS`` concurrent identical misses;
it prints their answers and the cache's stats as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from promptcache import CacheConfig, PromptCache

REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "the one question every process asks"}],
    "temperature": 0,
}


async def main(url: str, raw_url: str, prefix: str, callers: int, *, warm: bool) -> None:
    cluster = url.startswith("redis+cluster://")
    raw: aioredis.Redis | RedisCluster = (
        RedisCluster.from_url(raw_url) if cluster else aioredis.Redis.from_url(raw_url)
    )
    cache = PromptCache.from_url(url, CacheConfig(lock_wait=10))
    client: Any = cache.store.client  # type: ignore[attr-defined]

    async def call() -> dict[str, Any]:
        await raw.incr(prefix + "upstream")
        await asyncio.sleep(0.3)
        return {
            "id": f"chatcmpl-{os.getpid()}-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "forty-two"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        }

    if cluster:  # a fresh process reads the topology before the race starts
        await client.initialize()
    if warm:  # open as many pooled connections as there will be concurrent callers
        await asyncio.gather(*(client.ping() for _ in range(callers)))
    await raw.incr(prefix + "ready")
    while await raw.get(prefix + "go") is None:  # noqa: ASYNC110 - the signal comes from other processes
        await asyncio.sleep(0.002)
    answers = await asyncio.gather(*(cache.get_or_call(REQUEST, call, agent_id="mp") for _ in range(callers)))
    stats = cache.stats()
    await cache.aclose()
    await raw.aclose()
    print(json.dumps({"answers": answers, "stats": stats.as_dict()}))  # noqa: T201 - the parent reads it


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), warm=sys.argv[5] == "warm"))
