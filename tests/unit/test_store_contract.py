"""One contract for every store (memory, SQLite, fakeredis, real Redis), then the cache's contract over each.

The store half checks the narrow ``Store`` / ``LockingStore`` Protocol: bytes in and out, TTLs, literal
prefixes, locks. The cache half checks what ``PromptCache`` promises on top of any of them: hits, scopes,
write gating, TTLs, invalidation, single-flight, cancellation, draining, corrupt values, and ``from_url``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import pickle
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fakeredis
import fakeredis.aioredis
import pytest
from helpers import FakeClock, Upstream, chat_body, until, waiters
from redis.exceptions import ConnectionError as RedisConnectionError

from promptcache import CacheConfig, ConfigError, PromptCache, PromptCacheError, StoreError
from promptcache._entry import parse_entry
from promptcache.backends import (
    BatchReadStore,
    ComparingStore,
    CountingStore,
    FencingStore,
    ListingStore,
    LockingStore,
    Store,
)
from promptcache.backends.memory import MemoryStore
from promptcache.backends.redis import RedisStore
from promptcache.backends.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

STORE_KINDS = ["memory", "sqlite", "fakeredis", pytest.param("redis", marks=pytest.mark.redis)]
LOCKING_KINDS = ["sqlite", "fakeredis", pytest.param("redis", marks=pytest.mark.redis)]
REDIS_LIKE = frozenset({"fakeredis", "redis"})
REQ: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


# --- helpers ---------------------------------------------------------------------------------------


def invariant_holds(cache: PromptCache) -> bool:
    s = cache.stats()
    return s.hits + s.misses + s.bypasses == s.requests


@functools.cache
def zlib_bomb() -> bytes:
    """``PCZ1`` + a zlib stream of ~65 KiB that inflates to 65 MiB of zeros (above the 64 MiB cap)."""
    comp = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    parts = [comp.compress(chunk) for _ in range(65)]
    parts.append(comp.flush())
    return b"PCZ1" + b"".join(parts)


UNPICKLED: list[str] = []


def _record_unpickle() -> None:
    UNPICKLED.append("ran")


class _PickleBomb:
    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return (_record_unpickle, ())


# --- fixtures --------------------------------------------------------------------------------------


@dataclass
class StoreCase:
    kind: str
    store: Store
    clock: FakeClock | None  # drives the store's TTLs (memory, SQLite); None where real time does (Redis)
    reopen: Callable[[], Store] | None = None  # SQLite: a new store on the same file

    @property
    def locking(self) -> bool:
        return isinstance(self.store, LockingStore)


def _open(kind: str, tmp_path: Path, redis_url: str | None) -> StoreCase:
    if kind == "memory":
        clock = FakeClock(1000.0)
        return StoreCase(kind, MemoryStore(clock=clock), clock)
    if kind == "sqlite":
        clock = FakeClock(1_700_000_000.0)
        path = tmp_path / "store.db"
        return StoreCase(
            kind, SQLiteStore(path, clock=clock), clock, reopen=lambda: SQLiteStore(path, clock=clock)
        )
    if kind == "fakeredis":
        return StoreCase(kind, RedisStore(fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())), None)
    assert redis_url is not None
    return StoreCase(kind, RedisStore.from_url(redis_url), None)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The store kind under test, with the real Redis URL (requested lazily) for the redis param."""
    kind: str = request.param
    url: str | None = request.getfixturevalue("redis_url") if kind == "redis" else None
    return kind, url


@pytest.fixture(params=LOCKING_KINDS)
def locking_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The locking store kind under test (every store but memory)."""
    kind: str = request.param
    url: str | None = request.getfixturevalue("redis_url") if kind == "redis" else None
    return kind, url


@pytest.fixture
async def sc(store_kind: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[StoreCase]:
    """A fresh, empty store of each kind, closed afterwards."""
    case = _open(store_kind[0], tmp_path, store_kind[1])
    yield case
    await case.store.aclose()


@pytest.fixture
async def lsc(locking_kind: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[StoreCase]:
    """A fresh, empty locking store of each kind, closed afterwards."""
    case = _open(locking_kind[0], tmp_path, locking_kind[1])
    yield case
    await case.store.aclose()


def new_cache(sc: StoreCase, clock: Callable[[], float] | None = None, **config: Any) -> PromptCache:
    """A cache over the case's store (not owning it), with deadlines loose enough for a busy CI box."""
    options: dict[str, Any] = {"store_timeout": 2.0, "lock_wait": 2.0, **config}
    return PromptCache(
        sc.store,
        CacheConfig(**options),
        owns_store=False,
        clock=clock if clock is not None else FakeClock(1_800_000_000.0),
    )


# ===================================================================================================
# The store contract
# ===================================================================================================

ODD_VALUES = [
    b"",
    b"\x00",
    bytes(range(256)),
    b"\xff\xfe\xfd not utf-8 \x80",
    b"PCZ1 looks compressed",
    "h\u00e9llo \U0001f600".encode(),
    bytes(range(256)) * 4096,  # 1 MiB
]


async def test_get_missing_is_none(sc: StoreCase) -> None:
    """A key never written reads as None."""
    assert await sc.store.get("never:written") is None


@pytest.mark.parametrize(
    "value", ODD_VALUES, ids=["empty", "nul", "all-bytes", "not-utf8", "magic", "unicode", "1mib"]
)
async def test_set_get_roundtrips_arbitrary_bytes(sc: StoreCase, value: bytes) -> None:
    """Any byte string comes back exactly as written, as bytes."""
    await sc.store.set("k:odd", value, 60)
    got = await sc.store.get("k:odd")
    assert isinstance(got, bytes)
    assert got == value


async def test_set_overwrites(sc: StoreCase) -> None:
    """A second set under the same key replaces the value."""
    await sc.store.set("k", b"one", 60)
    await sc.store.set("k", b"two", 60)
    assert await sc.store.get("k") == b"two"


