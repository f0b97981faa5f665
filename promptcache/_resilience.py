"""Per-operation deadlines and the circuit breaker around every store call.

The breaker's decisions are plain methods on a small state machine with an injectable clock, so they are
tested without any store. :class:`Guard` is the async shell: it skips the store while the breaker is open
(no added latency), runs each call under its own deadline, and turns failures into ``None`` plus a count,
a metric event and a log line — never a silent ``None``.

States::

    closed --(threshold consecutive failures or slow calls)--> open
    open   --(cool-down elapsed; the next call is the probe)--> half_open
    half_open --(probe succeeds)--> closed     half_open --(probe fails)--> open
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TypeVar

from promptcache._validate import positive

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["BreakerState", "CircuitBreaker", "Guard", "StoreSkipped"]

log = logging.getLogger("promptcache")

T = TypeVar("T")

DEFAULT_FAILURE_THRESHOLD: Final = 5
DEFAULT_COOLDOWN: Final = 5.0
# Deadlines and event-loop lag (see _Deadline): a loop turn longer than this share of the deadline is
# the loop's lag; a store call gets this many free-running turns past its deadline before it is cancelled,
# and never more than MAX_STRETCH times its deadline in all.
LAG_SHARE: Final = 0.04
GRACE_TURNS: Final = 10
MAX_STRETCH: Final = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class StoreSkipped(Exception):  # noqa: N818 - a signal, not an error a caller sees
    """Internal: the breaker is open (or a probe is already out), so the store was not called."""


class CircuitBreaker:
    """Counts consecutive failures and opens after ``threshold`` of them.

    Args:
        threshold: Consecutive failures (errors or deadline overruns) that open the breaker.
        cooldown: Seconds the breaker stays open before letting one probe through.
        clock: Monotonic seconds; injectable for tests.
        on_change: Called with ``(old, new)`` on every transition.
    """

    def __init__(
        self,
        threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.threshold = int(positive(threshold, "breaker threshold"))
        self.cooldown = positive(cooldown, "breaker cooldown", allow_zero=True)
        self._clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        # Which opening of the breaker we are in: a call's verdict counts only in the epoch it started in,
        # so a call that was already in flight when the breaker opened cannot close it (only the half-open
        # probe can) nor count twice towards opening it.
        self.epoch = 0
        self._opened_at = 0.0
        self._probe_out = False

    def allow(self) -> bool:
        """Whether a store call may go out now. In half-open state, only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.cooldown:
                return False
            self._move(BreakerState.HALF_OPEN)
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def is_open(self) -> bool:
        """True while calls are being skipped (open, cool-down not yet over); no side effects."""
        return self.state is BreakerState.OPEN and self._clock() - self._opened_at < self.cooldown

    def success(self, epoch: int | None = None) -> None:
        """A call succeeded; ``epoch`` is :attr:`epoch` when it started (None: the current one)."""
        if epoch is not None and epoch != self.epoch:
            return  # started before the breaker last opened: says nothing about the store now
        self.failures = 0
        self._probe_out = False
        if self.state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)

    def failure(self, epoch: int | None = None) -> None:
        """A call failed; ``epoch`` is :attr:`epoch` when it started (None: the current one)."""
        if epoch is not None and epoch != self.epoch:
            return  # the breaker has opened since this call started; its failure is already priced in
        self.failures += 1
        self._probe_out = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self._opened_at = self._clock()
            self.epoch += 1
            self._move(BreakerState.OPEN)

    def release_probe(self) -> None:
        """A probe ended without a verdict (the caller was cancelled): let another one go."""
        self._probe_out = False

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if new is BreakerState.OPEN:
            log.warning("promptcache: store circuit breaker opened after %d failures", self.failures)
        elif new is BreakerState.CLOSED:
            log.info("promptcache: store circuit breaker closed; store in use again")
        if self._on_change is not None:
            self._on_change(old, new)


