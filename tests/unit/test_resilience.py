"""Behaviour under store faults: circuit breaker, per-call deadlines, fail-open, bounded background writes.

The breaker is driven by a fake monotonic clock; failing stores are a fakeredis server switched to
"disconnected" (redis-py raises its own ``ConnectionError``) and small fakes that hang or are slow. Nothing
here asserts a duration: a deadline shows as a counted timeout and an abandoned (cancelled) store call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Self

import fakeredis
import fakeredis.aioredis
import pytest
from helpers import FakeClock, Upstream, chat_body, until
from redis.exceptions import ConnectionError as RedisConnectionError

from promptcache import CacheConfig, PromptCache, StoreError
from promptcache._resilience import BreakerState, CircuitBreaker, Guard, StoreSkipped
from promptcache.backends import LockingStore, Store
from promptcache.backends.memory import MemoryStore
from promptcache.backends.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

REQ: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def req(i: int) -> dict[str, Any]:
    """A distinct request per ``i``."""
    return {**REQ, "seed": i}


# --- fake stores ----------------------------------------------------------------------------------


class CountingStore:
    """A LockingStore that forwards to ``inner`` and counts every call made to it, by operation."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    async def get(self, key: str) -> bytes | None:
        self._count("get")
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._count("set")
        await self.inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        self._count("delete")
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        self._count("delete_prefix")
        return await self.inner.delete_prefix(prefix)

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:
        self._count("try_lock")
        return await self.inner.try_lock(name, token, ttl)

    async def unlock(self, name: str, token: str) -> bool:
        self._count("unlock")
        return await self.inner.unlock(name, token)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HangingStore:
    """A LockingStore whose every call sleeps far beyond any deadline (a Redis that stopped answering)."""

    def __init__(self, hang: float = 5.0) -> None:
        self.hang = hang
        self.calls = 0
        self.cancelled = 0

    async def _hang(self) -> None:
        self.calls += 1
        try:
            await asyncio.sleep(self.hang)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def get(self, key: str) -> bytes | None:  # noqa: ARG002
        await self._hang()
        return None

    async def set(self, key: str, value: bytes, ttl: float) -> None:  # noqa: ARG002
        await self._hang()

    async def delete(self, key: str) -> bool:  # noqa: ARG002
        await self._hang()
        return False

    async def delete_prefix(self, prefix: str) -> int:  # noqa: ARG002
        await self._hang()
        return 0

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:  # noqa: ARG002
        await self._hang()
        return False

    async def unlock(self, name: str, token: str) -> bool:  # noqa: ARG002
        await self._hang()
        return False

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class GatedWriteStore:
    """A plain Store over a MemoryStore whose writes wait for ``gate``; counts started and finished writes."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.gate = asyncio.Event()
        self.sets_started = 0
        self.sets_done = 0

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.sets_started += 1
        await self.gate.wait()
        await self.inner.set(key, value, ttl)
        self.sets_done += 1

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.inner.delete_prefix(prefix)

    async def aclose(self) -> None:
        return None  # keep the inner data so the test can look at it after the cache closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def test_the_fakes_have_the_store_shapes() -> None:
    """The fakes satisfy the Store Protocol (and LockingStore where they offer locks), as the cache checks."""
    assert isinstance(HangingStore(), LockingStore)
    assert isinstance(GatedWriteStore(), Store)
    assert not isinstance(GatedWriteStore(), LockingStore)


# --- fixtures -------------------------------------------------------------------------------------


class Broken:
    """A fakeredis server that can be cut off (redis-py then raises ConnectionError) and healed."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.store = CountingStore(RedisStore(fakeredis.aioredis.FakeRedis(server=self.server)))

    def cut(self) -> None:
        self.server.connected = False

    def heal(self) -> None:
        self.server.connected = True


@pytest.fixture
async def broken() -> AsyncIterator[Broken]:
    """A counted RedisStore over a fakeredis server that starts disconnected."""
    b = Broken()
    b.cut()
    yield b
    b.heal()
    await b.store.aclose()


# ===================================================================================================
# CircuitBreaker: the state machine on a fake clock
# ===================================================================================================


