"""Concurrency under faults: cancellation storms, single-flight, failed and abandoned upstream calls.

The March 2023 ChatGPT incident was a Redis read cancelled after its command was sent: the connection
went back to the pool with the reply still unread, and the next user read someone else's data (redis-py
PR #2695). Here callers are cancelled and reads time out while a proxy delays replies, and every answer
must still be its own caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any

import openai
import pytest
from helpers import leftover_tasks, other_tasks, until
from helpers import waiters as waiting
from redis.exceptions import ConnectionError as RedisConnectionError
from reliability_support import (
    EchoUpstream,
    FaultProxy,
    Rig,
    UpstreamFailure,
    chat_request,
    finish_sdk,
    in_use_connections,
    lock_keys,
    run_traffic,
    sdk_answer_is_for,
    sdk_messages,
    traffic,
    wrapped_openai,
)

from promptcache import CacheConfig, PromptCache
from promptcache.backends.redis import RedisStore
from promptcache.metrics import CacheEvent, StoreEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from fake_llm import FakeLLM
    from redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


# -- cancellation ------------------------------------------------------------------------------------


async def test_cancellation_storm_never_misroutes_an_answer(
    private_redis: Callable[..., RedisServer],
) -> None:
    """1,200 requests from 8 tenants, a third cancelled at random moments and a fifth under random
    timeouts, while a proxy jitters every Redis reply around the store deadline: no caller ever gets
    another's answer, no stale reply reaches the decoder, and the pool and the loop end clean."""
    server = private_redis()
    rng = random.Random(2023)
    with FaultProxy(server.port, seed=3) as proxy:
        proxy.jitter = 0.03  # replies take 0-30 ms: some beat the 20 ms deadline, some do not
        rig = Rig.open(
            proxy.url,
            raw_url=server.url,
            upstream=EchoUpstream(jitter=0.02, seed=5),
            store_timeout=0.02,
            breaker_threshold=1_000_000,  # keep using the store, so every fault is exercised
            lock_wait=0.3,
        )
        try:

            async def one(tenant: str | None, prompt: str) -> None:
                roll = rng.random()
                if roll < 0.33:
                    task = asyncio.create_task(rig.ask(tenant, prompt))
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                elif roll < 0.53:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(rng.uniform(0, 0.05)):
                            await rig.ask(tenant, prompt)
                else:
                    await rig.ask(tenant, prompt)

            work = iter(traffic(8, 15, 10, seed=11))

            async def worker() -> None:
                for tenant, prompt in work:
                    await one(tenant, prompt)

            await asyncio.gather(*(worker() for _ in range(32)))
            assert rig.ledger.cancelled > 300
            proxy.jitter = 0.0
            await rig.settle()
            await run_traffic(rig, traffic(8, 15, 1, seed=12), concurrency=8)  # every pair, once more
            stats = await rig.finish(locks_may_remain=True)  # see test_a_timed_out_lock_...
            assert stats.corrupt_entries == 0  # no reply meant for another key ever reached the decoder
            assert stats.store_timeouts > 0
            assert stats.hits > 0
        finally:
            await rig.close()


@pytest.mark.parametrize("how", ["cancelled", "deadline"])
async def test_an_abandoned_read_never_hands_its_reply_to_the_next_caller(
    private_redis: Callable[..., RedisServer], how: str
) -> None:
    """With a pool of one connection, a GET abandoned mid-flight (caller cancelled, or deadline passed)
    while its reply is held in a proxy never leaves that reply for the next caller: the next tenant's
    lookup is a hit on its own entry, every time."""
    server = private_redis()
    with FaultProxy(server.port) as proxy:
        rig = Rig.open(
            proxy.url,
            raw_url=server.url,
            max_connections=1,
            store_timeout=2.0 if how == "cancelled" else 0.05,
            breaker_threshold=1_000_000,
            hot_tier_bytes=0,  # every lookup must be a GET through the proxy
        )
        tenants = [f"tenant-{i}" for i in range(6)]
        try:
            for tenant in tenants:  # one entry per tenant for the same question
                await rig.ask(tenant, "same question")
                await rig.settle()
            for i in range(12):
                victim, nextone = tenants[i % 6], tenants[(i + 1) % 6]
                proxy.delay = 0.3
                if how == "cancelled":
                    task = asyncio.create_task(rig.ask(victim, "same question"))
                    await until(lambda: proxy.held > 0, "the GET's reply held in the proxy")
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                else:
                    await rig.ask(victim, "same question")  # GET and lock time out; answered upstream
                proxy.delay = 0.0
                await rig.settle()
                hits = rig.cache.stats().hits
                await rig.ask(nextone, "same question")
                assert rig.cache.stats().hits == hits + 1, rig.cache.stats()
            stats = await rig.finish(locks_may_remain=True)
            assert stats.corrupt_entries == 0
        finally:
            await rig.close()


