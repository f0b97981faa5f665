"""Helpers for the stream tests: SDK clients whose network chunks are cut where a test wants them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY
from sdk_driver import SdkDriver, sdk_http

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import ModuleType

    from fake_llm import FakeLLM

    from promptcache import PromptCache

_AFTER_CR = re.compile(rb"(?<=\r)")


def cut_after_cr(chunk: bytes) -> list[bytes]:
    """``chunk`` cut after every CR, so a CRLF line ending always spans two network chunks."""
    return [piece for piece in _AFTER_CR.split(chunk) if piece]


def cutting_transport(http: ModuleType, *, sync: bool) -> Any:
    """A real httpx(2) transport whose response bodies arrive cut by :func:`cut_after_cr`."""

    class SyncCut(http.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                yield from cut_after_cr(chunk)

        def close(self) -> None:
            self.inner.close()

    class AsyncCut(http.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.inner:
                for piece in cut_after_cr(chunk):
                    yield piece

        async def aclose(self) -> None:
            await self.inner.aclose()

    class Sync(http.HTTPTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            got = super().handle_request(request)
            return http.Response(
                got.status_code, headers=got.headers, stream=SyncCut(got.stream), extensions=got.extensions
            )

    class Async(http.AsyncHTTPTransport):  # type: ignore[misc,name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            got = await super().handle_async_request(request)
            return http.Response(
                got.status_code, headers=got.headers, stream=AsyncCut(got.stream), extensions=got.extensions
            )

    return Sync(verify=False) if sync else Async(verify=False)


def cut_client(sdk: ModuleType, kind: str, server: FakeLLM) -> Any:
    """An OpenAI or Anthropic SDK client (``sdk``) over a cutting transport, pointed at ``server``."""
    http = sdk_http(sdk)
    transport = cutting_transport(http, sync=kind == "sync")
    anthropic = sdk.__name__ == "anthropic"
    options: dict[str, Any] = {
        "api_key": ANTHROPIC_TEST_KEY if anthropic else OPENAI_TEST_KEY,
        "base_url": server.anthropic_base_url if anthropic else server.base_url,
        "max_retries": 0,
    }
    if kind == "sync":
        return (sdk.Anthropic if anthropic else sdk.OpenAI)(
            **options, http_client=sdk.DefaultHttpxClient(transport=transport)
        )
    return (sdk.AsyncAnthropic if anthropic else sdk.AsyncOpenAI)(
        **options, http_client=sdk.DefaultAsyncHttpxClient(transport=transport)
    )


def wrapped_driver(sdk: ModuleType, kind: str, client: Any, cache: PromptCache) -> SdkDriver:
    """``client`` wrapped with ``cache`` (agent ``tests``) behind the blocking SdkDriver interface."""
    wrap = __import__(f"promptcache.{sdk.__name__}", fromlist=["wrap"]).wrap
    return SdkDriver(kind, cache, wrap(client, cache, agent_id="tests"))
