"""What a cache hit costs next to a raw Redis GET, and what the cache adds when Redis is down or stalled.

Run it with ``.venv/bin/python benchmarks/hit_path.py``. It starts its own redis-server on a free loopback
port (the test suite's :class:`RedisServer`) and measures, in one run:

(a) ``PromptCache.get_or_call`` on a hit (a ~1.5 KB chat.completion entry), against
(b) a raw ``redis.asyncio`` ``GET`` of the same stored bytes, on a client built with the store's own
    settings (``RedisStore.from_url``: a blocking pool of 64 connections per event loop): sequential
    p50/p99 over 5,000 calls each (alternating blocks, to cancel drift), then throughput with 64 concurrent
    tasks all asking for that one key ("same key (read coalescing)": the cache's concurrent reads of one
    key share one GET, the raw client sends every GET);
(c) the latency ``get_or_call`` adds per call with Redis stopped (breaker open), against calling the fake
    upstream directly;
(d) with Redis paused (``CLIENT PAUSE``), per-call latency before and after the breaker opens;
(e) distinct keys: 1,000 entries stored first (``cache.set``), then hits per second with 1, 64, 256 and
    1,000 concurrent callers, each asking for its own entry, against raw ``GET``s of the same keys at the
    same concurrency on a client built the same way (each level with a fresh cache, at the default 50 ms
    read deadline, and a fresh raw client); with the hits counted (they must equal the calls) and the
    client connections Redis reports (``CLIENT LIST``) at the end of each level.

A short cProfile of the hit path follows. Aims: hit p50 / raw p50 <= 1.15x, same-key throughput ratio
>= 0.85x, added time per call with the breaker open <= 0.05 ms; over distinct keys, every call a hit at
every level (their throughput ratio and connection counts are printed, with no aim set). Speed is printed,
never asserted.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisServer

from promptcache import CacheConfig, PromptCache
from promptcache._entry import decode_entry
from promptcache._resilience import CircuitBreaker, Guard
from promptcache.backends.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

AGENT_ID = "support-bot"
SEQUENTIAL_CALLS = 5_000
BLOCK = 500
CONCURRENCY = 64
CONCURRENT_CALLS = 20_000
DOWN_CALLS = 5_000
LEVELS = (1, 64, 256, 1_000)  # concurrent callers over distinct keys
DISTINCT_CALLS = 20_000  # calls per timed pass at each level (rounded down to a multiple of the level)
AIM_P50_RATIO = 1.15
AIM_THROUGHPUT_RATIO = 0.85
AIM_ADDED_MS = 0.05

REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {
            "role": "system",
            "content": "You are a support assistant for an online shop. Answer in two short paragraphs, "
            "cite the order number, and never promise a refund the policy does not allow. " * 3,
        },
        {"role": "user", "content": "Where is my order 18-2291? It was due on Monday and tracking is stuck."},
    ],
    "temperature": 0,
    "max_tokens": 400,
}


def chat_body(rid: str) -> dict[str, Any]:
    text = (
        "Thanks for reaching out about order 18-2291. The parcel left our warehouse on Friday and the "
        "carrier scanned it at the regional hub on Saturday; a missing scan since then usually means the "
        "label was not read at the next depot, not that the parcel is lost. "
    ) * 4
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 151,
            "completion_tokens": 187,
            "total_tokens": 338,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


async def upstream() -> dict[str, Any]:
    """The fake provider: answers at once (so only the cache's own cost shows)."""
    return chat_body("upstream")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def us(ns: float) -> str:
    return f"{ns / 1000:8.1f}"


async def timed_block(fn: Callable[[], Awaitable[object]], n: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        await fn()
        out.append(clock() - started)


async def throughput(fn: Callable[[], Awaitable[object]], total: int, tasks: int) -> float:
    per_task = total // tasks

    async def worker() -> None:
        for _ in range(per_task):
            await fn()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)


async def hit_vs_raw(
    server: RedisServer,
) -> tuple[dict[str, float], PromptCache, Callable[[], Awaitable[object]]]:
    cache = PromptCache(RedisStore.from_url(server.url), CacheConfig())
    raw = RedisStore.from_url(server.url).client  # the same client settings as the store's
    body = await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)
    await cache.drain()
    key = cache.key(REQUEST, agent_id=AGENT_ID).store_key
    stored = await raw.get(key)
    assert stored is not None
    assert await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID) == body

    async def hit() -> object:
        return await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)

    async def raw_get() -> object:
        return await raw.get(key)

    warm: list[float] = []
    await timed_block(hit, BLOCK, warm)
    await timed_block(raw_get, BLOCK, warm)
    hits: list[float] = []
    gets: list[float] = []
    for _ in range(SEQUENTIAL_CALLS // BLOCK):
        await timed_block(hit, BLOCK, hits)
        await timed_block(raw_get, BLOCK, gets)
    # Open every connection the concurrent runs need first, in both pools: opening 64 connections at once
    # makes some store calls overrun their 50 ms deadline (see the report), which is not what this measures.
    store = cache.store
    assert isinstance(store, RedisStore)
    for client in (store.client, raw):
        await asyncio.gather(*(client.ping() for _ in range(CONCURRENCY)))
    tp_hit: list[float] = []
    tp_raw: list[float] = []
    for _ in range(2):
        tp_hit.append(await throughput(hit, CONCURRENT_CALLS, CONCURRENCY))
        tp_raw.append(await throughput(raw_get, CONCURRENT_CALLS, CONCURRENCY))
    stats = cache.stats()
    await raw.aclose()
    figures = {
        "entry_bytes": float(len(stored)),
        "hit_p50": pct(hits, 0.5),
        "hit_p99": pct(hits, 0.99),
        "raw_p50": pct(gets, 0.5),
        "raw_p99": pct(gets, 0.99),
        "hit_tp": max(tp_hit),
        "raw_tp": max(tp_raw),
        "misses": float(stats.misses - 1),
        "store_faults": float(stats.store_timeouts + stats.store_errors),
    }
    return figures, cache, hit


def distinct_request(i: int) -> dict[str, Any]:
    """The i-th of the distinct prompts: the same shape as REQUEST, another order number."""
    question = f"Where is my order 18-{i:04d}? It was due on Monday and tracking is stuck."
    return {**REQUEST, "messages": [REQUEST["messages"][0], {"role": "user", "content": question}]}


async def callers_pass(fns: list[Callable[[], Awaitable[object]]], per_caller: int) -> float:
    """Seconds for one task per function, each calling its own function ``per_caller`` times."""

    async def caller(fn: Callable[[], Awaitable[object]]) -> None:
        for _ in range(per_caller):
            await fn()

    started = time.perf_counter()
    await asyncio.gather(*(caller(fn) for fn in fns))
    return time.perf_counter() - started


async def client_connections(counter: aioredis.Redis) -> int:
    """Client connections Redis reports, less the one ``counter`` asks on."""
    return len(await counter.client_list()) - 1


async def no_connections(counter: aioredis.Redis) -> int:
    """Client connections once the earlier clients' closed sockets are gone (the server notices them on its
    next turns), or what is left after a second."""
    left = await client_connections(counter)
    for _ in range(50):
        if left == 0:
            break
        await asyncio.sleep(0.02)
        left = await client_connections(counter)
    return left


async def distinct_level(
    url: str,
    level: int,
    requests: list[dict[str, Any]],
    bodies: list[dict[str, Any]],
    keys: list[str],
    counter: aioredis.Redis,
) -> dict[str, float]:
    """One level of (e): a fresh cache (closed breaker, empty pool) and raw client, closed at the end."""
    cache = PromptCache(RedisStore.from_url(url), CacheConfig())
    raw = RedisStore.from_url(url).client  # the same client settings and pool bound as the store's

    def hit_of(i: int) -> Callable[[], Awaitable[object]]:
        request, body = requests[i], bodies[i]

        async def answer() -> object:  # only called on a miss: the caller's own body, so a miss stores it
            return body

        async def hit() -> object:
            return await cache.get_or_call(request, answer, agent_id=AGENT_ID)

        return hit

    def get_of(i: int) -> Callable[[], Awaitable[object]]:
        key = keys[i]

        async def get() -> object:
            return await raw.get(key)

        return get

    hits = [hit_of(i) for i in range(level)]
    gets = [get_of(i) for i in range(level)]
    store = cache.store
    assert isinstance(store, RedisStore)
    # Untimed: open the connections this level needs (opening dozens at once overruns the cache's 50 ms
    # deadline, which is not what this measures), then check each caller gets its own entry.
    for client in (store.client, raw):
        await asyncio.gather(*(client.ping() for _ in range(min(level, CONCURRENCY))))
    assert await asyncio.gather(*(hit() for hit in hits)) == bodies[:level]
    assert await asyncio.gather(*(get() for get in gets)) == [await raw.get(key) for key in keys[:level]]
    warm = cache.stats()
    per_caller = DISTINCT_CALLS // level
    hit_rates: list[float] = []
    get_rates: list[float] = []
    call_rates: list[float] = []
    for _ in range(2):
        before = cache.stats().hits
        seconds = await callers_pass(hits, per_caller)
        hit_rates.append((cache.stats().hits - before) / seconds)
        call_rates.append(per_caller * level / seconds)
        get_rates.append(per_caller * level / await callers_pass(gets, per_caller))
    end = cache.stats()
    connections = await client_connections(counter)
    await cache.drain()
    await cache.aclose()
    await raw.aclose()
    return {
        "level": float(level),
        "hit_rate": max(hit_rates),
        "call_rate": max(call_rates),
        "raw_rate": max(get_rates),
        "connections": float(connections),
        "calls": float(2 * per_caller * level),
        "hits": float(end.hits - warm.hits),
        "misses": float(end.misses - warm.misses),
        "coalesced": float(end.coalesced - warm.coalesced),
        "timeouts": float(end.store_timeouts - warm.store_timeouts),
        "errors": float(end.store_errors - warm.store_errors),
        "skips": float(end.store_skipped - warm.store_skipped),
        "breaker_opened": float(end.breaker_opened),  # a fresh cache: the whole level, warm-up included
        "warm_misses": float(warm.misses),
    }


async def distinct_keys(server: RedisServer) -> tuple[list[dict[str, float]], list[int]]:
    """(e): the entries stored once, then each level in turn; also the connections left before each."""
    setup = PromptCache(RedisStore.from_url(server.url), CacheConfig())
    entries = max(LEVELS)
    requests = [distinct_request(i) for i in range(entries)]
    bodies = [chat_body(f"distinct-{i}") for i in range(entries)]
    for request, body in zip(requests, bodies, strict=True):
        assert await setup.set(request, body, agent_id=AGENT_ID)
    keys = [setup.key(request, agent_id=AGENT_ID).store_key for request in requests]
    assert len(set(keys)) == entries
    await setup.aclose()
    rows: list[dict[str, float]] = []
    left: list[int] = []
    async with aioredis.Redis.from_url(server.url, single_connection_client=True) as counter:
        for level in LEVELS:
            left.append(await no_connections(counter))
            rows.append(await distinct_level(server.url, level, requests, bodies, keys, counter))
    return rows, left


async def breaker_open(server: RedisServer) -> dict[str, float]:
    cache = PromptCache(RedisStore.from_url(server.url), CacheConfig(breaker_cooldown=3600))
    await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)  # connect while Redis is up
    await cache.drain()
    server.stop()
    for i in range(cache.config.breaker_threshold + 2):
        await cache.get_or_call({**REQUEST, "seed": i}, upstream, agent_id=AGENT_ID)
    await cache.drain()
    assert cache.stats().breaker_state == "open", cache.stats()

    async def through_cache() -> object:
        return await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)

    warm: list[float] = []
    await timed_block(through_cache, BLOCK, warm)
    await timed_block(upstream, BLOCK, warm)
    cached: list[float] = []
    direct: list[float] = []
    for _ in range(DOWN_CALLS // BLOCK):
        await timed_block(through_cache, BLOCK, cached)
        await timed_block(upstream, BLOCK, direct)
    await cache.drain()
    await cache.aclose()
    server.start()
    return {
        "open_p50": pct(cached, 0.5),
        "open_p99": pct(cached, 0.99),
        "direct_p50": pct(direct, 0.5),
        "direct_p99": pct(direct, 0.99),
    }


async def paused(server: RedisServer) -> dict[str, float]:
    cache = PromptCache(RedisStore.from_url(server.url), CacheConfig(breaker_cooldown=3600))
    await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)
    await cache.drain()
    pause = 1.5
    server.command("CLIENT", "PAUSE", str(int(pause * 1000)), "ALL")
    paused_at = time.perf_counter()
    before: list[float] = []
    after: list[float] = []
    while time.perf_counter() - paused_at < pause - 0.5:
        open_before = cache.breaker.state.value == "open"
        started = time.perf_counter_ns()
        await cache.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)
        (after if open_before else before).append(time.perf_counter_ns() - started)
    await asyncio.sleep(max(0.0, paused_at + pause + 0.1 - time.perf_counter()))
    await cache.drain()
    await cache.aclose()
    return {
        "before_n": float(len(before)),
        "before_mean": statistics.fmean(before) if before else float("nan"),
        "before_max": max(before, default=float("nan")),
        "after_n": float(len(after)),
        "after_p50": pct(after, 0.5) if after else float("nan"),
        "after_p99": pct(after, 0.99) if after else float("nan"),
    }


