"""One caching HTTP transport for the OpenAI and Anthropic SDKs, over ``httpx`` or ``httpx2``.

The transport sits inside the SDK's own HTTP client, around the client's own transport, so SDK retries,
``with_raw_response``, typed parsing and ``.parse()`` keep working: a hit is just an HTTP 200 the SDK
parses as usual. Requests and responses are built with the classes of whichever httpx flavour the request
came from (the current SDKs use ``httpx2``; older ones ``httpx``).

Async is the primary path: :class:`AsyncCachingTransport` hands each request to :class:`CachingCore`.
Sync clients reach the store through the very same core: :class:`CachingTransport` runs it on
promptcache's portal thread (one background event loop, :mod:`._portal`), sending upstream with the sync
inner transport on a worker thread and streaming chunks back across the thread boundary as they arrive.
A cache used by a sync client therefore lives on the portal loop; use a separate ``PromptCache`` for async
code running on your own loop.

Streams: on a miss, chunks reach the caller as they arrive and the complete event list is stored only when
the stream reaches its terminal event; an abandoned or failed stream stores nothing. A streaming request is
served only from a stream entry and a non-streaming one only from a body entry (the key is the same, since
``stream`` is on the deny-list; the latest answer of either kind replaces the other).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._gate import is_terminal
from promptcache._keys import DEFAULT_AGENT_VERSION, Endpoint, KeyPolicy
from promptcache.exceptions import ConfigError, InvalidScopeError, UncacheableRequestError
from promptcache.integrations._sse import SSEParser, encode_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from promptcache._cache import PromptCache

__all__ = ["CONTROL_HEADERS", "CachingCore", "TransportScope"]

HEADER_PREFIX: Final = "x-promptcache-"
CONTROL_HEADERS: Final = frozenset(
    HEADER_PREFIX + name for name in ("bypass", "refresh", "ttl", "agent-id", "agent-version", "tenant")
)
_HOP_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_ENDPOINT_SUFFIXES: Final = (
    ("/chat/completions", Endpoint.CHAT_COMPLETIONS),
    ("/responses", Endpoint.RESPONSES),
    ("/embeddings", Endpoint.EMBEDDINGS),
    ("/messages", Endpoint.ANTHROPIC_MESSAGES),
)


@dataclass(frozen=True, slots=True)
class TransportScope:
    """The defaults a wrapped client caches under; headers may override them per request."""

    agent_id: str
    agent_version: str = DEFAULT_AGENT_VERSION
    tenant: str | None = None
    ttl: float | None = None
    policy: KeyPolicy | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    endpoint: Endpoint
    body: dict[str, Any]
    stream: bool
    agent_id: str
    agent_version: str
    tenant: str | None
    ttl: float | None
    bypass: bool
    refresh: bool


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def _ttl(value: str | None, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        ttl = float(value)
    except ValueError:
        ttl = -1.0
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ConfigError(f"header x-promptcache-ttl must be a positive number of seconds, got {value!r}")
    return ttl


def take_controls(headers: Any) -> dict[str, str]:  # noqa: ANN401 - httpx or httpx2 Headers
    """Remove every ``x-promptcache-*`` header from ``headers`` (always, so none reaches upstream)."""
    found = {name.lower(): value for name, value in headers.items() if name.lower().startswith(HEADER_PREFIX)}
    for name in found:
        del headers[name]
    return found


def endpoint_for(method: str, path: str) -> Endpoint | None:
    """The cached endpoint a request goes to, or None for everything that passes through."""
    if method != "POST":
        return None
    for suffix, endpoint in _ENDPOINT_SUFFIXES:
        if path.endswith(suffix):
            return endpoint
    return None


def plan_request(request: Any, scope: TransportScope) -> _Plan | None:  # noqa: ANN401
    """Decide how to treat one request; strips the control headers in every case."""
    controls = take_controls(request.headers)
    endpoint = endpoint_for(request.method, request.url.path)
    if endpoint is None:
        return None
    try:
        body = orjson.loads(request.content)
    except (orjson.JSONDecodeError, AttributeError, RuntimeError):
        return None  # not a JSON body we can key (or a streaming upload): pass through
    if not isinstance(body, dict):
        return None
    path: str = request.url.path
    if "/deployments/" in path:
        # Azure names the model in the URL, not the body: the deployment must change the key.
        body = {**body, "azure_deployment": path.split("/deployments/", 1)[1].split("/", 1)[0]}
    return _Plan(
        endpoint=endpoint,
        body=body,
        stream=body.get("stream") is True,
        agent_id=controls.get(HEADER_PREFIX + "agent-id", scope.agent_id),
        agent_version=controls.get(HEADER_PREFIX + "agent-version", scope.agent_version),
        tenant=controls.get(HEADER_PREFIX + "tenant", scope.tenant),
        ttl=_ttl(controls.get(HEADER_PREFIX + "ttl"), scope.ttl),
        bypass=_flag(controls.get(HEADER_PREFIX + "bypass")),
        refresh=_flag(controls.get(HEADER_PREFIX + "refresh")),
    )


def httpx_module(obj: object) -> Any:  # noqa: ANN401 - the httpx or httpx2 module
    """The httpx flavour (module) an SDK request or transport belongs to."""
    return sys.modules[type(obj).__module__.partition(".")[0]]


def _clean_headers(headers: Any) -> list[tuple[str, str]]:  # noqa: ANN401
    return [(k, v) for k, v in headers.items() if k.lower() not in _HOP_HEADERS]


class _Passthrough(Exception):  # noqa: N818 - carries a non-cacheable upstream answer, not an error
    """An upstream answer that must reach the SDK as it came (non-200, not JSON); nothing is stored."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        super().__init__(f"upstream answered HTTP {status}")
        self.status = status
        self.headers = headers
        self.content = content


