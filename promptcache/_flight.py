"""Single-flight for PromptCache: one upstream call for concurrent identical misses.

In one process, callers share the pending call's task; across processes, the store's short lock (taken
with ``SET NX PX``, released only once the entry is written) with a bounded wait, after which a waiter
calls upstream itself. A mixin of :class:`~promptcache.PromptCache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from promptcache._guard import StoreAccess
from promptcache._events import Result
from promptcache._gate import usage_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from promptcache._entry import Entry
    from promptcache._keys import CacheKey

__all__ = ["SingleFlight"]

log = logging.getLogger("promptcache")


@dataclass(slots=True)
class Flight:
    """One upstream call in progress and the callers waiting on it."""

    task: asyncio.Task[tuple[Any, bool]]
    waiters: int = 0
    snapshot: bytes | None = None  # the answer's JSON, taken before any caller can change the object


class SingleFlight(StoreAccess):
    """Shares upstream calls between concurrent identical misses."""

    _flights: dict[str, Flight]
    _uncertain_locks: set[str]

    async def _join_flight(
        self,
        key: CacheKey,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        ttl: float,
        *,
        refresh: bool,
    ) -> Any:  # noqa: ANN401
        while True:
            flight, leader = self._flight_for(key, request, call, ttl, refresh=refresh)
            flight.waiters += 1
            try:
                body, from_store = await asyncio.shield(flight.task)
            except asyncio.CancelledError:
                flight.waiters -= 1
                if self._caller_cancelled(key, request, flight):
                    raise
                # Only the shared call was cancelled (every caller before us left); this one still needs
                # an answer, so it goes round again and starts a new call.
                continue
            except BaseException:
                flight.waiters -= 1
                self._counters.misses += 1
                if leader:
                    self._counters.upstream_errors += 1
                if self._hooks:
                    self._events.request(Result.MISS, key, request, reason="error")
                raise
            flight.waiters -= 1
            return self._answer(key, request, flight, body, leader=leader, from_store=from_store)

    def _flight_for(
        self,
        key: CacheKey,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        ttl: float,
        *,
        refresh: bool,
    ) -> tuple[Flight, bool]:
        """The call in flight for ``key`` to join, or a new one this caller leads."""
        flight = self._flights.get(key.store_key)
        if flight is not None and not (flight.task.done() and flight.task.cancelled()):
            return flight, False
        # None in flight, or one abandoned by all its callers and not yet removed: start a new call.
        task = asyncio.create_task(self._fill(key, request, call, ttl, refresh=refresh))
        flight = self._flights[key.store_key] = Flight(task)
        task.add_done_callback(functools.partial(self._end_flight, key.store_key, flight))
        return flight, True

    def _caller_cancelled(self, key: CacheKey, request: Mapping[str, Any], flight: Flight) -> bool:
        """After a CancelledError: True (counted) if this caller was cancelled, False if only the call was."""
        current = asyncio.current_task()
        if current is None or not current.cancelling():
            return False
        self._counters.misses += 1
        if self._hooks:
            self._events.request(Result.MISS, key, request, reason="cancelled")
        if flight.waiters == 0 and not flight.task.done():
            flight.task.cancel()  # nobody is left to receive the answer
            if self._flights.get(key.store_key) is flight:
                del self._flights[key.store_key]
        return True

    def _answer(  # noqa: PLR0913 - the outcome of one caller's wait
        self,
        key: CacheKey,
        request: Mapping[str, Any],
        flight: Flight,
        body: Any,  # noqa: ANN401
        *,
        leader: bool,
        from_store: bool,
    ) -> Any:  # noqa: ANN401
        """Count one caller's outcome and give it its own copy of the answer."""
        if leader and not from_store:
            self._counters.misses += 1
            if self._hooks:
                self._events.request(Result.MISS, key, request, tokens=usage_of(body))
            return body
        self._counters.hits += 1
        if not leader:
            self._counters.coalesced += 1
            if flight.snapshot is not None:
                body = orjson.loads(flight.snapshot)  # each caller gets its own copy to mutate
        tokens = self._count_saving(body)
        if self._hooks:
            self._events.request(Result.HIT, key, request, tokens=tokens, coalesced=not leader)
        return body

    def _count_saving(self, body: Any) -> tuple[int, int]:  # noqa: ANN401
        inp, out = usage_of(body)
        self._counters.input_tokens_saved += inp
        self._counters.output_tokens_saved += out
        return inp, out

    def _end_flight(self, store_key: str, flight: Flight, _task: object) -> None:
        # Runs before any waiting caller resumes (done callbacks are scheduled first), so the snapshot
        # is taken before the first caller can change the answer it gets.
        if self._flights.get(store_key) is flight:
            del self._flights[store_key]
        if flight.task.cancelled() or flight.task.exception() is not None:
            return  # exception() also marks it retrieved: the callers re-raise it
        if flight.waiters > 1:
            with contextlib.suppress(TypeError):  # a body that is not JSON is shared as it is
                flight.snapshot = orjson.dumps(flight.task.result()[0])

    async def _fill(
        self,
        key: CacheKey,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        ttl: float,
        *,
        refresh: bool,
    ) -> tuple[Any, bool]:
        """Make the one upstream call for ``key``; ``(body, from_store)``."""
        token: str | None = None
        if self._locks is not None and not refresh:
            found, token = await self._lock_or_wait(key)
            if found is not None:
                return found.body, True
        started = self._mono()
        try:
            body = await call()
        except BaseException:
            await self._unlock(key, token)
            raise
        self._counters.upstream_calls += 1
        if self.breaker.is_open():
            self._counters.store_skipped += 1  # nothing could be written: skip encoding it at all
            return body, False
        data = self._encode(key, request, body, None, self._mono() - started, ttl)
        if data is None:
            await self._unlock(key, token)
        else:
            # The lock is released only once the entry is written, so no other process sees "no lock,
            # no entry" in between and pays for a second upstream call.
            self._spawn_write(key, data, ttl, token)
        return body, False

    async def _lock_or_wait(self, key: CacheKey) -> tuple[Entry | None, str | None]:
        """Take the cross-process lock, or wait (bounded) for its holder's entry."""
        locks = self._locks
        assert locks is not None  # noqa: S101 - checked by the caller; narrows the type only
        token = secrets.token_hex(16)
        deadline = self._mono() + self.config.lock_wait
        pause = 0.01
        waited = False
        while True:
            ok, got = await self._guarded(
                "lock", lambda: locks.try_lock(key.lock_key, token, self.config.lock_ttl)
            )
            if not ok:
                # Store trouble: answer without waiting on the lock. After a timeout the SET NX may still
                # have run (its reply came too late), so the token is kept and released as usual; the
                # unlock deletes only a lock that still holds this token.
                if got is not None and type(got).__name__ == "TimeoutError":
                    self._uncertain_locks.add(token)
                    return None, token
                return None, None
            if got:
                # Another process may have written the entry and released the lock between our lookup
                # and this lock: look once more before paying for a second upstream call.
                entry = await self._lookup(key, again=True)
                if entry is not None and entry.chunks is None:
                    await self._unlock(key, token)
                    return entry, None
                return None, token
            if not waited:
                waited = True
                self._counters.lock_waits += 1
            entry = await self._lookup(key, again=True)
            if entry is not None and entry.chunks is None:
                return entry, None
            remaining = deadline - self._mono()
            if remaining <= 0:
                self._counters.lock_timeouts += 1
                log.info("promptcache: gave up waiting for another process's call on %s", key.store_key)
                return None, None
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.25)
