"""The embedded in-process store: a bounded LRU with TTLs on a monotonic clock.

One lock guards the dictionary: the store is shared by every event loop and thread of the process (async
callers on their own loops, sync SDK clients reading on their own threads through :meth:`get_now`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Self

from promptcache._validate import positive

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["MemoryStore"]


class MemoryStore:
    """A dict-backed LRU store for one process; nothing survives the process.

    Args:
        max_entries: Least recently used entries are evicted beyond this.
        clock: Monotonic seconds; injectable for tests.

    .. versionadded:: 0.1.0
    """

    default_timeout: float = 0.05  # a dict lookup; over 50 ms the event loop itself is in trouble

    def __init__(self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = int(positive(max_entries, "max_entries"))
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._counts: dict[str, dict[str, int]] = {}  # counters never expire nor count as entries

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._data)}, max_entries={self.max_entries})"

    def __len__(self) -> int:
        return len(self._data)

    def get_now(self, key: str) -> bytes | None:
        """The live value under ``key``, at once, from any thread (an ImmediateStore)."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[0]

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        item = (bytes(value), self._clock() + positive(ttl, "ttl"))
        with self._lock:
            self._put(key, item)

    def _put(self, key: str, item: tuple[bytes, float]) -> None:  # under the lock
        self._data[key] = item
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def delete(self, key: str) -> bool:
        with self._lock:
            item = self._data.pop(key, None)
        return item is not None and item[1] > self._clock()

    async def set_fenced(
        self, key: str, value: bytes, ttl: float, fences: Sequence[str], after: float
    ) -> bool:
        now = self._clock()
        item = (bytes(value), now + positive(ttl, "ttl"))
        with self._lock:
            for name in fences:
                fence = self._data.get(name)
                if fence is not None and fence[1] > now and _time_of(fence[0]) > after:
                    return False
            self._put(key, item)
        return True

    async def delete_if(self, key: str, value: bytes) -> bool:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] != value:
                return False
            del self._data[key]
        return True

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        now = self._clock()
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            live = sum(1 for k in doomed if self._data[k][1] > now)  # expired entries were already gone
            for k in doomed:
                del self._data[k]
        return live

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            fields = self._counts.setdefault(key, {})
            for name, n in counts.items():
                fields[name] = fields.get(name, 0) + int(n)

    async def read_counts(self, key: str) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get(key, {}))

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix``, read-only: no LRU reordering (for the CLI and tests)."""
        now = self._clock()
        with self._lock:
            return [k for k, (_, expires) in self._data.items() if k.startswith(prefix) and expires > now]

    async def aclose(self) -> None:
        with self._lock:
            self._data.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _time_of(value: bytes) -> float:
    """A fence's recorded time (-inf for a value that is not one)."""
    try:
        return float(value)
    except ValueError:
        return float("-inf")