async def test_identical_concurrent_misses_make_one_upstream_call_per_tenant(redis_url: str) -> None:
    """50 concurrent identical misses from each of 4 tenants make exactly one upstream call per tenant in
    this process, and each caller gets its own tenant's answer."""
    rig = Rig.open(redis_url, upstream=EchoUpstream(delay=0.05), store_timeout=1.0)
    try:
        asks = [(f"tenant-{t}", "identical") for _ in range(50) for t in range(4)]
        await run_traffic(rig, asks, concurrency=len(asks))
        stats = await rig.finish()
        assert rig.upstream.started == 4
        assert stats.misses == 4
        assert stats.hits == 196
    finally:
        await rig.close()


@pytest.mark.parametrize("point", ["lock", "upstream"])
async def test_first_caller_cancelled_the_waiters_still_get_an_answer(
    private_redis: Callable[..., RedisServer], point: str
) -> None:
    """When the caller that started the shared call is cancelled (while taking the lock, or during the
    upstream call), the ten callers waiting on it still get the answer from that one call, and it is
    stored."""
    server = private_redis()
    upstream = EchoUpstream()
    rig = Rig.open(server.url, upstream=upstream, store_timeout=2.0)
    try:
        if point == "upstream":
            upstream.gate = asyncio.Event()
        else:  # reads go through, writes (the lock's SET NX) block until the pause ends
            await rig.ask("warm", "connection")  # open a pooled connection first
            await rig.settle()
            assert server.command("CLIENT", "PAUSE", "500", "WRITE").startswith(b"+OK")
        leader = asyncio.create_task(rig.ask("tenant-1", "shared"))
        await until(lambda: waiting(rig.cache) == 1, "the leader's flight")
        followers = [asyncio.create_task(rig.ask("tenant-1", "shared")) for _ in range(10)]
        await until(lambda: waiting(rig.cache) == 11, "ten followers joining")
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        if upstream.gate is not None:
            upstream.gate.set()
        bodies = await asyncio.gather(*followers)
        assert all(body is not None for body in bodies)
        await rig.settle()
        assert upstream.started == (1 if point == "upstream" else 2)  # ("lock": one warm-up call)
        hits = rig.cache.stats().hits
        await rig.ask("tenant-1", "shared")
        assert rig.cache.stats().hits == hits + 1  # the shared answer was stored
        await rig.finish()
    finally:
        await rig.close()


class HeldGetStore(RedisStore):
    """A RedisStore whose next GET waits for ``release`` after reading (to line up a race exactly), and
    whose lock command fails (a Redis hiccup: the call then goes ahead without the cross-process lock)."""

    def __init__(self, url: str) -> None:
        super().__init__(RedisStore.from_url(url).client)
        self.hold = False
        self.release = asyncio.Event()

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:  # noqa: ARG002 - the Protocol's
        raise RedisConnectionError("connection reset while taking the lock")

    async def get(self, key: str) -> bytes | None:
        try:
            value = await super().get(key)
        except RedisConnectionError:  # a pooled connection the shared test server closed: read once more
            value = await super().get(key)
        if self.hold:
            self.hold = False
            await self.release.wait()
        return value


