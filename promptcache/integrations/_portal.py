"""The portal: one background event loop thread through which sync callers use the async cache.

Why not ``asyncio.run`` per call: the cache's Redis pool, single-flight tasks and background writes must
outlive a single call, so they need one loop that keeps running. (anyio's BlockingPortal does the same;
this is the few lines we need without making anyio a runtime dependency.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator

__all__ = ["close_soon", "iterate", "portal_loop", "run"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_background: set[asyncio.Task[Any]] = set()


def portal_loop() -> asyncio.AbstractEventLoop:
    """The portal's loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="promptcache-portal", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def _on_portal() -> bool:
    return threading.current_thread() is _thread


def close_soon(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a cleanup coroutine without ever blocking the portal or a dying interpreter.

    From the portal thread (e.g. a stream collected there) it is scheduled; while the interpreter
    shuts down, or once the portal is gone, it is dropped (there is nothing left to clean up for);
    otherwise it runs to completion.
    """
    if _loop is None or _thread is None or not _thread.is_alive() or sys.is_finalizing():
        coro.close()
        return
    if _on_portal():
        task = _loop.create_task(coro)
        _background.add(task)  # keep a reference until it is done
        task.add_done_callback(_background.discard)
        return
    with contextlib.suppress(Exception):  # cleanup only: the stream's own error, if any, was raised already
        run(coro)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and block the calling (non-portal) thread until it is done."""
    loop = portal_loop()
    if _on_portal():
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
            close_soon(closer())


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await stream.__anext__()
