"""The parts PromptCache is composed of, each tested alone, and the Scope door of its public methods.

Nothing here asserts a duration: clocks are injected, background work is gated by events, and conditions
are polled for instead of slept on.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Self

import pytest
from helpers import FakeClock, until

from promptcache import CacheConfig, ConfigError, KeyPolicy, PromptCache, Scope, StoreError, make_key
from promptcache._entry import encode_entry, is_compressed
from promptcache._events import Emitter, RequestEvent
from promptcache._flight import SingleFlight
from promptcache._guard import StoreGuard
from promptcache._keys import store_key_for
from promptcache._resilience import BreakerState
from promptcache._stats import Counters
from promptcache._writer import EntryWriter
from promptcache.backends._base import DEFAULT_STORE_TIMEOUT
from promptcache.backends.memory import MemoryStore

if TYPE_CHECKING:
    from promptcache._events import CacheEvent

pytestmark = pytest.mark.anyio

REQ: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def chat_body(content: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


class ScriptedStore:
    """A memory store that counts calls, can fail every call, and can hold reads and writes at a gate."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.gets = 0
        self.sets = 0

    async def _enter(self) -> None:
        if self.fail is not None:
            raise self.fail
        if self.gate is not None:
            await self.gate.wait()

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        await self._enter()
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.sets += 1
        await self._enter()
        await self.inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.inner.delete_prefix(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ClientTimeout(Exception):  # noqa: N818 - named like a store client's own timeout type
    """A timeout type that is not the builtin TimeoutError (as redis-py's is not)."""


class ReplyError(Exception):
    """An error a store's server replied with."""


class DeclaringStore(ScriptedStore):
    """A store that declares every optional capability: a deadline, reply errors and its own timeouts."""

    default_timeout = 1.5

    def is_reply_error(self, exc: BaseException) -> bool:
        return isinstance(exc, ReplyError)

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, ClientTimeout)


def make_guard(
    store: object, config: CacheConfig | None = None, clock: FakeClock | None = None
) -> tuple[StoreGuard, Counters]:
    counters = Counters()
    guard = StoreGuard(
        store,
        config if config is not None else CacheConfig(),
        counters,
        Emitter((), "test"),
        monotonic=clock if clock is not None else FakeClock(),
    )
    return guard, counters


def state_of(guard: StoreGuard) -> BreakerState:
    """The breaker's state, read through a call so the type checker does not narrow it between reads."""
    return guard.breaker.state


# -- the guard ---------------------------------------------------------------------------------------


async def test_guard_opens_the_breaker_and_then_skips_the_store() -> None:
    """After ``threshold`` failures the guard stops calling the store, counts each skip, and probes later."""
    store = ScriptedStore()
    store.fail = ConnectionError("refused")
    clock = FakeClock()
    guard, counters = make_guard(store, CacheConfig(breaker_threshold=2, breaker_cooldown=10.0), clock)
    for _ in range(2):
        ok, error = await guard.run("get", lambda: store.get("k"))
        assert (ok, type(error)) == (False, ConnectionError)
    assert guard.breaker.state is BreakerState.OPEN
    assert await guard.run("get", lambda: store.get("k")) == (False, None)
    assert (store.gets, counters.store_errors, counters.store_skipped, counters.breaker_opened) == (
        2,
        2,
        1,
        1,
    )
    store.fail = None
    clock.now += 10.0
    assert await guard.run("get", lambda: store.get("k")) == (True, None)  # the probe, answered
    assert state_of(guard) is BreakerState.CLOSED
    assert (store.gets, counters.breaker_closed) == (3, 1)


async def test_guard_raises_store_error_when_fail_open_is_off() -> None:
    """With ``fail_open=False`` a failed call is still counted, then raised as StoreError."""
    store = ScriptedStore()
    store.fail = ConnectionError("refused")
    guard, counters = make_guard(store, CacheConfig(fail_open=False))
    with pytest.raises(StoreError, match="get"):
        await guard.run("get", lambda: store.get("k"))
    assert counters.store_errors == 1


