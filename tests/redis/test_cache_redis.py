"""PromptCache against a real redis-server: TTL, invalidation, cross-process single-flight and faults.

Every test here talks to a real ``redis-server`` (the session's shared one, or a private one it may kill,
pause or restart) and checks the store's contents with a separate raw ``redis.asyncio`` client.

Private attributes of redis-py used here (there is no public count of a pool's checked-out connections):
``ConnectionPool._in_use_connections``, read by ``in_use_connections`` to prove a test leaks no connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis
from helpers import ShiftedClock, Upstream, check_answer, run_single_flight_workers, until
from redis_server import RedisServer, free_port
from reliability_support import StoreEvents, in_use_connections

from promptcache import CacheConfig, PromptCache, StoreError
from promptcache.backends.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.redis

MODEL = "gpt-4o-mini"
AGENT = "agent"


# -- helpers ---------------------------------------------------------------------------------------


def request_for(prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}],
        "temperature": 0,
    }


def open_cache(url: str, monotonic: ShiftedClock | None = None, **config: Any) -> PromptCache:
    if monotonic is None:
        return PromptCache.from_url(url, CacheConfig(**config))
    return PromptCache(RedisStore.from_url(url), CacheConfig(**config), monotonic=monotonic)


async def all_keys(raw: aioredis.Redis) -> set[bytes]:
    return {k if isinstance(k, bytes) else k.encode() for k in await raw.keys("*")}


async def ask(cache: PromptCache, upstream: Upstream, prompt: str, **kwargs: Any) -> Any:
    return await cache.get_or_call(request_for(prompt), upstream.for_prompt(prompt), agent_id=AGENT, **kwargs)


# -- TTL ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_entry_expires_after_its_ttl(redis_url: str) -> None:
    """An entry written with ttl=0.3 is a hit before it expires, then a miss with its Redis key gone."""
    raw = aioredis.Redis.from_url(redis_url)
    cache = open_cache(redis_url)
    upstream = Upstream()
    try:
        check_answer(await ask(cache, upstream, "short-lived", ttl=0.3), "short-lived")
        await cache.drain()
        store_key = cache.key(request_for("short-lived"), agent_id=AGENT).store_key
        pttl = await raw.pttl(store_key)
        assert 0 < pttl <= 300, pttl

        check_answer(await ask(cache, upstream, "short-lived", ttl=0.3), "short-lived")
        assert upstream.calls == 1
        assert cache.stats().hits == 1

        async def expired() -> bool:
            return await raw.exists(store_key) == 0

        await until(expired, "Redis expiring the key")
        check_answer(await ask(cache, upstream, "short-lived", ttl=0.3), "short-lived")
        assert upstream.calls == 2
        assert cache.stats().misses == 2
    finally:
        await cache.aclose()
        await raw.aclose()


@pytest.mark.anyio
async def test_app_checks_expiry_even_when_redis_keeps_the_key(redis_url: str) -> None:
    """An entry past its own expires_at is a miss even while Redis still holds the key (clock moved on)."""
    raw = aioredis.Redis.from_url(redis_url)
    now = [1_000_000.0]
    cache = PromptCache(RedisStore.from_url(redis_url), clock=lambda: now[0])
    upstream = Upstream()
    try:
        assert await cache.set(request_for("kept"), upstream.answer("kept"), agent_id=AGENT, ttl=60)
        store_key = cache.key(request_for("kept"), agent_id=AGENT).store_key
        assert await cache.get(request_for("kept"), agent_id=AGENT) == upstream.answer("kept")
        now[0] += 61
        assert await raw.pttl(store_key) > 0
        assert await cache.get(request_for("kept"), agent_id=AGENT) is None
        check_answer(await ask(cache, upstream, "kept"), "kept")
        assert upstream.calls == 1
    finally:
        await cache.aclose()
        await raw.aclose()


# -- invalidation ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_invalidate_deletes_exactly_one_agents_entries(redis_url: str) -> None:  # noqa: PLR0915
    """invalidate() deletes only the named agent's (and version's) entries, counts them exactly, never
    counts or deletes single-flight lock keys, and treats glob and separator characters in ids literally."""
    raw = aioredis.Redis.from_url(redis_url)
    cache = open_cache(redis_url)
    other_ns = open_cache(redis_url, namespace="other")
    upstream = Upstream()
    # Each row: the agent id, its version, the tenant and the prompt of one entry.
    layout = [
        ("a", "1", None, "a1-x"),
        ("a", "1", None, "a1-y"),
        ("a", "1", "t1", "a1-tenant"),
        ("a", "2", None, "a2-x"),
        ("a", "2", None, "a2-y"),
        ("b", "1", None, "b-x"),
        ("b", "1", None, "b-y"),
        ("a:b", "1", None, "ab-x"),
        ("*", "1", None, "star-x"),
        ("[x]", "1", None, "bracket-x"),
        ("x", "1", None, "x-x"),
        ("a*", "1", None, "astar-x"),
    ]
    try:
        keys: dict[tuple[str, str, str | None, str], str] = {}
        for agent, version, tenant, prompt in layout:
            req = request_for(prompt)
            ok = await cache.set(
                req, upstream.answer(prompt), agent_id=agent, agent_version=version, tenant=tenant
            )
            assert ok
            key = cache.key(req, agent_id=agent, agent_version=version, tenant=tenant)
            keys[agent, version, tenant, prompt] = key.store_key
            # Another process's single-flight lock on the same request, held right now.
            await raw.set(key.lock_key, b"someone-else", px=60_000)
        assert await other_ns.set(request_for("other-a"), upstream.answer("other-a"), agent_id="a")
        other_key = other_ns.key(request_for("other-a"), agent_id="a").store_key

        # A real lock: a call for agent "a" is in flight (upstream blocked) while it is invalidated.
        release = asyncio.Event()

        async def slow_call() -> dict[str, Any]:
            await release.wait()
            return upstream.answer("a-inflight")

        inflight_req = request_for("a-inflight")
        inflight_key = cache.key(inflight_req, agent_id="a", agent_version="1")
        inflight = asyncio.create_task(
            cache.get_or_call(inflight_req, slow_call, agent_id="a", agent_version="1")
        )

        async def locked() -> bool:
            return bool(await raw.exists(inflight_key.lock_key))

        await until(locked, "the in-flight lock", within=3.0)
        lock_keys = {inflight_key.lock_key.encode()}
        for agent, version, tenant, prompt in keys:
            lock_keys.add(
                cache.key(
                    request_for(prompt), agent_id=agent, agent_version=version, tenant=tenant
                ).lock_key.encode()
            )
        assert len(lock_keys) == len(layout) + 1

        async def remaining() -> set[bytes]:  # entries (an invalidation's write fence is not one)
            return {k for k in await all_keys(raw) - lock_keys if b":fence:" not in k}

        everything = {k.encode() for k in keys.values()} | {other_key.encode()}
        assert await remaining() == everything

        def gone(*agents: tuple[str, str]) -> set[bytes]:
            return {k.encode() for (ag, ver, _t, _p), k in keys.items() if (ag, ver) in agents}

        assert await cache.invalidate("a", "1") == 3
        assert await remaining() == everything - gone(("a", "1"))
        assert await cache.invalidate("a", "1") == 0
        assert await cache.invalidate("*") == 1
        assert await remaining() == everything - gone(("a", "1"), ("*", "1"))
        assert await cache.invalidate("[x]") == 1
        assert await cache.invalidate("a:b") == 1
        assert await remaining() == everything - gone(("a", "1"), ("*", "1"), ("[x]", "1"), ("a:b", "1"))
        assert await cache.invalidate("a") == 2  # version 2 only: version 1 is gone, locks never count
        assert await cache.invalidate("b") == 2
        assert await remaining() == {
            keys["x", "1", None, "x-x"].encode(),
            keys["a*", "1", None, "astar-x"].encode(),
            other_key.encode(),
        }
        assert await all_keys(raw) >= lock_keys  # every lock survived every invalidation

        assert await cache.get(request_for("x-x"), agent_id="x", agent_version="1") == upstream.answer("x-x")
        assert await other_ns.get(request_for("other-a"), agent_id="a") == upstream.answer("other-a")

        release.set()
        assert await inflight == upstream.answer("a-inflight")
        await cache.drain()
        assert await raw.exists(inflight_key.lock_key) == 0  # released once the entry was written
        # That call began before the invalidations of agent "a": its answer is not written (write fence)
        assert cache.stats().superseded == 1
        assert await cache.invalidate("a") == 0
    finally:
        await cache.aclose()
        await other_ns.aclose()
        await raw.aclose()


# -- cross-process single-flight ---------------------------------------------------------------------

SHOWN_STATS = (
    "upstream_calls",
    "store_timeouts",
    "store_skipped",
    "breaker_opened",
    "lock_waits",
    "lock_timeouts",
)


@pytest.mark.parametrize("pool", ["warm", "cold"])
def test_four_processes_share_one_upstream_call(redis_url: str, pool: str) -> None:
    """4 processes x 25 concurrent identical misses make exactly one upstream call and get one answer,
    whether each process's connection pool is already open (warm) or not (cold: a fresh process)."""
    processes, callers, prefix = 4, 25, "mp-test:"
    args = [redis_url, redis_url, prefix, str(callers), pool]
    counters = redis.Redis.from_url(redis_url)
    results, upstream_count = run_single_flight_workers(counters, prefix, processes, args)
    answers = [answer for result in results for answer in result["answers"]]
    summary = "; ".join(", ".join(f"{name}={r['stats'][name]}" for name in SHOWN_STATS) for r in results)
    assert upstream_count == 1, summary
    assert sum(result["stats"]["upstream_calls"] for result in results) == 1
    assert len(answers) == processes * callers
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["choices"][0]["message"]["content"] == "forty-two"


