"""The caching core behind the transport ``wrap()`` puts inside OpenAI and Anthropic SDK clients.

The transport sits inside the SDK's own HTTP client, around the client's own transport, so SDK retries,
``with_raw_response``, typed parsing and ``.parse()`` keep working: a hit is just an HTTP 200 the SDK
parses as usual. What a request is and how responses are built lives in :mod:`._http`, shared with the
pytest plugin's recorder; this module decides what the cache does with a planned request.

Async is the primary path: :class:`CachingCore` is async, and sync clients reach the very same core
through the one sync adapter (:mod:`._sync`), which runs it on promptcache's portal thread. A cache used
by a sync client therefore lives on the portal loop; use a separate ``PromptCache`` for async code running
on your own loop.

Streams: on a miss, chunks reach the caller as they arrive and the complete event list is stored only when
the stream reaches its terminal event; an abandoned or failed stream stores nothing. The key is the same
for a streamed and a plain request (``stream`` is on the deny-list), but each kind is stored under its own
store key, so neither replaces the other. A request is answered from its own kind, or, when only the other
kind is stored, from that one converted (``x-promptcache: hit-converted``; ``CacheConfig.convert_kinds``).
A chat stream is served in the shape the caller asked for (with or without the usage chunk).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._convert import wants_usage
from promptcache._stats import RETRYING
from promptcache.exceptions import ConfigError, InvalidScopeError, UncacheableRequestError
from promptcache.integrations._http import (
    BODY,
    CONTROL_HEADERS,
    STREAM,
    STREAM_USAGE,
    Plan,
    clean_headers,
    event_stream_response,
    hit_response,
    is_event_stream,
    json_response,
    plan_request,
    response,
    tee,
)
from promptcache.integrations._recording import production_cache_steps_aside

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache._cache import PromptCache
    from promptcache._scope import Scope

__all__ = ["CONTROL_HEADERS", "CachingCore"]


class _Passthrough(Exception):  # noqa: N818 - carries a non-cacheable upstream answer, not an error
    """An upstream answer that must reach the SDK as it came (non-200, not JSON); nothing is stored."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        super().__init__(f"upstream answered HTTP {status}")
        self.status = status
        self.headers = headers
        self.content = content


log = logging.getLogger("promptcache")

_PLANNED: Final = "promptcache.plan"  # a request's plan (or its error), made once by hit_now()
_UNPLANNED: Final = object()