async def test_guard_reads_the_capabilities_a_store_declares() -> None:
    """The store's default deadline, reply errors and own timeout type come from its declared Protocols."""
    declaring, plain = DeclaringStore(), ScriptedStore()
    guard, counters = make_guard(declaring, CacheConfig(breaker_threshold=1))
    assert guard.timeout == 1.5
    assert make_guard(plain)[0].timeout == DEFAULT_STORE_TIMEOUT
    assert make_guard(declaring, CacheConfig(store_timeout=0.2))[0].timeout == 0.2
    declaring.fail = ReplyError("WRONGTYPE")
    await guard.run("get", lambda: declaring.get("k"))
    assert (counters.store_errors, guard.breaker.state) == (1, BreakerState.CLOSED)  # the server is up
    declaring.fail = ClientTimeout("read timed out")
    await guard.run("get", lambda: declaring.get("k"))
    assert (counters.store_timeouts, guard.breaker.state) == (1, BreakerState.OPEN)
    assert guard.is_timeout(ClientTimeout())
    assert guard.is_timeout(TimeoutError())
    assert not make_guard(plain)[0].is_timeout(ClientTimeout())


# -- the writer --------------------------------------------------------------------------------------


def make_writer(store: ScriptedStore, config: CacheConfig | None = None) -> tuple[EntryWriter, Counters]:
    cfg = config if config is not None else CacheConfig(store_timeout=30.0)
    guard, counters = make_guard(store, cfg)
    return EntryWriter(store, guard, cfg, counters, clock=FakeClock()), counters


def key_of(request: dict[str, Any] = REQ) -> Any:
    return make_key(request, agent_id="a")


async def test_writer_drains_background_writes_and_runs_each_follow_up() -> None:
    """Background writes are tracked until written; each one's follow-up runs after its write."""
    store = ScriptedStore()
    store.gate = asyncio.Event()
    writer, counters = make_writer(store)
    followed: list[int] = []

    async def follow(n: int) -> None:
        followed.append(n)

    for n in range(2):
        data = writer.encode(key_of({**REQ, "seed": n}), REQ, chat_body("4"), None, 0.0, 60.0)
        assert data is not None
        writer.spawn(f"k{n}", data, 60.0, then=functools.partial(follow, n))
    await until(lambda: store.sets == 2)
    assert (writer.pending, counters.writes, followed) == (2, 0, [])
    store.gate.set()
    await writer.drain()
    assert (writer.pending, counters.writes, sorted(followed)) == (0, 2, [0, 1])


async def test_writer_drops_writes_beyond_its_bound_but_still_runs_the_follow_up() -> None:
    """Beyond ``max_pending_writes`` a write is dropped and counted; its follow-up (a lock release) runs."""
    store = ScriptedStore()
    store.gate = asyncio.Event()
    writer, counters = make_writer(store, CacheConfig(store_timeout=30.0, max_pending_writes=1))
    followed: list[str] = []

    async def follow(name: str) -> None:
        followed.append(name)

    data = writer.encode(key_of(), REQ, chat_body("4"), None, 0.0, 60.0)
    assert data is not None
    writer.spawn("k1", data, 60.0, then=lambda: follow("k1"))
    writer.spawn("k2", data, 60.0, then=lambda: follow("k2"))
    assert counters.writes_dropped == 1
    store.gate.set()
    await writer.drain()
    assert (store.sets, counters.writes, sorted(followed)) == (1, 1, ["k1", "k2"])
    assert await store.get("k2") is None


async def test_writer_refuses_what_must_not_be_stored() -> None:
    """A cut-off answer and an entry over ``max_entry_bytes`` are counted and never written."""
    store = ScriptedStore()
    writer, counters = make_writer(store, CacheConfig(max_entry_bytes=2048))
    assert writer.encode(key_of(), REQ, chat_body("4", finish_reason="length"), None, 0.0, 60.0) is None
    assert writer.encode(key_of(), REQ, chat_body("x" * 4096), None, 0.0, 60.0) is None
    assert (counters.not_stored, counters.oversize, store.sets) == (1, 1, 0)


# -- single-flight -----------------------------------------------------------------------------------


def make_flight(store: ScriptedStore) -> tuple[SingleFlight, EntryWriter, Counters]:
    cfg = CacheConfig(store_timeout=30.0)
    counters = Counters()
    events = Emitter((), "test")
    guard = StoreGuard(store, cfg, counters, events, monotonic=FakeClock())
    writer = EntryWriter(store, guard, cfg, counters, clock=FakeClock())
    return SingleFlight(store, guard, writer, cfg, counters, events, clock=FakeClock()), writer, counters