# -- faults --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_redis_killed_mid_traffic_every_request_is_answered(
    private_redis: Callable[..., RedisServer],
) -> None:
    """Killing Redis halfway through traffic loses no answer and raises nothing; the breaker opens, and
    once Redis is back and the cool-down has passed, hits resume."""
    server = private_redis()
    clock = ShiftedClock()
    cache = open_cache(server.url, clock, breaker_cooldown=0.2)
    upstream = Upstream(delay=0.001)
    total, workers = 400, 8
    # Every third request is new (a miss); the others cycle through ten prompts (hits after the first).
    prompts = [f"unique-{i}" if i % 3 == 0 else f"repeat-{i % 10}" for i in range(total)]
    answers: list[tuple[str, Any]] = []
    errors: list[BaseException] = []
    hits_before_kill = -1
    queue = iter(prompts)

    async def worker() -> None:
        nonlocal hits_before_kill
        for prompt in queue:
            try:
                answers.append((prompt, await ask(cache, upstream, prompt)))
            except Exception as exc:  # noqa: BLE001 - any exception reaching the caller fails the test
                errors.append(exc)
            if len(answers) == total // 2:
                hits_before_kill = cache.stats().hits
                server.kill()  # other workers have commands in flight right now

    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
        await cache.drain()
        assert errors == []
        assert len(answers) == total
        for prompt, body in answers:
            check_answer(body, prompt)
        stats = cache.stats()
        assert hits_before_kill > 0
        assert stats.breaker_opened >= 1
        assert stats.breaker_state == "open"
        assert stats.store_errors + stats.store_timeouts >= cache.config.breaker_threshold
        assert stats.hits + stats.misses == total

        server.start()  # same port, empty (no persistence)
        clock.advance(0.3)  # past the cool-down: the next store call is the probe
        check_answer(await ask(cache, upstream, "after-restart"), "after-restart")
        await cache.drain()
        calls, hits = upstream.calls, cache.stats().hits
        check_answer(await ask(cache, upstream, "after-restart"), "after-restart")
        stats = cache.stats()
        assert upstream.calls == calls
        assert stats.hits == hits + 1
        assert stats.breaker_state == "closed"
        assert stats.breaker_closed >= 1
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_client_pause_every_call_returns_within_its_deadlines(
    private_redis: Callable[..., RedisServer],
) -> None:
    """While Redis is paused, each get_or_call returns within its store deadlines (GET + lock SET NX on a
    miss; writes are in the background) with the right answer; afterwards no connection is left in use
    and hits resume."""
    server = private_redis()
    timeout, cooldown, pause_ms = 0.05, 0.3, 2000
    clock = ShiftedClock()
    cache = open_cache(server.url, clock, store_timeout=timeout, breaker_cooldown=cooldown)
    raw = aioredis.Redis.from_url(server.url)
    upstream = Upstream()
    stored = [f"stored-{i}" for i in range(10)]
    try:
        for prompt in stored:
            assert await cache.set(request_for(prompt), upstream.answer(prompt), agent_id=AGENT)
        check_answer(await ask(cache, upstream, stored[0]), stored[0])
        assert cache.stats().hits == 1

        before, calls_before = cache.stats(), upstream.calls
        assert server.command("CLIENT", "PAUSE", str(pause_ms), "ALL").startswith(b"+OK")
        requests = 0

        async def worker(w: int) -> None:
            nonlocal requests
            for i in range(8):
                prompt = stored[(w + i) % len(stored)] if i % 2 == 0 else f"miss-{w}-{i}"
                body = await ask(cache, upstream, prompt)
                requests += 1
                check_answer(body, prompt)
                await asyncio.sleep(0.005)

        await asyncio.gather(*(worker(w) for w in range(8)))
        during = cache.stats()
        assert during.store_timeouts >= 1
        assert during.breaker_opened >= 1
        # No call waited out the pause: not one GET of a stored prompt came back as a hit; every request,
        # stored or not, was answered upstream (or shared a concurrent identical caller's upstream call).
        # Writes are in the background, off the response path.
        shared = during.coalesced - before.coalesced
        assert (during.hits - before.hits, upstream.calls - calls_before) == (shared, requests - shared), (
            during.store_timeouts,
            during.store_skipped,
        )

        await raw.ping()  # answered once the pause is over
        clock.advance(cooldown)  # past the cool-down: the next store call is the probe
        await cache.drain()
        assert in_use_connections(cache) == 0

        calls = upstream.calls
        hits = cache.stats().hits
        check_answer(await ask(cache, upstream, stored[3]), stored[3])
        check_answer(await ask(cache, upstream, stored[4]), stored[4])
        stats = cache.stats()
        assert upstream.calls == calls
        assert stats.hits == hits + 2
        assert stats.breaker_state == "closed"
        await cache.drain()
        assert in_use_connections(cache) == 0
    finally:
        await cache.aclose()
        await raw.aclose()


