"""``wrap()``: put the caching transport inside an SDK client's own HTTP client, sync or async."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from promptcache._events import declare_agent
from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy, agent_prefix
from promptcache._route import check_alias, check_header_names
from promptcache._scope import Scope
from promptcache._tier import pause_due
from promptcache._validate import parse_enum
from promptcache.exceptions import ConfigError
from promptcache.integrations._http import take_controls
from promptcache.integrations._sync import handle_sync
from promptcache.integrations._transport import CachingCore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from promptcache._cache import PromptCache

__all__ = ["AsyncCachingTransport", "CachingTransport", "wrap"]

C = TypeVar("C")


CLIENT_HEADER: Final = "x-promptcache-client"
"""Set on each wrapped SDK client (its default headers): which scope its requests are cached in.

The transport lives on the SDK's HTTP client, which SDK clients may share (one ``http_client=`` for
pooling): each wrapped SDK client registers its own scope under its own token, and a request without a
registered token (an unwrapped client on the same HTTP client) passes through untouched."""

Cores = dict[str, CachingCore]


def _core_for(cores: Cores, request: Any) -> tuple[CachingCore | None, dict[str, str]]:  # noqa: ANN401
    """The core of the wrapped client that sent ``request`` and the request's other control headers, all
    taken off it in one pass (never sent upstream, whoever set them)."""
    controls = take_controls(request.headers)
    token = controls.pop(CLIENT_HEADER, None)
    return (None if token is None else cores.get(token)), controls


class AsyncCachingTransport:
    """An httpx/httpx2 async transport answering cached endpoints from a PromptCache."""

    def __init__(self, inner: Any, cores: Cores) -> None:  # noqa: ANN401
        self.inner = inner
        self.cores = cores

    async def handle_async_request(self, request: Any) -> Any:  # noqa: ANN401
        core, controls = _core_for(self.cores, request)
        if core is None:
            return await self.inner.handle_async_request(request)
        hit = core.hit_now(request, controls)  # a hit needing no I/O (tier, memory): none of the awaits below
        if hit is not None:
            if pause_due():
                await asyncio.sleep(0)  # let the loop's other tasks run (such a hit awaits nothing)
            return hit
        return await core.handle(request, self.inner.handle_async_request)  # reuses hit_now's plan

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(*exc_info)


class CachingTransport:
    """The sync transport: the same :class:`CachingCore`, through the one sync adapter (``_sync``)."""

    def __init__(self, inner: Any, cores: Cores) -> None:  # noqa: ANN401
        self.inner = inner
        self.cores = cores

    def handle_request(self, request: Any) -> Any:  # noqa: ANN401
        core, controls = _core_for(self.cores, request)
        if core is None:
            return self.inner.handle_request(request)
        hit = core.hit_now(request, controls)  # a hit needing no I/O (tier, memory): no hop to the portal
        if hit is not None:
            return hit
        return handle_sync(core.handle, request, self.inner.handle_request)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.__exit__(*exc_info)


def wrap(  # noqa: PLR0913
    client: C,
    cache: PromptCache,
    *,
    agent_id: str,
    agent_version: str = DEFAULT_AGENT_VERSION,
    tenant: str | None = None,
    ttl: float | None = None,
    policy: KeyPolicy | str | None = None,
    upstream: str | None = None,
    key_headers: Iterable[str] = (),
    cache_server_state: bool = False,
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
        upstream: An alias for the upstream this client talks to. By default its answers are keyed by the
            upstream's URL (scheme, host, port, path prefix; the official APIs as ``openai`` and
            ``anthropic``), so another host or gateway route never shares them; clients wrapped with one
            alias share entries.
        key_headers: Names of request headers that select the answer, on top of the built-in ones
            (``anthropic-version``, ``anthropic-beta``, ``openai-organization``, ``openai-project``).
        cache_server_state: Also cache requests that refer to mutable provider state (Responses
            ``conversation``, ``prompt`` without ``version``, ``background``; Anthropic ``container``).
            They go upstream uncached otherwise (counted as ``server_state`` bypasses).

    Raises:
        ConfigError: ``client`` is not an SDK client, or is already wrapped.
        InvalidScopeError: An id is empty or not a string.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.3.0 ``upstream``, ``key_headers``, ``cache_server_state``.
    """
    agent_prefix(cache.config.namespace, agent_id, agent_version)  # validates the ids now, not per call
    declare_agent(agent_id)  # a configured agent: metrics label it by name (promptcache.metrics)
    if tenant is not None:
        agent_prefix(cache.config.namespace, tenant)
    scope = Scope(
        agent_id=agent_id,
        agent_version=agent_version,
        tenant=tenant,
        ttl=cache._ttl(ttl) if ttl is not None else None,  # noqa: SLF001 - same validation as the cache
        policy=None if policy is None else parse_enum(KeyPolicy, policy, "policy"),
        upstream=check_alias(upstream),
        key_headers=check_header_names(key_headers),
        cache_server_state=bool(cache_server_state),
    )
    http = getattr(client, "_client", None)
    if http is None or not hasattr(http, "_transport") or not hasattr(http, "_mounts"):
        raise ConfigError(f"cannot wrap {type(client).__name__}: not an OpenAI or Anthropic SDK client")
    # The SDKs subclass the httpx(2) clients in their own modules; an async client has a coroutine send().
    transport_cls = AsyncCachingTransport if inspect.iscoroutinefunction(http.send) else CachingTransport
    core = CachingCore(cache, scope)
    headers = getattr(client, "_custom_headers", None)
    if not isinstance(headers, dict):
        raise ConfigError(f"cannot wrap {type(client).__name__}: it has no default headers")
    installed = http._transport  # noqa: SLF001 - the SDKs expose no transport setter
    if isinstance(installed, AsyncCachingTransport | CachingTransport):
        # Another SDK client on this HTTP client is wrapped already: this one gets its own scope.
        if headers.get(CLIENT_HEADER) in installed.cores:
            raise ConfigError(f"this {type(client).__name__} is already wrapped by promptcache")
        cores = installed.cores
    else:
        cores = {}
        http._transport = transport_cls(installed, cores)  # noqa: SLF001
        http._mounts = {  # noqa: SLF001 - proxies configured through mounts get the cache too
            pattern: None if inner is None else transport_cls(inner, cores)
            for pattern, inner in http._mounts.items()  # noqa: SLF001
        }
    token = uuid.uuid4().hex
    cores[token] = core
    headers[CLIENT_HEADER] = token  # the SDK adds it to every request (and to with_options copies)
    return client
