"""Write fences: an upstream call's answer is never written over a change made after the call began.

Two caches on one store stand for two processes (each has its own single-flight; only the store is
shared). Process A's miss is held in flight by a gate; meanwhile B refreshes or invalidates; then A's
call returns its (older) answer. From a user trial: both orders left A's older answer stored, served to
everyone until its TTL (the refresh was silently lost; the invalidation undone). Last, a neighbour
found while writing these: a read that found its entry is a hit even when other calls fail meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from helpers import chat_body, until
from hypothesis import given
from hypothesis import strategies as st

from promptcache import Endpoint, PromptCache
from promptcache._fences import fence_key, fenced_prefix
from promptcache._keys import agent_prefix, store_key_for
from promptcache._synth import events_from_body
from promptcache.backends.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

pytestmark = pytest.mark.anyio

REQUEST: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "status?"}]}


def answer(text: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def call() -> dict[str, Any]:
        return chat_body(text)

    return call


def held(text: str, gate: asyncio.Event, started: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An upstream call that has begun (``started``) and answers ``text`` once ``gate`` opens."""

    async def call() -> dict[str, Any]:
        started.set()
        await gate.wait()
        return chat_body(text)

    return call


def text_of(body: Any) -> str:
    return str(body["choices"][0]["message"]["content"])


async def stored_text(cache: PromptCache, agent: str = "a", version: str = "0") -> str | None:
    found = await cache.get(REQUEST, agent_id=agent, agent_version=version)
    return None if found is None else text_of(found)


async def race(
    change: Callable[[PromptCache], Awaitable[object]], *, agent: str = "a", version: str = "0"
) -> tuple[PromptCache, PromptCache]:
    """A's miss (agent, version) in flight since t=1000; at t=1001 ``change`` runs on B and finishes; then
    A's call answers (wall clocks injected, one for both "processes")."""
    store, now = MemoryStore(), [1000.0]
    a, b = PromptCache(store, clock=lambda: now[0]), PromptCache(store, clock=lambda: now[0])
    gate, started = asyncio.Event(), asyncio.Event()
    pending = asyncio.create_task(
        a.get_or_call(REQUEST, held("old", gate, started), agent_id=agent, agent_version=version)
    )
    await started.wait()
    now[0] = 1001.0
    await change(b)
    await b.drain()
    gate.set()
    assert text_of(await pending) == "old"  # A's caller still gets its answer
    await a.drain()
    return a, b


async def test_a_refresh_that_finished_is_not_overwritten_by_an_older_call() -> None:
    async def refresh(b: PromptCache) -> None:
        body = await b.get_or_call(REQUEST, answer("new"), agent_id="a", refresh=True)
        assert text_of(body) == "new"

    a, b = await race(refresh)
    assert await stored_text(b) == "new"
    assert (a.stats().superseded, a.stats().writes) == (1, 0)


async def test_an_invalidation_is_not_undone_by_a_call_that_began_before_it() -> None:
    async def invalidate(b: PromptCache) -> None:
        assert await b.invalidate("a") == 0  # nothing stored yet

    a, b = await race(invalidate)
    assert await stored_text(b) is None
    assert a.stats().superseded == 1


async def test_an_invalidation_of_the_agents_version_fences_that_version_only() -> None:
    async def invalidate_v2(b: PromptCache) -> None:
        await b.invalidate("a", agent_version="2")

    a, b = await race(invalidate_v2, version="2")
    assert await stored_text(b, version="2") is None
    a, b = await race(invalidate_v2, version="1")
    assert await stored_text(b, version="1") == "old"
    assert a.stats().superseded == 0