@pytest.mark.anyio
async def test_deadline_holds_when_the_loop_is_starved_during_a_send(
    private_redis: Callable[..., RedisServer],
) -> None:
    """With Redis paused, a get_or_call still returns within its store deadlines when a CPU-heavy neighbour
    blocks the event loop for a few iterations while redis-py is sending the GET."""
    server = private_redis()
    timeout = 0.05
    cache = open_cache(server.url, store_timeout=timeout)
    upstream = Upstream()
    try:
        assert await cache.set(request_for("p"), upstream.answer("p"), agent_id=AGENT)  # one open connection
        assert server.command("CLIENT", "PAUSE", "2000", "ALL").startswith(b"+OK")
        blocks, block = 3, 0.06

        async def neighbour() -> None:
            for _ in range(blocks):
                time.sleep(block)  # noqa: ASYNC251 - on purpose: a neighbour that blocks the loop
                await asyncio.sleep(0)

        busy = asyncio.create_task(neighbour())
        await asyncio.sleep(0)
        check_answer(await ask(cache, upstream, "p"), "p")
        await busy
        stats = cache.stats()
        # The deadlines held: the stored entry's GET (and the lock SET NX after it) were given up while Redis
        # was still paused, so the answer came from upstream, not from waiting for the pause to end.
        assert (upstream.calls, stats.hits) == (1, 0), (stats.store_errors, stats.store_timeouts)
        assert stats.store_timeouts == 2
        assert stats.store_errors == 0  # a deadline overrun is counted as a timeout
    finally:
        await cache.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("point", ["get", "lock", "upstream"])