def _state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call so the type checker does not narrow it between reads."""
    return breaker.state


def _breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, FakeClock, list[str]]:
    clock = FakeClock()
    changes: list[str] = []
    breaker = CircuitBreaker(
        threshold, cooldown, clock=clock, on_change=lambda old, new: changes.append(f"{old}->{new}")
    )
    return breaker, clock, changes


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    """The breaker stays closed below the threshold and opens on the threshold-th consecutive failure."""
    breaker, _, changes = _breaker(threshold=3)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    breaker.failure()
    assert _state(breaker) is BreakerState.OPEN
    assert changes == ["closed->open"]


def test_a_success_resets_the_failure_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker, _, _ = _breaker(threshold=3)
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.failures == 0


def test_open_breaker_refuses_calls_until_the_cooldown_has_passed() -> None:
    """While open, allow() is False however often it is asked, until the cool-down elapses."""
    breaker, clock, _ = _breaker(threshold=1, cooldown=10.0)
    breaker.failure()
    for _ in range(3):
        assert not breaker.allow()
        clock.advance(3.0)
    assert _state(breaker) is BreakerState.OPEN
    clock.advance(1.0)  # 12 s after opening
    assert breaker.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    """After the cool-down the first allow() is the probe and every other caller is refused meanwhile."""
    breaker, clock, changes = _breaker(threshold=1, cooldown=10.0)
    breaker.failure()
    clock.advance(10.0)
    assert breaker.allow()
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert [breaker.allow() for _ in range(5)] == [False] * 5
    assert changes == ["closed->open", "open->half_open"]


def test_a_successful_probe_closes_the_breaker() -> None:
    """A probe that succeeds closes the breaker and every call is allowed again."""
    breaker, clock, changes = _breaker(threshold=1, cooldown=10.0)
    breaker.failure()
    clock.advance(11.0)
    assert breaker.allow()
    breaker.success()
    assert _state(breaker) is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(5))
    assert changes == ["closed->open", "open->half_open", "half_open->closed"]


def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    """A failed probe reopens the breaker, which then waits a whole new cool-down before the next probe."""
    breaker, clock, changes = _breaker(threshold=1, cooldown=10.0)
    breaker.failure()
    clock.advance(11.0)
    assert breaker.allow()
    breaker.failure()
    assert _state(breaker) is BreakerState.OPEN
    clock.advance(9.0)
    assert not breaker.allow()
    clock.advance(1.5)
    assert breaker.allow()
    assert changes == ["closed->open", "open->half_open", "half_open->open", "open->half_open"]


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    """A probe that ended without a verdict frees the slot, so the breaker cannot stay half-open forever."""
    breaker, clock, _ = _breaker(threshold=1, cooldown=10.0)
    breaker.failure()
    clock.advance(10.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def _guard(breaker: CircuitBreaker, timeout: float = 1.0) -> tuple[Guard, list[tuple[str, str, bool]]]:
    errors: list[tuple[str, str, bool]] = []
    guard = Guard(
        breaker, timeout, lambda op, exc, timed_out: errors.append((op, type(exc).__name__, timed_out))
    )
    return guard, errors


async def test_cancelling_a_probe_releases_it() -> None:
    """A caller cancelled during the half-open probe neither counts as a failure nor keeps the probe slot."""
    breaker, clock, _ = _breaker(threshold=1, cooldown=10.0)
    guard, errors = _guard(breaker)
    breaker.failure()
    clock.advance(10.0)
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(30)

    probe = asyncio.create_task(guard.run("get", stuck))
    await started.wait()
    with pytest.raises(StoreSkipped):
        await guard.run("get", stuck)  # the probe is out: others skip the store
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert errors == []
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()


async def test_guard_classifies_errors_timeouts_and_skips() -> None:
    """The guard reports an error, then a deadline overrun as timed out, then skips once the breaker opens."""
    breaker, _, _ = _breaker(threshold=2, cooldown=10.0)
    guard, errors = _guard(breaker, timeout=0.02)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise RedisConnectionError("refused")

    abandoned = False

    async def hangs() -> None:
        nonlocal calls, abandoned
        calls += 1
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            abandoned = True
            raise

    with pytest.raises(RedisConnectionError):
        await guard.run("get", refused)
    with pytest.raises(TimeoutError):
        await guard.run("set", hangs)
    assert abandoned  # given up at the deadline, not waited out
    assert errors == [("get", "ConnectionError", False), ("set", "TimeoutError", True)]
    assert _state(breaker) is BreakerState.OPEN
    with pytest.raises(StoreSkipped):
        await guard.run("get", refused)
    assert calls == 2


async def test_guard_returns_the_result_and_closes_a_half_open_breaker() -> None:
    """A successful call through the guard returns its value and closes the breaker it probed."""
    breaker, clock, _ = _breaker(threshold=1, cooldown=1.0)
    guard, errors = _guard(breaker)
    breaker.failure()
    clock.advance(1.0)

    async def ok() -> bytes:
        return b"value"

    assert await guard.run("get", ok) == b"value"
    assert _state(breaker) is BreakerState.CLOSED
    assert errors == []


# ===================================================================================================
# The cache over a failing store
# ===================================================================================================


async def test_connection_errors_never_reach_the_caller(
    broken: Broken, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis refusing connections each request is answered upstream; each error is counted, and logged
    once per operation and cause (with the error's message), not once per request."""
    up = Upstream()
    cfg = CacheConfig(breaker_threshold=1000, store_timeout=1.0)
    async with PromptCache(broken.store, cfg, owns_store=False) as cache:
        with caplog.at_level(logging.WARNING, logger="promptcache"):
            for i in range(5):
                assert await cache.get_or_call(req(i), up, agent_id="a") == chat_body(f"answer {i + 1}")
            assert await cache.get_or_call(req(0), up, agent_id="a") == chat_body("answer 6")
            await cache.drain()
        stats = cache.stats()
    assert up.calls == 6
    assert stats.store_errors == broken.store.total > 0
    assert stats.store_timeouts == 0
    assert (stats.misses, stats.writes, stats.hits) == (6, 0, 0)
    assert stats.hits + stats.misses + stats.bypasses == stats.requests
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "ConnectionError" in r.getMessage()
    ]
    operations = [line.split()[2] for line in warnings]  # "promptcache: store <operation> failed (...)"
    assert sorted(operations) == sorted(set(operations))  # one line per operation and cause
    assert 0 < len(warnings) < stats.store_errors
    assert all("ConnectionError: " in line for line in warnings)  # the message, not only the type


