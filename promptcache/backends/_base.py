"""The store Protocol every backend implements, and the optional locking extension."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BatchReadStore", "ListingStore", "LockingStore", "Store"]


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


# Capabilities a caller asks for with isinstance (the CLI does), instead of naming a concrete store.


@runtime_checkable
class ListingStore(Protocol):
    """A store that can list its keys (memory, SQLite, Redis and Redis Cluster can; ``Store`` does not)."""

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix`` (taken literally), in no particular order."""
        ...


@runtime_checkable
class BatchReadStore(Protocol):
    """A store that reads many keys in fewer round trips than one ``get`` each (Redis, Redis Cluster)."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in the same order; None where a key is absent or expired."""
        ...
