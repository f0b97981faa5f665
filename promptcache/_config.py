"""CacheConfig: the typed configuration object every PromptCache is built from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Final

from promptcache._gate import DEFAULT_FINISH_REASONS
from promptcache._keys import KeyPolicy
from promptcache._validate import parse_enum, positive
from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["URL_ENV", "CacheConfig", "config_with", "url_from_env"]

URL_ENV: Final = "PROMPTCACHE_URL"

DEFAULT_TTL = 3600.0
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
DEFAULT_COMPRESS_ABOVE = 32 * 1024
DEFAULT_MAX_PENDING_WRITES = 1000
DEFAULT_LOCK_TTL = 60.0
DEFAULT_LOCK_WAIT = 10.0
DEFAULT_WRITE_TIMEOUT = 1.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_HOT_TIER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Everything a :class:`~promptcache.PromptCache` can be told, as one typed, validated object.

    Args:
        namespace: Separates applications sharing one store; part of every key.
        default_ttl: Seconds an entry lives unless a call says otherwise.
        policy: The text policy for message text (see :class:`~promptcache.KeyPolicy`).
        store_timeout: Deadline in seconds for each store read (and lock) on the response path; None
            picks the store's default (50 ms for Redis and memory, 250 ms for SQLite).
        write_timeout: Deadline in seconds for each background write; writes are off the response path,
            so they may take longer than a read before they count as a store fault.
        max_connections: Connections a Redis store keeps per event loop (per node on a cluster) when
            opened by ``from_url``; callers beyond it wait for a free one (within their deadline)
            instead of failing or opening more. A single server's GETs keep at most as many again of
            their own (the GET lane), opened as concurrent hits need them.
        breaker_threshold: Consecutive store failures that open the circuit breaker.
        breaker_cooldown: Seconds the breaker stays open before one probe call.
        max_entry_bytes: Encoded entries larger than this are returned but not stored (counted).
        compress_above: Entries whose JSON is larger than this are zlib-compressed; None never compresses.
        max_pending_writes: Background writes in flight at most; beyond it a write is dropped (counted).
        lock_ttl: Seconds a cross-process single-flight lock lives (longer than a slow upstream call).
        lock_wait: Seconds a process waits for another's upstream call before calling upstream itself.
        fail_open: When True (default) a store fault turns into a miss, counted and logged; when False
            it raises :class:`~promptcache.StoreError` to the caller.
        invalidate_timeout: Seconds an invalidation may take before it raises StoreError.
        keep_request: Store the whole canonical request and route in each entry; when False (the default)
            an entry keeps their compact form (texts hashed, other fields kept: `_compact.py`), enough for
            ``promptcache explain --against`` to name the field that differs.
        finish_reasons: Finishing reasons whose answers may be stored.
        count_in_store: Also keep cumulative hit/miss/bypass and saved-token counters by agent and model
            in the store (a store that supports it: memory, SQLite, Redis, Redis Cluster), batched off the
            response path and flushed every 2 s per event loop, so ``promptcache stats`` shows every
            worker's sum with no metrics endpoint.
        convert_kinds: When only the other kind of answer is stored, serve a streamed request a stream
            synthesised from the stored body, and a plain request the body assembled from the stored
            stream (counted in ``stats().converted``, marked ``x-promptcache: hit-converted``). When
            False a request is answered only from its own kind.
        hot_tier_bytes: Bytes of entries (and their keys) kept in process in front of a Redis store and
            served with no round trip, only while Redis pushes this process every change to them
            (``CLIENT TRACKING``; see the README's "Hot tier"); 0 turns it off. Stores that cannot push
            changes (memory, SQLite) have no tier. One bound per cache, shared by its threads and loops.

    .. versionadded:: 0.1.0
    """

    namespace: str = "promptcache"
    default_ttl: float = DEFAULT_TTL
    policy: KeyPolicy | str = "trim"
    store_timeout: float | None = None
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    breaker_threshold: int = 5
    breaker_cooldown: float = 5.0
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    compress_above: int | None = DEFAULT_COMPRESS_ABOVE
    max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES
    lock_ttl: float = DEFAULT_LOCK_TTL
    lock_wait: float = DEFAULT_LOCK_WAIT
    fail_open: bool = True
    keep_request: bool = False
    invalidate_timeout: float = 30.0
    finish_reasons: frozenset[str] = field(default_factory=lambda: DEFAULT_FINISH_REASONS)
    count_in_store: bool = False
    convert_kinds: bool = True
    hot_tier_bytes: int = DEFAULT_HOT_TIER_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not self.namespace:
            raise ConfigError(f"namespace must be a non-empty str, got {self.namespace!r}")
        object.__setattr__(self, "policy", parse_enum(KeyPolicy, self.policy, "policy"))
        positive(self.default_ttl, "default_ttl")
        if self.store_timeout is not None:
            positive(self.store_timeout, "store_timeout")
        positive(self.write_timeout, "write_timeout")
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int):
            raise ConfigError(f"max_connections must be an int, got {self.max_connections!r}")
        positive(self.max_connections, "max_connections")
        positive(self.breaker_threshold, "breaker_threshold")
        positive(self.breaker_cooldown, "breaker_cooldown", allow_zero=True)
        positive(self.max_entry_bytes, "max_entry_bytes")
        if self.compress_above is not None:
            positive(self.compress_above, "compress_above", allow_zero=True)
        positive(self.max_pending_writes, "max_pending_writes")
        positive(self.lock_ttl, "lock_ttl")
        positive(self.lock_wait, "lock_wait", allow_zero=True)
        positive(self.invalidate_timeout, "invalidate_timeout")
        if isinstance(self.hot_tier_bytes, bool) or not isinstance(self.hot_tier_bytes, int):
            raise ConfigError(f"hot_tier_bytes must be an int, got {self.hot_tier_bytes!r}")
        positive(self.hot_tier_bytes, "hot_tier_bytes", allow_zero=True)
        if not isinstance(self.finish_reasons, frozenset):
            object.__setattr__(self, "finish_reasons", frozenset(self.finish_reasons))

    @property
    def key_policy(self) -> KeyPolicy:
        return parse_enum(KeyPolicy, self.policy, "policy")


def config_with(config: CacheConfig | None, options: Mapping[str, object]) -> CacheConfig:
    """``config`` (or the defaults) with ``options`` applied, each the name of a :class:`CacheConfig` field.

    Raises:
        ConfigError: An option is not a field (the message lists the fields), or a value is invalid.
    """
    known = {f.name for f in fields(CacheConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; CacheConfig has: {', '.join(sorted(known))}"
        )
    return replace(config, **options) if config is not None else CacheConfig(**options)  # type: ignore[arg-type]


def url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The store URL in ``PROMPTCACHE_URL``, or None when it is unset or empty.

    This is the one place promptcache reads the environment, and only the ``promptcache`` command and the
    pytest plugin call it: a library user passes the URL to :meth:`PromptCache.from_url` explicitly.

    Args:
        environ: The environment to read; ``os.environ`` when None.

    .. versionadded:: 0.1.0
    """
    value = (os.environ if environ is None else environ).get(URL_ENV, "").strip()
    return value or None
