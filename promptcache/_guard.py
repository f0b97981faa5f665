"""Guarded store access: every store call of one cache under its deadline and the circuit breaker.

:class:`StoreGuard` owns the breaker and the deadline (:mod:`promptcache._resilience` holds the state
machine) and turns each failure into a counted, logged ``(False, error)`` — never a silent ``None``. Only
the ``fail_open`` flag decides whether a store fault reaches the caller (as a :class:`StoreError`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from promptcache._logs import ThrottledLog, describe
from promptcache._resilience import BreakerState, CircuitBreaker, Guard, StoreSkipped
from promptcache.backends._base import (
    AdmittingStore,
    ReplyErrorClassifier,
    TimeoutClassifier,
    default_timeout_of,
)
from promptcache.exceptions import StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache._config import CacheConfig
    from promptcache._events import Emitter
    from promptcache._stats import Counters
    from promptcache._tier import HotTier

__all__ = ["StoreGuard", "delete_prefix"]

log = logging.getLogger("promptcache")


class StoreGuard:
    """Runs one cache's store calls under a deadline and the breaker, and counts every fault.

    Args:
        store: The store; only its declared capabilities are read here (default deadline, error kinds).
        config: ``store_timeout``, ``breaker_threshold``, ``breaker_cooldown`` and ``fail_open``.
        counters: Where store errors, timeouts, skips and breaker transitions are counted.
        events: The cache's hook emitter; used only when it has hooks.
        monotonic: Monotonic seconds (breaker cool-down, call timing); injectable for tests.
    """

    def __init__(
        self,
        store: object,
        config: CacheConfig,
        counters: Counters,
        events: Emitter,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._counters = counters
        self._events = events
        self._mono = monotonic
        self.closed = False
        self.tier: HotTier | None = None  # emptied when the breaker opens
        self._admission = store.admission if isinstance(store, AdmittingStore) else None
        # One line per (operation, cause) per interval: a store that fails every call must not turn every
        # request into a log line. The count of held-back lines goes out with the next one.
        self.log = ThrottledLog(log, clock=monotonic)
        self.breaker = CircuitBreaker(
            config.breaker_threshold,
            config.breaker_cooldown,
            clock=monotonic,
            on_change=self._on_breaker_change,
        )
        self._guard = Guard(
            self.breaker,
            config.store_timeout or default_timeout_of(store),
            self._on_store_error,
            answered=store.is_reply_error if isinstance(store, ReplyErrorClassifier) else None,
            timed_out=store.is_timeout if isinstance(store, TimeoutClassifier) else None,
        )

    @property
    def timeout(self) -> float:
        """Seconds each store read (or lock) may take."""
        return self._guard.timeout

    @property
    def write_timeout(self) -> float:
        """Seconds each background write may take: ``write_timeout``, never less than a read's."""
        return max(self._config.write_timeout, self._guard.timeout)

    def is_timeout(self, exc: BaseException) -> bool:
        """True when a failed call's error was a timeout (the deadline's or the store client's own)."""
        return self._guard.is_timeout(exc)

    def close(self) -> None:
        """From now on, skip every store call (counted): the cache is closed."""
        self.closed = True
        if self.tier is not None:
            self.tier.close()

    def forget(self, store_key: str) -> None:
        """Drop ``store_key`` from the hot tier (this process is changing it in the store)."""
        if self.tier is not None:
            self.tier.discard(store_key)

    def count_skip(self) -> None:
        """Count a store call not made because the breaker is open."""
        self._counters.store_skipped += 1

    async def run(
        self,
        operation: str,
        call: Callable[[], Awaitable[Any]],
        *,
        exempt: bool = False,
        deadline: float | None = None,
    ) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, error)`` when the store failed (already counted) or
        ``(False, None)`` when it was skipped.

        Raises:
            StoreError: The store failed and ``fail_open`` is off.
        """
        if self.closed:
            self._counters.store_skipped += 1
            return False, None
        gate = None if self._admission is None else self._admission()
        if gate is not None:
            if gate.locked():  # every pooled connection is busy: queue here, outside the call's deadline
                try:
                    async with asyncio.timeout(self.write_timeout):
                        await gate.acquire()
                except TimeoutError as exc:
                    # Overload, not a store fault: counted and logged, but the breaker does not hear of it.
                    overload = TimeoutError(f"no free connection for {operation}")
                    self._on_store_error(operation, overload, True)  # noqa: FBT003 - positional callback flag
                    if not self._config.fail_open:
                        raise StoreError(f"store {operation} failed: no free connection") from exc
                    return False, exc
            else:
                await gate.acquire()  # free: returns at once
        # One coroutine frame less on the hit path: the guarded call is awaited right here.
        try:
            if self._events.hooks:
                return await self._run_timed(operation, call, exempt=exempt, deadline=deadline)
            try:
                return True, await self._guard.run(operation, call, exempt=exempt, deadline=deadline)
            except StoreSkipped:
                self._counters.store_skipped += 1
            except Exception as exc:
                # Counted and logged by the guard; only fail_open decides whether it reaches the caller.
                if not self._config.fail_open:
                    raise StoreError(f"store {operation} failed: {type(exc).__name__}") from exc
                return False, exc
            return False, None
        finally:
            if gate is not None:
                gate.release()

    async def _run_timed(
        self, operation: str, call: Callable[[], Awaitable[Any]], *, exempt: bool, deadline: float | None
    ) -> tuple[bool, Any]:
        """:meth:`run`, timed, reporting one store event per call to the hooks."""
        started = self._mono()
        try:
            found = await self._guard.run(operation, call, exempt=exempt, deadline=deadline)
        except StoreSkipped:
            self._counters.store_skipped += 1
            self._events.store(operation, "skipped")
        except Exception as exc:
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
            self._events.store(operation, outcome, self._mono() - started, type(exc).__name__)
            if not self._config.fail_open:
                raise StoreError(f"store {operation} failed: {type(exc).__name__}") from exc
            return False, exc
        else:
            self._events.store(operation, "ok", self._mono() - started)
            return True, found
        return False, None

    def _on_breaker_change(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._counters.breaker_opened += 1
            if self.tier is not None:
                self.tier.clear()
        elif new is BreakerState.CLOSED:
            self._counters.breaker_closed += 1
        if self._events.hooks:
            self._events.breaker(old.value, new.value)

    def _on_store_error(self, operation: str, exc: BaseException, timed_out: bool) -> None:  # noqa: FBT001
        if timed_out:
            self._counters.store_timeouts += 1
        else:
            self._counters.store_errors += 1
        self.log.warning(
            (operation, type(exc)),
            "promptcache: store %s %s (%s); answering without the cache",
            operation,
            "timed out" if timed_out else "failed",
            describe(exc),
        )


async def delete_prefix(  # noqa: PLR0913 - the deletion, its bound and label, what else it touches
    store: Any,  # noqa: ANN401 - a Store
    prefix: str,
    within: float,
    what: str,
    tier: HotTier | None = None,
    fence: tuple[str, bytes, float] | None = None,
) -> int:
    """``store.delete_prefix(prefix)`` within ``within`` seconds; every failure raised as StoreError.

    Invalidation errors are never swallowed: ``what`` ("invalidating agent 'x'") names it in the message.
    The keys also leave the hot ``tier`` before and after (this process sees its own invalidation at once).
    A ``fence`` (key, value, ttl) is written first, within the same time.
    """
    try:
        if tier is not None:
            tier.discard_prefix(prefix)
        async with asyncio.timeout(within):
            if fence is not None:
                await store.set(*fence)
            return int(await store.delete_prefix(prefix))
    except TimeoutError as exc:
        raise StoreError(f"{what} did not finish within {within} s") from exc
    except Exception as exc:
        raise StoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if tier is not None:
            tier.discard_prefix(prefix)
