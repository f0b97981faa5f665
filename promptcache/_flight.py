"""Single-flight: one store read and one upstream call for concurrent identical requests.

In one process, concurrent first reads of a key share one store GET, and concurrent misses share the
pending call's task. Across processes, the store's short lock (taken with ``SET NX PX``, released only once
the entry is written) with a bounded wait, after which a waiter calls upstream itself. A lock whose
``SET NX`` timed out may still land later: it is released in the background a few times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._entry import Entry, decode_entry
from promptcache._fences import fence_for, fenced_prefix
from promptcache._gate import usage_of
from promptcache._loops import PerLoop
from promptcache._tier import pause_due
from promptcache.backends import ImmediateStore, LockingStore
from promptcache.exceptions import EntryError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from promptcache._config import CacheConfig
    from promptcache._events import Emitter
    from promptcache._guard import StoreGuard
    from promptcache._keys import CacheKey
    from promptcache._stats import Counters
    from promptcache._tier import HotTier, Render, Rendered, Ticket
    from promptcache._writer import EntryWriter
    from promptcache.backends import Store

__all__ = ["Flight", "SingleFlight"]

log = logging.getLogger("promptcache")

_RETRY: Any = object()  # a shared read that did not finish: its waiters read for themselves
# Pauses before each background attempt to release a lock: a store that stalls for a few seconds still
# gets the lock back well before its TTL; each attempt deletes only a lock that still holds our token.
_RETRY_PAUSES: Final = (0.0, 0.2, 1.0, 2.5)


@dataclass(slots=True)
class Flight:
    """One upstream call in progress and the callers waiting on it."""

    task: asyncio.Task[tuple[Any, bool]]
    waiters: int = 0
    snapshot: bytes | None = None  # the answer's JSON, taken before any caller can change the object
    closed: bool = False  # invalidated or refreshed since it began: later callers start their own call


@dataclass(slots=True)
class _LoopFlights:
    """One event loop's shared reads, shared calls and lock releases (futures and tasks are loop-bound)."""

    flights: dict[str, Flight] = field(default_factory=dict)
    reads: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    tickets: dict[str, Ticket | None] = field(default_factory=dict)  # the tier's ticket of each read
    releases: set[asyncio.Task[None]] = field(default_factory=set)