class InstantStore:
    """A store that answers from a dict at once: what is left of a hit is the cache's own CPU time."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:  # noqa: ARG002
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def delete_prefix(self, prefix: str) -> int:
        gone = [k for k in self.data if k.startswith(prefix)]
        for k in gone:
            del self.data[k]
        return len(gone)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def per_call_ns(fn: Callable[[], object], calls: int = 2_000, batches: int = 15) -> float:
    """Median over batches of the mean per-call time of a synchronous function."""
    means = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter_ns() - started) / calls)
    return statistics.median(means)


async def per_call_ns_async(
    fn: Callable[[], Awaitable[object]], calls: int = 2_000, batches: int = 15
) -> float:
    means = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(calls):
            await fn()
        means.append((time.perf_counter_ns() - started) / calls)
    return statistics.median(means)


async def components(server: RedisServer, cache: PromptCache) -> dict[str, float]:
    """The hit path's parts, each timed alone (no profiler overhead)."""
    key = cache.key(REQUEST, agent_id=AGENT_ID)
    stored = await cache.store.get(key.store_key)
    assert isinstance(stored, bytes)
    now = time.time()
    guard = Guard(CircuitBreaker(), 0.05, lambda _op, _exc, _timed_out: None)

    async def noop() -> None:
        return None

    async def guarded_noop() -> None:
        return await guard.run("get", noop)

    store_client = RedisStore.from_url(server.url).client
    # What-if: the same client without socket_timeout, so redis-py sends without asyncio.wait_for.
    bare_client = aioredis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0), health_check_interval=0)

    async def store_get() -> object:
        return await store_client.get(key.store_key)

    async def bare_get() -> object:
        return await bare_client.get(key.store_key)

    instant = PromptCache(InstantStore(), CacheConfig())
    await instant.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)
    await instant.drain()

    async def instant_hit() -> object:
        return await instant.get_or_call(REQUEST, upstream, agent_id=AGENT_ID)

    figures = {
        "get_or_call_instant_store": await per_call_ns_async(instant_hit),
        "make_key": per_call_ns(lambda: cache.key(REQUEST, agent_id=AGENT_ID)),
        "orjson_dumps_request": per_call_ns(lambda: orjson.dumps(REQUEST, option=orjson.OPT_SORT_KEYS)),
        "decode_entry": per_call_ns(lambda: decode_entry(stored, key, now)),
        "orjson_loads_entry": per_call_ns(lambda: orjson.loads(stored)),
        "guard": await per_call_ns_async(guarded_noop) - await per_call_ns_async(noop),
    }
    get_ns: list[float] = []
    bare_ns: list[float] = []
    for _ in range(4):
        get_ns.append(await per_call_ns_async(store_get, 500, 1))
        bare_ns.append(await per_call_ns_async(bare_get, 500, 1))
    figures["get_socket_timeout"] = statistics.median(get_ns)
    figures["get_no_socket_timeout"] = statistics.median(bare_ns)
    await store_client.aclose()
    await bare_client.aclose()
    return figures