async def test_another_agents_invalidation_fences_nothing() -> None:
    async def invalidate_other(b: PromptCache) -> None:
        await b.invalidate("b")

    a, b = await race(invalidate_other)
    assert await stored_text(b) == "old"
    assert (a.stats().superseded, a.stats().writes) == (0, 1)


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
@pytest.mark.parametrize(("invalidated", "joins"), [(None, False), ("0", False), ("1", True)])
async def test_a_caller_after_an_invalidation_does_not_join_a_call_that_began_before_it(
    invalidated: str | None, joins: bool, url: str, tmp_path: Path
) -> None:
    """A caller that comes after an invalidation of its agent (all versions, or its own) gets an answer of
    a call begun after it, not one shared from a call still in flight since before (seen in a user
    trial: a join returned the older call's answer); another version's invalidation changes nothing.
    On SQLite the older call holds the cross-process lock: the new call does not wait for it."""
    cache = PromptCache.from_url(f"sqlite:///{tmp_path / 'c.db'}" if url == "sqlite" else url)
    gate, started = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(cache.get_or_call(REQUEST, held("old", gate, started), agent_id="a"))
    await started.wait()
    await cache.invalidate("a", agent_version=invalidated)
    second = asyncio.create_task(cache.get_or_call(REQUEST, answer("new"), agent_id="a"))
    if not joins:  # answered while the older call is still held
        await until(second.done, "the later caller answered by a call of its own")
    gate.set()
    assert text_of(await first) == "old"
    if joins:  # it shared the older call, or read its stored answer: no call of its own either way
        assert text_of(await second) == "old"
        assert cache.stats().upstream_calls == 1
    else:
        assert text_of(second.result()) == "new"
        await cache.drain()
        assert await stored_text(cache) == "new"
        assert cache.stats().coalesced == 0
    await cache.aclose()


async def test_a_call_that_began_after_the_invalidation_is_written() -> None:
    store = MemoryStore()
    a, b = PromptCache(store), PromptCache(store)
    await b.invalidate("a")
    await a.get_or_call(REQUEST, answer("after"), agent_id="a")
    await a.drain()
    assert await stored_text(b) == "after"
    assert await store.get(fence_key(agent_prefix("promptcache", "a"))) is not None


async def test_a_stream_answer_is_not_written_over_a_newer_body() -> None:
    """A stream's entry (written with its call's latency, as the SDK transport does) is dropped when the
    body of the same request was refreshed after the stream's call began, and written when it began
    after the refresh (wall clocks injected: the refresh at t=1000, the stream written at t=1010)."""
    store, now = MemoryStore(), [1000.0]
    a, b = PromptCache(store, clock=lambda: now[0]), PromptCache(store, clock=lambda: now[0])
    key = a.key(REQUEST, agent_id="a")
    await b.get_or_call(REQUEST, answer("new"), agent_id="a", refresh=True)
    await b.drain()
    now[0] = 1010.0
    chunks = events_from_body(Endpoint.CHAT_COMPLETIONS, chat_body("old"))
    assert chunks is not None
    assert not await a.put_entry(key, REQUEST, chunks=chunks, latency=60.0)  # began at t=950
    assert await store.get(key.stream_store_key) is None
    assert a.stats().superseded == 1
    assert await a.put_entry(key, REQUEST, chunks=chunks, latency=5.0)  # began at t=1005
    assert await store.get(key.stream_store_key) is not None


async def test_an_explicit_write_is_never_fenced() -> None:
    """``set`` (and ``put_entry`` with no latency) is the caller's own word, not an upstream answer."""
    store = MemoryStore()
    a, b = PromptCache(store), PromptCache(store)
    await b.invalidate("a")
    assert await a.set(REQUEST, chat_body("mine"), agent_id="a")
    assert await stored_text(b) == "mine"


