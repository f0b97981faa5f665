"""Store URLs: which scheme opens which backend, and each backend's default per-call deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from promptcache.backends.cluster import RedisClusterStore
from promptcache.backends.memory import MemoryStore
from promptcache.backends.redis import RedisStore, redact_url
from promptcache.backends.sqlite import SQLiteStore
from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptcache.backends import Store

__all__ = ["DEFAULT_TIMEOUTS", "open_store"]

DEFAULT_TIMEOUTS: Final[dict[str, float]] = {
    "RedisStore": 0.05,  # a loopback GET is ~0.13 ms; 50 ms means Redis is in trouble, not busy
    # One routed GET is one loopback/LAN round trip, as for RedisStore; a topology refresh after a
    # failover (CLUSTER SLOTS + COMMAND, ~5-10 ms) also fits, so the first call after it is not a timeout.
    "RedisClusterStore": 0.05,
    "MemoryStore": 0.05,
    "SQLiteStore": 0.25,  # a WAL checkpoint on a slow disk can take a while; it is still better than a call
}


def _memory(url: str) -> Store:
    parts = urlsplit(url)
    if parts.netloc or parts.path not in {"", "/"} or parts.query:
        raise ConfigError(f"memory:// takes no host, path or options, got {url!r}")
    return MemoryStore()


def _sqlite(url: str) -> Store:
    # sqlite:///relative/cache.db -> "relative/cache.db"; sqlite:////abs/cache.db -> "/abs/cache.db"
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"a SQLite URL looks like sqlite:///path/cache.db, got {url!r}")
    path = url.removeprefix("sqlite:///")
    if not path or "?" in path:
        raise ConfigError(f"a SQLite URL needs a file path and takes no options, got {url!r}")
    return SQLiteStore(path)


def _redis(url: str) -> Store:
    try:
        return RedisStore.from_url(url)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None


def _cluster(url: str) -> Store:
    try:
        return RedisClusterStore.from_url(url)
    except ValueError as exc:
        raise ConfigError(f"bad Redis Cluster URL {redact_url(url)!r}: {exc}") from None


_OPENERS: Final[dict[str, Callable[[str], Store]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "redis+cluster": _cluster,
    "rediss+cluster": _cluster,
}


def open_store(url: str) -> Store:
    """Open the store a URL names.

    Raises:
        ConfigError: The URL is not a string, has an unknown scheme, or is malformed.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"a store URL looks like scheme://..., got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in _OPENERS)
        raise ConfigError(f"unknown store URL scheme {scheme + '://'!r}; known: {known}")
    return opener(url)
