"""Foreign or corrupt values under our Redis keys: each is a counted miss, never an answer, never run.

Values are planted with a separate raw client under the exact key a tenant's request uses, then that
tenant and another one ask concurrently. The only parser the cache may use is strict JSON (orjson): an
audit hook watches for unpickling, ``marshal`` and program execution while the values are read.
"""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Any

import pytest
from reliability_support import (
    CodeRunWatch,
    EchoUpstream,
    Rig,
    run_traffic,
)

from promptcache import CacheConfig, PromptCache
from promptcache.backends.redis import RedisStore

if TYPE_CHECKING:
    from pathlib import Path

    import redis.asyncio as aioredis

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

QUESTION = "what is my balance?"
REDIS_TYPES = ("hash", "list", "set", "zset", "stream")


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


async def _entry_of(rig: Rig, raw: aioredis.Redis, tenant: str | None, prompt: str, **scope: Any) -> bytes:
    """The stored bytes of a real entry written by ``rig``'s cache (or one with other ``scope``)."""
    key = rig.key_of(tenant, prompt, **scope)
    value = await raw.get(key.store_key)
    assert isinstance(value, bytes), key.store_key
    return value


async def _foreign(kind: str, rig: Rig, raw: aioredis.Redis, marker: Path) -> bytes | None:  # noqa: PLR0911
    """The value planted under tenant-A's key; None for the Redis types planted by :func:`_plant`."""
    if kind in REDIS_TYPES:
        return None
    if kind == "garbage":
        return bytes(range(256)) * 8
    if kind == "truncated-json":
        whole = await _entry_of(rig, raw, "tenant-B", QUESTION)
        return whole[: len(whole) // 2]
    if kind == "truncated-compressed":
        await rig.ask("tenant-B", "big")  # the pad makes it larger than compress_above
        await rig.settle()
        whole = await _entry_of(rig, raw, "tenant-B", "big")
        assert whole.startswith(b"PCZ1")
        return whole[: len(whole) // 2]
    if kind == "non-strict-json":  # NaN is not JSON; a lenient parser would take it
        whole = await _entry_of(rig, raw, "tenant-B", QUESTION)
        return whole.replace(b'"latency":', b'"latency":NaN,"was":', 1)
    if kind == "pickle":
        return pickle.dumps(_Exploit(marker))
    if kind == "yaml-python-tag":
        return f"!!python/object/apply:os.system ['touch {marker}']".encode()
    if kind == "entry-of-another-prompt":
        return await _entry_of(rig, raw, "tenant-A", "another question")
    if kind == "entry-of-another-tenant":
        return await _entry_of(rig, raw, "tenant-B", QUESTION)
    if kind == "entry-of-another-version":
        return await _entry_of(rig, raw, "tenant-A", QUESTION, agent_version="0")
    if kind == "entry-of-another-namespace":
        other = PromptCache(RedisStore(raw, owns_client=False), CacheConfig(namespace="other"))
        body = {"choices": [{"message": {"content": "wrong"}, "finish_reason": "stop"}]}
        request = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a terse support bot."},
                {"role": "user", "content": QUESTION},
            ],
            "temperature": 0,
        }
        assert await other.set(request, body, agent_id="support-bot", agent_version="1", tenant="tenant-A")
        key = other.key(request, agent_id="support-bot", agent_version="1", tenant="tenant-A")
        value = await raw.get(key.store_key)
        await other.aclose()
        assert isinstance(value, bytes)
        return value
    if kind == "huge-non-entry":
        return b'{"version": 1, "pad": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    raise AssertionError(kind)


async def _plant(kind: str, value: bytes | None, raw: aioredis.Redis, key: str) -> None:
    await raw.delete(key)
    if value is not None:
        await raw.set(key, value)
    elif kind == "hash":
        await raw.hset(key, mapping={"version": "1", "body": "wrong"})
    elif kind == "list":
        await raw.rpush(key, b"wrong")
    elif kind == "set":
        await raw.sadd(key, b"wrong")
    elif kind == "zset":
        await raw.zadd(key, {"wrong": 1.0})
    else:
        await raw.xadd(key, {"body": "wrong"})


KINDS = [
    "garbage",
    "truncated-json",
    "truncated-compressed",
    "non-strict-json",
    "pickle",
    "yaml-python-tag",
    "entry-of-another-prompt",
    "entry-of-another-tenant",
    "entry-of-another-version",
    "entry-of-another-namespace",
    "huge-non-entry",
    *REDIS_TYPES,
]