async def test_single_flight_shares_one_upstream_call_between_concurrent_misses() -> None:
    """Concurrent identical misses make one upstream call; every caller gets its own copy of the answer."""
    flight, writer, counters = make_flight(ScriptedStore())
    release = asyncio.Event()
    calls = 0

    async def upstream() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await release.wait()
        return chat_body("4")

    key = key_of()
    callers = [asyncio.create_task(flight.join(key, REQ, upstream, 60.0, refresh=False)) for _ in range(5)]
    await until(lambda: sum(f.waiters for f in flight.flights.values()) == 5)
    release.set()
    answers = await asyncio.gather(*callers)
    await writer.drain()
    assert calls == 1
    assert all(answer == chat_body("4") for answer in answers)
    assert len({id(answer) for answer in answers}) == 5
    assert (counters.misses, counters.hits, counters.coalesced, counters.writes) == (1, 4, 4, 1)
    assert flight.flights == {}


async def test_single_flight_shares_one_store_read_between_concurrent_lookups() -> None:
    """Concurrent first reads of one key make one store GET."""
    store = ScriptedStore()
    flight, _, _ = make_flight(store)
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(flight.lookup(key_of())) for _ in range(4)]
    await until(lambda: store.gets == 1)
    for _ in range(10):  # give the other readers every chance to issue a GET of their own
        await asyncio.sleep(0)
    store.gate.set()
    assert await asyncio.gather(*readers) == [None] * 4
    assert store.gets == 1


# -- the scope door ----------------------------------------------------------------------------------


async def test_scope_and_keywords_reach_the_same_entry() -> None:
    """``scope=`` and the documented keywords name the same key and the same entry."""
    scope = Scope("classifier", "2", tenant="t1", ttl=60.0, policy=KeyPolicy.EXACT)
    async with PromptCache(MemoryStore()) as cache:
        by_keywords = cache.key(REQ, agent_id="classifier", agent_version="2", tenant="t1", policy="exact")
        assert cache.key(REQ, scope=scope) == by_keywords
        assert await cache.set(REQ, chat_body("4"), scope=scope)
        assert await cache.get(REQ, agent_id="classifier", agent_version="2", tenant="t1", policy="exact")
        assert await cache.get_or_call(REQ, _never_called, scope=scope) == chat_body("4")


async def _never_called() -> dict[str, Any]:
    raise AssertionError("upstream was called")


@pytest.mark.parametrize(
    "extra",
    [{"agent_id": "a"}, {"agent_version": "2"}, {"tenant": "t"}, {"ttl": 5.0}, {"policy": "exact"}],
)
async def test_scope_with_a_scope_keyword_is_a_type_error(extra: dict[str, Any]) -> None:
    """Passing ``scope=`` and any scope keyword is refused, naming the keyword."""
    async with PromptCache(MemoryStore()) as cache:
        with pytest.raises(TypeError, match=f"{next(iter(extra))}="):
            await cache.get_or_call(REQ, _never_called, scope=Scope("a"), **extra)


async def test_neither_scope_nor_agent_id_is_a_type_error() -> None:
    """A public method without ``agent_id=`` or ``scope=`` says which it needs."""
    async with PromptCache(MemoryStore()) as cache:
        with pytest.raises(TypeError, match=r"key\(\) needs agent_id="):
            cache.key(REQ)


async def test_a_bad_policy_keyword_is_a_config_error() -> None:
    """An unknown policy string is refused at the door with the valid values."""
    async with PromptCache(MemoryStore()) as cache:
        with pytest.raises(ConfigError, match="policy must be one of"):
            cache.key(REQ, agent_id="a", policy="loose")


async def test_put_entry_takes_its_ttl_from_the_scope() -> None:
    """put_entry with ``scope=`` keeps the entry for ``scope.ttl``; ``scope`` and ``ttl`` together fail."""
    clock = FakeClock(1000.0)
    async with PromptCache(MemoryStore(), clock=clock) as cache:
        scope = Scope("a", ttl=30.0)
        key = cache.key(REQ, scope=scope)
        assert await cache.put_entry(key, REQ, scope=scope, body=chat_body("4"))
        entry = await cache.get_entry(key)
        assert entry is not None
        assert entry.expires_at - entry.created_at == 30.0
        with pytest.raises(TypeError, match="not both"):
            await cache.put_entry(key, REQ, scope=scope, ttl=5.0, body=chat_body("4"))


