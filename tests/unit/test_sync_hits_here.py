"""A sync SDK client's hits that need no I/O are answered on the caller's own thread.

With the memory store (here) or the hot tier (tests/redis/test_tier_redis.py) a hit is a dictionary
lookup: a wrapped sync client answers it without a hop to the portal thread the cache keeps for sync
callers, bodies and streams alike, and what the SDK returns equals its own parse of the upstream answer.
Anything else (a miss, a stream of the other shape, the other kind converted) still takes the full path.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from sdk_driver import OpenAIProvider, SdkDriver

from promptcache import PromptCache
from promptcache.backends.memory import MemoryStore
from promptcache.integrations import _portal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fake_llm import FakeLLM

OPENAI = OpenAIProvider()
create = OPENAI.create


@contextmanager
def portal_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the calls made through the portal thread inside the block (one list element, a count)."""
    count = [0]
    real = _portal.call

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(_portal, "call", counting)
        yield count


@pytest.fixture
def drv(server: FakeLLM) -> Iterator[SdkDriver]:
    cache = PromptCache(MemoryStore())
    from promptcache.openai import wrap  # noqa: PLC0415

    driver = SdkDriver("sync", cache, wrap(OPENAI.client("sync", server), cache, agent_id="here"))
    yield driver
    driver.close()


def test_a_sync_memory_hit_is_answered_without_the_portal(
    drv: SdkDriver, server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = drv.run(create("here"))
    with portal_calls(monkeypatch) as calls:
        again = [drv.run(create("here")) for _ in range(5)]
    assert calls == [0]
    assert again == [first] * 5
    assert server.calls == 1
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses) == (6, 5, 1)


def test_a_sync_memory_stream_hit_is_answered_without_the_portal(
    drv: SdkDriver, server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_stream = create("streamed here", stream=True)
    recorded = drv.events(open_stream)
    drv.drain()
    with portal_calls(monkeypatch) as calls:
        replayed = [drv.events(open_stream) for _ in range(3)]
    assert calls == [0]
    assert replayed == [recorded] * 3
    assert server.calls == 1


def test_a_stream_of_the_other_shape_still_takes_the_full_path(drv: SdkDriver, server: FakeLLM) -> None:
    """A stored stream without the usage chunk does not answer a caller who asks for it: not here either."""
    drv.events(create("shape", stream=True))
    drv.drain()
    with_usage = drv.events(create("shape", stream=True, stream_options={"include_usage": True}))
    assert server.calls == 2
    assert with_usage[-1].usage is not None


async def _reads(store: MemoryStore, stop: threading.Event) -> None:
    while not stop.is_set():
        for i in range(300):
            await store.get(f"ns:k{i}")
        await store.keys("ns:")


def _sync_reads(store: MemoryStore, stop: threading.Event) -> None:
    while not stop.is_set():
        for i in range(300):
            store.get_now(f"ns:k{i}")


async def _writes(store: MemoryStore, rounds: int) -> None:
    for r in range(rounds):
        for i in range(300):
            await store.set(f"ns:k{i}", b"v", 60)
        await store.delete_prefix("ns:k1")
        await store.keys("ns:")
        await store.add_counts(f"counts{r % 3}", {"hits": 1})


def _collecting(errors: list[BaseException], fn: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_memory_store_shared_by_threads_and_loops_never_raises() -> None:
    """Readers on an event loop and on a plain thread (sync hits), writers and invalidations on loops of
    their own, all at once: the dictionary is guarded, so none meets a dictionary changed under it (before
    the lock, a read raced an eviction: KeyError from move_to_end)."""
    store = MemoryStore(max_entries=200)
    stop = threading.Event()
    errors: list[BaseException] = []
    readers = [
        _collecting(errors, lambda: asyncio.run(_reads(store, stop))),
        _collecting(errors, lambda: _sync_reads(store, stop)),
    ]
    try:
        writers = [_collecting(errors, lambda: asyncio.run(_writes(store, 60))) for _ in range(2)]
        for thread in writers:
            thread.join()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert errors == []
    assert len(store) <= 200
