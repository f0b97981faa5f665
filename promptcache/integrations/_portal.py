"""The portal: one process-wide event loop in a background thread, through which sync callers use the cache.

Why not ``asyncio.run`` per call: the cache's Redis pool, single-flight tasks and background writes must
outlive a single call, so they need one loop that keeps running. The loop runs anyio's
:class:`~anyio.from_thread.BlockingPortal` (asyncio backend: the cache's Redis client is asyncio), started
lazily on first use and never stopped.

Why not :func:`anyio.from_thread.start_blocking_portal`: it is a context manager that stops the portal on
exit, and in the anyio releases we support (4.4 and later) its thread may be one the interpreter joins at
exit. A portal that lives as long as the process needs a daemon thread, so we start one ourselves and run
the same ``BlockingPortal`` in it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator

    from anyio.abc import TaskGroup

__all__ = ["call", "close_soon", "iterate", "portal", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Running:
    portal: BlockingPortal
    group: TaskGroup  # for cleanups scheduled from the portal thread itself (the portal refuses those)
    thread: threading.Thread


_lock = threading.Lock()
_running: _Running | None = None


def _start() -> _Running:
    global _running  # noqa: PLW0603 - the one process-wide portal, started on first use
    with _lock:
        if _running is None:
            started: Future[tuple[BlockingPortal, TaskGroup]] = Future()
            thread = threading.Thread(target=_serve, args=(started,), name="promptcache-portal", daemon=True)
            thread.start()
            portal_, group = started.result()
            _running = _Running(portal_, group, thread)
        return _running


def _serve(started: Future[tuple[BlockingPortal, TaskGroup]]) -> None:
    async def main() -> None:
        async with BlockingPortal() as portal_, anyio.create_task_group() as group:
            started.set_result((portal_, group))
            await portal_.sleep_until_stopped()

    try:
        anyio.run(main, backend="asyncio")
    except BaseException as exc:
        if not started.done():  # failed to start: the caller waiting in _start() gets the error
            started.set_exception(exc)
        raise


def portal() -> BlockingPortal:
    """The process-wide portal, started on first use in a daemon thread."""
    return _start().portal


def _on_portal() -> bool:
    running = _running
    return running is not None and threading.current_thread() is running.thread


def call(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``await fn(*args)`` on the portal loop and block the calling (non-portal) thread until it is done.

    Exceptions reach the caller as raised, ``BaseException`` ones too (pytest's outcome exceptions: the
    plugin's replay miss); inside the portal they would stop its task group.

    Raises:
        RuntimeError: Called from the portal thread itself (it would wait for itself forever).
    """
    running = _start()
    if _on_portal():
        raise RuntimeError("promptcache's sync API was called from inside its own portal loop")
    result: T | _Raised = running.portal.call(_outcome, fn, *args)
    if isinstance(result, _Raised):
        raise result.exc
    return result


@dataclass(frozen=True, slots=True)
class _Raised:
    exc: BaseException


async def _outcome(fn: Callable[..., Awaitable[T]], *args: object) -> T | _Raised:
    try:
        return await fn(*args)
    except Exception:
        raise  # the portal hands these to the caller itself
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:  # noqa: BLE001 - carried to the caller's thread, raised there
        return _Raised(exc)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """:func:`call` for a coroutine object already created (``PromptCache.close()`` uses this form)."""

    async def wait() -> T:
        return await coro

    if _on_portal():
        coro.close()
    return call(wait)


def close_soon(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a cleanup coroutine without ever blocking the portal or a dying interpreter.

    From the portal thread (e.g. a stream collected there) it is scheduled; while the interpreter shuts
    down, or once the portal is gone, it is dropped (there is nothing left to clean up for); otherwise it
    runs to completion.
    """
    running = _running
    if running is None or not running.thread.is_alive() or sys.is_finalizing():
        coro.close()
        return
    if _on_portal():
        running.group.start_soon(_quietly, coro)
        return
    with contextlib.suppress(Exception):  # cleanup only: the stream's own error, if any, was raised already
        run(coro)


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    with contextlib.suppress(Exception):  # cleanup only; an error here would stop the portal's task group
        await coro


def iterate(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Iterate an async byte iterator from sync code, one chunk per portal round trip."""
    try:
        while True:
            try:
                yield call(anext, stream)
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            close_soon(closer())
