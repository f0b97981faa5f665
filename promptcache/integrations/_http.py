"""The HTTP layer the caching transport and the pytest plugin's recorder share, over ``httpx`` or ``httpx2``.

It owns everything about the SDKs' HTTP requests and responses that does not depend on where answers are
kept: which requests are cached (:func:`plan_request`: endpoint, ``x-promptcache-*`` control headers,
Azure deployment), which upstream headers are dropped, building a response in the request's own httpx
flavour (the current SDKs use ``httpx2``, older ones ``httpx``), and the stream tee. Everything here is
async or free of I/O; sync transports reach it through :mod:`._sync`.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import orjson

from promptcache._gate import is_terminal
from promptcache._keys import Endpoint
from promptcache._kinds import Form
from promptcache._route import KEY_HEADERS, Route, route_of
from promptcache.exceptions import ConfigError
from promptcache.integrations._sse import SSEParser, encode_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from promptcache._scope import Scope

__all__ = [
    "BODY",
    "CONTROL_HEADERS",
    "STREAM",
    "STREAM_USAGE",
    "Plan",
    "clean_headers",
    "endpoint_for",
    "event_stream_response",
    "hit_response",
    "httpx_module",
    "is_event_stream",
    "json_response",
    "plan_request",
    "request_route",
    "response",
    "take_controls",
    "tee",
]

HEADER_PREFIX: Final = "x-promptcache-"
_PREFIX_BYTES: Final = HEADER_PREFIX.encode()
_PREFIX_LEN: Final = len(_PREFIX_BYTES)
CONTROL_HEADERS: Final = frozenset(
    HEADER_PREFIX + name for name in ("bypass", "refresh", "ttl", "agent-id", "agent-version", "tenant")
)
# The SDKs (openai, anthropic) number each attempt of one call: 0 for the first, then 1, 2... per retry.
RETRY_HEADER: Final = "x-stainless-retry-count"
_RETRY_BYTES: Final = RETRY_HEADER.encode()
_RETRY_HEAD: Final = _RETRY_BYTES[:_PREFIX_LEN]
RETRY: Final = "retry"
"""Set in :func:`take_controls`'s answer when the SDK marked the request as a retry (not a header name)."""
# Headers that describe the upstream bytes on the wire, not the (decoded) body a rebuilt response carries.
_HOP_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_ENDPOINT_SUFFIXES: Final = (
    ("/chat/completions", Endpoint.CHAT_COMPLETIONS),
    ("/responses", Endpoint.RESPONSES),
    ("/embeddings", Endpoint.EMBEDDINGS),
    ("/messages", Endpoint.ANTHROPIC_MESSAGES),
)
# Control headers that override a field of the scope, by the field they set (ttl is parsed on its own).
_SCOPE_HEADERS: Final = (("agent-id", "agent_id"), ("agent-version", "agent_version"), ("tenant", "tenant"))


@dataclass(frozen=True, slots=True)
class Plan:
    """How to treat one cacheable request: what to key, under which scope, with which controls."""

    endpoint: Endpoint
    body: dict[str, Any]
    stream: bool
    scope: Scope
    bypass: bool
    refresh: bool
    route: Route
    retry: bool = False  # the SDK's retry of an attempt that failed: its call is counted already


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def _ttl(value: str) -> float:
    try:
        ttl = float(value)
    except ValueError:
        ttl = -1.0
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ConfigError(f"header x-promptcache-ttl must be a positive number of seconds, got {value!r}")
    return ttl


def take_controls(headers: Any) -> dict[str, str]:  # noqa: ANN401 - httpx or httpx2 Headers
    """Remove every ``x-promptcache-*`` header from ``headers`` (always, so none reaches upstream).

    Names come lower-cased; a repeated header's values joined with ", " (as ``Headers.items()`` does).
    ``RETRY`` is added when the SDK's attempt counter says this is a retry (that header stays on).
    Read from ``Headers.raw`` (the bytes as sent): a third of the cost of ``items()``, on every request."""
    found: dict[str, str] = {}
    retry = False
    for raw_name, raw_value in headers.raw:
        head = raw_name[:_PREFIX_LEN].lower()
        if head == _PREFIX_BYTES:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode(headers.encoding)
            found[name] = f"{found[name]}, {value}" if name in found else value
        elif head == _RETRY_HEAD and raw_name.lower() == _RETRY_BYTES:
            retry = raw_value.strip().isdigit() and int(raw_value) > 0
    for name in found:
        del headers[name]
    if retry:
        found[RETRY] = "1"
    return found