async def test_delete_reports_whether_something_went(sc: StoreCase) -> None:
    """delete returns True for a present key (which is then gone) and False for an absent one."""
    await sc.store.set("k", b"v", 60)
    await sc.store.set("other", b"w", 60)
    assert await sc.store.delete("k") is True
    assert await sc.store.get("k") is None
    assert await sc.store.delete("k") is False
    assert await sc.store.delete("never") is False
    assert await sc.store.get("other") == b"w"


@pytest.mark.parametrize("value", [b"v", b"\x00\xff binary \r\n", bytes(range(256)) * 40])
async def test_delete_if_deletes_only_the_exact_value(sc: StoreCase, value: bytes) -> None:
    """delete_if (how a write superseded after it landed is taken back) removes a key only while it holds
    exactly the given bytes: a newer value written meanwhile stays."""
    assert isinstance(sc.store, ComparingStore)
    await sc.store.set("k", value, 60)
    assert await sc.store.delete_if("k", value + b"x") is False
    assert await sc.store.delete_if("k", value[:-1]) is False
    assert await sc.store.get("k") == value
    assert await sc.store.delete_if("k", value) is True
    assert await sc.store.get("k") is None
    assert await sc.store.delete_if("k", value) is False
    assert await sc.store.delete_if("never", value) is False


async def test_set_fenced_writes_unless_a_fence_is_later(sc: StoreCase) -> None:
    """set_fenced (an answer's write, with the fences of its invalidations and refreshes) writes only while
    no fence holds a time later than the answer's call began; absent, older or unreadable fences allow it."""
    if not isinstance(sc.store, FencingStore):
        pytest.skip(f"{sc.kind} cannot check and write in one step")
    store = sc.store
    assert await store.set_fenced("e", b"one", 60, ["f1", "f2"], 1000.5) is True  # no fences at all
    assert await store.get("e") == b"one"
    await store.set("f1", repr(1000.25).encode(), 60)  # older than the call
    await store.set("f2", b"not a time", 60)
    assert await store.set_fenced("e", b"two", 60, ["f1", "f2"], 1000.5) is True
    assert await store.get("e") == b"two"
    await store.set("f2", repr(1000.75).encode(), 60)  # later than the call: the write is refused
    assert await store.set_fenced("e", b"three", 60, ["f1", "f2"], 1000.5) is False
    assert await store.get("e") == b"two"
    assert await store.set_fenced("e", b"four", 60, ["f1"], 1000.5) is True  # that fence not asked about
    assert await store.set_fenced("e", b"five", 60, [], 1000.5) is True
    assert await store.get("e") == b"five"
    await store.set_fenced("short", b"v", 0.05, [], 0.0)
    await _expire(sc, "short", 0.05)


async def test_an_expired_fence_forbids_nothing(sc: StoreCase) -> None:
    if not isinstance(sc.store, FencingStore) or sc.clock is None:
        pytest.skip("a fence store with a fake clock")
    await sc.store.set("f", repr(2000.0).encode(), 1)
    assert await sc.store.set_fenced("e", b"v", 60, ["f"], 1000.0) is False
    sc.clock.advance(2)
    assert await sc.store.set_fenced("e", b"v", 60, ["f"], 1000.0) is True


async def _expire(sc: StoreCase, key: str, ttl: float) -> None:
    """Let ``key`` (written with ``ttl``) expire: advance the fake clock, or poll Redis in real time."""
    if sc.clock is not None:
        sc.clock.advance(ttl + 0.01)
        return

    async def gone() -> bool:
        return await sc.store.get(key) is None

    await until(gone, "the Redis TTL expiring")


async def test_ttl_expiry(sc: StoreCase) -> None:
    """A value is readable before its TTL and gone after it, while a longer-lived value stays."""
    ttl = 10.0 if sc.clock is not None else 0.2
    await sc.store.set("short", b"v", ttl)
    await sc.store.set("long", b"w", 600)
    if sc.clock is not None:
        sc.clock.advance(ttl - 0.5)
    assert await sc.store.get("short") == b"v"
    await _expire(sc, "short", ttl)
    assert await sc.store.get("short") is None
    assert await sc.store.get("long") == b"w"


async def test_delete_of_an_expired_key_returns_false(sc: StoreCase) -> None:
    """An expired key is absent, so deleting it reports False (as Redis does and delete_prefix counts)."""
    ttl = 10.0 if sc.clock is not None else 0.2
    await sc.store.set("short", b"v", ttl)
    if sc.clock is not None:
        sc.clock.advance(ttl + 1)
    else:
        await _expire(sc, "short", ttl)
    assert await sc.store.delete("short") is False


async def test_delete_prefix_counts_only_live_keys(sc: StoreCase) -> None:
    """delete_prefix returns the number of live keys it removed, not counting expired ones."""
    ttl = 10.0 if sc.clock is not None else 0.2
    await sc.store.set("p:expiring", b"x", ttl)
    await sc.store.set("p:live1", b"x", 600)
    await sc.store.set("p:live2", b"x", 600)
    await _expire(sc, "p:expiring", ttl)
    assert await sc.store.delete_prefix("p:") == 2
    assert await sc.store.get("p:live1") is None


DELETED = ["a*:x", "a*:", "a*:*", "a*:[?]", "a*:\\", "a*:]x[", "a*:\u00e9t\u00e9", "a*:{tag}"]
KEPT = ["ab:x", "a:x", "a*", "a*;x", "aa*:x", "A*:x", "xa*:x", "b*:x", "a?:x", "a\\*:x", "a[*]:x"]


