"""Store access for PromptCache: every store call under the breaker and its deadline, reads, and writes.

A mixin of :class:`~promptcache.PromptCache` (it owns the state declared below); kept apart so each module
stays readable. Nothing here raises a store fault to a caller unless ``fail_open`` is off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from promptcache._entry import Entry, decode_entry, encode_entry, scope_of
from promptcache._gate import refusal_reason, stream_refusal, stream_summary
from promptcache._resilience import BreakerState, CircuitBreaker, Guard, StoreSkipped
from promptcache.exceptions import EntryError, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from promptcache._config import CacheConfig
    from promptcache._events import Emitter, Hook
    from promptcache._keys import CacheKey
    from promptcache._stats import Counters
    from promptcache.backends import LockingStore, Store

__all__ = ["StoreAccess"]

log = logging.getLogger("promptcache")

_RETRY: Any = object()  # a shared read that did not finish: its waiters read for themselves


class StoreAccess:
    """Guarded store calls, shared reads, gated and tracked writes."""

    config: CacheConfig
    store: Store
    breaker: CircuitBreaker
    _counters: Counters
    _events: Emitter
    _hooks: tuple[Hook, ...]
    _clock: Callable[[], float]
    _mono: Callable[[], float]
    _guard: Guard
    _locks: LockingStore | None
    _reads: dict[str, asyncio.Future[Any]]
    _writes: set[asyncio.Task[None]]
    _uncertain_locks: set[str]
    _releases: set[asyncio.Task[None]]

    def _on_breaker_change(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._counters.breaker_opened += 1
        elif new is BreakerState.CLOSED:
            self._counters.breaker_closed += 1
        if self._hooks:
            self._events.breaker(old.value, new.value)

    def _on_store_error(self, operation: str, exc: BaseException, timed_out: bool) -> None:  # noqa: FBT001
        if timed_out:
            self._counters.store_timeouts += 1
        else:
            self._counters.store_errors += 1
        log.warning(
            "promptcache: store %s %s (%s); answering without the cache",
            operation,
            "timed out" if timed_out else "failed",
            type(exc).__name__,
        )

    async def _guarded(self, operation: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, error)`` when the store failed (already counted) or
        ``(False, None)`` when it was skipped."""
        if self._hooks:
            return await self._guarded_timed(operation, call)
        try:
            return True, await self._guard.run(operation, call)
        except StoreSkipped:
            self._counters.store_skipped += 1
        except Exception as exc:
            # Counted and logged by the guard; only the fail_open flag decides whether it reaches the caller.
            if not self.config.fail_open:
                raise StoreError(f"store {operation} failed: {type(exc).__name__}") from exc
            return False, exc
        return False, None

    async def _guarded_timed(self, operation: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """:meth:`_guarded`, timed, reporting one store event per call to the hooks."""
        started = self._mono()
        try:
            found = await self._guard.run(operation, call)
        except StoreSkipped:
            self._counters.store_skipped += 1
            self._events.store(operation, "skipped")
        except Exception as exc:
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
            self._events.store(operation, outcome, self._mono() - started, type(exc).__name__)
            if not self.config.fail_open:
                raise StoreError(f"store {operation} failed: {type(exc).__name__}") from exc
            return False, exc
        else:
            self._events.store(operation, "ok", self._mono() - started)
            return True, found
        return False, None

    async def _lookup(self, key: CacheKey, *, again: bool = False) -> Entry | None:
        """The entry under ``key``; ``again`` marks a re-read within one request (a bad value counts once).

        Concurrent first reads of one key share a single store GET (a burst of identical requests costs
        one round trip and one connection, not one each); every caller decodes its own copy.
        """
        if again:
            return self._decode(key, await self._fetch(key), again=True)
        pending = self._reads.get(key.store_key)
        if pending is not None:
            raw = await asyncio.shield(pending)
            if raw is not _RETRY:
                return self._decode(key, raw, again=True)  # the first reader already counted a bad value
            return self._decode(key, await self._fetch(key), again=again)
        pending = self._reads[key.store_key] = asyncio.get_running_loop().create_future()
        try:
            raw = await self._fetch(key)
        except BaseException:
            pending.set_result(_RETRY)  # cancelled or raised: the others read for themselves
            raise
        else:
            pending.set_result(raw)
        finally:
            if self._reads.get(key.store_key) is pending:
                del self._reads[key.store_key]
        return self._decode(key, raw, again=again)

    async def _fetch(self, key: CacheKey) -> bytes | None:
        ok, raw = await self._guarded("get", lambda: self.store.get(key.store_key))
        return raw if ok else None

    def _decode(self, key: CacheKey, raw: bytes | None, *, again: bool) -> Entry | None:
        if raw is None:
            return None
        try:
            return decode_entry(raw, key, self._clock())
        except EntryError as exc:
            if again:
                return None
            self._counters.corrupt_entries += 1
            log.warning("promptcache: ignoring a bad value under %s: %s", key.store_key, exc)
            return None

    async def _unlock(self, key: CacheKey, token: str | None) -> None:
        if token is None or self._locks is None:
            return
        locks = self._locks
        if token in self._uncertain_locks:
            # The SET NX timed out: it may land after this. Release in the background a few times over
            # a few seconds (each attempt deletes only a lock holding this token), off the caller's path.
            self._uncertain_locks.discard(token)
            task = asyncio.create_task(self._release_later(key, token))
            self._releases.add(task)  # awaited by drain(); the lock's own TTL is the backstop
            task.add_done_callback(self._releases.discard)
            return
        await self._guarded("unlock", lambda: locks.unlock(key.lock_key, token))

    async def _release_later(self, key: CacheKey, token: str) -> None:
        locks = self._locks
        if locks is None:  # pragma: no cover - only called with a locking store
            return
        for pause in (0.0, 0.2, 1.0):
            await asyncio.sleep(pause)
            ok, released = await self._guarded("unlock", lambda: locks.unlock(key.lock_key, token))
            if ok and released:
                return

    def _encode(  # noqa: PLR0913
        self,
        key: CacheKey,
        request: Mapping[str, Any] | None,
        body: Any,  # noqa: ANN401
        chunks: list[Any] | None,
        latency: float,
        ttl: float,
        *,
        usage_body: Any = None,  # noqa: ANN401
    ) -> bytes | None:
        """The stored bytes for a success, or None (counted) when it must not be stored."""
        req = dict(request) if request is not None else None
        finish = self.config.finish_reasons
        if chunks is None:
            reason = refusal_reason(key.endpoint, body, req, finish_reasons=finish)
        else:
            reason = stream_refusal(key.endpoint, chunks, req, finish_reasons=finish)
            usage_body = stream_summary(key.endpoint, chunks) if usage_body is None else usage_body
        if reason is not None:
            self._counters.not_stored += 1
            log.debug("promptcache: not storing %s: %s", key.store_key, reason)
            return None
        source = body if usage_body is None else usage_body
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
            request=orjson.loads(key.canonical) if self.config.keep_request else None,
        )
        try:
            data = encode_entry(entry, compress_above=self.config.compress_above)
        except TypeError as exc:  # orjson: the body holds something that is not JSON
            self._counters.not_stored += 1
            log.debug("promptcache: not storing %s: %s", key.store_key, exc)
            return None
        if len(data) > self.config.max_entry_bytes:
            self._counters.oversize += 1
            log.info("promptcache: entry of %d bytes is over max_entry_bytes; not stored", len(data))
            return None
        return data

    def _spawn_write(self, key: CacheKey, data: bytes, ttl: float, token: str | None) -> None:
        if len(self._writes) >= self.config.max_pending_writes:
            self._counters.writes_dropped += 1
            log.warning("promptcache: %d writes pending; dropping one", len(self._writes))
            data = b""  # nothing to write, but the lock (if any) must still be released
        task = asyncio.create_task(self._write_then_unlock(key, data, ttl, token))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_then_unlock(self, key: CacheKey, data: bytes, ttl: float, token: str | None) -> None:
        try:
            if data:
                await self._write(key.store_key, data, ttl)
        finally:
            await self._unlock(key, token)

    async def _write(self, store_key: str, data: bytes, ttl: float) -> bool:
        ok, _ = await self._guarded("set", lambda: self.store.set(store_key, data, ttl))
        if ok:
            self._counters.writes += 1
        return ok