async def test_breaker_opens_skips_the_store_then_probes_and_recovers(broken: Broken) -> None:
    """After `threshold` errors the store is not called at all; after the cool-down a probe closes it."""
    clock = FakeClock()
    up = Upstream()
    cfg = CacheConfig(breaker_threshold=3, breaker_cooldown=30.0, store_timeout=1.0)
    async with PromptCache(broken.store, cfg, owns_store=False, monotonic=clock) as cache:
        i = 0
        while cache.stats().breaker_state != "open":
            await cache.get_or_call(req(i), up, agent_id="a")
            await cache.drain()
            i += 1
            assert i < 10, "the breaker never opened"
        opened = cache.stats()
        assert opened.store_errors == 3
        assert opened.breaker_opened == 1
        calls_when_opened = broken.store.total

        # Open: requests are answered upstream without touching the store, not even after Redis heals.
        broken.heal()
        for j in range(5):
            await cache.get_or_call(req(100 + j), up, agent_id="a")
        await cache.drain()
        assert broken.store.total == calls_when_opened
        assert cache.stats().store_skipped >= 5
        clock.advance(29.0)
        await cache.get_or_call(req(200), up, agent_id="a")
        await cache.drain()
        assert broken.store.total == calls_when_opened

        # Cool-down over: the next lookup is the probe; Redis answers, the breaker closes, hits resume.
        clock.advance(2.0)
        answer = await cache.get_or_call(req(300), up, agent_id="a")
        await cache.drain()
        assert broken.store.calls["get"] > 0
        assert broken.store.total > calls_when_opened
        assert cache.stats().breaker_state == "closed"
        calls_before_hit = up.calls
        assert await cache.get_or_call(req(300), up, agent_id="a") == answer
        stats = cache.stats()
    assert up.calls == calls_before_hit
    assert stats.hits == 1
    assert stats.breaker_closed == 1
    assert stats.hits + stats.misses + stats.bypasses == stats.requests


async def test_a_failed_probe_keeps_the_store_skipped(broken: Broken) -> None:
    """A failed probe reopens the breaker: one store call for the probe, none until the next cool-down."""
    clock = FakeClock()
    up = Upstream()
    cfg = CacheConfig(breaker_threshold=1, breaker_cooldown=30.0, store_timeout=1.0)
    async with PromptCache(broken.store, cfg, owns_store=False, monotonic=clock) as cache:
        await cache.get_or_call(req(0), up, agent_id="a")
        await cache.drain()
        assert cache.stats().breaker_state == "open"
        before = broken.store.total
        clock.advance(31.0)
        await cache.get_or_call(req(1), up, agent_id="a")
        await cache.get_or_call(req(2), up, agent_id="a")
        await cache.drain()
        stats = cache.stats()
    assert broken.store.total == before + 1
    assert stats.breaker_state == "open"
    assert stats.breaker_opened == 2
    assert up.calls == 3


