"""The store Protocol every backend implements, and the optional capabilities a store may declare.

The cache asks for a capability through its Protocol (``isinstance(store, LockingStore)``), never by the
store's class or class name, so a fake or third-party store gets the same treatment as ours:

* :class:`LockingStore`: the short cross-process lock single-flight uses.
* :class:`TimedStore`: the store's own default per-call deadline (else :data:`DEFAULT_STORE_TIMEOUT`).
* :class:`ReplyErrorClassifier`: tells errors the server replied with (it is up) from failures to reach it.
* :class:`TimeoutClassifier`: recognises the store client's own timeout exceptions (else only the builtin
  :class:`TimeoutError` counts as a timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_STORE_TIMEOUT",
    "AdmittingStore",
    "BatchReadStore",
    "CountingStore",
    "ImmediateStore",
    "Invalidations",
    "ListingStore",
    "LockingStore",
    "LoopHoldingStore",
    "ReplyErrorClassifier",
    "Store",
    "TimedStore",
    "TimeoutClassifier",
    "TrackingStore",
    "default_timeout_of",
]

DEFAULT_STORE_TIMEOUT: Final = 0.05
"""Seconds each call to a store that declares no :attr:`TimedStore.default_timeout` may take."""


@runtime_checkable
class Store(Protocol):
    """Bytes in, bytes out, with a TTL; no knowledge of entries or keys beyond prefixes.

    Store errors propagate as exceptions: the cache decides what fails open and what is raised.
    """

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (> 0), replacing any value."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True when something was deleted."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix`` (taken literally); return how many went."""
        ...

    async def aclose(self) -> None:
        """Release connections and files. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class LockingStore(Store, Protocol):
    """A store shared by several processes, offering the short lock that single-flight uses across them."""

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:
        """Take the lock ``name`` for ``ttl`` seconds unless someone holds it; True when taken."""
        ...

    async def unlock(self, name: str, token: str) -> bool:
        """Release ``name`` only if ``token`` still holds it; True when released."""
        ...


@runtime_checkable
class TimedStore(Protocol):
    """A store that knows how long one of its calls may take before it counts as a failure."""

    @property
    def default_timeout(self) -> float:
        """Seconds per call when ``CacheConfig.store_timeout`` is not set."""
        ...


@runtime_checkable
class ReplyErrorClassifier(Protocol):
    """A store that can tell an error its server replied with from a failure to reach the server."""

    def is_reply_error(self, exc: BaseException) -> bool:
        """True for an error the server replied with (it is up): the breaker does not count it."""
        ...


@runtime_checkable
class TimeoutClassifier(Protocol):
    """A store whose client raises timeouts of its own type (redis-py's is not the builtin one)."""

    def is_timeout(self, exc: BaseException) -> bool:
        """True when ``exc`` is the client's timeout: counted as a timeout, not as an error."""
        ...


def default_timeout_of(store: object) -> float:
    """The store's declared default deadline, or :data:`DEFAULT_STORE_TIMEOUT`."""
    return store.default_timeout if isinstance(store, TimedStore) else DEFAULT_STORE_TIMEOUT


# Capabilities a caller asks for with isinstance (the CLI does), instead of naming a concrete store.


@runtime_checkable
class ListingStore(Protocol):
    """A store that can list its keys (memory, SQLite, Redis and Redis Cluster can; ``Store`` does not)."""

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix`` (taken literally), in no particular order."""
        ...


@runtime_checkable
class ComparingStore(Protocol):
    """A store that deletes a key only while it holds a given value, in one step (every store here)."""

    async def delete_if(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only if it holds exactly ``value`` now; True when deleted."""
        ...


@runtime_checkable
class FencingStore(Protocol):
    """A store that writes a value unless a fence forbids it, in one atomic step (Redis, SQLite, memory;
    not Redis Cluster, whose fences of one agent live in other slots than its entries)."""

    async def set_fenced(
        self, key: str, value: bytes, ttl: float, fences: Sequence[str], after: float
    ) -> bool:
        """Set ``key`` unless one of ``fences`` holds a time (a float, wall-clock seconds) later than
        ``after``; True when written. The check and the write are one step: no fence lands between."""
        ...


@runtime_checkable
class BatchReadStore(Protocol):
    """A store that reads many keys in fewer round trips than one ``get`` each (Redis, Redis Cluster)."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in the same order; None where a key is absent or expired."""
        ...


@runtime_checkable
class LoopHoldingStore(Protocol):
    """A store with a client per event loop, closed when its loop shuts down (the Redis stores).

    A cache holds its loop's client while it may still have writes to make there, so a loop that ends
    (``asyncio.run`` returning) finishes the cache's last writes before the store closes that client.
    """

    def hold_loop(self) -> Callable[[], None]:
        """Keep the running loop's client open at loop shutdown until the returned function is called."""
        ...


@runtime_checkable
class AdmittingStore(Protocol):
    """A store with a bounded connection pool per event loop (the Redis stores).

    Its calls are admitted a pool's worth at a time, and the wait for admission is not part of a call's
    deadline: a thousand concurrent callers queue for the connections instead of timing out in the
    pool's own queue, which says nothing about the store's health.
    """

    def admission(self) -> asyncio.Semaphore | None:
        """The running loop's admission semaphore (None: no bound, admit at once)."""
        ...


@runtime_checkable
class CountingStore(Protocol):
    """A store that keeps cumulative integer counters, shared by every process (memory, SQLite, Redis,
    Redis Cluster): one counter set (a Redis hash) per key, each field added to atomically (``HINCRBY``).

    The cache adds its request counts here in batches, off the response path (``count_in_store``), so
    ``promptcache stats`` shows every worker's figures without a metrics endpoint.
    """

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        """Add each of ``counts`` to the field of that name under ``key`` (missing fields start at 0)."""
        ...

    async def read_counts(self, key: str) -> dict[str, int]:
        """Every field under ``key`` and its total (empty when nothing was counted)."""
        ...


@runtime_checkable
class Invalidations(Protocol):
    """What a store's server pushed about changed keys since the last poll (Redis ``CLIENT TRACKING``)."""

    def poll(self) -> tuple[int, list[str] | None]:
        """``(session, keys)``: the live subscription's number (0: none live) and the keys changed since the
        last poll (None: everything). A new session number means pushes may have been missed. Must not
        block on the network: it is called on every read of the hot tier."""
        ...

    def close(self) -> None:
        """Drop the subscription for good (idempotent)."""
        ...


@runtime_checkable
class TrackingStore(Protocol):
    """A store whose server tells this process which keys changed (Redis), so a hot tier can sit in front."""

    def invalidations(self, prefix: str) -> Invalidations | None:
        """A new subscription to changes of keys starting with ``prefix`` (None: not available here)."""
        ...


@runtime_checkable
class ImmediateStore(Protocol):
    """A store whose reads need no I/O (the memory store): a sync SDK client reads it on its own thread,
    with no hop to the event loop the cache keeps for sync callers. Safe to call from any thread."""

    def get_now(self, key: str) -> bytes | None:
        """What :meth:`Store.get` returns, at once."""
        ...