class CachingCore:
    """The decisions every caching transport shares, sync or async, OpenAI or Anthropic."""

    def __init__(self, cache: PromptCache, scope: Scope) -> None:
        self.cache = cache
        self.scope = scope
        self._told_closed = False

    def hit_now(self, request: Any, controls: dict[str, str] | None = None) -> Any:  # noqa: ANN401
        """The response to ``request`` when it is a hit found on the caller's thread with no I/O (hot tier,
        memory store: a sync client then needs no hop to the portal); None: ask :meth:`handle`, which
        reuses the plan made here (planning strips the control headers: planning twice would lose them).
        ``controls``: the control headers the transport already took from the request."""
        try:
            plan = plan_request(request, self.scope, controls)  # handle() reuses it
        except (ConfigError, InvalidScopeError) as exc:
            request.extensions[_PLANNED] = exc  # handle() answers it with a 400 naming the problem
            return None
        request.extensions[_PLANNED] = plan
        if plan is None or plan.bypass or plan.refresh or production_cache_steps_aside():
            return None
        form = BODY
        if plan.stream:
            form = STREAM_USAGE if wants_usage(plan.endpoint, plan.body) else STREAM
        retrying = RETRYING.set(True) if plan.retry else None
        try:
            found = self.cache.answer_now(plan.body, plan.scope, plan.endpoint, plan.route, form)
        finally:
            if retrying is not None:
                RETRYING.reset(retrying)
        return None if found is None else hit_response(request, form, found[1])

    async def handle(self, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        """Answer ``request`` from the cache, or with ``send(request)`` (the inner transport).

        A bad control header (or scope id) is answered locally with an HTTP 400 naming it: an exception
        raised here would be caught by the SDK's retry loop and come out as "Connection error".
        """
        try:
            planned = request.extensions.pop(_PLANNED, _UNPLANNED)
            if isinstance(planned, Exception):
                raise planned
            plan = plan_request(request, self.scope) if planned is _UNPLANNED else planned
            if plan is None:
                return await send(request)
            retrying = RETRYING.set(True) if plan.retry else None
            try:
                return await self._answer(plan, request, send)
            finally:
                if retrying is not None:  # the caller's task goes on with its own setting
                    RETRYING.reset(retrying)
        except (ConfigError, InvalidScopeError) as exc:
            error = {"error": {"message": f"promptcache: {exc}", "type": "invalid_request_error"}}
            return json_response(request, error, "error", status=400)

    async def _answer(self, plan: Plan, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        if production_cache_steps_aside():  # the pytest plugin records/replays it
            self.cache.count_bypass(scope=plan.scope, request=plan.body)
            return await send(request)
        if self.cache.closed:
            # The cache was closed while the client lives on: answer uncached (an error raised here
            # would reach the caller only as the SDK's "Connection error"), counted as a bypass,
            # and said once per client (every call now pays upstream).
            if not self._told_closed:
                self._told_closed = True
                log.warning(
                    "promptcache: the cache is closed; client of agent %r now calls upstream uncached",
                    plan.scope.agent_id,
                )
            self.cache.count_bypass(scope=plan.scope, request=plan.body)
            return await send(request)
        if plan.stream:
            return await self._stream(plan, request, send)
        return await self._json(plan, request, send)

    async def _json(self, plan: Plan, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        own: list[Any] = []

        async def call() -> Any:  # noqa: ANN401
            upstream = await send(request)
            try:
                await upstream.aread()
            finally:
                await upstream.aclose()
            if upstream.status_code != 200:
                own.append(upstream)
                raise _Passthrough(upstream.status_code, clean_headers(upstream.headers), upstream.content)
            try:
                body = orjson.loads(upstream.content)
            except orjson.JSONDecodeError:
                own.append(upstream)
                raise _Passthrough(200, clean_headers(upstream.headers), upstream.content) from None
            upstream.headers["x-promptcache"] = "bypass" if plan.bypass else "miss"
            own.append(upstream)
            return body

        try:
            body, converted = await self.cache.answer(
                plan.body,
                call,
                plan.scope,
                plan.endpoint,
                bypass=plan.bypass,
                refresh=plan.refresh,
                route=plan.route,
            )
        except _Passthrough as answer:
            if own:  # this request's own upstream answer: hand it back untouched
                return own[0]
            return response(request, answer.status, answer.headers, answer.content)
        if own:
            return own[0]
        return json_response(request, body, "hit-converted" if converted else "hit")

    async def _stream(self, plan: Plan, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        cache = self.cache
        if plan.bypass:
            cache.count_bypass(scope=plan.scope, request=plan.body)
            upstream = await send(request)
            upstream.headers["x-promptcache"] = "bypass"
            return upstream
        try:
            key = cache.key(plan.body, endpoint=plan.endpoint, scope=plan.scope, route=plan.route)
        except UncacheableRequestError as exc:
            cache.count_bypass(uncacheable=True, scope=plan.scope, request=plan.body, reason=exc)
            return await send(request)
        usage = wants_usage(plan.endpoint, plan.body)
        entry = await cache.get_entry(key, stream=True, refresh=plan.refresh, include_usage=usage)
        if entry is not None and entry.chunks is not None:
            return event_stream_response(request, entry.chunks, "hit-converted" if entry.converted else "hit")
        started = time.monotonic()
        try:
            upstream = await send(request)
        except Exception:
            cache.count_upstream_call(failed=True)
            raise
        if not is_event_stream(upstream):
            cache.count_upstream_call(failed=True)
            return upstream
        cache.count_upstream_call()

        async def on_complete(events: list[dict[str, Any]]) -> None:
            await cache.put_entry(
                key,
                plan.body,
                scope=plan.scope,
                chunks=events,
                latency=time.monotonic() - started,
                wait=False,
            )

        # The stream's entry is written in the background as soon as it completes, and awaited when the
        # SDK closes the stream: a caller repeating the request at once finds it.
        return tee(
            request, upstream, plan.endpoint, on_complete, marker="miss", settle=lambda: cache.drain(key)
        )