async def test_a_hanging_store_is_abandoned_at_the_deadline() -> None:
    """A store call that hangs for 5 s is given up at store_timeout; upstream answers at once instead."""
    store = HangingStore(hang=5.0)
    up = Upstream()
    cfg = CacheConfig(store_timeout=0.02, breaker_threshold=1000)
    cache = PromptCache(store, cfg)
    answer = await cache.get_or_call(REQ, up, agent_id="a")
    # Answered at the deadlines: the lookup and the lock were abandoned (cancelled), not waited out.
    assert (store.cancelled, cache.stats().store_timeouts) == (2, 2)
    assert answer == chat_body("answer 1")
    await cache.aclose()  # the background write is bounded by the same deadline
    stats = cache.stats()
    # get, try_lock, set: each abandoned at the deadline; a retried release of the timed-out lock may
    # also have started, and aclose() cancels it
    assert stats.store_timeouts >= 2
    assert store.calls == store.cancelled
    assert stats.store_errors == 0
    assert (stats.misses, stats.writes) == (1, 0)


async def test_timeouts_open_the_breaker_and_later_requests_skip_the_hung_store() -> None:
    """Deadline overruns count as failures: once the breaker opens, requests no longer wait on the store."""
    store = HangingStore(hang=5.0)
    up = Upstream()
    cfg = CacheConfig(store_timeout=0.02, breaker_threshold=2)
    # The breaker's clock stands still: the cool-down never ends while the lock's release is retried.
    async with PromptCache(store, cfg, monotonic=FakeClock()) as cache:
        await cache.get_or_call(req(0), up, agent_id="a")
        await cache.drain()
        assert cache.stats().breaker_state == "open"
        calls = store.calls
        for i in range(1, 6):
            skipped = cache.stats().store_skipped
            await cache.get_or_call(req(i), up, agent_id="a")
            assert (store.calls, cache.stats().store_skipped > skipped) == (calls, True)  # no wait on it
        await cache.drain()
        stats = cache.stats()
    assert store.calls == calls
    # The two overruns that opened it, then the four background attempts to release the lock whose SET NX
    # timed out (a release goes out while the breaker is open: a lock left behind stalls other processes).
    assert stats.store_timeouts == 2 + 4
    assert stats.store_skipped >= 5
    assert up.calls == 6


@pytest.mark.parametrize("fault", ["refused", "hanging"])
async def test_fail_closed_raises_store_error(broken: Broken, fault: str) -> None:
    """With fail_open=False a refused or hung lookup raises StoreError in time, and upstream is not called."""
    store: Store = broken.store if fault == "refused" else HangingStore(hang=5.0)
    up = Upstream()
    cfg = CacheConfig(fail_open=False, store_timeout=0.02)
    async with PromptCache(store, cfg, owns_store=False) as cache:
        with pytest.raises(StoreError, match="get") as info:
            await cache.get_or_call(REQ, up, agent_id="a")
        stats = cache.stats()
    # In time: the refusal is counted as an error; the hang is counted as a timeout and abandoned.
    assert (stats.store_errors, stats.store_timeouts) == ((1, 0) if fault == "refused" else (0, 1))
    if isinstance(store, HangingStore):
        assert store.cancelled == store.calls == 1
    expected = RedisConnectionError if fault == "refused" else TimeoutError
    assert isinstance(info.value.__cause__, expected)
    assert up.calls == 0


async def test_invalidate_raises_store_error_when_redis_is_down(broken: Broken) -> None:
    """Invalidation against a Redis that refuses connections raises StoreError instead of returning 0."""
    async with PromptCache(broken.store, CacheConfig(store_timeout=1.0), owns_store=False) as cache:
        with pytest.raises(StoreError) as info:
            await cache.invalidate("a")
    assert isinstance(info.value.__cause__, RedisConnectionError)


async def test_a_healthy_fakeredis_store_serves_hits(broken: Broken) -> None:
    """The same counted fakeredis store, once healed, is a working cache: a hit after a miss, no errors."""
    broken.heal()
    up = Upstream()
    async with PromptCache(broken.store, CacheConfig(store_timeout=1.0), owns_store=False) as cache:
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        await cache.get_or_call(REQ, up, agent_id="a")
        stats = cache.stats()
    assert up.calls == 1
    assert (stats.hits, stats.store_errors, stats.store_timeouts) == (1, 0, 0)
    assert broken.store.calls["unlock"] == 1  # the single-flight lock was released after the write


