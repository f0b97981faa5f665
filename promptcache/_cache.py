"""PromptCache: the public door over a store, composed of parts that each own their state.

* :class:`~promptcache._keymemo.KeyMemo`: keys, memoised per request and scope.
* :class:`~promptcache._guard.StoreGuard`: every store call under its deadline and the circuit breaker.
* :class:`~promptcache._writer.EntryWriter`: write gating, encoding, bounded background writes.
* :class:`~promptcache._flight.SingleFlight`: shared reads, shared upstream calls, the cross-process lock.
* :class:`~promptcache._tier.HotTier`: entries kept in process while Redis pushes every change to them.

A hit is a hot-tier lookup or one guarded store GET, then one JSON parse and a scope check. A store fault
is a counted, logged miss (fail-open); nothing that goes wrong upstream is ever stored. Who an answer
belongs to travels as one :class:`~promptcache.Scope` (public methods also take its fields as keywords).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from promptcache._config import CacheConfig, config_with
from promptcache._events import Emitter
from promptcache._fences import fence_for, fence_key, fence_record
from promptcache._flight import SingleFlight
from promptcache._guard import StoreGuard, delete_prefix
from promptcache._keymemo import KeyMemo
from promptcache._keys import DEFAULT_AGENT_VERSION, CacheKey, Endpoint, KeyPolicy, agent_prefix
from promptcache._kinds import KindReader
from promptcache._lifecycle import Lifecycle
from promptcache._scope import Scope, scope_from_keywords
from promptcache._stats import CacheStats, Counters
from promptcache._stores import open_store
from promptcache._tier import tier_for
from promptcache._validate import ttl_seconds
from promptcache._writer import EntryWriter
from promptcache.exceptions import PromptCacheError, UncacheableRequestError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from promptcache._entry import Entry
    from promptcache._events import Hook
    from promptcache._kinds import Form
    from promptcache._route import Route
    from promptcache._tier import Rendered
    from promptcache.backends import Store

__all__ = ["PromptCache"]

log = logging.getLogger("promptcache")


class PromptCache(Lifecycle):
    """An async response cache for LLM requests.

    Args:
        store: Where entries live (memory, SQLite, Redis or any object with the Store shape).
        config: Behaviour; see :class:`~promptcache.CacheConfig`.
        owns_store: Whether :meth:`aclose` closes the store.
        clock: Wall-clock seconds (entry timestamps); injectable for tests.
        monotonic: Monotonic seconds (latency, lock waits, breaker); injectable for tests.
        hooks: Called with a frozen :mod:`promptcache.metrics` event for every request (exactly one hit,
            miss or bypass each), store call and breaker transition; see :class:`~promptcache.metrics.Hook`.

    One cache serves every caller of a process: any event loop, any thread, sync SDK clients (on
    promptcache's portal thread) and async code at once. What is bound to a loop (store connections,
    shared calls, background writes) is kept per loop and finished before that loop closes.

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
        # Emitting is always guarded by `if hooks:` (a tuple's truth test), so no hooks cost nothing.
        self._hooks: tuple[Hook, ...] = tuple(hooks)
        self._events = Emitter(self._hooks, self.config.namespace)
        self.store = store
        self._owns_store = owns_store
        self._counters, self._clock = Counters(), clock
        self._keys = KeyMemo(self.config.namespace)
        self._guard = StoreGuard(store, self.config, self._counters, self._events, monotonic=monotonic)
        self.breaker = self._guard.breaker
        self._guard.tier = tier = tier_for(store, self.config)
        self._writer = EntryWriter(store, self._guard, self.config, self._counters, clock=clock)
        self._hooks = self._events.hooks = (*self._hooks, *self._writer.hooks)  # count_in_store's tally
        self._flight = SingleFlight(
            store,
            self._guard,
            self._writer,
            self.config,
            self._counters,
            self._events,
            clock=clock,
            monotonic=monotonic,
            tier=tier,
        )
        self._kinds = KindReader(self._flight, self.config, self._counters, self._guard, store, clock)
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
        cfg = config_with(config, options)
        return cls(open_store(url, max_connections=cfg.max_connections), cfg, hooks=hooks)

    def __repr__(self) -> str:
        return f"PromptCache({self.store!r}, namespace={self.config.namespace!r})"

    def key(  # noqa: PLR0913 - the documented scope keywords, or one scope
        self,
        request: Mapping[str, Any],
        *,
        scope: Scope | None = None,
        agent_id: str | None = None,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
        route: Route | None = None,
    ) -> CacheKey:
        """The key this cache gives ``request`` (its namespace and default policy applied).

        Pass either ``scope`` or the scope's fields as keywords (``agent_id`` at least), not both.

        .. versionchanged:: 0.2.0 ``scope``. .. versionchanged:: 0.3.0 ``route``.
        """
        who = scope_from_keywords("key", scope, agent_id, agent_version, tenant, None, policy)
        return self._key(request, who, endpoint, route)

    def _key(
        self, request: Mapping[str, Any], scope: Scope, endpoint: Endpoint | str, route: Route | None = None
    ) -> CacheKey:
        policy = self.config.key_policy if scope.policy is None else scope.policy
        return self._keys.key(request, scope, endpoint, policy, route)

    # -- the main door -----------------------------------------------------------------------------

    async def get_or_call(  # noqa: PLR0913 - the documented scope keywords, or one scope
        self,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        *,
        scope: Scope | None = None,
        agent_id: str | None = None,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        ttl: float | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
        bypass: bool = False,
        refresh: bool = False,
        route: Route | None = None,
    ) -> Any:  # noqa: ANN401 - the provider's JSON body
        """Return the cached response for ``request``, or call upstream once and cache a success.

        Args:
            request: The request body as it would be sent upstream.
            call: A zero-argument async callable returning the provider's JSON response as a dict. Its
                exceptions reach the caller unchanged and nothing is stored.
            scope: Who the answer belongs to, as one value; or pass its fields as the keywords below.
            agent_id: The agent the answer belongs to.
            agent_version: Bump it when the agent's prompts change.
            tenant: Optional tenant; tenants never share entries.
            ttl: Seconds to keep this answer; defaults to ``config.default_ttl``.
            endpoint: The API the request is for.
            policy: Text policy override for this call.
            bypass: Call upstream and neither read nor write the cache.
            refresh: Call upstream and overwrite the entry (and delete a stored stream of the request).
            route: The upstream, query and keyed headers (what a wrapped SDK client passes).

        Raises:
            InvalidScopeError: A scope id is empty or not a string.
            StoreError: Only with ``fail_open=False``, when the store fails.
            TypeError: Both ``scope`` and scope keywords, or neither.

        .. versionchanged:: 0.2.0 ``scope``. .. versionchanged:: 0.3.0 ``route``.
        """
        if bypass and scope is None:
            policy = None  # a bypass builds no key, so its policy is never looked at
        who = scope_from_keywords("get_or_call", scope, agent_id, agent_version, tenant, ttl, policy)
        body, _ = await self.answer(request, call, who, endpoint, bypass=bypass, refresh=refresh, route=route)
        return body

    def answer_now(
        self,
        request: Mapping[str, Any],
        scope: Scope,
        endpoint: Endpoint | str,
        route: Route | None,
        form: Form,
    ) -> Rendered | None:
        """A hit found and counted with no I/O (hot tier, memory store), sent as ``form`` says: ``(entry,
        bytes)`` (the entry without its answer), else None: use :meth:`answer` / :meth:`get_entry`. A sync
        client calls it on its own thread, before any hop to the portal."""
        if self._closed or not self._flight.immediate:
            return None
        try:
            key = self._key(request, scope, endpoint, route)
        except PromptCacheError:
            return None  # uncacheable or invalid: the full path counts it, or raises it, once
        if (found := self._kinds.now(key, form)) is None:
            return None
        self._counters.request()
        self._counters.hit(found[0], key, self._events)
        return found

    async def answer(  # noqa: PLR0913 - get_or_call's arguments with the scope as one value
        self,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        scope: Scope,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        *,
        bypass: bool = False,
        refresh: bool = False,
        route: Route | None = None,
    ) -> tuple[Any, bool]:
        """:meth:`get_or_call` for integrations: the body, and whether it was assembled from a stored
        stream (when no body is stored; ``CacheConfig.convert_kinds``, counted in ``stats().converted``)."""
        self._check_open()
        ttl_s = self._ttl(scope.ttl)
        counters = self._counters
        if bypass:
            self.count_bypass(scope=scope, request=request)
            return await call(), False
        try:
            key = self._key(request, scope, endpoint, route)
        except UncacheableRequestError as exc:
            log.debug("promptcache: request bypasses the cache: %s", exc)
            self.count_bypass(uncacheable=True, scope=scope, request=request, reason=exc)
            return await call(), False
        counters.request()  # counted once the key exists, so bad input never skews the invariant
        if refresh:
            await self._kinds.forget_other(key, stream=False)  # the old stream must not outlive this
        else:
            try:
                entry = await self._kinds.body(key)  # the stored stream only on a miss
            except BaseException:  # cancelled, or StoreError with fail_open=False: still one request
                counters.miss(key, self._events, reason="error")
                raise
            if entry is not None:
                counters.hit(entry, key, self._events)
                return entry.body, entry.converted
        return await self._flight.join(key, request, call, ttl_s, refresh=refresh), False

    async def get(  # noqa: PLR0913 - the documented scope keywords, or one scope
        self,
        request: Mapping[str, Any],
        *,
        scope: Scope | None = None,
        agent_id: str | None = None,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
    ) -> Any:  # noqa: ANN401
        """The cached response body for ``request``, or None (for callers who make the call themselves).

        .. versionchanged:: 0.2.0 ``scope``.
        """
        who = scope_from_keywords("get", scope, agent_id, agent_version, tenant, None, policy)
        entry = await self.get_entry(self._key(request, who, endpoint))
        return None if entry is None else entry.body

    async def set(  # noqa: PLR0913 - the documented scope keywords, or one scope
        self,
        request: Mapping[str, Any],
        response: Any,  # noqa: ANN401
        *,
        scope: Scope | None = None,
        agent_id: str | None = None,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        ttl: float | None = None,
        endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
        policy: KeyPolicy | str | None = None,
        latency: float = 0.0,
    ) -> bool:
        """Store ``response`` for ``request`` if it is a storable success; True when it was written.

        .. versionchanged:: 0.2.0 ``scope``.
        """
        self._check_open()
        who = scope_from_keywords("set", scope, agent_id, agent_version, tenant, ttl, policy)
        key = self._key(request, who, endpoint)
        ttl_s = self._ttl(who.ttl)
        data = self._writer.encode(key, request, response, None, latency, ttl_s)
        return data is not None and await self._writer.write(key.store_key, data, ttl_s)

    async def get_entry(
        self, key: CacheKey, *, stream: bool = False, refresh: bool = False, include_usage: bool = False
    ) -> Entry | None:
        """The live answer under ``key`` of the asked kind (body, or stream chunks), counted as hit or miss.

        Its own kind first; on a miss the other kind, converted (``entry.converted``) if ``convert_kinds``.
        A stream comes in the caller's shape (``include_usage``: the chat ``stream_options`` flag). With
        ``refresh`` the store is not read (a counted miss). Only the key's scope ids matter to a read.
        """
        self._check_open()
        self._counters.request()
        if stream:
            entry = await self._kinds.stream(key, include_usage=include_usage, refresh=refresh)
        else:
            entry = None if refresh else await self._kinds.body(key)
        if entry is None:
            self._counters.miss(key, self._events)
            return None
        self._counters.hit(entry, key, self._events)
        return entry

    async def put_entry(  # noqa: PLR0913 - the parts of an entry
        self,
        key: CacheKey,
        request: Mapping[str, Any] | None,
        *,
        scope: Scope | None = None,
        body: Any = None,  # noqa: ANN401
        chunks: list[Any] | None = None,
        ttl: float | None = None,
        latency: float = 0.0,
        wait: bool = True,
    ) -> bool:
        """Gate and write an entry for ``key``: a response ``body``, or a stream's complete ``chunks``
        (under ``key.stream_store_key``, beside the body). The TTL is ``scope.ttl`` (the scope ``key`` was
        made in), or ``ttl``; not both. Chunks are ``{"event": name | None, "data": JSON}`` (or ``"text"``)
        SSE events, stored only when the stream completed and is storable. ``wait=False``: written in the
        background (see :meth:`drain`). True when written (or scheduled)."""
        self._check_open()
        if scope is not None:
            if ttl is not None:
                raise TypeError("put_entry() takes scope= or ttl=, not both")
            ttl = scope.ttl
        ttl_s = self._ttl(ttl)
        data = self._writer.encode(key, request, body, chunks, latency, ttl_s)
        if data is None:
            return False
        store_key = key.store_key if chunks is None else key.stream_store_key
        # An upstream call's answer (it took time) is not written over a change made since it began.
        fence = fence_for(key, self._clock() - latency) if latency > 0 else None
        if not wait:
            self._writer.spawn(store_key, data, ttl_s, fence=fence)
            return True
        return await self._writer.write(store_key, data, ttl_s, fence)

    def count_upstream_call(self, *, failed: bool = False) -> None:
        """Count an upstream call an integration made itself (a streamed miss); ``failed``: it raised or
        answered other than a stream (an error), counted in ``upstream_errors`` as a failed body call is."""
        if failed:
            self._counters.upstream_errors += 1
        else:
            self._counters.upstream_calls += 1

    def count_bypass(
        self,
        *,
        uncacheable: bool = False,
        scope: Scope | None = None,
        request: Mapping[str, Any] | None = None,
        reason: UncacheableRequestError | None = None,
    ) -> None:
        """Count a request that went upstream without the cache (for integrations that route themselves).

        The optional scope and request only label the hooks' bypass event; a :class:`ServerStateError`
        ``reason`` is counted as ``server_state`` and labels the event ``server-state: <field>``.
        """
        label = self._counters.bypass(uncacheable=uncacheable, reason=reason)
        if self._hooks and label is not None:
            self._events.bypass(label, scope, request)

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
        what = f"invalidating agent {agent_id!r}"
        # First the fence (answers of calls begun before now are not written after it: _fences.py).
        fence = fence_record(fence_key(prefix), self._clock())
        self._flight.close_flights(prefix)  # nor are they shared with callers who come after it
        return await delete_prefix(
            self.store, prefix, self.config.invalidate_timeout, what, self._guard.tier, fence=fence
        )

    def stats(self) -> CacheStats:
        """A snapshot of this cache's counters."""
        return self._counters.snapshot(self.breaker.state.value)

    async def drain(self, key: CacheKey | None = None) -> None:
        """Wait until this loop's background writes (and retried lock releases) have finished; with
        ``key``, only that key's writes (a stream's entry, before its caller can ask again)."""
        if key is not None:
            return await self._writer.settle({key.store_key, key.stream_store_key})
        while True:
            await self._writer.drain()
            await self._flight.drain_releases()
            if not (self._writer.pending_here or self._flight.releasing):
                return None

    async def aclose(self) -> None:
        """Finish pending writes, release held locks, then close the store (if owned). Idempotent.

        Writes pending in other event loops (a sync client's, on promptcache's portal thread) are finished
        in their own loops first. Upstream calls still in flight are not waited for: their answers are
        neither written nor sent to the store (counted as dropped writes and skipped store calls), their
        locks are released now; background retries of lock releases are cancelled (each lock's TTL ends
        it). After this, new calls raise :class:`PromptCacheError`.
        """
        if self._closed:
            return
        self._closed = True
        await self._writer.aclose()
        await self._flight.release_held()
        await self._flight.cancel_releases()
        self._guard.close()
        if self._owns_store:
            await self.store.aclose()

    def _ttl(self, ttl: float | None) -> float:
        return self.config.default_ttl if ttl is None else ttl_seconds(ttl)
