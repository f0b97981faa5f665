"""Per-event-loop resources, so one cache object serves every loop and thread of a process.

Anything bound to an event loop (a ``redis.asyncio`` client and its connections, futures shared by
concurrent callers, background write tasks) cannot be used from another loop. A module-level cache is used
from many: successive ``asyncio.run`` calls in a script or worker, pytest-asyncio's loop per test, a sync
SDK client on promptcache's portal thread beside async code on the application's loop. :class:`PerLoop`
keeps one value per running loop, created on first use there.

A value is closed inside its own loop before that loop closes: the first use in a loop starts a small
async generator there, and the loop's ``shutdown_asyncgens()`` — which ``asyncio.run``, ``asyncio.Runner``
and pytest-asyncio all call before closing a loop — finalises it, running ``close(value)`` while the loop
still runs. A loop closed without that step leaves its value to be dropped on the next use from any loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One value per event loop, made by ``create()`` on first use in that loop.

    Args:
        create: Makes the value; called inside the loop that will use it.
        close: Releases a value; awaited inside its own loop (at the loop's shutdown or on :meth:`aclose`).
    """

    def __init__(self, create: Callable[[], T], close: Callable[[T], Awaitable[None]] | None = None) -> None:
        self._create = create
        self._close = close
        self._lock = threading.Lock()
        # Strong references to the loops are fine: an entry leaves when its loop shuts down or is found
        # closed, and a loop that is neither is still in use.
        self._values: dict[asyncio.AbstractEventLoop, T] = {}
        self._finalisers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}

    def get(self) -> T:
        """This loop's value (made now if it has none). Must be called with a running loop."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is not None:
            return value
        with self._lock:
            value = self._values.get(loop)
            if value is None:
                self._drop_closed_loops()
                value = self._values[loop] = self._create()
                if self._close is not None:
                    finaliser = self._finalise(loop)
                    self._finalisers[loop] = finaliser
                    _start(finaliser)
        return value

    def current(self) -> T | None:
        """This loop's value if it has one; never creates it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._values.get(loop)

    def values(self) -> list[T]:
        """Every loop's value (for statistics and shutdown)."""
        with self._lock:
            return list(self._values.values())

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        with self._lock:
            return list(self._values)

    async def aclose(self) -> None:
        """Close every value: this loop's here, a running loop's in that loop; a closed loop's is dropped."""
        here = asyncio.get_running_loop()
        for loop in self.loops():
            value = self._take(loop)
            if value is None or self._close is None:
                continue
            if loop is here:
                await self._close(value)
            elif loop.is_running() and not loop.is_closed():
                done = asyncio.run_coroutine_threadsafe(_closing(self._close, value), loop)
                await asyncio.wrap_future(done)

    def _take(self, loop: asyncio.AbstractEventLoop) -> T | None:
        with self._lock:
            self._finalisers.pop(loop, None)
            return self._values.pop(loop, None)

    def _drop_closed_loops(self) -> None:
        for loop in [loop for loop in self._values if loop.is_closed()]:
            del self._values[loop]
            self._finalisers.pop(loop, None)

    async def _finalise(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Closed while still registered, so a late use during the close (a last write's lock release)
            # finds it instead of making a new value after the loop's finalisers ran.
            value = self._values.get(loop)
            try:
                if value is not None and self._close is not None:
                    await self._close(value)
            finally:
                self._take(loop)


def _start(finaliser: AsyncGenerator[None, None]) -> None:
    """Run the generator to its ``yield`` now, synchronously (nothing before it awaits).

    Its first step calls the running loop's asyncgen hook, which registers it with this loop, so the
    loop's ``shutdown_asyncgens()`` will run its ``finally`` block.
    """
    step: Any = finaliser.asend(None)
    try:
        step.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - the generator yields before any await
        raise RuntimeError("loop finaliser suspended before its first yield")


async def _closing(close: Callable[[T], Awaitable[None]], value: T) -> None:
    await close(value)
