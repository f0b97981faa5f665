"""Stores behind one narrow async Protocol (:class:`promptcache.backends.Store`).

One module per store: :mod:`.memory` (embedded, bounded LRU), :mod:`.sqlite` (embedded, persistent, safe
for several processes), :mod:`.redis` (``redis.asyncio``, pooled). They can be faked without inheritance.
"""

from __future__ import annotations

from promptcache.backends._base import BatchReadStore as BatchReadStore
from promptcache.backends._base import ComparingStore as ComparingStore
from promptcache.backends._base import CountingStore as CountingStore
from promptcache.backends._base import FencingStore as FencingStore
from promptcache.backends._base import ImmediateStore as ImmediateStore
from promptcache.backends._base import Invalidations as Invalidations
from promptcache.backends._base import ListingStore as ListingStore
from promptcache.backends._base import LockingStore as LockingStore
from promptcache.backends._base import ReplyErrorClassifier as ReplyErrorClassifier
from promptcache.backends._base import Store as Store
from promptcache.backends._base import TimedStore as TimedStore
from promptcache.backends._base import TimeoutClassifier as TimeoutClassifier
from promptcache.backends._base import TrackingStore as TrackingStore

__all__ = [
    "BatchReadStore",
    "ComparingStore",
    "CountingStore",
    "FencingStore",
    "ImmediateStore",
    "Invalidations",
    "ListingStore",
    "LockingStore",
    "ReplyErrorClassifier",
    "Store",
    "TimedStore",
    "TimeoutClassifier",
    "TrackingStore",
]
