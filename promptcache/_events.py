"""The frozen event records a PromptCache hands its hooks, the Hook protocol, and the emitter.

Public through :mod:`promptcache.metrics`. Kept apart from the Prometheus code so the cache imports only
plain dataclasses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from promptcache._keys import CacheKey
    from promptcache._scope import Scope

__all__ = [
    "UNKNOWN",
    "BreakerEvent",
    "CacheEvent",
    "Emitter",
    "Hook",
    "RequestEvent",
    "Result",
    "StoreEvent",
    "configured_agents",
    "declare_agent",
]

log = logging.getLogger("promptcache")

UNKNOWN: Final = "unknown"
"""The label value for an agent or model an event does not know."""


MAX_CONFIGURED_AGENTS: Final = 1000
_CONFIGURED_AGENTS: set[str] = set()


def declare_agent(agent_id: str) -> None:
    """Note an agent id configured in code (``wrap(..., agent_id=)``, ``CachedAgent``), for label bounds.

    Process-wide and bounded (:data:`MAX_CONFIGURED_AGENTS`): a per-request header override never lands
    here, so metrics label it ``other`` unless it is listed explicitly.
    """
    if len(_CONFIGURED_AGENTS) < MAX_CONFIGURED_AGENTS:
        _CONFIGURED_AGENTS.add(agent_id)


def configured_agents() -> frozenset[str]:
    """The agent ids :func:`declare_agent` has seen in this process."""
    return frozenset(_CONFIGURED_AGENTS)


class Result(StrEnum):
    """How a request was answered.

    .. versionadded:: 0.1.0
    """

    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEvent:
    """One request answered by the cache: exactly one event per request.

    Attributes:
        result: Hit, miss or bypass.
        namespace: The cache's namespace.
        agent_id: The agent; None only for bypasses reported without one.
        agent_version: The agent's version, when known.
        model: The model the request asked for (its ``model`` field), when it names one.
        input_tokens: Hit: prompt tokens saved. Miss: prompt tokens the upstream answer reported (0 when
            the call failed or was made outside the cache). Bypass: 0.
        output_tokens: Likewise for completion tokens.
        latency_saved: Hit: seconds the original upstream call took (what this hit saved); else 0.
        coalesced: Hit: the caller shared another caller's in-flight upstream call.
        tier: Hit: served from the in-process hot tier (no store round trip).
        reason: Bypass: ``"requested"``, ``"uncacheable"`` or ``"server-state: <field>"``. Miss: ``"error"``
            when upstream raised.

    .. versionadded:: 0.1.0
    """

    result: Result
    namespace: str
    agent_id: str | None = None
    agent_version: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_saved: float = 0.0
    coalesced: bool = False
    reason: str | None = None
    tier: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreEvent:
    """One store call (or one the open breaker skipped).

    Attributes:
        operation: ``get``, ``set``, ``delete``, ``lock``, ``unlock``, or ``fence`` (the one batched read
            before an upstream call's answer is written: :mod:`promptcache._fences`).
        outcome: ``ok``, ``error``, ``timeout`` or ``skipped``.
        seconds: How long the call took (0 when skipped).
        error: The exception's type name, for errors and timeouts.

    .. versionadded:: 0.1.0
    """

    namespace: str
    operation: str
    outcome: str
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """The store circuit breaker moved from ``old`` to ``new`` (``closed``, ``open``, ``half_open``).

    .. versionadded:: 0.1.0
    """

    namespace: str
    old: str
    new: str


CacheEvent = RequestEvent | StoreEvent | BreakerEvent
"""Everything a hook is called with."""


class Hook(Protocol):
    """Anything callable with one :data:`CacheEvent`; called on the cache's event loop, so keep it quick.

    .. versionadded:: 0.1.0
    """

    def __call__(self, event: CacheEvent) -> None: ...


class Emitter:
    """Builds the events of one cache and hands them to its hooks (internal to PromptCache).

    The cache calls these methods only behind ``if hooks:``, so a cache without hooks builds nothing.
    """

    def __init__(self, hooks: tuple[Hook, ...], namespace: str) -> None:
        self.hooks = hooks
        self.namespace = namespace
        self._failed: set[int] = set()

    def emit(self, event: CacheEvent) -> None:
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:  # a metrics hook must never break an answer; logged (once), not silent
                if id(hook) not in self._failed:
                    self._failed.add(id(hook))
                    log.exception("promptcache: metrics hook %r failed; further failures not logged", hook)

    def request(  # noqa: PLR0913 - the fields of one request event
        self,
        result: Result,
        key: CacheKey,
        *,
        tokens: tuple[int, int] = (0, 0),
        latency_saved: float = 0.0,
        coalesced: bool = False,
        reason: str | None = None,
        tier: bool = False,
    ) -> None:
        self.emit(
            RequestEvent(
                result=result,
                namespace=key.namespace,
                agent_id=key.agent_id,
                agent_version=key.agent_version,
                model=key.model,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                latency_saved=latency_saved,
                coalesced=coalesced,
                reason=reason,
                tier=tier,
            )
        )

    def bypass(self, reason: str, scope: Scope | None, request: Mapping[str, Any] | None) -> None:
        # No key was built (that is what a bypass is), so the model comes from the request itself.
        model = request.get("model") if isinstance(request, dict) else None
        agent_id = None if scope is None else scope.agent_id
        agent_version = None if scope is None else scope.agent_version
        self.emit(
            RequestEvent(
                result=Result.BYPASS,
                namespace=self.namespace,
                agent_id=agent_id if isinstance(agent_id, str) else None,
                agent_version=agent_version if isinstance(agent_version, str) else None,
                model=model if isinstance(model, str) else None,
                reason=reason,
            )
        )

    def store(self, operation: str, outcome: str, seconds: float = 0.0, error: str | None = None) -> None:
        self.emit(
            StoreEvent(
                namespace=self.namespace, operation=operation, outcome=outcome, seconds=seconds, error=error
            )
        )

    def breaker(self, old: str, new: str) -> None:
        self.emit(BreakerEvent(namespace=self.namespace, old=old, new=new))
