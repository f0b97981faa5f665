"""The writer: gates and encodes an answer, then writes it, on or off the response path.

Only successes are stored (:mod:`promptcache._gate` decides), encoded as a versioned entry
(:mod:`promptcache._entry`) no larger than ``max_entry_bytes``. Background writes are bounded by
``max_pending_writes`` (beyond it one is dropped, counted and logged), tracked, and awaited by
:meth:`EntryWriter.drain`. A write may carry a follow-up (single-flight's lock release) that runs once
the write has finished, even when the write itself was dropped or failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson

from promptcache._compact import compact_request, compact_route
from promptcache._entry import Entry, encode_entry, scope_of
from promptcache._fences import fenced_since, superseded_by
from promptcache._gate import refusal_reason, stream_refusal, stream_summary
from promptcache._loops import PerLoop
from promptcache._route import route_record
from promptcache._tally import StoreTally, store_tally
from promptcache.backends._base import ComparingStore, FencingStore, LoopHoldingStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from promptcache._config import CacheConfig
    from promptcache._fences import Fence
    from promptcache._guard import StoreGuard
    from promptcache._keys import CacheKey
    from promptcache._stats import Counters
    from promptcache.backends import Store

__all__ = ["EntryWriter"]

log = logging.getLogger("promptcache")


@dataclass(slots=True)
class _LoopWrites:
    """One event loop's background writes, and the store's promise to stay open until they are done."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Writes not finished yet, by task: a task cancelled before it wrote (``asyncio.run`` cancels every
    # task of a loop before finalising it) leaves its write here, and the loop's finaliser makes it.
    unwritten: dict[asyncio.Task[None], tuple[str, bytes, float, Any, Fence | None]] = field(
        default_factory=dict
    )
    release: Callable[[], None] | None = None