async def profile(hit: Callable[[], Awaitable[object]]) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3_000):
        await hit()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(18)
    return out.getvalue()


async def main() -> None:
    started = time.perf_counter()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found on PATH; install it with `apt-get install redis-server`")
        return
    server = RedisServer(binary)
    server.start()
    try:
        hit_figures, cache, hit = await hit_vs_raw(server)
        parts = await components(server, cache)
        profile_text = await profile(hit)
        await cache.aclose()
        distinct, connections_left = await distinct_keys(server)
        down = await breaker_open(server)
        stall = await paused(server)
    finally:
        server.cleanup()

    h = hit_figures
    print(f"entry: {int(h['entry_bytes'])} bytes stored; request body {len(orjson.dumps(REQUEST))} bytes")
    if h["misses"] or h["store_faults"]:
        print(f"note: {int(h['misses'])} hits became misses; {int(h['store_faults'])} store timeouts/errors")
    rows = [
        ("(a) get_or_call, hit", h["hit_p50"], h["hit_p99"], f"{h['hit_tp']:,.0f}"),
        ("(b) raw redis.asyncio GET, same bytes", h["raw_p50"], h["raw_p99"], f"{h['raw_tp']:,.0f}"),
        ("(c) get_or_call, Redis down, breaker open", down["open_p50"], down["open_p99"], ""),
        ("(c) fake upstream called directly", down["direct_p50"], down["direct_p99"], ""),
        ("(d) Redis paused, after breaker opens", stall["after_p50"], stall["after_p99"], ""),
    ]
    print(f"{'':44}{'p50 us':>9}{'p99 us':>9}{'calls/s, 64 tasks,':>20}")
    print(f"{'':62}{'same key (read':>20}")
    print(f"{'':62}{'coalescing)':>20}")
    for label, p50, p99, rate in rows:
        print(f"{label:44}{us(p50)} {us(p99)}{rate:>20}")
    print(
        f"(d) Redis paused, before breaker opens: {int(stall['before_n'])} calls, mean "
        f"{stall['before_mean'] / 1e6:.1f} ms, max {stall['before_max'] / 1e6:.1f} ms "
        f"(bound: GET + lock SET NX deadlines = 100 ms); after: {int(stall['after_n'])} calls"
    )
    p50_ratio = h["hit_p50"] / h["raw_p50"]
    tp_ratio = h["hit_tp"] / h["raw_tp"]
    added_ms = (down["open_p50"] - down["direct_p50"]) / 1e6
    checks = [
        ("hit p50 / raw GET p50", f"{p50_ratio:.2f}x", f"<= {AIM_P50_RATIO}x", p50_ratio <= AIM_P50_RATIO),
        (
            "hit / raw, same key",
            f"{tp_ratio:.2f}x",
            f">= {AIM_THROUGHPUT_RATIO}x",
            tp_ratio >= AIM_THROUGHPUT_RATIO,
        ),
        (
            "added per call, breaker open",
            f"{added_ms:.3f} ms",
            f"<= {AIM_ADDED_MS} ms",
            added_ms <= AIM_ADDED_MS,
        ),
    ]
    print()
    for label, value, aim, ok in checks:
        print(f"{label:30}{value:>10}   aim {aim:10} {'ok' if ok else 'MISSED'}")
    print()
    print(
        f"(e) distinct keys: each caller asks for its own stored entry; {DISTINCT_CALLS:,} calls a pass, "
        "best of 2 passes; a fresh cache and raw client at each level; connections: both pools (the "
        "cache's and the raw client's, each <= 64) at the level's end; connections left before each "
        f"level: {', '.join(map(str, connections_left))}"
    )
    print(
        f"{'concurrency':>11} | {'cache hits/s':>12} | {'raw GET/s':>10} | {'ratio':>5} | "
        f"{'connections':>11} | hits"
    )
    for row in distinct:
        calls, got = int(row["calls"]), int(row["hits"])
        verdict = f"{got:,} = calls" if got == calls else f"{got:,} of {calls:,} calls: NOT all hits"
        print(
            f"{int(row['level']):>11,} | {row['hit_rate']:>12,.0f} | {row['raw_rate']:>10,.0f} | "
            f"{row['hit_rate'] / row['raw_rate']:>4.2f}x | {int(row['connections']):>11} | {verdict}"
        )
        faults = ("misses", "timeouts", "errors", "skips", "breaker_opened", "coalesced", "warm_misses")
        if any(row[name] for name in faults):
            print(
                f"{'':>11}   note: {int(row['misses']):,} misses; store timeouts {int(row['timeouts']):,}, "
                f"errors {int(row['errors']):,}, skipped (breaker open) {int(row['skips']):,}; breaker "
                f"opened {int(row['breaker_opened'])}x this level; {int(row['coalesced']):,} coalesced; "
                f"{int(row['warm_misses']):,} misses in the untimed warm-up; calls/s through the cache "
                f"(hits and misses) {row['call_rate']:,.0f}"
            )
    print()
    print("hit path parts, each timed alone (us per call):")
    for name, ns in parts.items():
        print(f"  {name:28}{ns / 1000:8.2f}")
    print()
    print("hit path profile (3,000 hits, sorted by own time):")
    print("\n".join(line for line in profile_text.splitlines() if line.strip())[:6000])
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