def endpoint_for(method: str, path: str) -> Endpoint | None:
    """The cached endpoint a request goes to, or None for everything that passes through."""
    found = _endpoint_and_prefix(method, path)
    return None if found is None else found[0]


def _endpoint_and_prefix(method: str, path: str) -> tuple[Endpoint, str] | None:
    if method != "POST":
        return None
    for suffix, endpoint in _ENDPOINT_SUFFIXES:
        if path.endswith(suffix):
            return endpoint, path[: -len(suffix)]
    return None


def request_route(request: Any, prefix: str, scope: Scope) -> Route:  # noqa: ANN401 - httpx or httpx2
    """The route (upstream, query, keyed headers) of an SDK request whose path starts with ``prefix``."""
    url, headers = request.url, request.headers
    wanted = _wanted_headers(scope.key_headers)
    # From Headers.raw (the bytes as sent, cheaper than multi_items()): only the keyed ones are decoded.
    picked = tuple(
        (name.decode("latin-1").lower(), value.decode(headers.encoding))
        for name, value in headers.raw
        if name.lower() in wanted
    )
    return _route(request.method, url.scheme, url.host, url.port, prefix, url.query, picked, scope)


@functools.lru_cache(maxsize=64)
def _wanted_headers(extra: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(name.lower().encode("latin-1") for name in (*KEY_HEADERS, *extra))


# A client sends the same route on every call: normalising it once per distinct route keeps it off the
# hit path (the arguments are the raw parts, so equal arguments always normalise to the same Route).
@functools.lru_cache(maxsize=1024)
def _route(  # noqa: PLR0913 - the raw parts of one request's route
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    prefix: str,
    query: bytes,
    headers: tuple[tuple[str, str], ...],
    scope: Scope,
) -> Route:
    return route_of(
        method=method,
        scheme=scheme,
        host=host,
        port=port,
        prefix=prefix,
        query=parse_qsl(query.decode("ascii", "replace"), keep_blank_values=True),
        headers=headers,
        alias=scope.upstream,
        extra_headers=scope.key_headers,
    )


def plan_request(request: Any, scope: Scope, controls: dict[str, str] | None = None) -> Plan | None:  # noqa: ANN401
    """Decide how to treat one request; strips the control headers in every case (``controls``: what
    :func:`take_controls` already took from it).

    Returns None for a request that passes through untouched (not a cached endpoint, not a JSON object).

    Raises:
        ConfigError: A control header has a bad value.
    """
    if controls is None:
        controls = take_controls(request.headers)
    path: str = request.url.path
    found = _endpoint_and_prefix(request.method, path)
    if found is None:
        return None
    endpoint, prefix = found
    try:
        body = orjson.loads(request.content)
    except (orjson.JSONDecodeError, AttributeError, RuntimeError):
        return None  # not a JSON body we can key (or a streaming upload): pass through
    if not isinstance(body, dict):
        return None
    if "/deployments/" in path:
        # Azure names the model in the URL, not the body: the deployment must change the key.
        body = {**body, "azure_deployment": path.split("/deployments/", 1)[1].split("/", 1)[0]}
    overrides: dict[str, Any] = {}
    if controls:
        overrides = {
            field: controls[HEADER_PREFIX + header]
            for header, field in _SCOPE_HEADERS
            if HEADER_PREFIX + header in controls
        }
        if HEADER_PREFIX + "ttl" in controls:
            overrides["ttl"] = _ttl(controls[HEADER_PREFIX + "ttl"])
    return Plan(
        endpoint=endpoint,
        body=body,
        stream=body.get("stream") is True,
        scope=scope.replace(**overrides) if overrides else scope,
        bypass=_flag(controls.get(HEADER_PREFIX + "bypass")),
        refresh=_flag(controls.get(HEADER_PREFIX + "refresh")),
        route=request_route(request, prefix, scope),
        retry=RETRY in controls,
    )


def httpx_module(obj: object) -> Any:  # noqa: ANN401 - the httpx or httpx2 module
    """The httpx flavour (module) an SDK request, response or transport belongs to."""
    return sys.modules[type(obj).__module__.partition(".")[0]]


def clean_headers(headers: Any) -> list[tuple[str, str]]:  # noqa: ANN401
    """An upstream response's headers minus the hop-by-hop ones a rebuilt response must not repeat."""
    return [(k, v) for k, v in headers.items() if k.lower() not in _HOP_HEADERS]


def is_event_stream(upstream: Any) -> bool:  # noqa: ANN401
    """Whether an upstream response is a successful server-sent event stream."""
    return upstream.status_code == 200 and "event-stream" in upstream.headers.get("content-type", "")


def response(request: Any, status: int, headers: Iterable[tuple[str, str]], content: bytes) -> Any:  # noqa: ANN401
    """A response to ``request`` in its own httpx flavour."""
    return httpx_module(request).Response(status, headers=list(headers), content=content, request=request)


def json_response(request: Any, body: Any, marker: str, status: int = 200) -> Any:  # noqa: ANN401
    """A JSON response marked ``x-promptcache: <marker>`` (hit, replay, error)."""
    return response(request, status, _json_headers(marker), orjson.dumps(body))


def event_stream_response(request: Any, events: list[dict[str, Any]], marker: str) -> Any:  # noqa: ANN401
    """A recorded event stream served again, marked ``x-promptcache: <marker>``."""
    return response(request, 200, _stream_headers(marker), encode_events(events))


def _json_headers(marker: str) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("x-promptcache", marker)]