class _GatedStore(MemoryStore):
    """Reads wait for ``gate``; writes fail once ``failing`` is set (a store refusing writes, e.g. full)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.failing = False

    async def get(self, key: str) -> bytes | None:
        await self.gate.wait()
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self.failing:
            raise ConnectionError("refused")
        await super().set(key, value, ttl)


async def test_a_found_entry_is_served_while_other_calls_fail() -> None:
    """A store fault counted while a read is in flight may be another call's: the entry it found is still
    a hit (a full Redis refusing a burst of background writes made stored entries read as misses)."""
    store = _GatedStore()
    store.gate.set()
    cache = PromptCache(store)
    assert await cache.set(REQUEST, chat_body("stored"), agent_id="a")
    store.gate.clear()
    store.failing = True
    reading = asyncio.create_task(cache.get(REQUEST, agent_id="a"))
    await asyncio.sleep(0)  # the read is waiting on the store
    assert not await cache.set({**REQUEST, "model": "other"}, chat_body("x"), agent_id="a")
    assert cache.stats().store_errors == 1
    store.gate.set()
    found = await reading
    assert found is not None
    assert text_of(found) == "stored"


async def test_an_older_stream_landing_while_a_refresh_runs_is_not_written() -> None:
    """B refreshes the body (its call still running); A's stream, begun before the refresh, completes
    now: it must not be written, or stream callers would get it after the refresh is done. (From a user
    trial: the refresh deletes the other kind first, and A's stream landed in between.)"""
    store, now = MemoryStore(), [1000.0]
    a, b = PromptCache(store, clock=lambda: now[0]), PromptCache(store, clock=lambda: now[0])
    key = a.key(REQUEST, agent_id="a")
    gate, started = asyncio.Event(), asyncio.Event()
    now[0] = 1001.0
    refreshing = asyncio.create_task(
        b.get_or_call(REQUEST, held("new", gate, started), agent_id="a", refresh=True)
    )
    await started.wait()  # the refresh's call runs; nothing of it is stored yet
    now[0] = 1002.0
    chunks = events_from_body(Endpoint.CHAT_COMPLETIONS, chat_body("old"))
    assert chunks is not None
    assert not await a.put_entry(key, REQUEST, chunks=chunks, latency=2.0)  # began at t=1000
    assert a.stats().superseded == 1
    gate.set()
    assert text_of(await refreshing) == "new"
    await b.drain()
    assert await store.get(key.stream_store_key) is None
    assert await stored_text(b) == "new"


def stream_of(text: str) -> list[Any]:
    chunks = events_from_body(Endpoint.CHAT_COMPLETIONS, chat_body(text))
    assert chunks is not None
    return chunks


async def test_a_superseded_refresh_still_removes_the_answer_it_refreshed() -> None:
    """From a user trial: a stream is stored; a refresh of the stream begins; a plain call begun after it
    answers first (a newer body); the refresh's own answer is then superseded and not written. The stream
    it refreshed must not stay: stream callers got the pre-refresh answer until its TTL."""
    store, now = MemoryStore(), [1000.0]
    cache = PromptCache(store, clock=lambda: now[0])
    key = cache.key(REQUEST, agent_id="a")
    assert await cache.put_entry(key, REQUEST, chunks=stream_of("before"), latency=1.0)  # began at t=999
    now[0] = 1001.0
    assert await cache.get_entry(key, stream=True, refresh=True) is None  # the refresh begins
    now[0] = 1003.0
    assert await cache.put_entry(key, REQUEST, body=chat_body("plain"), latency=1.5)  # began at t=1001.5
    assert not await cache.put_entry(key, REQUEST, chunks=stream_of("refreshed"), latency=1.9)  # t=1001.1
    assert cache.stats().superseded == 1
    assert await store.get(key.stream_store_key) is None
    entry = await cache.get_entry(key, stream=True)
    assert entry is not None
    assert entry.converted  # the newer body, as a stream
    assert await stored_text(cache) == "plain"


async def test_an_older_entry_of_the_answers_kind_stays_when_nothing_newer_supersedes() -> None:
    """Only a newer answer takes an older entry of the superseded answer's kind with it: a fence does not
    (the invalidation or refresh deleted what it meant to, and a newer entry is left alone)."""
    store, now = MemoryStore(), [1000.0]
    a, b = PromptCache(store, clock=lambda: now[0]), PromptCache(store, clock=lambda: now[0])
    key = a.key(REQUEST, agent_id="a")
    await b.invalidate("a")  # fence at t=1000
    now[0] = 1002.0
    assert await b.put_entry(key, REQUEST, body=chat_body("after"), latency=1.0)  # began at t=1001
    assert not await a.put_entry(key, REQUEST, body=chat_body("before"), latency=3.0)  # began at t=999
    assert await stored_text(b) == "after"


class _HeldWrites(MemoryStore):
    """Entry writes wait for ``gate`` once ``hold`` is set: a write whose check passed, held back (a busy
    event loop delayed such writes by 15-22 ms in a user trial) while another process changes things."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.gate = asyncio.Event()
        self.held = asyncio.Event()

    async def _wait(self, key: str) -> None:
        if self.hold and ":fence:" not in key:
            self.held.set()
            await self.gate.wait()

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._wait(key)
        await super().set(key, value, ttl)

    async def set_fenced(
        self, key: str, value: bytes, ttl: float, fences: Sequence[str], after: float
    ) -> bool:
        await self._wait(key)
        return await super().set_fenced(key, value, ttl, fences, after)


class _HeldWritesNoFencedSet(_HeldWrites):
    """The same, on a store that cannot check and write in one step (as Redis Cluster): the write lands,
    then the fences read again take it back."""

    set_fenced = None  # type: ignore[assignment]


async def late_write(
    change: Callable[[PromptCache], Awaitable[object]], store: _HeldWrites
) -> tuple[PromptCache, _HeldWrites]:
    """A's stream answer (its call began at t=999) passes its check at t=1000, then its write is held
    while B runs ``change`` to the end at t=1001; then A's write goes on."""
    now = [1000.0]
    a, b = PromptCache(store, clock=lambda: now[0]), PromptCache(store, clock=lambda: now[0])
    key = a.key(REQUEST, agent_id="a")
    store.hold = True
    writing = asyncio.create_task(a.put_entry(key, REQUEST, chunks=stream_of("old"), latency=1.0))
    await store.held.wait()
    store.hold = False
    now[0] = 1001.0
    await change(b)
    await b.drain()
    store.gate.set()
    assert not await writing  # taken back
    assert a.stats().superseded == 1
    assert await store.get(key.stream_store_key) is None
    return a, store


HELD_STORES = [
    pytest.param(_HeldWrites, id="one-step"),
    pytest.param(_HeldWritesNoFencedSet, id="taken-back"),
]


@pytest.mark.parametrize("held_store", HELD_STORES)
async def test_a_write_held_back_past_an_invalidation_never_stays(held_store: type[_HeldWrites]) -> None:
    async def invalidate(b: PromptCache) -> None:
        await b.invalidate("a")

    await late_write(invalidate, held_store())


@pytest.mark.parametrize("held_store", HELD_STORES)
async def test_a_write_held_back_past_a_refresh_never_stays(held_store: type[_HeldWrites]) -> None:
    async def refresh(b: PromptCache) -> None:
        await b.get_or_call(REQUEST, answer("new"), agent_id="a", refresh=True)

    a, _ = await late_write(refresh, held_store())
    assert await stored_text(a) == "new"


async def test_taking_a_write_back_never_deletes_a_newer_one() -> None:
    """The take-back deletes only while the key holds exactly what was written."""
    store = MemoryStore()
    cache = PromptCache(store)
    key = cache.key(REQUEST, agent_id="a")
    assert await cache.set(REQUEST, chat_body("newer"), agent_id="a")
    newer = await store.get(key.store_key)
    assert newer is not None
    assert not await store.delete_if(key.store_key, newer + b" ")
    assert await store.get(key.store_key) == newer
    assert await store.delete_if(key.store_key, newer)
    assert await store.get(key.store_key) is None


IDS = st.text(min_size=1, max_size=12)


@given(IDS, IDS, st.none() | IDS, st.none() | IDS)
def test_a_pushed_fence_names_the_prefix_it_guards_and_an_entry_key_names_none(
    namespace: str, agent: str, version: str | None, tenant: str | None
) -> None:
    """What another process's fence guards is read back from its key alone (the hot tier hears only
    keys): an agent's or version's prefix, or one entry's store key for a refresh; an entry is no fence."""
    prefix = agent_prefix(namespace, agent, version)
    assert fenced_prefix(fence_key(prefix)) == prefix
    entry = store_key_for(namespace, agent, version or "0", tenant, "d" * 64)
    assert fenced_prefix(fence_key(entry)) == entry
    assert fenced_prefix(entry) is None