async def test_delete_prefix_is_literal_and_exact(sc: StoreCase) -> None:
    """delete_prefix removes exactly the keys starting with the literal prefix, glob specials included."""
    for key in DELETED + KEPT:
        await sc.store.set(key, key.encode(), 600)
    assert await sc.store.delete_prefix("a*:") == len(DELETED)
    for key in DELETED:
        assert await sc.store.get(key) is None, key
    for key in KEPT:
        assert await sc.store.get(key) == key.encode(), key


@pytest.mark.parametrize(
    ("prefix", "deleted", "kept"),
    [
        ("p?[x]:", ["p?[x]:1", "p?[x]:*"], ["pa[x]:1", "p?x:1", "p?[y]:1", "pax:1"]),
        ("q\\:", ["q\\:1", "q\\:"], ["q:1", "q\\\\:1", "q\\"]),
        ("r[^a]", ["r[^a]1"], ["rb1", "r^1", "r[a]1"]),
        ("s-\u00e9:", ["s-\u00e9:1"], ["s-e:1", "s-\u00ea:1", "s-\u00e9;1"]),
    ],
    ids=["question-brackets", "backslash", "caret-class", "non-ascii"],
)
async def test_delete_prefix_treats_every_special_literally(
    sc: StoreCase, prefix: str, deleted: list[str], kept: list[str]
) -> None:
    """Whatever glob or escape characters the prefix holds, only keys literally starting with it go."""
    for key in deleted + kept:
        await sc.store.set(key, b"v", 600)
    assert await sc.store.delete_prefix(prefix) == len(deleted)
    for key in deleted:
        assert await sc.store.get(key) is None, key
    for key in kept:
        assert await sc.store.get(key) == b"v", key


async def test_delete_prefix_ending_in_the_highest_code_point(sc: StoreCase) -> None:
    """A prefix ending in U+10FFFF is still an ordinary literal prefix (no crash computing a range end)."""
    await sc.store.set("z\U0010ffff:1", b"v", 600)
    await sc.store.set("z:1", b"w", 600)
    assert await sc.store.delete_prefix("z\U0010ffff") == 1
    assert await sc.store.get("z:1") == b"w"


async def test_delete_prefix_refuses_an_empty_prefix(sc: StoreCase) -> None:
    """An empty prefix is refused with ValueError on every store instead of wiping the whole store."""
    await sc.store.set("k", b"v", 600)
    with pytest.raises(ValueError, match="prefix"):
        await sc.store.delete_prefix("")
    assert await sc.store.get("k") == b"v"


async def test_delete_prefix_with_no_match_returns_zero(sc: StoreCase) -> None:
    """A prefix that matches nothing deletes nothing and returns 0."""
    await sc.store.set("k", b"v", 600)
    assert await sc.store.delete_prefix("nothing:") == 0
    assert await sc.store.get("k") == b"v"


async def test_aclose_is_idempotent(sc: StoreCase) -> None:
    """Closing a store twice raises nothing."""
    await sc.store.set("k", b"v", 60)
    await sc.store.aclose()
    await sc.store.aclose()


async def test_async_with_closes_and_returns_the_store(
    store_kind: tuple[str, str | None], tmp_path: Path
) -> None:
    """``async with store as s`` yields the store itself, usable inside, and closes it at exit."""
    case = _open(store_kind[0], tmp_path, store_kind[1])
    async with case.store as opened:
        assert opened is case.store
        await opened.set("k", b"v", 60)
        assert await opened.get("k") == b"v"
    if case.reopen is not None:  # the data reached the file before the store closed
        async with case.reopen() as again:
            assert await again.get("k") == b"v"
    await case.store.aclose()  # and closing once more is still fine


async def test_only_shared_stores_lock(sc: StoreCase) -> None:
    """SQLite and Redis stores offer the cross-process lock; the in-process memory store does not."""
    assert sc.locking is (sc.kind != "memory")


async def test_try_lock_is_exclusive(lsc: StoreCase) -> None:
    """Only one token holds a lock at a time; other names are independent."""
    store = lsc.store
    assert isinstance(store, LockingStore)
    assert await store.try_lock("lock:a", "t1", 30) is True
    assert await store.try_lock("lock:a", "t2", 30) is False
    assert await store.try_lock("lock:a", "t1", 30) is False
    assert await store.try_lock("lock:b", "t2", 30) is True


async def test_unlock_needs_the_holding_token(lsc: StoreCase) -> None:
    """A wrong token cannot release a lock; the right one can, once, and then others may take it."""
    store = lsc.store
    assert isinstance(store, LockingStore)
    assert await store.try_lock("lock:a", "t1", 30) is True
    assert await store.unlock("lock:a", "intruder") is False
    assert await store.try_lock("lock:a", "t2", 30) is False
    assert await store.unlock("lock:a", "t1") is True
    assert await store.unlock("lock:a", "t1") is False
    assert await store.try_lock("lock:a", "t2", 30) is True
    assert await store.unlock("never-held", "t1") is False


async def test_lock_expires_after_its_ttl(lsc: StoreCase) -> None:
    """A lock whose holder never unlocks becomes free once its TTL has passed."""
    store = lsc.store
    assert isinstance(store, LockingStore)
    ttl = 5.0 if lsc.clock is not None else 0.2
    assert await store.try_lock("lock:a", "t1", ttl) is True
    assert await store.try_lock("lock:a", "t2", ttl) is False
    if lsc.clock is not None:
        lsc.clock.advance(ttl + 0.1)
        assert await store.try_lock("lock:a", "t2", ttl) is True
    else:

        async def relocked() -> bool:
            return await store.try_lock("lock:a", "t2", ttl)

        await until(relocked, "the lock expiring")
    assert await store.unlock("lock:a", "t1") is False  # the expired holder cannot release the new one