class _Watchdog:
    """One event loop's deadline timer, shared by every store call of one guard in that loop.

    Scheduling and cancelling a timer per call costs several microseconds on the hit path (a TimerHandle,
    a push onto the loop's heap, cancelled handles left there until the loop sweeps them). Instead each
    call registers its due time here, and one timer, armed at the earliest due time of the calls in
    progress, looks at them when it fires; a call that ended is simply gone from :attr:`calls`, and a
    timer that finds nothing due re-arms for the earliest due time left (or not at all). In a steady flow
    of calls it fires about once per deadline, not once per call.
    """

    __slots__ = ("armed", "calls", "handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: dict[_Deadline, None] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.armed = math.inf  # when the timer fires (inf: not armed)

    def arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = when
        self.handle = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.handle, self.armed = None, math.inf
        now = self.loop.time()
        nearest = math.inf
        for call in list(self.calls):
            if call.due <= now:
                del self.calls[call]
                call.expire()
            elif call.due < nearest:
                nearest = call.due
        if nearest < math.inf:
            self.arm(nearest)


class _Deadline:
    """Cancels ``task`` once ``limit`` seconds have run out on a loop that was free to run it.

    Why not asyncio.timeout: it is implemented in Python on 3.11 and costs several microseconds per call
    on the hit path. This is the same mechanism (a timer that cancels the task; the caller uses uncancel to
    tell this cancellation from another), on the loop's shared :class:`_Watchdog` timer, plus an allowance
    for event-loop lag, which alone must not count as a store fault: a reply that has arrived needs a few
    loop turns to reach its task (the selector poll, the protocol callback, the task's wake-up), and a new
    connection a few round trips. So when ``limit`` runs out the deadline looks again after each of
    :data:`GRACE_TURNS` loop turns, and while those turns are sluggish (each longer than :data:`LAG_SHARE`
    of the limit: a CPU-bound neighbour, a burst of requests, an import) it keeps waiting, up to
    :data:`MAX_STRETCH` times the limit in all. On a loop that turns freely, a hung store is cancelled a
    few microseconds after its deadline.
    """

    __slots__ = ("_grace", "_handle", "_last", "_limit", "_stop", "_task", "_watchdog", "due", "expired")

    def __init__(self, task: asyncio.Task[Any], limit: float, watchdog: _Watchdog) -> None:
        self._task = task
        self._limit = limit
        self._watchdog = watchdog
        self.due = due = watchdog.loop.time() + limit
        self._handle: asyncio.Handle | None = None
        self.expired = False
        watchdog.calls[self] = None
        if due < watchdog.armed:
            watchdog.arm(due)

    def expire(self) -> None:
        """The due time has come (called by the watchdog): check the loop's lag, then cancel the task."""
        self._stop = self.due + self._limit * (MAX_STRETCH - 1)
        self._last = self.due  # when the loop was last seen turning (a late first check is a sluggish turn)
        self._grace = GRACE_TURNS
        self._check()

    def _check(self) -> None:
        loop = self._watchdog.loop
        now = loop.time()
        if now < self._stop:
            if now - self._last > self._limit * LAG_SHARE:
                self._grace = GRACE_TURNS  # that turn was the loop's lag, not the store's: start over
            self._last = now
            if self._grace:
                self._grace -= 1
                self._handle = loop.call_soon(self._check)
                return
        self._handle = None
        self.expired = True
        self._task.cancel()

    def cancel(self) -> None:
        self._watchdog.calls.pop(self, None)
        if self._handle is not None:
            self._handle.cancel()


class Guard:
    """Runs store calls under a deadline and the breaker; classifies every outcome.

    Args:
        breaker: The breaker shared by all calls to one store.
        timeout: Seconds each call may take.
        on_error: Called with ``(operation, exception, timed_out)`` for every failed call.
        answered: Tells errors the store replied with (it is up) from failures to reach it.
        timed_out: Recognises the store client's own timeout type, beside the builtin TimeoutError.
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        timeout: float,
        on_error: Callable[[str, BaseException, bool], None],
        *,
        answered: Callable[[BaseException], bool] | None = None,
        timed_out: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.breaker = breaker
        self.timeout = positive(timeout, "store timeout")
        self._on_error = on_error
        # An error the server itself replied with (Redis OOM, WRONGTYPE) says the store is up: it is
        # counted and logged, but does not feed the breaker, so one odd key cannot stop every other hit.
        self._answered = answered
        self._timed_out = timed_out
        # Each loop's deadline timer (loops differ by thread; each entry is touched only in its own loop).
        self._watchdogs: dict[asyncio.AbstractEventLoop, _Watchdog] = {}

    def _watchdog(self, loop: asyncio.AbstractEventLoop) -> _Watchdog:
        """``loop``'s watchdog, made on first use there (closed loops' ones dropped then)."""
        for old in [old for old in list(self._watchdogs) if old.is_closed()]:
            self._watchdogs.pop(old, None)
        watchdog = self._watchdogs[loop] = _Watchdog(loop)
        return watchdog

    def is_timeout(self, exc: BaseException) -> bool:
        """True for a timeout, whoever noticed it: this guard's deadline or the store client's own."""
        # redis-py's TimeoutError is not the builtin one; the store says which of its errors are timeouts.
        return isinstance(exc, TimeoutError) or (self._timed_out is not None and self._timed_out(exc))

    async def run(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        exempt: bool = False,
        deadline: float | None = None,
    ) -> T:
        """Run ``call()``; raise StoreSkipped if the breaker refuses, or the store's error after counting it.

        Cancellation of the caller propagates unchanged (and frees a half-open probe slot). An ``exempt``
        call (releasing a lock this process holds) goes out whatever the breaker says and does not feed it:
        a lock left behind would make other processes wait, which costs more than one short call.
        ``deadline`` overrides the guard's deadline for this call (background writes get a longer one).
        """
        breaker = self.breaker
        if exempt:
            epoch = -1  # a verdict in no epoch: success() and failure() ignore it
        elif not breaker.allow():
            raise StoreSkipped(operation)
        else:
            epoch = breaker.epoch
        # The deadline: see _Deadline (why not asyncio.timeout, and the allowances for a busy loop).
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - store calls always run inside a task
            raise RuntimeError("store calls must run inside an asyncio task")
        cancelling = task.cancelling()
        limit = self.timeout if deadline is None else deadline
        loop = task.get_loop()
        watchdog = self._watchdogs.get(loop) or self._watchdog(loop)
        timer = _Deadline(task, limit, watchdog)
        try:
            result = await call()
        except asyncio.CancelledError as exc:
            if timer.expired and task.uncancel() <= cancelling:
                overrun = TimeoutError(f"store {operation} exceeded {limit * 1000:.0f} ms")
                breaker.failure(epoch)
                self._on_error(operation, overrun, True)  # noqa: FBT003 - positional callback flag
                raise overrun from exc
            if not exempt:
                breaker.release_probe()
            raise
        except Exception as exc:
            if self._answered is not None and self._answered(exc):
                breaker.success(epoch)
                self._on_error(operation, exc, False)  # noqa: FBT003
                raise
            breaker.failure(epoch)
            self._on_error(operation, exc, self.is_timeout(exc))
            raise
        finally:
            timer.cancel()
        breaker.success(epoch)
        return result