# ===================================================================================================
# Background writes: off the response path, bounded, awaited on aclose()
# ===================================================================================================


async def test_background_writes_are_bounded_and_awaited_on_aclose() -> None:
    """Beyond max_pending_writes a write is dropped (counted); aclose() waits for the ones in flight."""
    store = GatedWriteStore()
    up = Upstream()
    cfg = CacheConfig(max_pending_writes=2, store_timeout=30.0)
    cache = PromptCache(store, cfg)
    for i in range(5):
        await cache.get_or_call(req(i), up, agent_id="a")  # answered although no write can finish
    await until(lambda: store.sets_started == 2, "two background writes starting")
    assert (store.sets_started, store.sets_done) == (2, 0)
    assert cache.stats().writes_dropped == 3
    closing = asyncio.create_task(cache.aclose())
    await until(lambda: cache._closed, "aclose() starting")
    assert not closing.done()  # aclose() is waiting for the two pending writes
    store.gate.set()
    await closing
    assert store.sets_done == 2
    stats = cache.stats()
    assert (stats.writes, stats.writes_dropped, stats.misses) == (2, 3, 5)
    assert len(store.inner) == 2
    async with PromptCache(store, cfg) as again:
        for i in range(5):
            await again.get_or_call(req(i), up, agent_id="a")
        assert again.stats().hits == 2
    assert up.calls == 8


async def test_the_answer_does_not_wait_for_the_write() -> None:
    """get_or_call returns while its write is still blocked in the store; drain() then completes it."""
    store = GatedWriteStore()
    up = Upstream()
    async with PromptCache(store, CacheConfig(store_timeout=30.0)) as cache:
        answer = await cache.get_or_call(REQ, up, agent_id="a")
        assert answer == chat_body("answer 1")
        await until(lambda: store.sets_started == 1, "the background write starting")
        assert (store.sets_started, store.sets_done, cache._writer.pending) == (1, 0, 1)
        store.gate.set()
        await cache.drain()
        assert store.sets_done == 1
        assert await cache.get_or_call(REQ, up, agent_id="a") == answer
    assert up.calls == 1


async def test_concurrent_requests_during_an_outage_all_get_answers(broken: Broken) -> None:
    """Many concurrent requests while Redis is down each get their own upstream answer and none raises."""
    cfg = CacheConfig(breaker_threshold=3, store_timeout=1.0)
    async with PromptCache(broken.store, cfg, owns_store=False) as cache:
        up = Upstream()
        results = await asyncio.gather(*(cache.get_or_call(req(i), up, agent_id="b") for i in range(20)))
        await cache.drain()
        stats = cache.stats()
    assert up.calls == 20
    assert sorted(r["choices"][0]["message"]["content"] for r in results) == sorted(
        f"answer {n}" for n in range(1, 21)
    )
    assert stats.breaker_state == "open"
    assert stats.hits + stats.misses + stats.bypasses == stats.requests


async def test_a_call_in_flight_when_the_breaker_opens_cannot_close_it() -> None:
    """A call in flight when the breaker opened, succeeding after, leaves it open: only a probe closes it."""
    breaker, clock, changes = _breaker(threshold=2, cooldown=10.0)
    guard, _ = _guard(breaker)
    release = asyncio.Event()

    async def slow_ok() -> str:
        await release.wait()
        return "ok"

    async def broken() -> str:
        raise OSError("down")

    in_flight = asyncio.create_task(guard.run("get", slow_ok))
    await asyncio.sleep(0)  # let it start (and take the breaker's verdict slot) before the failures
    for _ in range(2):
        with pytest.raises(OSError, match="down"):
            await guard.run("get", broken)
    assert _state(breaker) is BreakerState.OPEN
    release.set()
    assert await in_flight == "ok"
    assert _state(breaker) is BreakerState.OPEN  # the old call's success is not a probe
    assert breaker.is_open()
    with pytest.raises(StoreSkipped):
        await guard.run("get", slow_ok)
    clock.advance(10.0)
    assert await guard.run("get", lambda: asyncio.sleep(0, "probe")) == "probe"
    assert _state(breaker) is BreakerState.CLOSED
    assert changes == ["closed->open", "open->half_open", "half_open->closed"]