async def test_locks_are_not_values(lsc: StoreCase) -> None:
    """Taking and releasing a lock neither reads nor clobbers a value stored under another key."""
    store = lsc.store
    assert isinstance(store, LockingStore)
    await store.set("ns:v1:a:1:~:{d}", b"entry", 60)
    assert await store.try_lock("ns:lock:{d}", "t", 30) is True
    assert await store.unlock("ns:lock:{d}", "t") is True
    assert await store.get("ns:v1:a:1:~:{d}") == b"entry"


async def test_every_store_lists_keys_and_redis_reads_them_in_batches(sc: StoreCase) -> None:
    """Every store is a ListingStore (literal prefix); Redis is a BatchReadStore: values in key order,
    None for a missing key, nothing asked for an empty batch."""
    store = sc.store
    assert isinstance(store, ListingStore)
    assert isinstance(store, BatchReadStore) == (sc.kind in REDIS_LIKE)
    await store.set("ns:v1:a*:1:~:{d1}", b"one", 60)
    await store.set("ns:v1:a*:1:~:{d2}", b"\x00two", 60)
    await store.set("ns:v1:ab:1:~:{d3}", b"other", 60)
    assert sorted(await store.keys("ns:v1:a*:")) == ["ns:v1:a*:1:~:{d1}", "ns:v1:a*:1:~:{d2}"]
    if isinstance(store, BatchReadStore):
        keys = ["ns:v1:a*:1:~:{d2}", "ns:v1:a*:1:~:{gone}", "ns:v1:a*:1:~:{d1}"]
        assert await store.get_many(keys) == [b"\x00two", None, b"one"]
        assert await store.get_many([]) == []


# ===================================================================================================
# The cache contract over every store
# ===================================================================================================


async def test_hit_after_miss_returns_equal_body_without_a_second_call(sc: StoreCase) -> None:
    """The second identical request is answered from the store with an equal body and no upstream call."""
    up = Upstream()
    async with new_cache(sc) as cache:
        first = await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        second = await cache.get_or_call(dict(REQ), up, agent_id="a")
        stats = cache.stats()
    assert first == chat_body("answer 1")
    assert second == first
    assert second is not first
    assert up.calls == 1
    assert (stats.hits, stats.misses, stats.upstream_calls, stats.writes) == (1, 1, 1, 1)
    assert (stats.input_tokens_saved, stats.output_tokens_saved) == (12, 3)


@pytest.mark.parametrize(
    "scope",
    [
        {"agent_id": "b"},
        {"agent_id": "a", "tenant": "t1"},
        {"agent_id": "a", "agent_version": "2"},
    ],
    ids=["agent", "tenant", "version"],
)
async def test_scopes_never_share_entries(sc: StoreCase, scope: dict[str, Any]) -> None:
    """Another agent, tenant or agent version gets its own entry, and each scope keeps its own answer."""
    up = Upstream()
    async with new_cache(sc) as cache:
        base = await cache.get_or_call(REQ, up, agent_id="a")
        other = await cache.get_or_call(REQ, up, **scope)
        await cache.drain()
        assert up.calls == 2
        assert base != other
        assert await cache.get_or_call(REQ, up, agent_id="a") == base
        assert await cache.get_or_call(REQ, up, **scope) == other
    assert up.calls == 2


async def test_failing_call_propagates_the_same_exception_and_stores_nothing(sc: StoreCase) -> None:
    """The exception raised by ``call`` reaches the caller as the same object; the next call goes upstream."""
    boom = RuntimeError("provider 500")
    failing = Upstream(error=boom)
    async with new_cache(sc) as cache:
        with pytest.raises(RuntimeError) as info:
            await cache.get_or_call(REQ, failing, agent_id="a")
        assert info.value is boom
        await cache.drain()
        key = cache.key(REQ, agent_id="a")
        assert await sc.store.get(key.store_key) is None
        up = Upstream()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
        await cache.drain()
        stats = cache.stats()
    assert up.calls == 1
    assert stats.upstream_errors == 1
    assert stats.writes == 1


JSON_REQ: dict[str, Any] = {**REQ, "response_format": {"type": "json_object"}}

UNSTORABLE: list[Any] = [
    pytest.param(REQ, chat_body("cut off mid-sent", "length"), id="finish-length"),
    pytest.param(REQ, chat_body("", "content_filter"), id="finish-content-filter"),
    pytest.param(REQ, {**chat_body(), "choices": []}, id="empty-choices"),
    pytest.param(REQ, chat_body(None, refusal="I can't help with that."), id="refusal"),
    pytest.param(REQ, {"error": {"message": "overloaded", "type": "server_error"}}, id="error-body"),
    pytest.param(JSON_REQ, chat_body('{"answer": 4'), id="invalid-json-under-json-object"),
]


@pytest.mark.parametrize(("request_body", "body"), UNSTORABLE)
async def test_unstorable_answers_are_returned_but_not_stored(
    sc: StoreCase, request_body: dict[str, Any], body: dict[str, Any]
) -> None:
    """A truncated, filtered, empty, refused, error or bad-JSON answer is returned but not cached."""
    up = Upstream(lambda _n: body)
    async with new_cache(sc) as cache:
        assert await cache.get_or_call(request_body, up, agent_id="a") == body
        await cache.drain()
        assert await sc.store.get(cache.key(request_body, agent_id="a").store_key) is None
        assert await cache.get_or_call(request_body, up, agent_id="a") == body
        stats = cache.stats()
    assert up.calls == 2
    assert stats.not_stored == 2
    assert stats.writes == 0
    assert stats.hits == 0


def anthropic_body(stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": "4"}],
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }


@pytest.mark.parametrize(("stop_reason", "cached"), [("end_turn", True), ("max_tokens", False)])
async def test_anthropic_messages_are_gated_on_stop_reason(
    sc: StoreCase, stop_reason: str, cached: bool
) -> None:
    """An Anthropic message that ended its turn is cached; one cut off at max_tokens is not."""
    request = {"model": "claude-3-5-haiku-latest", "max_tokens": 16, "messages": REQ["messages"]}
    up = Upstream(lambda _n: anthropic_body(stop_reason))
    async with new_cache(sc) as cache:
        for _ in range(2):
            got = await cache.get_or_call(request, up, agent_id="a", endpoint="anthropic.messages")
            assert got == anthropic_body(stop_reason)
            await cache.drain()
        stats = cache.stats()
    assert up.calls == (1 if cached else 2)
    assert stats.hits == (1 if cached else 0)
    assert stats.not_stored == (0 if cached else 2)


async def test_per_call_ttl_is_respected(sc: StoreCase) -> None:
    """An entry written with ttl=5 expires after 5 s of cache time while a default-TTL entry lives on."""
    clock = FakeClock(1_800_000_000.0)
    short_req = {**REQ, "seed": 1}
    up = Upstream()
    async with new_cache(sc, clock) as cache:
        await cache.get_or_call(short_req, up, agent_id="a", ttl=5)
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        raw = await sc.store.get(cache.key(short_req, agent_id="a").store_key)
        assert raw is not None
        entry = parse_entry(raw)
        assert entry.expires_at - entry.created_at == pytest.approx(5.0)
        if isinstance(sc.store, RedisStore):
            pttl = await sc.store.client.pttl(cache.key(short_req, agent_id="a").store_key)
            assert 0 < pttl <= 5000
        clock.advance(4)
        await cache.get_or_call(short_req, up, agent_id="a", ttl=5)
        assert up.calls == 2
        clock.advance(2)
        await cache.get_or_call(short_req, up, agent_id="a", ttl=5)
        await cache.get_or_call(REQ, up, agent_id="a")
    assert up.calls == 3


async def test_oversize_answers_are_returned_but_not_stored(sc: StoreCase) -> None:
    """An answer whose entry is above max_entry_bytes reaches the caller, is counted, and is not written."""
    big = chat_body("x" * 5000)
    up = Upstream(lambda _n: big)
    async with new_cache(sc, max_entry_bytes=2000, compress_above=None) as cache:
        assert await cache.get_or_call(REQ, up, agent_id="a") == big
        await cache.drain()
        assert await sc.store.get(cache.key(REQ, agent_id="a").store_key) is None
        assert await cache.get_or_call(REQ, up, agent_id="a") == big
        stats = cache.stats()
    assert up.calls == 2
    assert stats.oversize == 2
    assert stats.writes == 0


async def _fill_agents(cache: PromptCache, up: Upstream) -> None:
    """Two entries for agent a v1 (one with a tenant), one for a v2, two for b."""
    await cache.get_or_call(REQ, up, agent_id="a", agent_version="1")
    await cache.get_or_call(REQ, up, agent_id="a", agent_version="1", tenant="t")
    await cache.get_or_call(REQ, up, agent_id="a", agent_version="2")
    await cache.get_or_call(REQ, up, agent_id="b", agent_version="1")
    await cache.get_or_call({**REQ, "seed": 7}, up, agent_id="b", agent_version="1")
    await cache.drain()


async def test_invalidate_removes_only_that_agents_entries(sc: StoreCase) -> None:
    """invalidate('a') deletes a's entries in every version and tenant, returns the count, leaves b alone."""
    up = Upstream()
    async with new_cache(sc) as cache:
        await _fill_agents(cache, up)
        assert await cache.invalidate("a") == 3
        assert await cache.invalidate("a") == 0
        await cache.get_or_call(REQ, up, agent_id="b", agent_version="1")
        await cache.get_or_call({**REQ, "seed": 7}, up, agent_id="b", agent_version="1")
        assert up.calls == 5
        await cache.get_or_call(REQ, up, agent_id="a", agent_version="2")
    assert up.calls == 6


async def test_invalidate_one_version_leaves_the_others(sc: StoreCase) -> None:
    """invalidate('a', '1') deletes only version 1 of agent a (all tenants); version 2 and b still hit."""
    up = Upstream()
    async with new_cache(sc) as cache:
        await _fill_agents(cache, up)
        assert await cache.invalidate("a", "1") == 2
        await cache.get_or_call(REQ, up, agent_id="a", agent_version="2")
        await cache.get_or_call(REQ, up, agent_id="b", agent_version="1")
        assert up.calls == 5
        await cache.get_or_call(REQ, up, agent_id="a", agent_version="1", tenant="t")
    assert up.calls == 6


async def test_invalidate_with_glob_characters_in_the_agent_id(sc: StoreCase) -> None:
    """invalidate('a*') deletes agent 'a*' only, never look-alike agents such as 'ab' or 'a'."""
    up = Upstream()
    async with new_cache(sc) as cache:
        for agent in ("a*", "ab", "a", "a?", "[a]"):
            await cache.get_or_call(REQ, up, agent_id=agent)
        await cache.drain()
        assert await cache.invalidate("a*") == 1
        for agent in ("ab", "a", "a?", "[a]"):
            await cache.get_or_call(REQ, up, agent_id=agent)
        assert up.calls == 5


