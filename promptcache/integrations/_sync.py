"""The one sync adapter: answer a sync transport's request with an async handler, run on the portal.

Every request handler in promptcache is async (the caching transport's core, the pytest recorder). A sync
SDK client reaches it here: :func:`handle_sync` runs the handler on promptcache's portal loop
(:mod:`._portal`), sending upstream with the sync inner transport on a worker thread and streaming its
body back across the thread boundary chunk by chunk, as it arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread

from promptcache.integrations import _portal
from promptcache.integrations._http import httpx_module

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    Send = Callable[[Any], Awaitable[Any]]
    Handler = Callable[[Any, Send], Awaitable[Any]]

__all__ = ["handle_sync"]


def handle_sync(handler: Handler, request: Any, send: Callable[[Any], Any]) -> Any:  # noqa: ANN401
    """``handler(request, async_send)`` run on the portal, for a sync transport whose own send is ``send``.

    The response comes back with a sync byte stream: the bytes already read on the portal, or a stream
    that pulls each chunk through the portal.
    """

    async def send_async(req: Any) -> Any:  # noqa: ANN401
        """Send with the sync transport on a worker thread; expose its body as an async stream."""
        upstream = await anyio.to_thread.run_sync(send, req)
        upstream.stream = _async_stream(httpx_module(upstream), upstream.stream)
        return upstream

    answer = _portal.call(handler, request, send_async)
    mod = httpx_module(answer)
    if not isinstance(answer.stream, mod.SyncByteStream):
        content = getattr(answer, "_content", None)  # already read on the portal: serve the bytes
        answer.stream = mod.ByteStream(content) if content is not None else _sync_stream(mod, answer.stream)
    return answer


def _async_stream(mod: Any, sync_stream: Any) -> Any:  # noqa: ANN401
    class ThreadedStream(mod.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunks = iter(sync_stream)
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk

        async def aclose(self) -> None:
            await anyio.to_thread.run_sync(sync_stream.close)

    return ThreadedStream()


def _sync_stream(mod: Any, async_stream: Any) -> Any:  # noqa: ANN401
    class PortalStream(mod.SyncByteStream):  # type: ignore[misc]
        def __init__(self) -> None:
            self._chunks: Iterator[bytes] | None = None

        def __iter__(self) -> Iterator[bytes]:
            self._chunks = _portal.iterate(aiter(async_stream))
            return self._chunks

        def close(self) -> None:
            if self._chunks is not None:
                self._chunks.close()  # type: ignore[attr-defined]  # a generator: runs its cleanup now
            else:
                _portal.close_soon(async_stream.aclose())

    return PortalStream()