async def test_a_caller_arriving_as_an_abandoned_call_ends_gets_its_own_answer(redis_url: str) -> None:
    """A caller whose lookup finishes in the instant between an abandoned shared call ending (its only
    caller was cancelled; its lock had failed, so it ended at once) and the cache forgetting that call gets
    an answer from a call of its own, not an error: a cancelled operation's leftovers never reach another
    caller."""
    store = HeldGetStore(redis_url)
    tasks_before = other_tasks()
    cache = PromptCache(store, CacheConfig(store_timeout=5.0))
    upstream = EchoUpstream()
    gate, entered = asyncio.Event(), asyncio.Event()

    def call_for(rid: int) -> Callable[[], Any]:
        inner = upstream.call_for("tenant-1", "racy", rid)

        async def call() -> Any:
            if rid == 1:  # the first caller's call: held, and when it is abandoned, the lookup finishes
                entered.set()
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    store.release.set()  # runs in the call's last step, before the cache forgets it
                    raise
            return await inner()

        return call

    try:
        request = chat_request("racy", 0)
        first = asyncio.create_task(cache.get_or_call(request, call_for(1), agent_id="a", tenant="tenant-1"))
        await asyncio.wait_for(entered.wait(), 5)  # past its lock and lookups: in the upstream call
        store.hold = True
        second = asyncio.create_task(cache.get_or_call(request, call_for(2), agent_id="a", tenant="tenant-1"))
        await until(lambda: not store.hold, "the second caller's lookup")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        results = await asyncio.gather(asyncio.wait_for(second, 5), return_exceptions=True)
        body = results[0]
        # Not re-raised: pytest takes half a minute to print a RecursionError's ~1,000 chained errors.
        assert not isinstance(body, BaseException), f"the second caller got {type(body).__name__}: {body}"
        assert upstream.wrong(body, "tenant-1", "racy") is None
        await cache.drain()
        stats = cache.stats()
        assert (stats.requests, stats.misses, stats.upstream_calls, stats.upstream_errors) == (2, 2, 1, 0)
        assert in_use_connections(cache) == 0
    finally:
        await cache.aclose()
    assert await leftover_tasks(tasks_before) == []


async def test_a_timed_out_lock_does_not_hold_up_the_next_caller(
    private_redis: Callable[..., RedisServer],
) -> None:
    """A lock SET NX whose reply came too late (it ran on Redis; the deadline passed first) must not make
    the next caller for that key wait for a call nobody is making: after a failed upstream call, the
    caller's retry returns within its store deadlines."""
    server = private_redis()
    with FaultProxy(server.port) as proxy:
        slow_after_get = {"armed": False}

        def slow_down(event: CacheEvent) -> None:
            # Right after the GET's reply, before the SET NX goes out: only the lock's reply is late.
            if slow_after_get["armed"] and isinstance(event, StoreEvent) and event.operation == "get":
                proxy.delay = 0.2

        rig = Rig.open(proxy.url, raw_url=server.url, store_timeout=0.05, lock_wait=3.0, hooks=[slow_down])
        try:
            await rig.ask("warm", "connection")
            await rig.settle()
            rig.upstream.fail_with = lambda _t, _p: UpstreamFailure("HTTP 500 from the provider")
            slow_after_get["armed"] = True
            await rig.ask("tenant-1", "retried", expect_failure=True)
            slow_after_get["armed"] = False
            proxy.delay = 0.0
            rig.upstream.fail_with = None
            raw = rig.raw
            assert raw is not None

            async def late_lock_released() -> bool:
                return not await lock_keys(raw)

            await until(late_lock_released, "the late lock's release")
            before, calls = rig.cache.stats(), rig.upstream.completed
            await rig.ask("tenant-1", "retried")  # the caller retries after the provider's 500
            after = rig.cache.stats()
            assert (after.lock_waits, after.lock_timeouts) == (before.lock_waits, before.lock_timeouts), (
                "the retry waited on a lock nobody holds"
            )
            assert rig.upstream.completed == calls + 1
            await rig.finish()
        finally:
            await rig.close()


# -- upstream failures and abandoned streams (through the OpenAI SDK) ---------------------------------


async def _redis_cache(url: str) -> tuple[PromptCache, set[asyncio.Task[Any]]]:
    return PromptCache.from_url(url, CacheConfig(store_timeout=1.0)), other_tasks()