async def test_invalidate_raises_store_error_when_the_store_fails(
    sc: StoreCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store failure during invalidation is raised as StoreError (chained), never swallowed."""
    cause = RedisConnectionError("connection refused")

    async def broken(prefix: str) -> int:
        raise cause

    monkeypatch.setattr(sc.store, "delete_prefix", broken)
    async with new_cache(sc) as cache:
        with pytest.raises(StoreError, match="'a'") as info:
            await cache.invalidate("a")
    assert info.value.__cause__ is cause


async def test_stats_add_up_over_a_mix_of_outcomes(sc: StoreCase) -> None:
    """After hits, misses, bypasses, uncacheable requests and failures, hits+misses+bypasses == requests."""
    up = Upstream()
    async with new_cache(sc) as cache:
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.get_or_call(REQ, up, agent_id="a", bypass=True)
        await cache.get_or_call({**REQ, "temperature": math.nan}, up, agent_id="a")
        await cache.get_or_call(REQ, Upstream(lambda _n: chat_body("x", "length")), agent_id="z")
        with pytest.raises(RuntimeError):
            await cache.get_or_call(REQ, Upstream(error=RuntimeError("x")), agent_id="y")
        await cache.get_or_call(REQ, up, agent_id="a", refresh=True)
        stats = cache.stats()
    assert stats.requests == 7
    assert stats.hits + stats.misses + stats.bypasses == stats.requests
    assert (stats.hits, stats.bypasses, stats.uncacheable) == (1, 2, 1)


async def test_stats_add_up_when_a_scope_is_rejected(sc: StoreCase) -> None:
    """A request refused for a bad scope (empty agent id) leaves hits+misses+bypasses == requests."""
    async with new_cache(sc) as cache:
        with pytest.raises(ValueError, match="agent_id"):
            await cache.get_or_call(REQ, Upstream(), agent_id="")
        assert invariant_holds(cache), cache.stats()


@pytest.mark.parametrize(
    "request_body",
    [{**REQ, "temperature": math.nan}, {**REQ, "metadata_blob": b"\x00bytes"}, {**REQ, "stop": {"a", "b"}}],
    ids=["nan", "bytes", "set"],
)
async def test_uncacheable_requests_bypass_and_are_still_answered(
    sc: StoreCase, request_body: dict[str, Any]
) -> None:
    """A request with no canonical form (NaN, bytes, a set) goes upstream every time and is counted."""
    up = Upstream()
    async with new_cache(sc) as cache:
        assert await cache.get_or_call(request_body, up, agent_id="a") == chat_body("answer 1")
        await cache.drain()
        assert await cache.get_or_call(request_body, up, agent_id="a") == chat_body("answer 2")
        stats = cache.stats()
    assert up.calls == 2
    assert (stats.bypasses, stats.uncacheable, stats.writes, stats.requests) == (2, 2, 0, 2)


async def test_bypass_neither_reads_nor_writes(sc: StoreCase) -> None:
    """bypass=True calls upstream although an entry exists, and does not overwrite or create entries."""
    up = Upstream()
    async with new_cache(sc) as cache:
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a", bypass=True) == chat_body("answer 2")
        assert await cache.get_or_call({**REQ, "seed": 3}, up, agent_id="a", bypass=True) is not None
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
        assert await sc.store.get(cache.key({**REQ, "seed": 3}, agent_id="a").store_key) is None
        stats = cache.stats()
    assert up.calls == 3
    assert (stats.bypasses, stats.writes) == (2, 1)


async def test_refresh_calls_upstream_and_overwrites(sc: StoreCase) -> None:
    """refresh=True skips the lookup, calls upstream, and the new answer replaces the stored one."""
    up = Upstream()
    async with new_cache(sc) as cache:
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a", refresh=True) == chat_body("answer 2")
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 2")
    assert up.calls == 2


async def test_concurrent_identical_misses_make_one_upstream_call(sc: StoreCase) -> None:
    """Twenty concurrent identical misses share one upstream call; each gets an equal answer of its own."""
    up = Upstream(delay=0.1)
    async with new_cache(sc) as cache:
        results = await asyncio.gather(*(cache.get_or_call(REQ, up, agent_id="a") for _ in range(20)))
        await cache.drain()
        stats = cache.stats()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
    assert up.calls == 1
    assert all(r == chat_body("answer 1") for r in results)
    assert len({id(r) for r in results}) == 20
    assert stats.hits + stats.misses == 20
    assert stats.misses == 1


async def test_each_concurrent_caller_can_mutate_its_own_answer(sc: StoreCase) -> None:
    """Callers sharing one upstream call may each mutate their dict at once without touching the others."""
    up = Upstream(delay=0.05)
    async with new_cache(sc) as cache:

        async def ask(i: int) -> dict[str, Any]:
            got: dict[str, Any] = await cache.get_or_call(REQ, up, agent_id="a")
            got["choices"][0]["message"]["content"] += f" / mutated by {i}"  # at once, before yielding
            return got

        results = await asyncio.gather(*(ask(i) for i in range(20)))
        await cache.drain()
        cached = await cache.get_or_call(REQ, up, agent_id="a")
    assert up.calls == 1
    contents = [r["choices"][0]["message"]["content"] for r in results]
    assert contents == [f"answer 1 / mutated by {i}" for i in range(20)]
    assert cached == chat_body("answer 1")


async def test_first_caller_cancelled_others_still_get_the_answer(sc: StoreCase) -> None:
    """Cancelling the caller that started the upstream call does not cancel it for the callers waiting."""
    gate = asyncio.Event()
    up = Upstream(gate=gate)
    async with new_cache(sc) as cache:
        first = asyncio.create_task(cache.get_or_call(REQ, up, agent_id="a"))
        await until(lambda: up.calls == 1)
        others = [asyncio.create_task(cache.get_or_call(REQ, up, agent_id="a")) for _ in range(4)]
        await until(lambda: waiters(cache) == 5)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        results = await asyncio.gather(*others)
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
    assert results == [chat_body("answer 1")] * 4
    assert (up.calls, up.cancelled) == (1, 0)


async def test_all_callers_cancelled_cancels_the_upstream_call(sc: StoreCase) -> None:
    """When every caller is cancelled, the upstream call is cancelled, nothing is stored, no lock is left."""
    up = Upstream(gate=asyncio.Event())
    async with new_cache(sc) as cache:
        key = cache.key(REQ, agent_id="a")
        tasks = [asyncio.create_task(cache.get_or_call(REQ, up, agent_id="a")) for _ in range(3)]
        await until(lambda: up.calls == 1 and waiters(cache) == 3)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        await until(lambda: not cache._flight.flights)
        await cache.drain()
        assert up.cancelled == 1
        assert await sc.store.get(key.store_key) is None
        if isinstance(sc.store, LockingStore):
            assert await sc.store.try_lock(key.lock_key, "after", 5) is True
            await sc.store.unlock(key.lock_key, "after")
        after = Upstream()
        assert await cache.get_or_call(REQ, after, agent_id="a") == chat_body("answer 1")
    assert after.calls == 1


async def test_cancelled_callers_are_still_counted(sc: StoreCase) -> None:
    """Cancelled callers are counted as misses, so hits+misses+bypasses == requests holds after them."""
    up = Upstream(gate=asyncio.Event())
    async with new_cache(sc) as cache:
        tasks = [asyncio.create_task(cache.get_or_call(REQ, up, agent_id="a")) for _ in range(3)]
        await until(lambda: waiters(cache) == 3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: not cache._flight.flights)
        stats = cache.stats()
    assert stats.requests == 3
    assert stats.hits + stats.misses + stats.bypasses == stats.requests, stats


async def test_aclose_drains_pending_writes(sc: StoreCase) -> None:
    """aclose() waits for the background write: the entry is there afterwards (after a reopen, for SQLite)."""
    up = Upstream()
    cache = PromptCache(sc.store, CacheConfig(store_timeout=2.0), owns_store=sc.reopen is not None)
    key = cache.key(REQ, agent_id="a")
    await cache.get_or_call(REQ, up, agent_id="a")
    await cache.aclose()
    assert cache.stats().writes == 1
    if sc.reopen is None:
        assert await sc.store.get(key.store_key) is not None
        return
    async with PromptCache(sc.reopen(), CacheConfig(store_timeout=2.0)) as reopened:
        assert await reopened.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
    assert up.calls == 1


CLOSED_OPS = ["get_or_call", "get", "set", "get_entry", "put_entry", "invalidate"]


@pytest.mark.parametrize("op", CLOSED_OPS)
async def test_a_closed_cache_refuses_every_operation(sc: StoreCase, op: str) -> None:
    """After aclose() every operation raises PromptCacheError and nothing reaches the store."""
    cache = new_cache(sc)
    key = cache.key(REQ, agent_id="a")
    await cache.aclose()
    await cache.aclose()  # idempotent
    ops: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_or_call": lambda: cache.get_or_call(REQ, Upstream(), agent_id="a"),
        "get": lambda: cache.get(REQ, agent_id="a"),
        "set": lambda: cache.set(REQ, chat_body(), agent_id="a"),
        "get_entry": lambda: cache.get_entry(key),
        "put_entry": lambda: cache.put_entry(key, REQ, body=chat_body()),
        "invalidate": lambda: cache.invalidate("a"),
    }
    with pytest.raises(PromptCacheError, match="closed"):
        await ops[op]()
    assert await sc.store.get(key.store_key) is None


# --- foreign and corrupt values under the key ------------------------------------------------------


STATIC_FOREIGN: dict[str, Callable[[], bytes]] = {
    "garbage": lambda: b"\xff\xfe\x00 not an entry \x80",
    "json-object": lambda: b'{"hello": "world"}',
    "json-array": lambda: b"[1, 2, 3]",
    "json-string": lambda: b'"4"',
    "bare-body": lambda: b'{"choices": [{"message": {"content": "wrong"}, "finish_reason": "stop"}]}',
    "future-format": lambda: b'{"version": 2, "body": {"choices": []}}',
    "pickle": lambda: pickle.dumps({"version": 1, "body": chat_body("wrong"), "bomb": _PickleBomb()}),
    "zlib-bomb": zlib_bomb,
    "zlib-garbage": lambda: b"PCZ1\x78\x9c not a zlib stream",
    "zlib-not-json": lambda: b"PCZ1" + zlib.compress(b"not json at all"),
}

# Valid entries, but written for another key or scope: (request, scope) of the donor.
DONORS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "other-key": ({**REQ, "seed": 99}, {"agent_id": "a"}),
    "other-agent": (REQ, {"agent_id": "b"}),
    "other-tenant": (REQ, {"agent_id": "a", "tenant": "t"}),
    "other-version": (REQ, {"agent_id": "a", "agent_version": "9"}),
    "other-endpoint": (REQ, {"agent_id": "a", "endpoint": "responses"}),
}


async def _foreign_value(kind: str, sc: StoreCase) -> bytes:
    """A value that must never be served under ``REQ``'s key for agent a."""
    if kind in STATIC_FOREIGN:
        return STATIC_FOREIGN[kind]()
    donor_request, donor_scope = DONORS[kind]
    async with new_cache(sc) as donor:
        body = chat_body("wrong") if "endpoint" not in donor_scope else _responses_body()
        assert await donor.set(donor_request, body, **donor_scope)
        raw = await sc.store.get(donor.key(donor_request, **donor_scope).store_key)
    assert raw is not None  # copied below byte for byte
    return raw


def _responses_body() -> dict[str, Any]:
    return {
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "wrong"}]}],
    }


