"""PromptCache: lookup, single-flight, write gating, TTL and invalidation over any :class:`Store`.

The hit path is one guarded store GET, one JSON parse and a scope check. Everything that can go wrong with
the store turns into a counted, logged miss (fail-open); nothing that goes wrong upstream is ever stored.
Concurrent identical misses share one upstream call: in-process through a shared task, across processes
through the store's short lock (:class:`~promptcache.backends.LockingStore`) with a bounded wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Self

import orjson

from promptcache._flight import Flight, SingleFlight
from promptcache._config import CacheConfig
from promptcache._events import Emitter, Result
from promptcache._gate import usage_of
from promptcache._keys import DEFAULT_AGENT_VERSION, CacheKey, Endpoint, KeyPolicy, agent_prefix, make_key
from promptcache._resilience import CircuitBreaker, Guard
from promptcache._stats import CacheStats, Counters
from promptcache._stores import DEFAULT_TIMEOUTS, open_store
from promptcache.backends import LockingStore, Store
from promptcache.exceptions import (
    ConfigError,
    PromptCacheError,
    StoreError,
    UncacheableRequestError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from promptcache._entry import Entry
    from promptcache._events import Hook

__all__ = ["PromptCache"]

log = logging.getLogger("promptcache")

_MEMO_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_MEMO_MAX_REQUEST = 64 * 1024
_MEMO_MAX_TOTAL = 16 * 1024 * 1024


class PromptCache(SingleFlight):
    """An async response cache for LLM requests.

    Args:
        store: Where entries live (memory, SQLite, Redis or any object with the Store shape).
        config: Behaviour; see :class:`~promptcache.CacheConfig`.
        owns_store: Whether :meth:`aclose` closes the store.
        clock: Wall-clock seconds (entry timestamps); injectable for tests.
        monotonic: Monotonic seconds (latency, lock waits, breaker); injectable for tests.
        hooks: Called with a frozen :mod:`promptcache.metrics` event for every request (exactly one hit,
            miss or bypass each), store call and breaker transition; see :class:`~promptcache.metrics.Hook`.

    A cache belongs to the event loop it is first used on, like the ``redis.asyncio`` client inside it.

    .. versionadded:: 0.1.0
    """

    def __init__(  # noqa: PLR0913 - all but the store and config are keyword-only
        self,
        store: Store,
        config: CacheConfig | None = None,
        *,
        owns_store: bool = True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.config = config if config is not None else CacheConfig()
        # Emitting is always guarded by `if self._hooks:` (a tuple's truth test), so no hooks cost nothing.
        self._hooks: tuple[Hook, ...] = tuple(hooks)
        self._events = Emitter(self._hooks, self.config.namespace)
        self.store = store
        self._owns_store = owns_store
        self._clock = clock
        self._mono = monotonic
        self._counters = Counters()
        timeout = self.config.store_timeout or DEFAULT_TIMEOUTS.get(type(store).__name__, 0.05)
        self.breaker = CircuitBreaker(
            self.config.breaker_threshold,
            self.config.breaker_cooldown,
            clock=monotonic,
            on_change=self._on_breaker_change,
        )
        self._guard = Guard(
            self.breaker, timeout, self._on_store_error, answered=getattr(store, "is_reply_error", None)
        )
        self._locks = store if isinstance(store, LockingStore) else None
        self._flights: dict[str, Flight] = {}
        self._reads: dict[str, asyncio.Future[Any]] = {}
        self._uncertain_locks: set[str] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._key_memo: OrderedDict[tuple[Any, ...], CacheKey] = OrderedDict()
        self._key_memo_bytes = 0
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        config: CacheConfig | None = None,
        *,
        hooks: Sequence[Hook] = (),
        **options: Any,  # noqa: ANN401
    ) -> PromptCache:
        """Open a cache on ``memory://``, ``sqlite:///path``, ``redis://``, ``rediss://`` or ``unix://``.

        Keyword options are :class:`CacheConfig` fields (``namespace=``, ``default_ttl=`` ...); ``hooks``
        go to the constructor.

        Raises:
            ConfigError: Unknown scheme, bad path or bad option; the message names it.
        """
        known = {f.name for f in fields(CacheConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)}; CacheConfig has: {', '.join(sorted(known))}"
            )
        cfg = replace(config, **options) if config is not None else CacheConfig(**options)
        return cls(open_store(url), cfg, hooks=hooks)

    def __repr__(self) -> str:
        return f"PromptCache({self.store!r}, namespace={self.config.namespace!r})"

    # -- keys --------------------------------------------------------------------------------------

    def key(  # noqa: PLR0913
        self,
        request: Mapping[str, Any],
        *,
        agent_id: str,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
    ) -> CacheKey:
        """The key this cache gives ``request`` (its namespace and default policy applied).

        Keys are memoised by the request's JSON bytes and scope: agents repeat requests, and the hit path
        should not rebuild the same key. A request whose JSON holds ``null`` is never memoised, because
        orjson writes NaN as ``null`` too and NaN must stay uncacheable.
        """
        pol = self.config.key_policy if policy is None else policy
        memo: tuple[Any, ...] | None = None
        if type(request) is dict:
            try:
                raw = orjson.dumps(request, option=_MEMO_OPTIONS)
            except (orjson.JSONEncodeError, TypeError):
                raw = b"null"
            if len(raw) <= _MEMO_MAX_REQUEST and b"null" not in raw:
                memo = (raw, agent_id, agent_version, tenant, endpoint, pol)
                found = self._key_memo.get(memo)
                if found is not None:
                    self._key_memo.move_to_end(memo)
                    return found
        key = make_key(
            request,
            namespace=self.config.namespace,
            agent_id=agent_id,
            agent_version=agent_version,
            tenant=tenant,
            endpoint=endpoint,
            policy=pol,
        )
        if memo is not None:
            self._key_memo[memo] = key
            self._key_memo_bytes += len(memo[0])
            while self._key_memo_bytes > _MEMO_MAX_TOTAL or len(self._key_memo) > 4096:
                old, _ = self._key_memo.popitem(last=False)
                self._key_memo_bytes -= len(old[0])
        return key

    # -- the main door -----------------------------------------------------------------------------

    async def get_or_call(  # noqa: PLR0913
        self,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        *,
        agent_id: str,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        ttl: float | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
        bypass: bool = False,
        refresh: bool = False,
    ) -> Any:  # noqa: ANN401 - the provider's JSON body
        """Return the cached response for ``request``, or call upstream once and cache a success.

        Args:
            request: The request body as it would be sent upstream.
            call: A zero-argument async callable returning the provider's JSON response as a dict. Its
                exceptions reach the caller unchanged and nothing is stored.
            agent_id: The agent the answer belongs to.
            agent_version: Bump it when the agent's prompts change.
            tenant: Optional tenant; tenants never share entries.
            ttl: Seconds to keep this answer; defaults to ``config.default_ttl``.
            endpoint: The API the request is for.
            policy: Text policy override for this call.
            bypass: Call upstream and neither read nor write the cache.
            refresh: Call upstream and overwrite the entry.

        Raises:
            InvalidScopeError: A scope id is empty or not a string.
            StoreError: Only with ``fail_open=False``, when the store fails.
        """
        self._check_open()
        ttl = self._ttl(ttl)
        counters = self._counters
        if bypass:
            counters.requests += 1
            counters.bypasses += 1
            if self._hooks:
                self._events.bypass("requested", agent_id, agent_version, request)
            return await call()
        try:
            key = self.key(
                request,
                agent_id=agent_id,
                agent_version=agent_version,
                tenant=tenant,
                endpoint=endpoint,
                policy=policy,
            )
        except UncacheableRequestError as exc:
            counters.requests += 1
            counters.bypasses += 1
            counters.uncacheable += 1
            log.debug("promptcache: request bypasses the cache: %s", exc)
            if self._hooks:
                self._events.bypass("uncacheable", agent_id, agent_version, request)
            return await call()
        counters.requests += 1  # counted once the key exists, so bad input never skews the invariant
        if not refresh:
            try:
                entry = await self._lookup(key)
            except BaseException:  # cancelled, or StoreError with fail_open=False: still one request
                counters.misses += 1
                if self._hooks:
                    self._events.request(Result.MISS, key, request, reason="error")
                raise
            if entry is not None and entry.chunks is None:
                self._count_hit(entry, key, request)
                return entry.body
        return await self._join_flight(key, request, call, ttl, refresh=refresh)

    async def get(  # noqa: PLR0913
        self,
        request: Mapping[str, Any],
        *,
        agent_id: str,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
    ) -> Any:  # noqa: ANN401
        """The cached response body for ``request``, or None (for callers who make the call themselves)."""
        entry = await self.get_entry(
            self.key(
                request,
                agent_id=agent_id,
                agent_version=agent_version,
                tenant=tenant,
                endpoint=endpoint,
                policy=policy,
            )
        )
        return None if entry is None else entry.body

    async def set(  # noqa: PLR0913
        self,
        request: Mapping[str, Any],
        response: Any,  # noqa: ANN401
        *,
        agent_id: str,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        ttl: float | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
        latency: float = 0.0,
    ) -> bool:
        """Store ``response`` for ``request`` if it is a storable success; True when it was written."""
        self._check_open()
        key = self.key(
            request,
            agent_id=agent_id,
            agent_version=agent_version,
            tenant=tenant,
            endpoint=endpoint,
            policy=policy,
        )
        data = self._encode(key, request, response, None, latency, self._ttl(ttl))
        return data is not None and await self._write(key.store_key, data, self._ttl(ttl))

    async def get_entry(self, key: CacheKey, *, stream: bool = False, refresh: bool = False) -> Entry | None:
        """The live entry under ``key`` of the asked kind (body, or stream chunks), counted as hit or miss.

        An entry of the other kind counts as a miss. With ``refresh`` the store is not read (a counted miss).
        """
        self._check_open()
        self._counters.requests += 1
        entry = None if refresh else await self._lookup(key)
        if entry is None or (entry.chunks is not None) != stream:
            self._counters.misses += 1
            if self._hooks:
                self._events.request(Result.MISS, key, None)
            return None
        self._count_hit(entry, key, None)
        return entry

    async def put_entry(  # noqa: PLR0913 - the parts of an entry
        self,
        key: CacheKey,
        request: Mapping[str, Any] | None,
        *,
        body: Any = None,  # noqa: ANN401
        chunks: list[Any] | None = None,
        ttl: float | None = None,
        latency: float = 0.0,
        wait: bool = True,
    ) -> bool:
        """Gate and write an entry for ``key``: a response ``body``, or a stream's complete ``chunks``.

        Chunks are ``{"event": name | None, "data": JSON}`` (or ``"text"``) SSE events, stored only when the
        stream reached its terminal event and its outcome is storable. With ``wait=False`` the write runs in
        the background (tracked, drained by :meth:`aclose`). True when written (or scheduled).
        """
        self._check_open()
        data = self._encode(key, request, body, chunks, latency, self._ttl(ttl))
        if data is None:
            return False
        if not wait:
            self._spawn_write(key, data, self._ttl(ttl), None)
            return True
        return await self._write(key.store_key, data, self._ttl(ttl))

    def count_upstream_call(self) -> None:
        """Count an upstream call an integration made itself (a streamed miss)."""
        self._counters.upstream_calls += 1

    def count_bypass(
        self,
        *,
        uncacheable: bool = False,
        agent_id: str | None = None,
        agent_version: str | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a request that went upstream without the cache (for integrations that route themselves).

        The optional scope and request only label the hooks' bypass event.
        """
        self._counters.requests += 1
        self._counters.bypasses += 1
        if uncacheable:
            self._counters.uncacheable += 1
        if self._hooks:
            self._events.bypass(
                "uncacheable" if uncacheable else "requested", agent_id, agent_version, request
            )

    # -- invalidation, stats, lifecycle ------------------------------------------------------------

    async def invalidate(self, agent_id: str, agent_version: str | None = None) -> int:
        """Delete the entries of one agent (and only that version, if given) in this namespace.

        Returns:
            How many entries were deleted.

        Raises:
            StoreError: The store failed; invalidation errors are never swallowed.
        """
        self._check_open()
        prefix = agent_prefix(self.config.namespace, agent_id, agent_version)
        try:
            async with asyncio.timeout(self.config.invalidate_timeout):
                return await self.store.delete_prefix(prefix)
        except TimeoutError as exc:
            raise StoreError(
                f"invalidating agent {agent_id!r} did not finish within {self.config.invalidate_timeout} s"
            ) from exc
        except Exception as exc:
            raise StoreError(f"invalidating agent {agent_id!r} failed: {type(exc).__name__}: {exc}") from exc

    def stats(self) -> CacheStats:
        """A snapshot of this cache's counters."""
        return self._counters.snapshot(self.breaker.state.value)

    async def drain(self) -> None:
        """Wait until every background write (and retried release of a timed-out lock) has finished."""
        while self._writes or self._releases:
            await asyncio.gather(*self._writes, *self._releases, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish pending writes, then close the store (if owned). Idempotent.

        Retried releases of locks whose ``SET NX`` timed out are cancelled rather than waited for.
        """
        if self._closed:
            return
        self._closed = True
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        for task in list(self._releases):
            task.cancel()  # closing must not wait out their retries; each lock's TTL ends it anyway
        await asyncio.gather(*self._releases, return_exceptions=True)
        if self._owns_store:
            await self.store.aclose()

    def close(self) -> None:
        """:meth:`aclose` for a cache that sync clients use (it lives on promptcache's portal loop).

        Async code uses ``await cache.aclose()`` instead; this blocks the calling thread.

        .. versionadded:: 0.1.0
        """
        from promptcache.integrations import _portal  # noqa: PLC0415 - only sync users need the portal

        _portal.run(self.aclose())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PromptCacheError(f"{self!r} is closed")

    def _ttl(self, ttl: float | None) -> float:
        if ttl is None:
            return self.config.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        return float(ttl)

    def _count_hit(self, entry: Entry, key: CacheKey, request: Mapping[str, Any] | None) -> None:
        counters = self._counters
        counters.hits += 1
        inp, out = usage_of({"usage": entry.usage})
        counters.input_tokens_saved += inp
        counters.output_tokens_saved += out
        counters.latency_saved += entry.latency
        if self._hooks:
            self._events.request(Result.HIT, key, request, tokens=(inp, out), latency_saved=entry.latency)