async def test_count_bypass_labels_the_event_with_the_scope() -> None:
    """A bypass an integration reports with a scope carries that agent and version in its event."""
    events: list[CacheEvent] = []

    def hook(event: CacheEvent) -> None:
        events.append(event)

    async with PromptCache(MemoryStore(), hooks=[hook]) as cache:
        cache.count_bypass(scope=Scope("a", "3"), request=REQ)
        assert cache.stats().bypasses == 1
    (event,) = events
    assert isinstance(event, RequestEvent)
    assert (event.agent_id, event.agent_version, event.model, event.reason) == (
        "a",
        "3",
        REQ["model"],
        "requested",
    )


# -- formats the key and entry modules own -----------------------------------------------------------


@pytest.mark.parametrize("tenant", [None, "acme", "a:b*{c}"])
def test_store_key_for_rebuilds_the_store_key_of_make_key(tenant: str | None) -> None:
    """store_key_for(namespace, agent, version, tenant, digest) is exactly the key make_key gives."""
    key = make_key(REQ, namespace="ns", agent_id="agent/1", agent_version="v 2", tenant=tenant)
    assert store_key_for("ns", "agent/1", "v 2", tenant, key.digest) == key.store_key
    assert key.model == REQ["model"]


def test_is_compressed_tells_compressed_entries_apart() -> None:
    """Entries above the threshold are compressed, and is_compressed says which are."""
    from promptcache._entry import Entry  # noqa: PLC0415

    entry = Entry(
        digest="d", scope=("ns", "a", "1", None), endpoint="chat.completions", created_at=0, expires_at=1
    )
    assert not is_compressed(encode_entry(entry, compress_above=None))
    assert is_compressed(encode_entry(entry, compress_above=1))


# -- imports -----------------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_importing_promptcache_loads_no_redis_code() -> None:
    """``import promptcache`` loads no backend that needs redis-py, so memory and SQLite users never do."""
    done = _python(
        "import sys, promptcache\n"
        "prefixes = ('redis.', 'promptcache.backends.')\n"
        "loaded = [m for m in sys.modules if m == 'redis' or m.startswith(prefixes)]\n"
        "print(sorted(loaded))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['promptcache.backends._base']"


def test_a_moved_private_redis_module_fails_only_the_cluster_store_and_names_the_version() -> None:
    """If redis-py moves the internals the cluster store uses, opening one raises ConfigError naming it."""
    done = _python(
        "import redis, redis._parsers.commands, promptcache, promptcache.backends.cluster\n"
        "from promptcache import ConfigError\n"
        "del redis._parsers.commands.AsyncCommandsParser  # as if a redis-py release had moved it\n"
        "promptcache.PromptCache.from_url('memory://')\n"
        "try:\n"
        "    promptcache.PromptCache.from_url('redis+cluster://127.0.0.1:7000')\n"
        "except ConfigError as exc:\n"
        "    print(redis.__version__ in str(exc), 'AsyncCommandsParser' in str(exc))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True True"


class OneConnectionStore:
    """A store with one pooled connection: each GET holds it for 30 ms (under a 50 ms deadline)."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(1)
        self.in_use = 0
        self.most_in_use = 0

    def admission(self) -> asyncio.Semaphore | None:
        return self.gate

    async def get(self, key: str) -> bytes | None:
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)
        try:
            await asyncio.sleep(0.03)
        finally:
            self.in_use -= 1
        return key.encode()


async def test_waiting_for_a_pooled_connection_is_not_part_of_the_deadline() -> None:
    """Six callers on one connection queue for it; each GET then has its whole deadline, so none times
    out although the last one waits five GETs' time for the connection."""
    store = OneConnectionStore()
    guard, counters = make_guard(store, CacheConfig(store_timeout=0.05))
    results = await asyncio.gather(
        *(guard.run("get", functools.partial(store.get, f"k{i}")) for i in range(6))
    )
    assert results == [(True, f"k{i}".encode()) for i in range(6)]
    assert (counters.store_timeouts, counters.store_errors) == (0, 0)
    assert store.most_in_use == 1  # the admission kept it to the pool's width