FOREIGN_KINDS = [*STATIC_FOREIGN, *DONORS]


@pytest.mark.parametrize("kind", FOREIGN_KINDS)
async def test_foreign_or_corrupt_values_are_counted_misses(sc: StoreCase, kind: str) -> None:
    """A value under the key that is not this key's entry is a counted miss, never an error or an answer."""
    raw = await _foreign_value(kind, sc)
    UNPICKLED.clear()
    up = Upstream()
    async with new_cache(sc) as cache:
        key = cache.key(REQ, agent_id="a")
        await sc.store.set(key.store_key, raw, 600)
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")
        assert cache.stats().corrupt_entries == 1
        await cache.drain()
        assert await cache.get_or_call(REQ, up, agent_id="a") == chat_body("answer 1")  # overwritten
        stats = cache.stats()
    assert up.calls == 1
    assert not UNPICKLED
    assert stats.store_errors == 0


async def test_app_level_expiry_is_honoured_while_the_store_still_has_the_value(sc: StoreCase) -> None:
    """Past its expires_at the entry is a miss even though the store (with a longer TTL) still returns it."""
    clock = FakeClock(1_800_000_000.0)
    up = Upstream()
    async with new_cache(sc, clock) as cache:
        key = cache.key(REQ, agent_id="a")
        await cache.get_or_call(REQ, up, agent_id="a", ttl=30)
        await cache.drain()
        clock.advance(31)
        assert await sc.store.get(key.store_key) is not None
        assert await cache.get_or_call(REQ, up, agent_id="a", ttl=30) == chat_body("answer 2")
        stats = cache.stats()
    assert up.calls == 2
    assert (stats.hits, stats.misses, stats.corrupt_entries) == (0, 2, 0)


