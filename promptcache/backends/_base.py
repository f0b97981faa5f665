"""The store Protocol every backend implements, and the optional locking extension."""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

__all__ = ["LockingStore", "Store"]


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
