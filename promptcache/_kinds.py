"""The two kinds of stored answer of one key: a body (``store_key``) and a stream (``stream_store_key``).

A request reads its own kind first (one GET on a same-kind hit), and only on a miss the other kind, which
:mod:`promptcache._convert` turns into a faithful answer of the asked kind (``converted``), when
``CacheConfig.convert_kinds`` allows. A refresh of one kind deletes the other. A stream is fitted to the
caller's shape (chat completions usage chunk or not); a stored stream without usage does not answer a
caller who asked for it.

An entry written by an older release may hold either kind under ``store_key``: it is read for what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from promptcache._convert import body_from_stream, shape_stream, stream_from_body
from promptcache._fences import fence_record, refresh_fence

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptcache._config import CacheConfig
    from promptcache._entry import Entry
    from promptcache._flight import SingleFlight
    from promptcache._guard import StoreGuard
    from promptcache._keys import CacheKey
    from promptcache._stats import Counters
    from promptcache._tier import Rendered
    from promptcache.backends import Store

__all__ = ["Form", "KindReader", "stream_kind"]


@dataclass(frozen=True, eq=False)
class Form:
    """How an integration sends a hit found with no I/O (:meth:`PromptCache.answer_now`): a body, or a
    stream with or without the usage chunk, encoded by ``encode`` (the body, or the shaped events).

    The hot tier keeps each entry's encoded bytes per form: make each form once (a module constant).
    """

    stream: bool
    include_usage: bool
    encode: Callable[[Any], bytes]


def stream_kind(key: CacheKey) -> CacheKey:
    """``key`` with the stream's store key (same digest, scope and lock) for reads and writes."""
    return replace(key, store_key=key.stream_store_key)


class KindReader:
    """Answers of the asked kind from what is stored under either kind of one key."""

    def __init__(  # noqa: PLR0913 - the parts it reads through, and the wall clock of refresh fences
        self,
        flight: SingleFlight,
        config: CacheConfig,
        counters: Counters,
        guard: StoreGuard,
        store: Store,
        clock: Callable[[], float],
    ) -> None:
        self._flight = flight
        self._config = config
        self._counters = counters
        self._guard = guard
        self._store = store
        self._clock = clock

    async def forget_other(self, key: CacheKey, *, stream: bool) -> None:
        """On a refresh of one kind: delete the other kind's answer, so the old answer does not outlive
        the refreshed one (the next caller of the other kind gets the new answer, converted). First the
        key's fence: an older call's answer of either kind, landing while this refresh's call runs, is
        not written (_fences.py)."""
        other = key.store_key if stream else key.stream_store_key
        store = self._store
        fence = fence_record(refresh_fence(key), self._clock())
        await self._guard.run("set", lambda: store.set(*fence))
        self._guard.forget(other)
        await self._guard.run("delete", lambda: store.delete(other))
        self._guard.forget(other)

    def _faults(self) -> int:
        counters = self._counters
        return counters.store_errors + counters.store_timeouts + counters.store_skipped

    async def _lookup(self, key: CacheKey) -> tuple[Entry | None, bool]:
        """``(entry, healthy)``: healthy is False when no entry came back and a store fault (or the open
        breaker) was counted meanwhile; then the other kind is not read either (no second wait on a
        failing store). A found entry is always served: the faults counted meanwhile may be other calls'
        (a burst of background writes refused by a full Redis made stored entries read as misses)."""
        faults = self._faults()
        entry = await self._flight.lookup(key)
        return entry, entry is not None or self._faults() == faults

    def now(self, key: CacheKey, form: Form) -> Rendered | None:
        """The asked kind's own stored answer found with no I/O (:meth:`SingleFlight.rendered_now`), in the
        caller's shape and sent as ``form`` says; None: ask :meth:`body` or :meth:`stream` (which also
        convert the other kind)."""
        endpoint = key.endpoint

        def render(entry: Entry) -> bytes | None:
            if not form.stream:
                return None if entry.chunks is not None else form.encode(entry.body)
            if entry.chunks is None:
                return None
            shaped = shape_stream(endpoint, entry.chunks, include_usage=form.include_usage)
            return None if shaped is None else form.encode(shaped)

        store_key = key.stream_store_key if form.stream else key.store_key
        return self._flight.rendered_now(key, store_key, form, render)

    async def body(self, key: CacheKey) -> Entry | None:
        """The body answer for ``key``: stored, assembled from a stored stream, or None."""
        entry, healthy = await self._lookup(key)
        if (entry is not None and entry.chunks is None) or not healthy:
            return entry if healthy else None
        return await self.other_body(key, entry)

    async def other_body(self, key: CacheKey, found: Entry | None) -> Entry | None:
        """After a body miss: the body assembled from the stored stream (``found`` under the body key if
        it is a stream written by an older release, else the stream entry), or None."""
        if not self._config.convert_kinds:
            return None
        entry = found if found is not None and found.chunks is not None else None
        if entry is None:
            entry = await self._flight.lookup(stream_kind(key))
        if entry is None or entry.chunks is None:
            return None
        body = body_from_stream(key.endpoint, entry.chunks)
        return None if body is None else replace(entry, body=body, chunks=None, converted=True)

    async def stream(self, key: CacheKey, *, include_usage: bool, refresh: bool) -> Entry | None:
        """The stream answer for ``key`` in the caller's shape: stored, converted from a body, or None."""
        if refresh:
            await self.forget_other(key, stream=True)
            return None
        own, healthy = await self._lookup(stream_kind(key))
        if own is not None and own.chunks is not None:
            shaped = shape_stream(key.endpoint, own.chunks, include_usage=include_usage)
            if shaped is not None:
                return replace(own, chunks=shaped)
        if not healthy:
            return None
        found = await self._flight.lookup(key)
        if found is not None and found.chunks is not None:  # an older release's stream under the body key
            shaped = shape_stream(key.endpoint, found.chunks, include_usage=include_usage)
            return None if shaped is None else replace(found, chunks=shaped)
        if found is None or not self._config.convert_kinds:
            return None
        chunks = stream_from_body(key.endpoint, found.body, include_usage=include_usage)
        return None if chunks is None else replace(found, body=None, chunks=chunks, converted=True)
