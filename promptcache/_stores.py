"""Store URLs: which scheme opens which backend.

Each opener imports its backend when it runs, so ``import promptcache`` never loads redis-py's cluster
code (or anything a memory or SQLite user does not need). Each store declares its own default deadline
(:class:`~promptcache.backends.TimedStore`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptcache.backends import Store

__all__ = ["open_store", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with user name, password and password-like query values replaced by ``***``.

    The CLI, the pytest plugin and the demo name store URLs in messages; they ask here rather than
    import a concrete backend at module level (docs/ARCHITECTURE.md). Never raises.
    """
    # The rule lives with the Redis store, whose URLs carry the secrets; loading it only when a URL is
    # reported keeps redis-py out of `import promptcache.cli` for memory and SQLite users.
    from promptcache.backends.redis import redact_url as redact  # noqa: PLC0415

    return redact(url)


def _memory(url: str, max_connections: int | None = None) -> Store:  # noqa: ARG001 - no connections
    parts = urlsplit(url)
    if parts.netloc or parts.path not in {"", "/"} or parts.query:
        raise ConfigError(f"memory:// takes no host, path or options, got {url!r}")
    from promptcache.backends.memory import MemoryStore  # noqa: PLC0415 - each opener loads its backend

    return MemoryStore()


def _sqlite(url: str, max_connections: int | None = None) -> Store:  # noqa: ARG001 - one file, one thread
    # sqlite:///relative/cache.db -> "relative/cache.db"; sqlite:////abs/cache.db -> "/abs/cache.db"
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"a SQLite URL looks like sqlite:///path/cache.db, got {url!r}")
    path = url.removeprefix("sqlite:///")
    if not path or "?" in path:
        raise ConfigError(f"a SQLite URL needs a file path and takes no options, got {url!r}")
    from promptcache.backends.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(path)


def _redis(url: str, max_connections: int | None = None) -> Store:
    from promptcache.backends.redis import RedisStore  # noqa: PLC0415

    try:
        return RedisStore.from_url(url, max_connections=max_connections)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None


def _cluster(url: str, max_connections: int | None = None) -> Store:
    from promptcache.backends.cluster import RedisClusterStore  # noqa: PLC0415

    try:
        return RedisClusterStore.from_url(url, max_connections=max_connections)
    except ValueError as exc:
        raise ConfigError(f"bad Redis Cluster URL {redact_url(url)!r}: {exc}") from None


_OPENERS: Final[dict[str, Callable[[str, int | None], Store]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "redis+cluster": _cluster,
    "rediss+cluster": _cluster,
}


def open_store(url: str, *, max_connections: int | None = None) -> Store:
    """Open the store a URL names.

    ``max_connections`` bounds a Redis store's connections per event loop (per node on a cluster);
    None keeps the store's default.

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
    return opener(url, max_connections)