async def _entries(cache: PromptCache) -> list[str]:
    store: Any = cache.store
    keys: list[str] = await store.keys(cache.config.namespace + ":")
    return keys


@pytest.mark.parametrize("failure", ["429", "500", "timeout"])
async def test_upstream_failure_while_others_wait_caches_nothing(
    redis_url: str, fake_llm: FakeLLM, failure: str
) -> None:
    """When the one shared upstream call fails (429, 500 or a timeout) while seven other callers wait on
    it, all eight see the failure, nothing is cached, and the next request goes upstream and is stored."""
    cache, before = await _redis_cache(redis_url)
    client = wrapped_openai(fake_llm, cache, timeout=0.3 if failure == "timeout" else 10.0)
    prompt = f"failing-{failure}"
    expected: type[Exception] = {
        "429": openai.RateLimitError,
        "500": openai.InternalServerError,
        "timeout": openai.APITimeoutError,
    }[failure]
    try:
        if failure == "timeout":
            fake_llm.delay = 1.0
        else:
            fake_llm.delay = 0.3  # long enough for all eight to join the one call
            fake_llm.fail_next(int(failure))
        results = await asyncio.gather(
            *(client.chat.completions.create(model="gpt-x", messages=sdk_messages(prompt)) for _ in range(8)),
            return_exceptions=True,
        )
        assert all(isinstance(r, expected) for r in results), results
        assert fake_llm.calls == 1
        await cache.drain()
        assert await _entries(cache) == []

        fake_llm.delay = 0.0
        reply = await client.chat.completions.create(model="gpt-x", messages=sdk_messages(prompt))
        assert sdk_answer_is_for(reply.choices[0].message.content, prompt)
        assert fake_llm.calls == 2
        await cache.drain()
        again = await client.chat.completions.create(model="gpt-x", messages=sdk_messages(prompt))
        assert again.choices[0].message.content == reply.choices[0].message.content
        assert fake_llm.calls == 2
        stats = await finish_sdk(cache, client, before)
        assert (stats.requests, stats.hits, stats.misses, stats.upstream_calls) == (10, 1, 9, 1)
    finally:
        await client.close()
        await cache.aclose()


@pytest.mark.parametrize(("who", "k"), [("client", 0), ("client", 2), ("client", 6), ("server", 3)])
async def test_a_stream_abandoned_after_k_chunks_stores_nothing(
    redis_url: str, fake_llm: FakeLLM, who: str, k: int
) -> None:
    """A streamed answer abandoned by the client after k chunks, or cut by the server after k chunks,
    leaves no entry; the next full stream goes upstream and is stored, and the one after is a hit."""
    cache, before = await _redis_cache(redis_url)
    client = wrapped_openai(fake_llm, cache)
    prompt = f"stream-{who}-{k}"
    try:
        if who == "server":
            fake_llm.stream_drop_after = k
        stream = await client.chat.completions.create(
            model="gpt-x", messages=sdk_messages(prompt), stream=True
        )
        seen = 0
        cut: Exception | None = None
        try:
            async for _chunk in stream:
                seen += 1
                if who == "client" and seen >= k:
                    break
        except Exception as exc:  # noqa: BLE001 - the SDK's type for a cut stream changes between releases
            cut = exc
        await stream.close()
        assert (cut is not None) == (who == "server"), cut  # the caller sees the server's cut, and only it
        assert seen <= max(k, 1)
        await cache.drain()
        assert await _entries(cache) == []

        fake_llm.stream_drop_after = None
        texts = []
        for _ in range(2):
            full = await client.chat.completions.create(
                model="gpt-x", messages=sdk_messages(prompt), stream=True
            )
            texts.append("".join([c.choices[0].delta.content or "" async for c in full if c.choices]))
            await cache.drain()
        assert sdk_answer_is_for(texts[0], prompt)
        assert texts[1] == texts[0]
        assert fake_llm.calls == 2
        assert len(await _entries(cache)) == 1
        stats = await finish_sdk(cache, client, before)
        assert (stats.requests, stats.hits, stats.misses) == (3, 1, 2)
    finally:
        await client.close()
        await cache.aclose()
