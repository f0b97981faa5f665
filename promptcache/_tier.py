"""The hot tier: stored entries kept in process, served only while Redis says they are current.

A bounded (in bytes) LRU of the raw bytes of entries this process read from the store, in front of a store
that pushes invalidations (:class:`~promptcache.backends.TrackingStore`: Redis's own client-side caching
with ``CLIENT TRACKING``). Every operation that could serve or keep an entry first applies what the store
pushed since the last one, so:

* an entry is served only while this process holds a live subscription; a lost one (disconnect, Redis
  restarted, ``CLIENT KILL``, silence past the lease) or a new one empties the tier before it serves again;
* an overwrite, a refresh, an invalidation or an expiry by any process reaches every process's tier through
  Redis; this process's own writes also drop the key here at once;
* a read that raced a change never fills the tier: a key invalidated while its store read was in flight
  (or any clear meanwhile) is not kept;
* the entry's own expiry (the same instant as the store TTL) is checked by the decoder on every hit.

Entries are kept as bytes, decoded per hit: a caller that changes the answer it got changes only its copy.
An SDK hit (:meth:`HotTier.rendered`) is the exception: the bytes it sends are immutable, so they are made
once per kept entry and form, charged to the same bound, and go with the entry.
One tier serves every thread and event loop of the process (one lock, held for dictionary work only).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Final, TypeAlias

from promptcache._entry import Entry, decode_entry
from promptcache.backends import TrackingStore
from promptcache.exceptions import EntryError

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptcache._config import CacheConfig
    from promptcache._keys import CacheKey
    from promptcache.backends import Invalidations

__all__ = ["HotTier", "Render", "Rendered", "Ticket", "pause_due", "tier_for"]

Ticket = tuple[int, int]  # (clears so far, changes of the key while read): what a read began with
# A hit as sent: the entry with its answer left out (what counting it needs) and the answer's bytes.
Rendered = tuple[Entry, bytes]
# An integration's bytes of an entry's answer (None: the entry is not of the kind it sends).
Render: TypeAlias = "Callable[[Entry], bytes | None]"

PAUSE_EVERY: Final = 16  # tier hits between turns given to the event loop
_hits = itertools.count(1)
_OVERHEAD: Final = 200  # bytes charged per entry beyond its value and key (dict slot, tuple, str header)


class HotTier:
    """Entries by store key, bounded by ``max_bytes``, kept correct by ``source``'s invalidations.

    Args:
        source: What the store pushed: ``poll() -> (session, keys)``; session 0 means not live.
        max_bytes: The bound on kept values, keys and per-entry overhead together.
    """

    def __init__(self, source: Invalidations, max_bytes: int) -> None:
        self._source = source
        self._max = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._renders: dict[str, dict[object, Rendered]] = {}  # by store key, then by form
        self._bytes = 0
        self._session = 0
        self._epoch = 0  # bumped by every clear: a read begun before it must not fill the tier
        self._reading: dict[str, int] = {}  # store reads in flight per key
        self._changes: dict[str, int] = {}  # invalidations of each such key while it was being read
        self.evictions = 0
        # Told each key the store pushed as changed, and None when anything may have changed (a lost
        # subscription, a flush); under the tier's lock, on any thread (the single-flight's hook).
        self.on_change: Callable[[str | None], None] | None = None

    def __repr__(self) -> str:
        return f"HotTier({len(self._entries)} entries, {self._bytes} of {self._max} bytes)"

    @property
    def size(self) -> int:
        """Bytes charged now (values, keys, rendered hits, per-entry overhead); never above ``max_bytes``."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, store_key: str) -> bytes | None:
        """The kept bytes under ``store_key`` when the subscription is live, else None."""
        if store_key not in self._entries:
            # What Redis pushed can only drop entries, never add one: a key not kept now is not kept
            # after the poll either, so its lookup skips the poll (the store read that follows takes its
            # ticket with begin(poll=False), and offer polls before keeping anything).
            return None
        with self._lock:
            if not self._sync():
                return None
            raw = self._entries.get(store_key)
            if raw is not None:
                self._entries.move_to_end(store_key)
            return raw

    def refresh(self) -> bool:
        """Apply what the store pushed now (lookups of keys not kept skip it); True while live."""
        with self._lock:
            return self._sync()

    def entry(self, key: CacheKey, now: float) -> Entry | None:
        """The kept entry for ``key``, decoded and checked as a store value is, or None (an expired or
        unreadable one is dropped)."""
        raw = self.get(key.store_key)
        return None if raw is None else self._decoded(key, key.store_key, raw, now)

    def _decoded(self, key: CacheKey, store_key: str, raw: bytes, now: float) -> Entry | None:
        """``raw`` decoded and checked as a store value is; an expired or unreadable one is dropped."""
        try:
            found = decode_entry(raw, key, now, from_tier=True)
        except EntryError:
            found = None
        if found is None:
            self.discard(store_key)
        return found

    def rendered(
        self, key: CacheKey, store_key: str, now: float, form: object, render: Render
    ) -> Rendered | None:
        """The kept entry under ``store_key`` (an entry of ``key``) as ``render`` sends it in ``form`` (any
        hashable naming the render), or None. Rendered once per kept entry and form: the bytes go with
        the entry, so a change of it (pushed, or this process's) drops them too. ``render`` returning
        None (not the asked kind) keeps nothing."""
        if store_key not in self._entries:
            return None
        with self._lock:
            if not self._sync() or (raw := self._entries.get(store_key)) is None:
                return None
            self._entries.move_to_end(store_key)
            done = self._renders[store_key].get(form) if store_key in self._renders else None
        if done is not None:
            if done[0].expires_at > now:
                return done
            self.discard(store_key)
            return None
        entry = self._decoded(key, store_key, raw, now)
        if entry is None or (payload := render(entry)) is None:
            return None
        done = (replace(entry, body=None, chunks=None, request=None, route=None), payload)
        cost = len(payload) + _OVERHEAD
        with self._lock:  # kept once, only if the entry is the one rendered and it fits beside the rest
            fresh = form not in self._renders.get(store_key, ())
            if fresh and self._entries.get(store_key) is raw and self._make_room(cost, store_key):
                self._renders.setdefault(store_key, {})[form] = done
                self._bytes += cost
        return done

    def begin(self, store_key: str, *, poll: bool = True) -> Ticket | None:
        """Before a store read: a ticket for :meth:`offer`, or None when nothing may be kept now.

        ``poll=False`` (the read path, right after its lookup) skips the poll while the last one found
        the subscription live. What was pushed meanwhile is applied by offer's own poll while the key is
        marked as being read, so it counts as a change during the read and nothing is kept: the ticket
        errs only on the safe side.
        """
        with self._lock:
            live = self._sync() if poll or not self._session else True  # else: live at the last poll
            if not live:
                return None
            self._reading[store_key] = self._reading.get(store_key, 0) + 1
            return self._epoch, self._changes.get(store_key, 0)

    def unchanged(self, store_key: str, ticket: Ticket | None) -> bool:
        """Whether nothing changed ``store_key`` since the read ``ticket`` was given for began (True
        without a ticket: nothing is known). A caller may share that read's answer only then: a read
        begun before a change that has since returned would hand it the old answer."""
        if ticket is None:
            return True
        with self._lock:
            self._sync()
            return ticket == (self._epoch, self._changes.get(store_key, 0))

    def offer(self, store_key: str, raw: bytes | None, ticket: Ticket) -> None:
        """After the read ``ticket`` was given for: keep ``raw`` unless the key changed meanwhile.

        Always call it once per ticket (``raw=None`` when nothing is to be kept: absent, or not decodable).
        """
        with self._lock:
            # A value too big to keep needs no poll (nothing is kept, so nothing can be stale); the next
            # tier operation applies what was pushed.
            live = raw is not None and self._fits(store_key, raw) and self._sync()
            left = self._reading.get(store_key, 1) - 1
            changed = ticket != (self._epoch, self._changes.get(store_key, 0))
            if left:
                self._reading[store_key] = left
            else:
                self._reading.pop(store_key, None)
                self._changes.pop(store_key, None)
            if raw is None or not live or changed:
                return
            self._keep(store_key, raw)

    def discard(self, store_key: str) -> None:
        """Forget ``store_key`` now (this process is about to change or delete it)."""
        with self._lock:
            self._drop(store_key)

    def discard_prefix(self, prefix: str) -> None:
        """Forget every key starting with ``prefix`` (an invalidation by this process)."""
        with self._lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                self._drop(key)
            for key in [k for k in self._reading if k.startswith(prefix)]:
                self._changes[key] = self._changes.get(key, 0) + 1

    def clear(self) -> None:
        """Forget everything (the store became unreachable: the breaker opened)."""
        with self._lock:
            self._clear()

    def close(self) -> None:
        """Forget everything and drop the subscription (the cache is closed)."""
        with self._lock:
            self._clear()
        self._source.close()

    # -- under the lock ----------------------------------------------------------------------------

    def _sync(self) -> bool:
        session, keys = self._source.poll()
        told = self.on_change
        if session != self._session or keys is None:
            lost = self._session != 0 or keys is None  # a first subscription has missed nothing it knew
            self._session = session
            self._clear()
            if told is not None and lost:
                told(None)
        else:
            for key in keys:
                self._drop(key)
                if told is not None:
                    told(key)
        return session != 0

    def _fits(self, store_key: str, raw: bytes) -> bool:
        return len(raw) + len(store_key) + _OVERHEAD <= self._max

    def _keep(self, store_key: str, raw: bytes) -> None:
        cost = len(raw) + len(store_key) + _OVERHEAD
        if cost > self._max:
            return
        self._drop(store_key)
        self._make_room(cost)
        self._entries[store_key] = raw
        self._bytes += cost

    def _make_room(self, cost: int, spare: str | None = None) -> bool:
        """Evict least recently used entries until ``cost`` more bytes fit; never ``spare`` (False then)."""
        entries = self._entries
        while entries and self._bytes + cost > self._max:
            old_key = next(iter(entries))
            if old_key == spare:
                return False
            self._bytes -= self._cost_of(old_key, entries.pop(old_key))
            self.evictions += 1
        return self._bytes + cost <= self._max

    def _cost_of(self, store_key: str, raw: bytes) -> int:
        """What a removed entry was charged, with its renders (which go with it)."""
        renders = self._renders.pop(store_key, None) or {}
        return len(raw) + len(store_key) + _OVERHEAD + sum(len(r[1]) + _OVERHEAD for r in renders.values())

    def _drop(self, store_key: str) -> None:
        raw = self._entries.pop(store_key, None)
        if raw is not None:
            self._bytes -= self._cost_of(store_key, raw)
        if store_key in self._reading:
            self._changes[store_key] = self._changes.get(store_key, 0) + 1

    def _clear(self) -> None:
        self._entries.clear()
        self._renders.clear()
        self._bytes = 0
        self._epoch += 1


def tier_for(store: object, config: CacheConfig) -> HotTier | None:
    """The hot tier for a cache on ``store``: only where the store pushes invalidations (Redis), and
    ``config.hot_tier_bytes`` is not 0."""
    if not config.hot_tier_bytes or not isinstance(store, TrackingStore):
        return None
    source = store.invalidations(f"{config.namespace}:")
    return None if source is None else HotTier(source, config.hot_tier_bytes)


def pause_due() -> bool:
    """True once every :data:`PAUSE_EVERY` tier hits. A tier hit awaits nothing, so a task answered from
    the tier over and over would never let the event loop run its other tasks; the caller then awaits
    ``asyncio.sleep(0)`` (a Redis hit yields at every GET)."""
    return next(_hits) % PAUSE_EVERY == 0
