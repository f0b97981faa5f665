"""An SDK call served from the cache, against the same SDK call over a mock transport (the floor).

Run it with ``.venv/bin/python benchmarks/sdk_hit.py``. It starts its own redis-server on a free loopback
port (the test suite's :class:`RedisServer`) and measures, in one run, for ``openai.AsyncOpenAI`` (and, for
the sync ``openai.OpenAI``, whose tier hits are answered on the caller's thread and whose other calls go
through promptcache's portal thread):

* floor: the SDK with ``http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler))`` whose
  handler returns the very bytes (and headers) a cache hit returns. No SDK-level cache can be faster than
  this: it is the SDK's own request building, response parsing and typing with zero I/O.
* memory hit: the same SDK, wrapped by promptcache over the ``memory://`` store.
* Redis tier hit: the same SDK over a real Redis with the default config, so hits come from the in-process
  hot tier (``hot_tier_bytes``; "n/a" when this promptcache has no tier). Each cache's ``stats()`` are
  printed afterwards: every timed call must be a hit, and the tier rows' hits must come from the tier.
* Redis cold hit: the same over Redis with the tier off (``hot_tier_bytes=0``): one GET per hit.

Each for a plain chat completion and for a streamed one (every chunk read). The p50 per call comes from
1,500 sequential calls per row, measured in alternating blocks so drift hits every row alike. Aims of
issue 17: the async tier hit within 1.10x of the floor, the sync one within 1.15x. This is a measurement,
never a timed test.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import openai
import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisServer

from promptcache import CacheConfig, PromptCache
from promptcache.integrations import _portal
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

CALLS = 1_500
BLOCK = 250
WARMUP = 100
AIM_ASYNC = 1.10
AIM_SYNC = 1.15
TIER = "hot_tier_bytes" in CacheConfig.__dataclass_fields__
FLOOR = "floor (MockTransport)"
MEMORY = "memory hit"
TIER_ROW = "Redis tier hit"
COLD_ROW = "Redis cold hit (tier off)"
BASE_URL = "http://bench.invalid/v1"
API_KEY = "sk-bench-0000000000000000"

SYSTEM = "You are a support agent for an online shop. Answer in two sentences, politely and precisely."
QUESTION = "My parcel was marked as delivered yesterday but it is not at my door. What should I do now?"
ANSWER = (
    "I am sorry your parcel has not arrived. Please check with neighbours and your building's reception; "
    "if it is still missing after 24 hours, reply here and we will open a carrier investigation for you."
)
MESSAGES: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
# A plain and a streamed request share one key (``stream`` is not part of it) and one entry holds either a
# body or chunks, so the streamed rows ask a slightly different question to keep both entries alive.
STREAM_MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION + " Thanks."},
]
USAGE = {"prompt_tokens": 42, "completion_tokens": 48, "total_tokens": 90}


def completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
            "system_fingerprint": "fp_bench",
        }
    )


def stream_body(pieces: int = 12) -> bytes:
    size = -(-len(ANSWER) // pieces)
    texts = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:  # noqa: ANN401
        data = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if usage is None
            else [],
            "usage": usage,
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": text}) for text in texts]
    out += [chunk({}, "stop"), chunk({}, usage=USAGE), b"data: [DONE]\n\n"]
    return b"".join(out)


def upstream(request: httpx2.Request) -> httpx2.Response:
    """The "provider" behind the cache: answers the one miss that fills each entry."""
    if orjson.loads(request.content).get("stream"):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body())
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=completion_body())


def replayer(
    plain: httpx2.Response, streamed: httpx2.Response
) -> Callable[[httpx2.Request], httpx2.Response]:
    """A MockTransport handler returning exactly the bytes and headers of the cache's hits."""
    plain_headers = [(k, v) for k, v in plain.headers.items() if k.lower() != "content-length"]
    stream_headers = [(k, v) for k, v in streamed.headers.items() if k.lower() != "content-length"]
    plain_bytes, stream_bytes = plain.content, streamed.content

    def handler(request: httpx2.Request) -> httpx2.Response:
        if b'"stream":true' in request.content:
            return httpx2.Response(200, headers=stream_headers, content=stream_bytes)
        return httpx2.Response(200, headers=plain_headers, content=plain_bytes)

    return handler


# --- one call of each kind -----------------------------------------------------------------------