class CachingCore:
    """The decisions every caching transport shares, sync or async, OpenAI or Anthropic."""

    def __init__(self, cache: PromptCache, scope: TransportScope) -> None:
        self.cache = cache
        self.scope = scope

    async def handle(self, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        """Answer ``request`` from the cache, or with ``send(request)`` (the inner transport).

        A bad control header (or scope id) is answered locally with an HTTP 400 naming it: an exception
        raised here would be caught by the SDK's retry loop and come out as "Connection error".
        """
        try:
            plan = plan_request(request, self.scope)
            if plan is None:
                return await send(request)
            if plan.stream:
                return await self._stream(plan, request, send)
            return await self._json(plan, request, send)
        except (ConfigError, InvalidScopeError) as exc:
            error = {"error": {"message": f"promptcache: {exc}", "type": "invalid_request_error"}}
            return httpx_module(request).Response(
                400,
                headers=[("content-type", "application/json"), ("x-promptcache", "error")],
                content=orjson.dumps(error),
                request=request,
            )

    def _key(self, plan: _Plan) -> Any:  # noqa: ANN401 - CacheKey
        return self.cache.key(
            plan.body,
            agent_id=plan.agent_id,
            agent_version=plan.agent_version,
            tenant=plan.tenant,
            endpoint=plan.endpoint,
            policy=self.scope.policy,
        )

    async def _json(self, plan: _Plan, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        mod = httpx_module(request)
        own: list[Any] = []

        async def call() -> Any:  # noqa: ANN401
            response = await send(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            if response.status_code != 200:
                own.append(response)
                raise _Passthrough(response.status_code, _clean_headers(response.headers), response.content)
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                own.append(response)
                raise _Passthrough(200, _clean_headers(response.headers), response.content) from None
            response.headers["x-promptcache"] = "miss"
            own.append(response)
            return body

        try:
            body = await self.cache.get_or_call(
                plan.body,
                call,
                agent_id=plan.agent_id,
                agent_version=plan.agent_version,
                tenant=plan.tenant,
                ttl=plan.ttl,
                endpoint=plan.endpoint,
                policy=self.scope.policy,
                bypass=plan.bypass,
                refresh=plan.refresh,
            )
        except _Passthrough as answer:
            if own:  # this request's own upstream answer: hand it back untouched
                return own[0]
            return mod.Response(
                answer.status, headers=answer.headers, content=answer.content, request=request
            )
        if own:
            return own[0]
        return mod.Response(
            200,
            headers=[("content-type", "application/json"), ("x-promptcache", "hit")],
            content=orjson.dumps(body),
            request=request,
        )

    async def _stream(self, plan: _Plan, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        cache = self.cache
        if plan.bypass:
            cache.count_bypass()
            return await send(request)
        try:
            key = self._key(plan)
        except UncacheableRequestError:
            cache.count_bypass(uncacheable=True)
            return await send(request)
        entry = await cache.get_entry(key, stream=True, refresh=plan.refresh)
        if entry is not None and entry.chunks is not None:
            return httpx_module(request).Response(
                200,
                headers=[("content-type", "text/event-stream"), ("x-promptcache", "hit")],
                content=encode_events(entry.chunks),
                request=request,
            )
        started = time.monotonic()
        response = await send(request)
        cache.count_upstream_call()
        if response.status_code != 200 or "event-stream" not in response.headers.get("content-type", ""):
            return response

        async def on_complete(events: list[dict[str, Any]]) -> None:
            await cache.put_entry(
                key, plan.body, chunks=events, ttl=plan.ttl, latency=time.monotonic() - started, wait=False
            )

        mod = httpx_module(request)
        return mod.Response(
            200,
            headers=[*_clean_headers(response.headers), ("x-promptcache", "miss")],
            stream=_recording_stream(mod, response, plan.endpoint, on_complete),
            request=request,
            extensions=response.extensions,
        )


def _recording_stream(
    mod: Any,  # noqa: ANN401
    response: Any,  # noqa: ANN401
    endpoint: Endpoint,
    on_complete: Callable[[list[dict[str, Any]]], Awaitable[None]],
) -> Any:  # noqa: ANN401
    """An async byte stream that forwards upstream chunks as they arrive and records the SSE events.

    The events are handed to ``on_complete`` as soon as the terminal event has arrived (the sync OpenAI
    SDK stops reading right there); a stream abandoned or broken before it stores nothing.
    """

    class RecordingStream(mod.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            parser = SSEParser()
            done = False
            async for chunk in response.aiter_bytes():
                seen = len(parser.events)
                parser.feed(chunk)
                if not done and any(is_terminal(endpoint, e) for e in parser.events[seen:]):
                    done = True
                    await on_complete(parser.events)
                yield chunk

        async def aclose(self) -> None:
            await response.aclose()

    return RecordingStream()
