"""PerLoop: one value per event loop, closed inside its own loop before that loop closes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from promptcache._loops import PerLoop


class Resource:
    """Remembers the loop it was made in and whether it was closed there."""

    made = 0

    def __init__(self) -> None:
        Resource.made += 1
        self.loop = asyncio.get_running_loop()
        self.closed_in: asyncio.AbstractEventLoop | None = None


async def close(resource: Resource) -> None:
    await asyncio.sleep(0)  # a real close awaits I/O: the loop must still run
    resource.closed_in = asyncio.get_running_loop()


def test_each_asyncio_run_gets_its_own_value_closed_before_the_loop_closes() -> None:
    """Two successive asyncio.run calls get two values; each is closed inside its own loop at its end."""
    per_loop: PerLoop[Resource] = PerLoop(Resource, close)
    seen: list[Resource] = []

    async def use() -> None:
        first = per_loop.get()
        assert per_loop.get() is first  # same loop, same value
        assert per_loop.current() is first
        seen.append(first)

    asyncio.run(use())
    asyncio.run(use())
    assert seen[0] is not seen[1]
    assert [r.closed_in is r.loop for r in seen] == [True, True]
    assert per_loop.values() == []


def test_loops_on_two_threads_do_not_share_a_value() -> None:
    """A loop on another thread (as promptcache's portal for sync clients) has its own value."""
    per_loop: PerLoop[Resource] = PerLoop(Resource, close)
    got: dict[str, Resource] = {}

    def worker() -> None:
        async def use() -> None:
            got["thread"] = per_loop.get()

        asyncio.run(use())

    async def main() -> None:
        got["main"] = per_loop.get()
        thread = threading.Thread(target=worker)
        thread.start()
        await asyncio.to_thread(thread.join)

    asyncio.run(main())
    assert got["main"] is not got["thread"]
    assert got["main"].closed_in is got["main"].loop
    assert got["thread"].closed_in is got["thread"].loop


def test_aclose_closes_another_running_loops_value_in_that_loop() -> None:
    """aclose() from one loop closes a value of a loop running on another thread inside that loop."""
    per_loop: PerLoop[Resource] = PerLoop(Resource, close)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:

        async def make() -> Resource:
            return per_loop.get()

        remote = asyncio.run_coroutine_threadsafe(make(), other).result(5)

        async def main() -> None:
            local = per_loop.get()
            await per_loop.aclose()
            assert local.closed_in is local.loop

        asyncio.run(main())
        assert remote.closed_in is other
        assert per_loop.values() == []
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()


def test_a_loop_closed_without_shutdown_is_dropped_on_next_use() -> None:
    """A loop closed without shutdown_asyncgens leaves its value behind; the next use drops it."""
    per_loop: PerLoop[Resource] = PerLoop(Resource)
    loop = asyncio.new_event_loop()

    async def use() -> Resource:
        return per_loop.get()

    first = loop.run_until_complete(use())
    loop.close()
    assert per_loop.values() == [first]
    second = asyncio.run(use())
    assert second is not first
    assert first not in per_loop.values()


def test_get_needs_a_running_loop() -> None:
    """Outside any loop, get() says so instead of guessing a loop."""
    per_loop: PerLoop[Resource] = PerLoop(Resource)
    with pytest.raises(RuntimeError, match="no running event loop"):
        per_loop.get()
