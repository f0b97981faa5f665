"""``wrap()``: put the caching transport inside an SDK client's own HTTP client, sync or async."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, Self, TypeVar

from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy, agent_prefix
from promptcache._validate import parse_enum
from promptcache.exceptions import ConfigError
from promptcache.integrations import _portal
from promptcache.integrations._transport import CachingCore, TransportScope, httpx_module

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from promptcache._cache import PromptCache

__all__ = ["AsyncCachingTransport", "CachingTransport", "wrap"]

C = TypeVar("C")


class AsyncCachingTransport:
    """An httpx/httpx2 async transport answering cached endpoints from a PromptCache."""

    def __init__(self, inner: Any, core: CachingCore) -> None:  # noqa: ANN401
        self.inner = inner
        self.core = core

    async def handle_async_request(self, request: Any) -> Any:  # noqa: ANN401
        return await self.core.handle(request, self.inner.handle_async_request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(*exc_info)


class CachingTransport:
    """The sync twin: runs the same :class:`CachingCore` on the portal loop (see ``_transport``)."""

    def __init__(self, inner: Any, core: CachingCore) -> None:  # noqa: ANN401
        self.inner = inner
        self.core = core

    def handle_request(self, request: Any) -> Any:  # noqa: ANN401
        response = _portal.run(self.core.handle(request, self._send))
        mod = httpx_module(response)
        if not isinstance(response.stream, mod.SyncByteStream):
            content = getattr(response, "_content", None)  # already read on the portal: serve the bytes
            response.stream = (
                mod.ByteStream(content) if content is not None else _sync_stream(mod, response.stream)
            )
        return response

    async def _send(self, request: Any) -> Any:  # noqa: ANN401
        """Send with the sync inner transport on a worker thread; expose its body as an async stream."""
        response = await asyncio.to_thread(self.inner.handle_request, request)
        response.stream = _async_stream(httpx_module(response), response.stream)
        return response

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.__exit__(*exc_info)


def _async_stream(mod: Any, sync_stream: Any) -> Any:  # noqa: ANN401
    class ThreadedStream(mod.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunks = iter(sync_stream)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk

        async def aclose(self) -> None:
            await asyncio.to_thread(sync_stream.close)

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


def wrap(  # noqa: PLR0913
    client: C,
    cache: PromptCache,
    *,
    agent_id: str,
    agent_version: str = DEFAULT_AGENT_VERSION,
    tenant: str | None = None,
    ttl: float | None = None,
    policy: KeyPolicy | str | None = None,
) -> C:
    """Cache ``client``'s chat completions, responses, embeddings and Anthropic messages.

    Works on ``openai.OpenAI``/``AsyncOpenAI``/``AzureOpenAI`` (any ``base_url``) and
    ``anthropic.Anthropic``/``AsyncAnthropic``. The client is changed in place (its HTTP client's transport
    is wrapped) and returned, so the type you had is the type you get.

    Args:
        client: The SDK client.
        cache: The cache to use. A sync client runs it on promptcache's portal loop.
        agent_id: The agent the answers belong to (header ``x-promptcache-agent-id`` overrides it).
        agent_version: Bump when the agent's prompts change (``x-promptcache-agent-version``).
        tenant: Optional tenant (``x-promptcache-tenant``).
        ttl: Seconds to keep answers (``x-promptcache-ttl``); the cache's default otherwise.
        policy: Text policy override.

    Raises:
        ConfigError: ``client`` is not an SDK client, or is already wrapped.
        InvalidScopeError: An id is empty or not a string.

    .. versionadded:: 0.1.0
    """
    agent_prefix(cache.config.namespace, agent_id, agent_version)  # validates the ids now, not per call
    if tenant is not None:
        agent_prefix(cache.config.namespace, tenant)
    scope = TransportScope(
        agent_id=agent_id,
        agent_version=agent_version,
        tenant=tenant,
        ttl=cache._ttl(ttl) if ttl is not None else None,  # noqa: SLF001 - same validation as the cache
        policy=None if policy is None else parse_enum(KeyPolicy, policy, "policy"),
    )
    http = getattr(client, "_client", None)
    if http is None or not hasattr(http, "_transport") or not hasattr(http, "_mounts"):
        raise ConfigError(f"cannot wrap {type(client).__name__}: not an OpenAI or Anthropic SDK client")
    # The SDKs subclass the httpx(2) clients in their own modules; an async client has a coroutine send().
    transport_cls = AsyncCachingTransport if inspect.iscoroutinefunction(http.send) else CachingTransport
    core = CachingCore(cache, scope)

    def around(inner: Any) -> Any:  # noqa: ANN401
        if isinstance(inner, AsyncCachingTransport | CachingTransport):
            raise ConfigError(f"this {type(client).__name__} is already wrapped by promptcache")
        return transport_cls(inner, core)

    http._transport = around(http._transport)  # noqa: SLF001 - the SDKs expose no transport setter
    http._mounts = {  # noqa: SLF001 - proxies configured through mounts get the cache too
        pattern: None if inner is None else around(inner)
        for pattern, inner in http._mounts.items()  # noqa: SLF001
    }
    return client