class SingleFlight:
    """Shares store reads and upstream calls between concurrent identical requests of one cache.

    Args:
        store: The store; its lock is used when it is a :class:`~promptcache.backends.LockingStore`.
        guard: Runs every store call (reads, locks, unlocks).
        writer: Encodes and writes the answer of each call this makes.
        config: ``lock_wait`` and ``lock_ttl``.
        counters: Where hits, misses, coalesced callers, lock waits and bad values are counted.
        events: The cache's hook emitter; used only when it has hooks.
        clock, monotonic: Wall-clock (entry expiry), monotonic (latency, lock waits) seconds; injectable.
        tier: The hot tier read before the store and filled by store reads (None: no tier).
    """

    def __init__(  # noqa: PLR0913 - the parts single-flight works with, clocks keyword-only
        self,
        store: Store,
        guard: StoreGuard,
        writer: EntryWriter,
        config: CacheConfig,
        counters: Counters,
        events: Emitter,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        tier: HotTier | None = None,
    ) -> None:
        self._store = store
        self._tier = tier
        if tier is not None:  # another process's invalidation or refresh closes calls here to joiners
            tier.on_change = self._store_changed
        self._immediate = store if isinstance(store, ImmediateStore) else None
        self.immediate = tier is not None or self._immediate is not None  # rendered_now() can find any
        self._locks = store if isinstance(store, LockingStore) else None
        self._guard = guard
        self._writer = writer
        self._config = config
        self._counters = counters
        self._events = events
        self._clock = clock
        self._mono = monotonic
        # Callers share reads and calls within their loop; across loops (and processes) the store's lock.
        self._loops: PerLoop[_LoopFlights] = PerLoop(_LoopFlights)
        self._uncertain_locks: set[str] = set()
        self._held: dict[str, CacheKey] = {}  # lock tokens this cache holds now, in any loop

    @property
    def flights(self) -> dict[str, Flight]:
        """The running loop's calls in flight, by store key (empty outside a loop)."""
        return {} if (state := self._loops.current()) is None else state.flights

    @property
    def reads(self) -> dict[str, asyncio.Future[Any]]:
        """The running loop's shared store reads in flight, by store key (empty outside a loop)."""
        return {} if (state := self._loops.current()) is None else state.reads

    def close_flights(self, prefix: str) -> None:
        """Let no later caller join a call in flight for a key under ``prefix``, in any loop (an
        invalidation or a refresh: those calls began before it; their callers still get their answers)."""
        for state in self._loops.values():
            for store_key, flight in list(state.flights.items()):  # a copy: other loops' dicts may change
                flight.closed = flight.closed or store_key.startswith(prefix)

    def _store_changed(self, key: str | None) -> None:
        """What the hot tier's subscription pushed: a fence written by any process (None: maybe any)."""
        if (prefix := "" if key is None else fenced_prefix(key)) is not None:
            self.close_flights(prefix)

    # -- reads -------------------------------------------------------------------------------------

    async def lookup(self, key: CacheKey, *, again: bool = False) -> Entry | None:
        """The entry under ``key``; ``again`` marks a re-read within one request (a bad value counts once).

        Concurrent first reads of one key share a single store GET (a burst of identical requests costs
        one round trip and one connection, not one each); every caller decodes its own copy.
        """
        if (tier := self._tier) is not None and (found := tier.entry(key, self._clock())) is not None:
            if pause_due():
                await asyncio.sleep(0)  # let the loop's other tasks run (a tier hit awaits nothing)
            return found
        if again:
            return self._decode(key, await self._fetch(key, self._begin(key, poll=False)), again=True)
        state, store_key = self._loops.get(), key.store_key
        reads = state.reads
        if (pending := reads.get(store_key)) is not None:
            # Share it only if nothing changed the key since it was sent: a change that has returned
            # must not be followed by the old answer (no tier, or none live yet: nothing known, shared).
            if tier is None or tier.unchanged(store_key, state.tickets.get(store_key)):
                raw = await asyncio.shield(pending)
                if raw is not _RETRY:
                    return self._decode(key, raw, again=True)  # the first reader counted a bad value
            return self._decode(key, await self._fetch(key, self._begin(key)), again=again)
        ticket = self._begin(key, poll=False)  # see HotTier.begin: right after the tier lookup
        pending = reads[store_key] = asyncio.get_running_loop().create_future()
        state.tickets[store_key] = ticket
        try:
            raw = await self._fetch(key, ticket)
        except BaseException:
            pending.set_result(_RETRY)  # cancelled or raised: the others read for themselves
            raise
        else:
            pending.set_result(raw)
        finally:
            if reads.get(store_key) is pending:
                del reads[store_key]
                state.tickets.pop(store_key, None)
        return self._decode(key, raw, again=again)

    def rendered_now(self, key: CacheKey, store_key: str, form: object, render: Render) -> Rendered | None:
        """The entry of ``key`` under ``store_key`` as ``render`` sends it (HotTier.rendered), found with no
        I/O from any thread: the hot tier's (rendered once per form), or a memory store's."""
        if self._tier is not None:
            return self._tier.rendered(key, store_key, self._clock(), form, render)
        raw = None if self._immediate is None else self._immediate.get_now(store_key)
        entry = None if raw is None else self._decode(key, raw, again=True)  # lookup() counts a bad one
        return None if entry is None or (payload := render(entry)) is None else (entry, payload)

    def _begin(self, key: CacheKey, *, poll: bool = True) -> Ticket | None:
        """The tier's ticket for a read of ``key`` about to begin (None: keep nothing); see HotTier.begin."""
        return None if self._tier is None else self._tier.begin(key.store_key, poll=poll)

    async def _fetch(self, key: CacheKey, ticket: Ticket | None) -> bytes | None:
        """One store GET; its bytes are offered to the tier under ``ticket`` (from :meth:`_begin`)."""
        store, tier, store_key = self._store, self._tier, key.store_key
        found: bytes | None = None
        try:
            ok, raw = await self._guard.run("get", lambda: store.get(store_key))
            found = raw if ok else None
        finally:
            if ticket is not None:
                tier.offer(store_key, found, ticket)  # type: ignore[union-attr] # a ticket means a tier
        return found

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

    # -- shared calls ------------------------------------------------------------------------------

    async def join(
        self,
        key: CacheKey,
        request: Mapping[str, Any],
        call: Callable[[], Awaitable[Any]],
        ttl: float,
        *,
        refresh: bool,
    ) -> Any:  # noqa: ANN401 - the provider's JSON body
        """The answer to ``request``: from the call in flight for ``key``, or from one this caller leads."""
        while True:
            flight, leader = self._flight_for(key, request, call, ttl, refresh=refresh)
            flight.waiters += 1
            try:
                body, from_store = await asyncio.shield(flight.task)
            except asyncio.CancelledError:
                flight.waiters -= 1
                if self._caller_cancelled(key, flight):
                    raise
                # Only the shared call was cancelled (every caller before us left); this one still needs
                # an answer, so it goes round again and starts a new call.
                continue
            except BaseException:
                flight.waiters -= 1
                self._counters.miss(key, self._events, reason="error")
                if leader:
                    self._counters.upstream_errors += 1
                raise
            flight.waiters -= 1
            return self._answer(key, flight, body, leader=leader, from_store=from_store)

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
        flights = self._loops.get().flights
        if (flight := flights.get(key.store_key)) is not None and self._tier is not None:
            self._tier.refresh()  # apply what was pushed: a fence may close the flight (_store_changed)
        if flight is not None and not flight.closed and not (flight.task.done() and flight.task.cancelled()):
            return flight, False
        # None in flight, one abandoned by all its callers and not yet removed, or one closed by a change
        # (then without the lock too: it is held for the older call, whose answer is fenced): a new call.
        unlocked = refresh or (flight is not None and flight.closed)
        task = asyncio.create_task(self._fill(key, request, call, ttl, refresh=unlocked))
        flight = flights[key.store_key] = Flight(task)
        task.add_done_callback(functools.partial(self._end_flight, flights, key.store_key, flight))
        return flight, True

    def _caller_cancelled(self, key: CacheKey, flight: Flight) -> bool:
        """After a CancelledError: True (counted) if this caller was cancelled, False if only the call was."""
        if (current := asyncio.current_task()) is None or not current.cancelling():
            return False
        self._counters.miss(key, self._events, reason="cancelled")
        if flight.waiters == 0 and not flight.task.done():
            flight.task.cancel()  # nobody is left to receive the answer
            if (flights := self.flights).get(key.store_key) is flight:
                del flights[key.store_key]
        return True

    def _answer(self, key: CacheKey, flight: Flight, body: Any, *, leader: bool, from_store: bool) -> Any:  # noqa: ANN401
        """Count one caller's outcome and give it its own copy of the answer."""
        if leader and not from_store:
            self._counters.miss(key, self._events, tokens=usage_of(body))
            return body
        if not leader and flight.snapshot is not None:
            body = orjson.loads(flight.snapshot)  # each caller gets its own copy to mutate
        self._counters.shared(key, self._events, body, coalesced=not leader)
        return body

    def _end_flight(self, flights: dict[str, Flight], store_key: str, flight: Flight, _task: object) -> None:
        # Runs before any waiting caller resumes (done callbacks are scheduled first), so the snapshot
        # is taken before the first caller can change the answer it gets.
        if flights.get(store_key) is flight:
            del flights[store_key]
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
            found, token = await self._lock_or_wait(self._locks, key)
            if found is not None:
                return found.body, True
        started, began = self._mono(), self._clock()  # began: its answer is fenced from then (_fences.py)
        try:
            body = await call()
        except BaseException:
            await self.unlock(key, token)
            raise
        self._counters.upstream_calls += 1
        if self._guard.breaker.is_open():
            self._guard.count_skip()  # nothing could be written: skip encoding it at all
            self._release_soon(key, token)  # but the lock must not outlive this call
            return body, False
        data = self._writer.encode(key, request, body, None, self._mono() - started, ttl)
        if data is None:
            await self.unlock(key, token)
        else:
            # The lock is released only once the entry is written, so no other process sees "no lock,
            # no entry" in between and pays for a second upstream call.
            then = None if token is None else functools.partial(self.unlock, key, token)
            self._writer.spawn(key.store_key, data, ttl, then=then, fence=fence_for(key, began))
        return body, False

    # -- the cross-process lock --------------------------------------------------------------------

    async def _lock_or_wait(self, locks: LockingStore, key: CacheKey) -> tuple[Entry | None, str | None]:
        """Take the cross-process lock, or wait (bounded) for its holder's entry."""
        token = secrets.token_hex(16)
        deadline = self._mono() + self._config.lock_wait
        pause = 0.01
        waited = False
        while True:
            ok, got = await self._guard.run(
                "lock", lambda: locks.try_lock(key.lock_key, token, self._config.lock_ttl)
            )
            if not ok:
                # Store trouble: answer without waiting on the lock. After a timeout the SET NX may still
                # have run (its reply came too late), so the token is kept and released as usual; the
                # unlock deletes only a lock that still holds this token.
                if got is not None and self._guard.is_timeout(got):
                    self._uncertain_locks.add(token)
                    self._held[token] = key
                    return None, token
                return None, None
            if got:
                # Another process may have written the entry and released the lock between our lookup
                # and this lock: look once more before paying for a second upstream call.
                self._held[token] = key
                entry = await self.lookup(key, again=True)
                if entry is not None and entry.chunks is None:
                    await self.unlock(key, token)
                    return entry, None
                return None, token
            if not waited:
                waited = True
                self._counters.lock_waits += 1
            entry = await self.lookup(key, again=True)
            if entry is not None and entry.chunks is None:
                return entry, None
            remaining = deadline - self._mono()
            if remaining <= 0:
                self._counters.lock_timeouts += 1
                log.info("promptcache: gave up waiting for another process's call on %s", key.store_key)
                return None, None
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.25)

    async def unlock(self, key: CacheKey, token: str | None) -> None:
        """Release the lock ``token`` holds on ``key`` (nothing when there is no token or no lock).

        A release goes out even while the breaker is open (a lock left behind makes every other process
        wait for it); if it fails, or the ``SET NX`` that took the lock timed out and may still land, it is
        retried in the background (each attempt deletes only a lock still holding this token).
        """
        locks = self._locks
        if token is None or locks is None or self._held.pop(token, None) is None:
            return
        if token in self._uncertain_locks:
            self._uncertain_locks.discard(token)
            self._spawn_release(locks, key, token, _RETRY_PAUSES)
            return
        ok, _ = await self._guard.run("unlock", lambda: locks.unlock(key.lock_key, token), exempt=True)
        if not ok:
            self._spawn_release(locks, key, token, _RETRY_PAUSES[1:])

    def _release_soon(self, key: CacheKey, token: str | None) -> None:
        """Release the lock in the background (the store is in trouble; the caller must not wait)."""
        locks = self._locks
        if token is None or locks is None or self._held.pop(token, None) is None:
            return
        self._uncertain_locks.discard(token)
        self._spawn_release(locks, key, token, _RETRY_PAUSES)

    async def release_held(self) -> None:
        """Release every lock this cache holds now (closing: their calls will write nothing)."""
        for token, key in list(self._held.items()):
            await self.unlock(key, token)

    def _spawn_release(
        self, locks: LockingStore, key: CacheKey, token: str, pauses: tuple[float, ...]
    ) -> None:
        releases = self._loops.get().releases
        task = asyncio.create_task(self._release_later(locks, key, token, pauses))
        releases.add(task)  # awaited by drain(); the lock's own TTL is the backstop
        task.add_done_callback(releases.discard)

    async def _release_later(
        self, locks: LockingStore, key: CacheKey, token: str, pauses: tuple[float, ...]
    ) -> None:
        for pause in pauses:
            await asyncio.sleep(pause)
            unlock = functools.partial(locks.unlock, key.lock_key, token)
            ok, released = await self._guard.run("unlock", unlock, exempt=True)
            if ok and released:
                return

    @property
    def releasing(self) -> int:
        """Background releases of timed-out locks still running (in this event loop)."""
        return 0 if (state := self._loops.current()) is None else len(state.releases)

    async def drain_releases(self) -> None:
        """Wait for this loop's background releases of timed-out locks."""
        state = self._loops.current()
        while state is not None and state.releases:
            await asyncio.gather(*state.releases, return_exceptions=True)

    async def cancel_releases(self) -> None:
        """Stop this loop's background releases (closing must not wait out their retries; the TTL ends it)."""
        if (state := self._loops.current()) is not None:
            for task in list(state.releases):
                task.cancel()
            await asyncio.gather(*state.releases, return_exceptions=True)