async def plain_call(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER


async def stream_call(client: openai.AsyncOpenAI) -> None:
    async with await client.chat.completions.create(
        model="gpt-4o-mini", messages=STREAM_MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        text = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(text) == ANSWER


def sync_plain_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER


def sync_stream_call(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=STREAM_MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        text = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(text) == ANSWER


# --- measuring -----------------------------------------------------------------------------------


def async_openai(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=API_KEY,
        base_url=BASE_URL,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )


def sync_openai(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=API_KEY,
        base_url=BASE_URL,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


async def capture_hits(
    client: openai.AsyncOpenAI, cache: PromptCache
) -> tuple[httpx2.Response, httpx2.Response]:
    """Fill both entries (one miss each), then return the raw HTTP responses of one hit of each kind."""
    await plain_call(client)
    await stream_call(client)
    await cache.drain()
    plain = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    streamed = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=STREAM_MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    await streamed.http_response.aread()
    await streamed.http_response.aclose()
    assert plain.headers["x-promptcache"] == streamed.headers["x-promptcache"] == "hit"
    return plain.http_response, streamed.http_response


async def measure_async(rows: dict[str, Callable[[], Awaitable[None]]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for call in rows.values():
        for _ in range(WARMUP):
            await call()
    perf = time.perf_counter
    for _ in range(CALLS // BLOCK):
        for name, call in rows.items():
            out = samples[name]
            for _ in range(BLOCK):
                started = perf()
                await call()
                out.append(perf() - started)
    return samples


def measure_sync(rows: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for call in rows.values():
        for _ in range(WARMUP):
            call()
    perf = time.perf_counter
    for _ in range(CALLS // BLOCK):
        for name, call in rows.items():
            out = samples[name]
            for _ in range(BLOCK):
                started = perf()
                call()
                out.append(perf() - started)
    return samples


def p50_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def p90_us(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] * 1e6


def report(title: str, samples: dict[str, list[float]], floor: str) -> dict[str, float]:
    print(f"\n{title}")
    print(f"  {'row':<28}{'calls':>7}{'p50 µs':>10}{'p90 µs':>10}{'p50 / floor':>13}")
    base = p50_us(samples[floor])
    ratios = {}
    for name, values in samples.items():
        ratio = p50_us(values) / base
        ratios[name] = ratio
        print(f"  {name:<28}{len(values):>7}{p50_us(values):>10.1f}{p90_us(values):>10.1f}{ratio:>12.2f}x")
    return ratios


# --- main ------------------------------------------------------------------------------------------


async def raw_get_p50(redis_url: str, size: int) -> float:
    """p50 of a bare redis.asyncio GET of a value of the entry's size: the round trip a Redis hit pays."""
    client = aioredis.from_url(redis_url)
    try:
        await client.set("sdk-hit-bench:raw", b"x" * size)
        samples = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await client.get("sdk-hit-bench:raw")
            samples.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return p50_us(samples)


def redis_caches(redis_url: str) -> dict[str, PromptCache]:
    """The Redis rows' caches: default config (the tier, where there is one) and tier off."""
    # Its own namespace: a cold row's miss (a store deadline missed on a busy machine) writes the answer
    # again, which must not drop the tier row's entry from its tier.
    tier_off: dict[str, Any] = {"hot_tier_bytes": 0} if TIER else {}
    caches = {COLD_ROW: PromptCache.from_url(redis_url, namespace="cold", **tier_off)}
    if TIER:
        caches[TIER_ROW] = PromptCache.from_url(redis_url)
    return caches


def tier_hits(cache: PromptCache) -> int:
    return int(getattr(cache.stats(), "tier_hits", 0))


def tier_ready(served: int, what: str) -> None:
    if served < 2:
        print(f"  note: the {what} tier did not serve both entries within 10 s of warm-up")


async def warm_tier_async(client: openai.AsyncOpenAI, cache: PromptCache) -> None:
    """Untimed: the tier subscribes in the background and keeps entries read once it is live."""
    deadline = time.monotonic() + 10
    served = 0
    while served < 2 and time.monotonic() < deadline:
        before = tier_hits(cache)
        await plain_call(client)
        await stream_call(client)
        served = tier_hits(cache) - before
        await asyncio.sleep(0.01)
    tier_ready(served, "async")


def warm_tier_sync(client: openai.OpenAI, cache: PromptCache) -> None:
    deadline = time.monotonic() + 10
    served = 0
    while served < 2 and time.monotonic() < deadline:
        before = tier_hits(cache)
        sync_plain_call(client)
        sync_stream_call(client)
        served = tier_hits(cache) - before
        time.sleep(0.01)
    tier_ready(served, "sync")


Marks = dict[str, tuple[int, int, int, int]]


def marks(caches: dict[str, PromptCache]) -> Marks:
    """Each cache's hits, tier hits, misses and store timeouts so far."""
    out = {}
    for name, cache in caches.items():
        stats = cache.stats()
        out[name] = (stats.hits, tier_hits(cache), stats.misses, stats.store_timeouts)
    return out


def hit_counts(mode: str, caches: dict[str, PromptCache], before: Marks) -> None:
    """What the measured calls were: every one a hit, the tier row's from the tier. A miss (a store
    deadline missed under a GC pause, say) is answered by the mock upstream: listed, not hidden."""
    calls = 2 * (WARMUP + CALLS)  # plain and streamed rows
    for name, (hits, tier, misses, timeouts) in marks(caches).items():
        was = before[name]
        print(
            f"  {mode} {name}: {calls} calls, {hits - was[0]} hits ({tier - was[1]} from the tier), "
            f"{misses - was[2]} misses, {timeouts - was[3]} store timeouts"
        )


async def run_async(redis_url: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    caches = {MEMORY: PromptCache.from_url("memory://"), **redis_caches(redis_url)}
    clients = {name: wrap(async_openai(upstream), cache, agent_id="bench") for name, cache in caches.items()}
    plain, streamed = await capture_hits(clients[COLD_ROW], caches[COLD_ROW])
    for name, cache in caches.items():
        if name != COLD_ROW:
            await capture_hits(clients[name], cache)
    if TIER:
        await warm_tier_async(clients[TIER_ROW], caches[TIER_ROW])
    floor = async_openai(replayer(plain, streamed))
    order = [name for name in (FLOOR, MEMORY, TIER_ROW, COLD_ROW) if name == FLOOR or name in clients]
    every = {FLOOR: floor, **clients}
    before = marks(caches)
    try:
        plain_rows = await measure_async({name: partial(plain_call, every[name]) for name in order})
        stream_rows = await measure_async({name: partial(stream_call, every[name]) for name in order})
    finally:
        for client in (floor, *clients.values()):
            await client.close()
        for cache in caches.values():
            await cache.aclose()
    hit_counts("async", caches, before)
    return plain_rows, stream_rows


def run_sync(redis_url: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The sync client: a tier hit is answered on the caller's thread; the rest runs on the portal loop."""
    caches = {MEMORY: PromptCache.from_url("memory://"), **redis_caches(redis_url)}
    clients = {name: wrap(sync_openai(upstream), cache, agent_id="bench") for name, cache in caches.items()}
    for name, client in clients.items():
        sync_plain_call(client)
        sync_stream_call(client)
        _portal.call(caches[name].drain)
    if TIER:
        warm_tier_sync(clients[TIER_ROW], caches[TIER_ROW])
    cold = clients[COLD_ROW]
    plain = cold.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    streamed = cold.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=STREAM_MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    streamed.http_response.read()
    streamed.http_response.close()
    floor = sync_openai(replayer(plain.http_response, streamed.http_response))
    order = [name for name in (FLOOR, MEMORY, TIER_ROW, COLD_ROW) if name == FLOOR or name in clients]
    every = {FLOOR: floor, **clients}
    before = marks(caches)
    try:
        plain_rows = measure_sync({name: partial(sync_plain_call, every[name]) for name in order})
        stream_rows = measure_sync({name: partial(sync_stream_call, every[name]) for name in order})
    finally:
        for client in (floor, *clients.values()):
            client.close()
        for cache in caches.values():
            _portal.call(cache.aclose)
    hit_counts("sync", caches, before)
    return plain_rows, stream_rows


def aims(mode: str, aim: float, tables: dict[str, dict[str, float]]) -> None:
    print(f"Aim: {mode} Redis tier hit p50 / floor p50 <= {aim:.2f}x")
    for label, ratios in tables.items():
        others = f"(cold {ratios[COLD_ROW]:.2f}x, memory {ratios[MEMORY]:.2f}x)"
        if TIER_ROW not in ratios:
            print(f"  {label:<14} tier n/a (tier not available) {others}")
            continue
        ratio = ratios[TIER_ROW]
        print(f"  {label:<14} tier {ratio:.2f}x: aim {'met' if ratio <= aim else 'NOT met'} {others}")


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print(
            "redis-server not found on PATH; install it (apt-get install redis-server) to run this benchmark"
        )
        return 2
    started = time.monotonic()
    with RedisServer(binary) as server:
        print(f"openai {openai.__version__}, httpx2 {httpx2.__version__}, Python {sys.version.split()[0]}")
        print(f"p50 per call over {CALLS} sequential calls per row ({BLOCK}-call alternating blocks)")
        if not TIER:
            print(f"{TIER_ROW}: n/a (tier not available)")
        async_plain, async_stream = asyncio.run(run_async(server.url))
        raw = asyncio.run(raw_get_p50(server.url, len(completion_body()) + 400))
        async_ratios = {
            "non-streaming": report(
                "AsyncOpenAI, chat.completions.create (non-streaming)", async_plain, FLOOR
            ),
            "streaming": report(
                "AsyncOpenAI, chat.completions.create(stream=True), all chunks read", async_stream, FLOOR
            ),
        }
        sync_plain, sync_stream = run_sync(server.url)
        sync_ratios = {
            "non-streaming": report("OpenAI (sync), non-streaming", sync_plain, FLOOR),
            "streaming": report("OpenAI (sync), streaming, all chunks read", sync_stream, FLOOR),
        }
    print(f"\n(reference) bare redis.asyncio GET of an entry-sized value: p50 {raw:.1f} µs")
    aims("async", AIM_ASYNC, async_ratios)
    aims("sync", AIM_SYNC, sync_ratios)
    print(f"\n(total {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