def _stream_headers(marker: str) -> list[tuple[str, str]]:
    return [("content-type", "text/event-stream"), ("x-promptcache", marker)]


def hit_response(request: Any, form: Form, payload: bytes) -> Any:  # noqa: ANN401
    """A hit's response from the bytes ``form`` (:data:`BODY`, :data:`STREAM`, :data:`STREAM_USAGE`) made."""
    return response(request, 200, _stream_headers("hit") if form.stream else _json_headers("hit"), payload)


# How a hit found with no I/O is sent (the hot tier keeps each entry's bytes per form).
BODY: Final = Form(stream=False, include_usage=False, encode=orjson.dumps)
STREAM: Final = Form(stream=True, include_usage=False, encode=encode_events)
STREAM_USAGE: Final = Form(stream=True, include_usage=True, encode=encode_events)


def tee(  # noqa: PLR0913 - the stream, where it goes, and what to do when it completes
    request: Any,  # noqa: ANN401
    upstream: Any,  # noqa: ANN401
    endpoint: Endpoint,
    on_complete: Callable[[list[dict[str, Any]]], Awaitable[None]],
    marker: str | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> Any:  # noqa: ANN401
    """``upstream``'s event stream as a new response that collects the events while passing the bytes on.

    Chunks reach the caller as they arrive. The events are handed to ``on_complete`` as soon as the
    terminal event has arrived (the sync OpenAI SDK stops reading right there); a stream abandoned or
    broken before it completes nothing. ``settle`` runs when a completed stream is closed.
    """
    mod = httpx_module(request)

    class TeeStream(mod.AsyncByteStream):  # type: ignore[misc,name-defined]
        done = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            parser = SSEParser()
            async for chunk in upstream.aiter_bytes():
                seen = len(parser.events)
                parser.feed(chunk)
                if not self.done and any(is_terminal(endpoint, e) for e in parser.events[seen:]):
                    self.done = True
                    await on_complete(parser.events)
                yield chunk

        async def aclose(self) -> None:
            await upstream.aclose()
            if self.done and settle is not None:
                await settle()  # the completed stream's write, so a repeat of the request finds it

    headers = clean_headers(upstream.headers)
    if marker is not None:
        headers.append(("x-promptcache", marker))
    return mod.Response(
        upstream.status_code,
        headers=headers,
        stream=TeeStream(),
        request=request,
        extensions=upstream.extensions,
    )
