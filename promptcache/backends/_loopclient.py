"""The client a Redis-backed store uses in the running event loop.

A ``redis.asyncio`` client's connections belong to the loop that opened them, but one store (inside one
cache) is used from many loops: successive ``asyncio.run`` calls, pytest-asyncio's loop per test, the
portal thread that serves sync SDK clients. :class:`LoopClients` gives each loop its own client: the one the
store was built with in the first loop that uses it, and a fresh one made by ``clone`` in every other
(with the same connection settings and pool bound). Each is closed inside its own loop when that loop shuts
down (see :class:`~promptcache._loops.PerLoop`), after anyone holding the loop (a cache finishing its last
writes) lets go, or by :meth:`LoopClients.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from promptcache._loops import PerLoop

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["HOLD_TIMEOUT", "LoopClient", "LoopClients", "admission_of"]

C = TypeVar("C")
HOLD_TIMEOUT = 10.0  # seconds a loop's shutdown waits for the last writes before closing its client


@dataclass(slots=True)
class LoopClient(Generic[C]):
    """One loop's client, whether the store closes it, and who still needs it open."""

    client: C
    owned: bool
    holds: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    extras: dict[str, Any] = field(default_factory=dict)  # per-loop state a store keeps beside its client
    # Closed in this loop before the client, whether or not the store owns the client (a store's own
    # connections beside the client's pool).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


# Pools wider than this are treated as unbounded (redis-py's plain pool allows 2**31 connections).
_MAX_ADMISSION = 10_000


def admission_of(slot: LoopClient[Any]) -> asyncio.Semaphore | None:
    """A semaphore as wide as ``slot``'s connection pool, made once per loop (None when unbounded)."""
    if "admission" not in slot.extras:
        pool = getattr(slot.client, "connection_pool", None)
        width = getattr(pool, "max_connections", None)
        bounded = isinstance(width, int) and 0 < width <= _MAX_ADMISSION
        slot.extras["admission"] = asyncio.Semaphore(int(width)) if bounded and width else None
    found: asyncio.Semaphore | None = slot.extras["admission"]
    return found


class LoopClients(Generic[C]):
    """Per-loop clients for one store.

    Args:
        client: The client the store was built with; used in the first loop that needs one.
        owns: Whether the store closes ``client`` (clones are always closed).
        clone: Makes another client with ``client``'s settings, for another loop; None shares ``client``
            with every loop (only safe for a client whose connections are not loop-bound).
        close: Closes a client.
    """

    def __init__(
        self,
        client: C,
        *,
        owns: bool,
        clone: Callable[[C], C] | None,
        close: Callable[[C], Awaitable[None]],
    ) -> None:
        self._first = client
        self._owns = owns
        self._clone = clone
        self._close_client = close
        self._claimed = False
        self._lock = threading.Lock()
        self._per_loop: PerLoop[LoopClient[C]] = PerLoop(self._make, self._close)

    @property
    def first(self) -> C:
        """The client the store was built with (its settings are every clone's)."""
        return self._first

    def get(self) -> LoopClient[C]:
        """This loop's client (made on first use here)."""
        return self._per_loop.get()

    def client(self) -> C:
        """This loop's client, or the first one when no loop is running."""
        try:
            return self._per_loop.get().client
        except RuntimeError:
            return self._first

    def hold(self) -> Callable[[], None]:
        """Keep this loop's client open at the loop's shutdown until the returned function is called."""
        slot = self._per_loop.get()
        slot.holds += 1
        slot.released.clear()
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            slot.holds -= 1
            if slot.holds == 0:
                slot.released.set()

        return release

    async def aclose(self) -> None:
        """Close every loop's client, each in its own loop."""
        await self._per_loop.aclose()

    def _make(self) -> LoopClient[C]:
        with self._lock:
            if not self._claimed:
                self._claimed = True
                return LoopClient(self._first, self._owns)
        if self._clone is None:
            return LoopClient(self._first, owned=False)
        return LoopClient(self._clone(self._first), owned=True)

    async def _close(self, slot: LoopClient[C]) -> None:
        # Let every other finaliser of this loop take its first step (a cache starts its last writes
        # there and holds the client), then wait for the holders before closing.
        await asyncio.sleep(0)
        if slot.holds:
            # Bounded: a holder that never lets go (a cache nobody closed) must not stop the loop closing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.released.wait(), HOLD_TIMEOUT)
        try:
            for closer in slot.closers:
                await closer()
        finally:
            if slot.owned:
                await self._close_client(slot.client)