async def test_cancelled_caller_leaves_no_lock_and_no_half_read_connection(  # noqa: PLR0915
    private_redis: Callable[..., RedisServer], point: str
) -> None:
    """A caller cancelled while blocked in the GET, the lock SET NX or the upstream call leaves no lock key
    and no half-read connection: 200 mixed requests afterwards each get their own answer."""
    server = private_redis()
    # A long deadline, so that the caller's cancellation (not the deadline) is what ends the blocked call.
    events = StoreEvents()
    cache = PromptCache(RedisStore.from_url(server.url), CacheConfig(store_timeout=2.0), hooks=[events])
    raw = aioredis.Redis.from_url(server.url)
    upstream = Upstream()
    stored = [f"stored-{i}" for i in range(20)]
    try:
        for prompt in stored:
            assert await cache.set(request_for(prompt), upstream.answer(prompt), agent_id=AGENT)
        # For "get" the victim's entry exists, so a reply left unread on a connection would be a real entry.
        victim = stored[0] if point == "get" else "victim"
        victim_key = cache.key(request_for(victim), agent_id=AGENT)
        upstream_started = asyncio.Event()
        never = asyncio.Event()

        async def blocked_call() -> dict[str, Any]:
            upstream_started.set()
            await never.wait()
            return upstream.answer(victim)

        pause_ms = 400
        if point == "get":
            assert server.command("CLIENT", "PAUSE", str(pause_ms), "ALL").startswith(b"+OK")
        elif point == "lock":  # reads go through, writes (the lock's SET NX) block
            assert server.command("CLIENT", "PAUSE", str(pause_ms), "WRITE").startswith(b"+OK")
        seen = len(events.events)
        task = asyncio.create_task(cache.get_or_call(request_for(victim), blocked_call, agent_id=AGENT))
        if point == "upstream":
            await asyncio.wait_for(upstream_started.wait(), 2)
            assert await raw.exists(victim_key.lock_key) == 1
        else:
            # Blocked in the GET (the read is in flight) or in the lock (the GETs have answered: the body's,
            # then, on its miss, the stream's a body could be assembled from).
            await until(
                lambda: (
                    [e.operation for e in events.events[seen:]] == ([] if point == "get" else ["get", "get"])
                )
            )
            await until(
                lambda: point != "get" or victim_key.store_key in cache._flight.reads, "the GET in flight"
            )
            assert not upstream_started.is_set()
        if point == "lock":  # CLIENT LIST is not a write, so it answers: the cache's SET NX is blocked

            async def lock_blocked() -> bool:
                blocked = [c for c in await raw.client_list() if "b" in c.get("flags", "")]
                return [c.get("cmd") for c in blocked] == ["set"]

            await until(lock_blocked, "the lock SET NX blocked")
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled caller did not wait the pause out: the blocked store call never finished.
        assert point == "upstream" or point not in {e.operation for e in events.events[seen:]}

        # Past the pause: a write queues behind any command a dropped connection had queued, so once it is
        # answered those have run.
        await raw.incr("past-the-pause")

        async def flights_done() -> bool:
            return not cache._flight.flights

        await until(flights_done, "the flights ending", within=3.0)
        await cache.drain()

        async def lock_released() -> bool:
            return await raw.exists(victim_key.lock_key) == 0

        await until(lock_released, "the victim's lock released")
        assert not [k for k in await all_keys(raw) if b":lock:" in k]
        assert in_use_connections(cache) == 0
        if point != "get":
            assert await raw.exists(victim_key.store_key) == 0

        prompts = [stored[i % len(stored)] if i % 2 else f"fresh-{i}" for i in range(200)]
        for start in range(0, len(prompts), 25):
            batch = prompts[start : start + 25]
            bodies = await asyncio.gather(*(ask(cache, upstream, p) for p in batch))
            for prompt, body in zip(batch, bodies, strict=True):
                check_answer(body, prompt)
        stats = cache.stats()
        assert stats.corrupt_entries == 0
        assert stats.store_errors == 0
        assert stats.store_timeouts == 0
        assert stats.breaker_state == "closed"
        assert stats.hits >= 100
        await cache.drain()
        assert in_use_connections(cache) == 0
    finally:
        await cache.aclose()
        await raw.aclose()