class EntryWriter:
    """Encodes storable answers and writes them through the guard; owns the background write tasks.

    Args:
        store: Where entries are written.
        guard: Runs each write under the store's deadline and breaker.
        config: ``finish_reasons``, ``keep_request``, ``compress_above``, ``max_entry_bytes`` and
            ``max_pending_writes``.
        counters: Where writes, refusals, oversize entries and dropped writes are counted.
        clock: Wall-clock seconds (entry timestamps); injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        guard: StoreGuard,
        config: CacheConfig,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._guard = guard
        self._config = config
        self._counters = counters
        self._clock = clock
        # Tasks belong to the loop that made them: each loop has its own, finished before it closes.
        self._loops: PerLoop[_LoopWrites] = PerLoop(self._open_loop, self._finish_loop)
        self.closed = False
        # count_in_store: the tally batches request counts and flushes them in the background, like the
        # writes; the cache adds it to its hooks, and aclose flushes it before the guard closes.
        self.tally = store_tally(store, guard, config)
        self.hooks: tuple[StoreTally, ...] = () if self.tally is None else (self.tally,)

    @property
    def pending(self) -> int:
        """Background writes not finished yet, in every loop."""
        return sum(len(writes.tasks | writes.unwritten.keys()) for writes in self._loops.values())

    @property
    def pending_here(self) -> int:
        """Background writes of the running event loop not finished yet."""
        writes = self._loops.current()
        return 0 if writes is None else len(writes.tasks)

    def encode(  # noqa: PLR0913 - the parts of one entry
        self,
        key: CacheKey,
        request: Mapping[str, Any] | None,
        body: Any,  # noqa: ANN401 - the provider's JSON body
        chunks: list[Any] | None,
        latency: float,
        ttl: float,
    ) -> bytes | None:
        """The stored bytes for a success, or None (counted) when it must not be stored."""
        req = dict(request) if request is not None else None
        finish = self._config.finish_reasons
        if chunks is None:
            reason = refusal_reason(key.endpoint, body, req, finish_reasons=finish)
            source = body
        else:
            reason = stream_refusal(key.endpoint, chunks, req, finish_reasons=finish)
            source = stream_summary(key.endpoint, chunks)
        if reason is not None:
            self._counters.not_stored += 1
            log.debug("promptcache: not storing %s: %s", key.store_key, reason)
            return None
        now = self._clock()
        usage = source.get("usage") if isinstance(source, dict) else None
        model = source.get("model") if isinstance(source, dict) else None
        entry = Entry(
            digest=key.digest,
            scope=scope_of(key),
            endpoint=key.endpoint.value,
            created_at=now,
            expires_at=now + ttl,
            body=body if chunks is None else None,
            chunks=chunks,
            model=model if isinstance(model, str) else None,
            usage=usage if isinstance(usage, dict) else None,
            latency=latency,
            request=self._request_kept(key),
            route=self._route_kept(key),
        )
        try:
            data = encode_entry(entry, compress_above=self._config.compress_above)
        except TypeError as exc:  # orjson: the body holds something that is not JSON
            self._counters.not_stored += 1
            log.debug("promptcache: not storing %s: %s", key.store_key, exc)
            return None
        if len(data) > self._config.max_entry_bytes:
            self._counters.oversize += 1
            log.info("promptcache: entry of %d bytes is over max_entry_bytes; not stored", len(data))
            return None
        return data

    def _request_kept(self, key: CacheKey) -> dict[str, Any]:
        # keep_request: the canonical request; else its compact, privacy-safe form (_compact.py)
        canonical: dict[str, Any] = orjson.loads(key.canonical)
        return canonical if self._config.keep_request else compact_request(canonical)

    def _route_kept(self, key: CacheKey) -> dict[str, Any] | None:
        if key.route is None:
            return None
        record = route_record(key.route)
        return record if self._config.keep_request else compact_route(record)

    async def write(self, store_key: str, data: bytes, ttl: float, fence: Fence | None = None) -> bool:
        """Write now; True when the store took it (a failure is already counted and logged). With a
        ``fence`` (an upstream call's answer), not over a change made after that call began (_fences.py)."""
        store = self._store
        guard = self._guard
        if fence is not None:
            check = guard.run(
                "fence", lambda: superseded_by(store, fence, store_key), deadline=guard.write_timeout
            )
            ok, verdict = await check
            if not ok:
                return False  # the store failed the check (counted): a write now would fail alike
            if verdict.why is not None:
                self._superseded(store_key, verdict.why)
                if verdict.older is not None:  # older than the newer answer too: it goes
                    await self._take_back(store_key, verdict.older)
                return False
        # Where the store can, the write checks the fences again in the same step (none lands between).
        one_step = fence if isinstance(store, FencingStore) else None
        guard.forget(store_key)
        ok, written = await guard.run(
            "set", lambda: self._put(store_key, data, ttl, one_step), deadline=guard.write_timeout
        )
        guard.forget(store_key)
        if not ok:
            return False
        if not written:
            self._superseded(store_key, "an invalidation or a refresh")
            return False
        self._counters.writes += 1
        if fence is not None and one_step is None:
            # A store that cannot check and write in one step (Redis Cluster: an agent's fences live in
            # other slots): a fence recorded between the check and the write (its delete ran before the
            # write landed) takes the write back.
            late, fenced = await guard.run(
                "fence", lambda: fenced_since(store, fence), deadline=guard.write_timeout
            )
            if late and fenced:
                self._superseded(store_key, "an invalidation or a refresh")
                await self._take_back(store_key, data)
                return False
        return True

    async def _put(self, store_key: str, data: bytes, ttl: float, fence: Fence | None) -> bool:
        """One SET; with a ``fence`` (a FencingStore), refused when one of its fences is later: False."""
        store = self._store
        if fence is None:
            await store.set(store_key, data, ttl)
            return True
        return await cast("FencingStore", store).set_fenced(store_key, data, ttl, fence.fences, fence.started)

    def _superseded(self, store_key: str, why: str) -> None:
        self._counters.superseded += 1
        log.info("promptcache: not storing %s: %s came after its call began", store_key, why)

    async def _take_back(self, store_key: str, data: bytes) -> None:
        """Delete ``store_key`` while it holds exactly ``data`` (a store that cannot compare: plainly)."""
        store = self._store

        async def delete() -> object:
            if isinstance(store, ComparingStore):
                return await store.delete_if(store_key, data)
            return await store.delete(store_key)

        await self._guard.run("delete", delete, deadline=self._guard.write_timeout)
        self._guard.forget(store_key)

    def spawn(
        self,
        store_key: str,
        data: bytes,
        ttl: float,
        *,
        then: Callable[[], Awaitable[object]] | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Write in the background (tracked, bounded), then run ``then`` whatever became of the write."""
        if self.closed:
            self._counters.writes_dropped += 1  # the cache is closed: a late answer is not written
            return
        writes = self._loops.get()
        if len(writes.tasks) >= self._config.max_pending_writes:
            self._counters.writes_dropped += 1
            self._guard.log.warning(
                ("set", "backlog"), "promptcache: %d writes pending; dropping one", len(writes.tasks)
            )
            data = b""  # nothing to write, but the follow-up (a lock release) must still run
        task = asyncio.create_task(self._write_then(store_key, data, ttl, then, fence))
        writes.tasks.add(task)
        writes.unwritten[task] = (store_key, data, ttl, then, fence)
        task.add_done_callback(lambda t: _settled(writes, t))

    async def settle(self, store_keys: set[str]) -> None:
        """Wait for this loop's background writes of ``store_keys`` (each bounded by its deadline)."""
        writes = self._loops.get()
        pending = [t for t, (key, *_) in writes.unwritten.items() if key in store_keys and not t.done()]
        if pending:
            await asyncio.wait(pending)

    async def drain(self) -> None:
        """Wait until every background write (and its follow-up) of this event loop has finished."""
        writes = self._loops.current()
        while writes is not None and writes.tasks:
            await asyncio.gather(*writes.tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish every loop's writes (each in its own loop); later answers are not written."""
        await self._loops.aclose()
        if self.tally is not None:
            await self.tally.aclose()
        self.closed = True

    def _open_loop(self) -> _LoopWrites:
        store = self._store
        return _LoopWrites(release=store.hold_loop() if isinstance(store, LoopHoldingStore) else None)

    async def _finish_loop(self, writes: _LoopWrites) -> None:
        try:
            while writes.tasks:
                await asyncio.gather(*writes.tasks, return_exceptions=True)
            for store_key, data, ttl, then, fence in list(writes.unwritten.values()):
                await self._write_then(store_key, data, ttl, then, fence)
            writes.unwritten.clear()
        finally:
            if writes.release is not None:
                writes.release()

    async def _write_then(
        self,
        store_key: str,
        data: bytes,
        ttl: float,
        then: Callable[[], Awaitable[object]] | None,
        fence: Fence | None,
    ) -> None:
        try:
            if data:
                await self.write(store_key, data, ttl, fence)
        finally:
            if then is not None:
                await then()


def _settled(writes: _LoopWrites, task: asyncio.Task[None]) -> None:
    writes.tasks.discard(task)
    if not task.cancelled():
        writes.unwritten.pop(task, None)  # written (or failed, counted): nothing left to do for it