def test_a_failure_from_before_the_opening_does_not_count_again() -> None:
    """Failures of calls that started before the breaker opened neither reopen it nor count toward it."""
    breaker, clock, changes = _breaker(threshold=1, cooldown=10.0)
    assert breaker.allow()
    old_epoch = breaker.epoch
    breaker.failure(old_epoch)
    assert _state(breaker) is BreakerState.OPEN
    clock.advance(10.0)
    assert breaker.allow()  # the probe goes out
    breaker.failure(old_epoch)  # a straggler from before the opening
    assert _state(breaker) is BreakerState.HALF_OPEN
    breaker.success(breaker.epoch)  # the probe's own verdict
    assert _state(breaker) is BreakerState.CLOSED
    assert changes == ["closed->open", "open->half_open", "half_open->closed"]


async def test_loop_lag_alone_is_not_a_store_timeout() -> None:
    """A store that answered in time while the event loop was blocked is a success, not a timeout."""
    breaker, _, _ = _breaker(threshold=1)
    guard, errors = _guard(breaker, timeout=0.05)
    answered = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def store_call() -> str:
        await answered.wait()
        return "value"

    loop.call_later(0.01, answered.set)  # the store answers after 10 ms ...
    call = asyncio.create_task(guard.run("get", store_call))
    await asyncio.sleep(0)  # the call is in flight, its 50 ms deadline armed
    time.sleep(0.2)  # ... but a CPU-bound neighbour holds the loop for 200 ms  # noqa: ASYNC251
    assert await call == "value"
    assert errors == []
    assert _state(breaker) is BreakerState.CLOSED


async def test_a_store_slow_after_the_lag_still_times_out() -> None:
    """The grace given for loop lag is one more deadline, not forever: a hung store still times out."""
    breaker, _, _ = _breaker(threshold=5)
    guard, errors = _guard(breaker, timeout=0.05)
    hung = asyncio.Event()

    async def store_call() -> str:
        await hung.wait()
        return "never"

    call = asyncio.create_task(guard.run("get", store_call))
    await asyncio.sleep(0)
    time.sleep(0.2)  # the loop is blocked past the deadline  # noqa: ASYNC251
    with pytest.raises(TimeoutError):
        await call
    assert errors == [("get", "TimeoutError", True)]


async def test_a_short_deadline_begun_during_a_long_one_still_fires_first() -> None:
    """The loop's one deadline timer re-arms for an earlier due time: a 20 ms read that hangs, begun
    while a call with a 10 s deadline is in progress, is cut at its own deadline, and the long call then
    finishes (not cut with it at the later due time)."""
    breaker, _, _ = _breaker(threshold=5)
    guard, errors = _guard(breaker, timeout=0.02)
    release = asyncio.Event()

    async def slow_write() -> str:
        await release.wait()
        return "written"

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            release.set()  # the long call ends once this one is cut

    write = asyncio.create_task(guard.run("set", slow_write, deadline=10.0))
    await asyncio.sleep(0)  # the write is in flight, the timer armed for its 10 s
    with pytest.raises(TimeoutError):
        await guard.run("get", hangs)
    assert await write == "written"
    assert errors == [("get", "TimeoutError", True)]


async def test_a_call_begun_after_finished_ones_is_cut_at_its_own_deadline() -> None:
    """Calls that ended leave the shared timer armed for their due times; when it fires with none of them
    left it re-arms for the call still running, which is then cut at its deadline (not left hanging)."""
    breaker, _, _ = _breaker(threshold=5)
    guard, errors = _guard(breaker, timeout=0.05)

    async def quick() -> str:
        return "ok"

    async def hangs() -> None:
        await asyncio.Event().wait()

    for _ in range(20):
        assert await guard.run("get", quick) == "ok"
    await asyncio.sleep(0.01)  # the hung call's due time is later than the armed one
    with pytest.raises(TimeoutError):
        await guard.run("get", hangs)
    assert errors == [("get", "TimeoutError", True)]


async def test_calls_in_sequence_share_one_deadline_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of quick guarded calls arms the loop's timer once, not once per call (the hit path's cost)."""
    breaker, _, _ = _breaker(threshold=5)
    guard, _ = _guard(breaker, timeout=10.0)
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback, *args)

    monkeypatch.setattr(loop, "call_at", counting_call_at)

    async def quick() -> str:
        return "ok"

    for _ in range(100):
        assert await guard.run("get", quick) == "ok"
    assert len(armed) == 1
