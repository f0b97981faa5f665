"""A test driver for wrapped SDK clients: one blocking interface over a sync or an async client.

Shared by the OpenAI and Anthropic SDK tests, so each of their tests runs on both kinds of client.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from typing import TYPE_CHECKING, Any

from promptcache.integrations import _portal

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from promptcache import PromptCache


def sdk_http(sdk: ModuleType) -> Any:
    """The HTTP library (``httpx`` or ``httpx2``) that this release of ``sdk`` builds its clients on.

    Read from the SDK's public ``DefaultHttpxClient``: current releases subclass ``httpx2.Client``, older
    ones ``httpx.Client``. Tests build mock transports and requests with it, so they run on either.
    """
    for base in sdk.DefaultHttpxClient.__mro__:
        top = base.__module__.partition(".")[0]
        if top in {"httpx", "httpx2"}:
            return importlib.import_module(top)
    raise AssertionError(f"{sdk.__name__}.DefaultHttpxClient is built on neither httpx nor httpx2")


def raised_by(action: Callable[[], object]) -> type[BaseException]:
    """The type of the exception ``action`` raises: what the bare SDK does, for a wrapped client to match.

    Tests never write an SDK's or httpx's exception type into an assertion (releases change them); they
    run the same scenario on an unwrapped client and require the wrapped one to raise the same type.
    """
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - any type: the point is to learn which one
        return type(exc)
    raise AssertionError("the bare SDK raised nothing in a scenario meant to fail")


class SdkDriver:
    """One wrapped client, sync or async, behind one blocking interface.

    The async client and its cache live on a private event loop (an ``asyncio.Runner``); the sync client
    runs its cache on promptcache's portal loop, as it does in production.
    """

    def __init__(self, kind: str, cache: PromptCache, client: Any) -> None:
        self.kind = kind
        self.cache = cache
        self._runner = asyncio.Runner() if kind == "async" else None
        self.client: Any = client

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)``, awaited when the client is async."""
        result = fn(self.client)
        if self._runner is None:
            return result

        async def wait() -> Any:
            return await result  # a coroutine, or an awaitable such as AsyncPaginator

        return self._runner.run(wait())

    def events(self, fn: Callable[[Any], Any], limit: int | None = None) -> list[Any]:
        """Open the stream ``fn(client)``, read every event (or the first ``limit``), then close it."""
        if self._runner is None:
            stream = fn(self.client)
            out: list[Any] = []
            try:
                for event in stream:
                    out.append(event)
                    if limit is not None and len(out) >= limit:
                        break
            finally:
                stream.close()
            if limit is not None:
                # Finalise the abandoned byte iterator here, on this thread: collected later it would run
                # on whichever thread the collector happens to run (see the portal-thread test below).
                gc.collect()
            return out

        async def read() -> list[Any]:
            stream = await fn(self.client)
            got: list[Any] = []
            try:
                async for event in stream:
                    got.append(event)
                    if limit is not None and len(got) >= limit:
                        break
            finally:
                await stream.close()
            return got

        return self._runner.run(read())

    def drain(self) -> None:
        """Wait for the cache's background writes (stream entries are written off the response path)."""
        if self._runner is not None:
            self._runner.run(self.cache.drain())
        else:
            _portal.call(self.cache.drain)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.run(self.client.close())
            self._runner.run(self.cache.aclose())
            self._runner.close()
        else:
            self.client.close()
            _portal.call(self.cache.aclose)
