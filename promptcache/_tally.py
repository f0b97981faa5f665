"""StoreTally: request counts kept in the store itself, so every worker's figures add up there.

With ``CacheConfig(count_in_store=True)`` the cache adds this hook to its own: each request event adds to
an in-process batch (a dict update, no I/O), and a background task per event loop flushes the batch
every :data:`FLUSH_INTERVAL` seconds with one ``add_counts`` call (Redis: pipelined ``HINCRBY`` on one
hash, one round trip), under the store guard like every store call (fail-open: a failed flush keeps its
counts and tries again an interval later, even if no request comes). A loop's shutdown and
:meth:`PromptCache.aclose` flush what is left. A hit never waits for, nor causes, a round trip.

The fields are ``<agent>\\t<model>\\t<name>``: ``hit``, ``miss``, ``bypass``, ``input_tokens`` and
``output_tokens`` (saved by hits) and ``latency_ms`` (upstream time hits saved). :func:`usage_rows`
turns them back into :class:`~promptcache.metrics.UsageRow` values; money is priced when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from promptcache._events import UNKNOWN, RequestEvent, Result
from promptcache._keys import counters_key
from promptcache._loops import PerLoop
from promptcache.backends._base import CountingStore, LoopHoldingStore
from promptcache.exceptions import ConfigError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from promptcache._config import CacheConfig
    from promptcache._events import CacheEvent
    from promptcache._guard import StoreGuard

__all__ = ["FLUSH_INTERVAL", "StoreTally", "parse_counts", "store_tally"]

log = logging.getLogger("promptcache")

FLUSH_INTERVAL: Final = 2.0  # seconds between a loop's flushes: one round trip per interval, not per hit
MAX_PENDING_FIELDS: Final = 10_000  # a failing store keeps at most this many fields waiting
SEP: Final = "\t"


@dataclass(slots=True)
class _LoopFlush:
    task: asyncio.Task[None] | None = None
    release: Callable[[], None] | None = None


class StoreTally:
    """A hook batching request counts into the store (see the module docstring).

    Args:
        store: A :class:`~promptcache.backends.CountingStore`.
        guard: Runs each flush under the write deadline and the breaker.
        namespace: The cache's namespace (the counters live under :func:`counters_key`).
    """

    def __init__(self, store: CountingStore, guard: StoreGuard, namespace: str) -> None:
        self._store = store
        self._guard = guard
        self.key = counters_key(namespace)
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()  # events come from every loop and thread the cache serves
        self._loops: PerLoop[_LoopFlush] = PerLoop(self._open_loop, self._finish_loop)
        self.flushes = 0

    def __call__(self, event: CacheEvent) -> None:
        if not isinstance(event, RequestEvent):
            return
        head = f"{event.agent_id or UNKNOWN}{SEP}{event.model or UNKNOWN}{SEP}"
        with self._lock:
            pending = self._pending
            name = head + event.result.value
            pending[name] = pending.get(name, 0) + 1
            if event.result is Result.HIT:
                for field, n in (
                    ("input_tokens", event.input_tokens),
                    ("output_tokens", event.output_tokens),
                    ("latency_ms", round(event.latency_saved * 1000)),
                ):
                    if n:
                        pending[head + field] = pending.get(head + field, 0) + n
        try:
            state = self._loops.get()
        except RuntimeError:  # no running loop (a hook called by hand): the next flush takes it
            return
        if state.task is None:
            state.task = asyncio.get_running_loop().create_task(self._flush_later(state))

    async def flush(self) -> None:
        """Add every pending count to the store now (one call); on failure they wait for the next."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        store = self._store
        try:
            ok, _ = await self._guard.run(
                "count", lambda: store.add_counts(self.key, batch), deadline=self._guard.write_timeout
            )
        except StoreError:  # fail_open=False raises it: a background flush has no caller to tell
            ok = False
        if ok:
            self.flushes += 1
            return
        with self._lock:  # keep them for the next flush, bounded
            for name, n in batch.items():
                if name in self._pending or len(self._pending) < MAX_PENDING_FIELDS:
                    self._pending[name] = self._pending.get(name, 0) + n

    async def aclose(self) -> None:
        """Flush in every loop that counted (each in its own loop), then once more here."""
        await self._loops.aclose()
        await self.flush()

    async def _flush_later(self, state: _LoopFlush) -> None:
        try:
            await asyncio.sleep(FLUSH_INTERVAL)
        finally:
            state.task = None
        await self.flush()
        with self._lock:
            kept = bool(self._pending)
        if kept and state.task is None:  # a failed flush retries on its own, traffic or not
            state.task = asyncio.get_running_loop().create_task(self._flush_later(state))

    def _open_loop(self) -> _LoopFlush:
        store = self._store
        return _LoopFlush(release=store.hold_loop() if isinstance(store, LoopHoldingStore) else None)

    async def _finish_loop(self, state: _LoopFlush) -> None:
        try:
            task = state.task
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.flush()
        finally:
            if state.release is not None:
                state.release()


def store_tally(store: object, guard: StoreGuard, config: CacheConfig) -> StoreTally | None:
    """The tally a cache adds to its hooks: with ``count_in_store`` on a store that can count, else None.

    Raises:
        ConfigError: ``count_in_store`` is on and the store keeps no counters.
    """
    if not config.count_in_store:
        return None
    if not isinstance(store, CountingStore):
        raise ConfigError(f"count_in_store=True needs a store that keeps counters; {store!r} does not")
    return StoreTally(store, guard, config.namespace)


def parse_counts(counts: Mapping[str, int]) -> dict[tuple[str, str], dict[str, int]]:
    """The stored fields grouped by (agent, model): ``{name: total}`` each."""
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for field, n in counts.items():
        parts = field.split(SEP)
        if len(parts) != 3:  # agent, model, name
            continue
        rows.setdefault((parts[0], parts[1]), {})[parts[2]] = n
    return rows