# ===================================================================================================
# from_url
# ===================================================================================================


async def test_from_url_memory() -> None:
    """memory:// opens a MemoryStore, and keyword options become the config."""
    async with PromptCache.from_url("memory://", namespace="svc", default_ttl=5) as cache:
        assert isinstance(cache.store, MemoryStore)
        assert (cache.config.namespace, cache.config.default_ttl) == ("svc", 5)
        up = Upstream()
        await cache.get_or_call(REQ, up, agent_id="a")
        await cache.drain()
        await cache.get_or_call(REQ, up, agent_id="a")
    assert up.calls == 1


async def test_from_url_sqlite(tmp_path: Path) -> None:
    """sqlite:///<absolute path> opens a SQLiteStore on that file, and entries survive reopening."""
    path = tmp_path / "c.db"
    up = Upstream()
    async with PromptCache.from_url(f"sqlite:///{path}") as cache:
        assert isinstance(cache.store, SQLiteStore)
        assert cache.store.path == path
        await cache.get_or_call(REQ, up, agent_id="a")
    assert path.exists()
    async with PromptCache.from_url(f"sqlite:///{path}") as again:
        await again.get_or_call(REQ, up, agent_id="a")
    assert up.calls == 1


@pytest.mark.redis
async def test_from_url_redis(redis_url: str) -> None:
    """redis:// opens a RedisStore on that server, and a second cache on it sees the first one's entry."""
    up = Upstream()
    async with PromptCache.from_url(redis_url, store_timeout=2.0) as cache:
        assert isinstance(cache.store, RedisStore)
        await cache.get_or_call(REQ, up, agent_id="a")
    async with PromptCache.from_url(redis_url, store_timeout=2.0) as again:
        await again.get_or_call(REQ, up, agent_id="a")
    assert up.calls == 1


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("ftp://x", "ftp://"),
        ("sqlite://", "sqlite:///path"),
        ("memory://host", "memory://"),
        (42, "42"),
        ("redis+cluster://h:1/2", "Cluster"),
        ("no-scheme-at-all", "scheme://"),
        ("redis://127.0.0.1:99999/0", "Port"),
        ("redis://127.0.0.1:1/0?socket_timeout=abc", "socket_timeout"),
    ],
)
def test_from_url_rejects_bad_urls_with_a_clear_message(url: Any, names: str) -> None:
    """A bad URL raises ConfigError whose message names what was wrong."""
    with pytest.raises(ConfigError, match=names.replace("+", r"\+").replace("?", r"\?")):
        PromptCache.from_url(url)


@pytest.mark.parametrize(
    "url",
    ["redis://user:secret@127.0.0.1:notaport/0", "redis://user:secret@[::1/0"],
    ids=["bad-port", "bad-ipv6"],
)
def test_from_url_rejects_malformed_redis_urls_as_config_errors_without_secrets(url: str) -> None:
    """A malformed Redis URL with credentials raises ConfigError (not a bare ValueError) that hides them."""
    with pytest.raises(ConfigError) as info:
        PromptCache.from_url(url)
    assert "secret" not in str(info.value)


def test_from_url_rejects_an_unknown_option_as_config_error() -> None:
    """An unknown keyword option raises ConfigError naming it, as the docstring promises."""
    with pytest.raises(ConfigError, match="nonsense"):
        PromptCache.from_url("memory://", nonsense=1)


def test_from_url_rejects_a_bad_option_value() -> None:
    """An invalid option value raises ConfigError naming the option."""
    with pytest.raises(ConfigError, match="default_ttl"):
        PromptCache.from_url("memory://", default_ttl=-1)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:secret@127.0.0.1:1/0",
        "redis://:secret@127.0.0.1:1/0",
        "rediss://user:secret@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=secret",
    ],
    ids=["user-password", "password-only", "tls", "password-query"],
)
async def test_repr_never_shows_the_password(url: str) -> None:
    """The cache's repr (and its store's) never contains the URL's password."""
    cache = PromptCache.from_url(url)
    try:
        assert "secret" not in repr(cache)
        assert "127.0.0.1" in repr(cache)
    finally:
        await cache.aclose()


async def test_counters_add_up_and_are_not_entries(sc: StoreCase) -> None:
    """``add_counts`` adds to each field (missing ones start at 0), per key."""
    store = sc.store
    assert isinstance(store, CountingStore)
    assert await store.read_counts("ns:counters") == {}
    await store.add_counts("ns:counters", {"a\tm\thit": 2, "a\tm\tmiss": 1})
    await store.add_counts("ns:counters", {"a\tm\thit": 3, "b\tm\tbypass": 1})
    assert await store.read_counts("ns:counters") == {"a\tm\thit": 5, "a\tm\tmiss": 1, "b\tm\tbypass": 1}
    assert await store.read_counts("other:counters") == {}
