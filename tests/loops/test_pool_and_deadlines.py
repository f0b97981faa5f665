"""Issue #13, rows 3 and 4: many store calls in flight at once, and a Redis that stalls for seconds.

Row 3: more than 100 store calls in flight must not exhaust redis-py's pool (hits turned into misses).
Row 4: after Redis stalls and resumes, no request waits on a single-flight lock left by a caller that gave up
during the stall, and no lock outlives its owner by more than ``lock_ttl``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
from helpers import leftover_tasks, other_tasks, until
from loops_support import (
    AGENT,
    Upstream,
    answer_body,
    answer_is_for,
    chat_request,
    client_connections,
    lock_keys,
    raw_redis,
)
from reliability_support import FaultProxy

from promptcache import PromptCache

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

ENTRIES = 1000
MAX_CONNECTIONS = 200


async def test_a_thousand_concurrent_hits_are_all_hits(redis_url: str) -> None:
    """1000 concurrent requests for 1000 stored entries are 1000 hits, with no store error and a bounded
    number of connections to Redis."""
    prompts = [f"stored question {i}" for i in range(ENTRIES)]
    # A generous deadline: this is about the pool, not about how fast two shared cores answer 1000 GETs.
    cache = PromptCache.from_url(redis_url, store_timeout=5.0, breaker_cooldown=0.5)
    upstream = Upstream()
    raw = raw_redis(redis_url)
    before = other_tasks()
    try:
        for i, prompt in enumerate(prompts):
            assert await cache.set(chat_request(prompt), answer_body(prompt, -i), agent_id=AGENT)
        stored = cache.stats()

        async def ask(prompt: str) -> None:
            body = await cache.get_or_call(chat_request(prompt), upstream.call_for(prompt), agent_id=AGENT)
            assert answer_is_for(body, prompt), (prompt, body)

        await asyncio.wait_for(asyncio.gather(*(ask(p) for p in prompts)), 60)
        stats = cache.stats()
        assert upstream.calls == 0, (upstream.calls, stats)
        assert stats.hits - stored.hits == ENTRIES, stats
        assert stats.misses == stats.upstream_calls == 0, stats
        assert (stats.store_errors, stats.store_timeouts, stats.store_skipped) == (0, 0, 0), stats
        connections = client_connections(raw)
        assert connections <= MAX_CONNECTIONS, f"{connections} connections to Redis"
        await cache.aclose()
        # The server notices a closed socket on its next turn: poll rather than read it at once.
        await until(lambda: client_connections(raw) == 0, "aclose() closing every connection")
        assert await leftover_tasks(before) == []
    finally:
        await cache.aclose()
        raw.close()
        gc.collect()  # sockets a failing run leaked warn here, in this test, not in a later one


STALL = 3.0
LOCK_TTL = 8.0


class _Stall:
    """Redis stops answering for a while: the server process is stopped (SIGSTOP), or a proxy in front of
    it holds every reply (commands still reach Redis and run; only the answers are late)."""

    def __init__(self, server: RedisServer, how: str) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid
        self.how = how
        self.proxy = FaultProxy(server.port).start() if how == "proxy_delay" else None
        self.url = server.url if self.proxy is None else self.proxy.url

    def begin(self) -> None:
        if self.proxy is None:
            os.kill(self.pid, signal.SIGSTOP)
        else:
            self.proxy.delay = 60.0  # held until end() lowers it

    def end(self) -> None:
        if self.proxy is None:
            os.kill(self.pid, signal.SIGCONT)
        else:
            self.proxy.delay = 0.0

    def close(self) -> None:
        self.end()
        if self.proxy is not None:
            self.proxy.stop()


async def _traffic(
    ask: Callable[[str], Coroutine[Any, Any, None]], seconds: float, prompts: list[str]
) -> None:
    """Fresh prompts arriving for ``seconds``: four every 50 ms, each answered in the background."""
    calls: list[asyncio.Task[None]] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        batch = [f"fresh question {len(prompts) + i}" for i in range(4)]
        prompts += batch
        calls += [asyncio.create_task(ask(p)) for p in batch]
        await asyncio.sleep(0.05)
    await asyncio.gather(*calls)


async def _recover(cache: PromptCache, ask: Callable[[str], Awaitable[None]]) -> None:
    """Keep asking until the breaker has closed again (a half-open probe got through)."""
    for n in range(200):
        if cache.stats().breaker_state == "closed":
            return
        await ask(f"recovery question {n}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"the breaker did not close after Redis came back: {cache.stats()}")


@pytest.mark.parametrize("how", ["sigstop", "proxy_delay"])
async def test_no_orphaned_lock_after_a_redis_stall(
    how: str, private_redis: Callable[..., RedisServer]
) -> None:
    """Fresh prompts arriving before and while Redis stalls for 3 s leave no lock that a request made after
    recovery waits on, and no lock key outlives its owner by more than ``lock_ttl``."""
    server = private_redis()
    stall = _Stall(server, how)
    cache = PromptCache.from_url(stall.url, breaker_cooldown=0.2, lock_ttl=LOCK_TTL, lock_wait=2.0)
    upstream = Upstream(delay=0.3)  # calls in flight when the stall begins
    raw = raw_redis(server.url)  # straight to the server, never through the proxy
    before = other_tasks()

    async def ask(prompt: str) -> None:
        body = await cache.get_or_call(chat_request(prompt), upstream.call_for(prompt), agent_id=AGENT)
        assert answer_is_for(body, prompt), (prompt, body)

    async def stalled_traffic(prompts: list[str]) -> float:
        traffic = asyncio.create_task(_traffic(ask, 0.6 + STALL, prompts))
        await asyncio.sleep(0.6)
        stall.begin()
        try:
            await asyncio.sleep(STALL)
        finally:
            stall.end()
        await traffic
        return time.monotonic()  # every caller has its answer: no lock has an owner any more

    async def scenario() -> float:
        prompts: list[str] = []
        owners_done = await stalled_traffic(prompts)
        await _recover(cache, ask)
        await cache.drain()
        recovered = cache.stats()
        for i in range(0, len(prompts), 8):  # the same prompts again, after recovery
            await asyncio.gather(*(ask(p) for p in prompts[i : i + 8]))
        await cache.drain()
        after = cache.stats()
        assert after.lock_waits - recovered.lock_waits == 0, (recovered, after)
        assert after.lock_timeouts - recovered.lock_timeouts == 0, (recovered, after)
        assert after.upstream_calls == after.misses == upstream.calls, (upstream.calls, after)
        return owners_done

    try:
        owners_done = await asyncio.wait_for(scenario(), 60)
        await asyncio.sleep(max(0.0, owners_done + LOCK_TTL + 0.5 - time.monotonic()))
        left = await asyncio.to_thread(lock_keys, raw)
        assert left == [], f"{len(left)} lock keys outlived their owners by more than lock_ttl"
        stats = cache.stats()
        assert stats.hits + stats.misses == stats.requests, stats
        await cache.aclose()
        assert await leftover_tasks(before) == []
    finally:
        await cache.aclose()
        stall.close()
        raw.close()
        gc.collect()  # sockets a failing run leaked warn here, in this test, not in a later one
