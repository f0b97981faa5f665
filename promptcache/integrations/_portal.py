"""The portal: one background event loop thread through which sync callers use the async cache.

Why not ``asyncio.run`` per call: the cache's Redis pool, single-flight tasks and background writes must
outlive a single call, so they need one loop that keeps running. (anyio's BlockingPortal does the same;
this is the few lines we need without making anyio a runtime dependency.)
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator

__all__ = ["iterate", "portal_loop", "run"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def portal_loop() -> asyncio.AbstractEventLoop:
    """The portal's loop, started on first use in a daemon thread."""
    global _loop  # noqa: PLW0603 - one portal per process, created lazily on first sync use
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="promptcache-portal", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and block the calling (non-portal) thread until it is done."""
    loop = portal_loop()
    if threading.current_thread().name == "promptcache-portal":
        coro.close()
        raise RuntimeError("promptcache's sync API was called from inside its own portal loop")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def iterate(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Iterate an async byte iterator from sync code, one chunk per portal round trip."""
    try:
        while True:
            try:
                yield run(_next(stream))
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            run(closer())


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await stream.__anext__()