@pytest.mark.parametrize("kind", KINDS)
async def test_foreign_or_corrupt_value_is_a_counted_miss_never_an_answer(
    redis_url: str, tmp_path: Path, kind: str
) -> None:
    """A foreign, corrupt or wrong-typed value under tenant A's key is a counted miss for A's ten concurrent
    callers (each answered from one upstream call), never served, never unpickled or run; it is replaced
    by A's own entry, while tenant B's callers keep getting B's answer."""
    marker = tmp_path / "code-ran"
    rig = Rig.open(
        redis_url,
        upstream=EchoUpstream(pad=40_000 if kind == "truncated-compressed" else 0, delay=0.02),
        store_timeout=1.0,
        breaker_threshold=1_000_000,  # see test_a_wrong_typed_value_does_not_stop_other_keys_hitting
    )
    raw = rig.raw
    assert raw is not None
    try:
        for tenant, prompt, version in [
            ("tenant-B", QUESTION, "1"),
            ("tenant-A", "another question", "1"),
            ("tenant-A", QUESTION, "0"),
        ]:
            await rig.ask(tenant, prompt, agent_version=version)
        await rig.settle()
        value = await _foreign(kind, rig, raw, marker)
        key = rig.key_of("tenant-A", QUESTION)
        await _plant(kind, value, raw, key.store_key)
        before = rig.cache.stats()
        calls = rig.upstream.completed

        with CodeRunWatch() as watch:
            asks = [("tenant-A", QUESTION), ("tenant-B", QUESTION)] * 10
            await run_traffic(rig, asks, concurrency=len(asks))
            await rig.settle()
            await rig.ask("tenant-A", QUESTION)  # now a hit on A's own entry
        stats = await rig.finish()
        assert watch.events == []
        assert not marker.exists()
        assert rig.upstream.completed == calls + 1  # one shared call answered A's ten callers
        if kind in REDIS_TYPES:
            # WRONGTYPE: each GET fails and counts as a store error, the leader's re-read under the lock too.
            assert 1 <= stats.store_errors - before.store_errors <= 10 + 1, stats
        else:  # counted once per request, whatever re-reads it made
            assert 1 <= stats.corrupt_entries - before.corrupt_entries <= 10, stats
        assert stats.hits - before.hits >= 10 + 1  # B's ten, and A's own entry afterwards
    finally:
        await rig.close()


async def test_a_wrong_typed_value_does_not_stop_other_keys_hitting(redis_url: str) -> None:
    """Ten concurrent reads of one key holding a Redis hash (WRONGTYPE replies) are misses for that key
    only: they must not open the circuit breaker and turn every other tenant's hits into misses."""
    rig = Rig.open(redis_url, upstream=EchoUpstream(delay=0.02), store_timeout=1.0)
    raw = rig.raw
    assert raw is not None
    try:
        for i in range(10):
            await rig.ask("tenant-B", f"q{i}")
        await rig.settle()
        await _plant("hash", None, raw, rig.key_of("tenant-A", QUESTION).store_key)
        await run_traffic(rig, [("tenant-A", QUESTION)] * 10, concurrency=10)
        before = rig.cache.stats()
        await run_traffic(rig, [("tenant-B", f"q{i}") for i in range(10)], concurrency=2)
        stats = await rig.finish()
        assert stats.hits - before.hits == 10, stats
        assert stats.breaker_opened == 0
    finally:
        await rig.close()


async def test_a_foreign_value_under_a_lock_key_delays_once_and_answers_right(redis_url: str) -> None:
    """A value with no expiry planted under a request's single-flight lock key costs the first caller at
    most the lock wait; it gets its own answer, which is stored, and later callers hit without waiting."""
    rig = Rig.open(redis_url, store_timeout=1.0, lock_wait=0.3)
    raw = rig.raw
    assert raw is not None
    try:
        key = rig.key_of("tenant-A", QUESTION)
        await raw.hset(key.lock_key, mapping={"not": "a lock"})
        await rig.ask("tenant-A", QUESTION)
        await rig.settle()
        first = rig.cache.stats()
        # At most the lock wait: the caller waited once, gave up at lock_wait (counted), went upstream.
        assert (first.lock_waits, first.lock_timeouts, rig.upstream.completed) == (1, 1, 1), first
        await run_traffic(rig, [("tenant-A", QUESTION)] * 5, concurrency=5)
        assert await raw.type(key.lock_key) == b"hash"  # never deleted: it holds no token of ours
        stats = await rig.finish(locks_may_remain=True)  # the planted value is not ours to delete
        assert stats.lock_timeouts == 1
        assert stats.hits == 5
    finally:
        await rig.close()