@pytest.mark.anyio
async def test_store_down_at_start_answers_from_upstream() -> None:
    """With nothing listening on the store's port, every request is answered from upstream, the breaker
    opens and no exception reaches the caller; invalidation, though, raises."""
    cache = open_cache(f"redis://127.0.0.1:{free_port()}/0", breaker_cooldown=60)
    upstream = Upstream()
    prompts = [f"q{i % 4}" for i in range(12)]
    try:

        def store_failures_and_skips() -> int:
            stats = cache.stats()
            return stats.store_errors + stats.store_timeouts + stats.store_skipped

        for prompt in prompts:
            before = store_failures_and_skips()
            check_answer(await ask(cache, upstream, prompt), prompt)
            # Answered without the store: each store call failed at once (refused) or within its deadline
            # (counted), or was skipped once the breaker opened.
            assert store_failures_and_skips() > before
        await cache.drain()
        stats = cache.stats()
        assert upstream.calls == len(prompts)
        assert stats.misses == len(prompts)
        assert stats.hits == 0
        assert stats.breaker_opened == 1
        assert stats.breaker_state == "open"
        assert stats.store_errors + stats.store_timeouts == cache.config.breaker_threshold
        assert stats.store_skipped > 0
        with pytest.raises(StoreError):
            await cache.invalidate(AGENT)
    finally:
        await cache.aclose()
