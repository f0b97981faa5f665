"""``Scope``: who an answer belongs to and how long it is kept, as one frozen value.

The SDK wrapper, ``CachedAgent`` and the pytest plugin build one ``Scope`` and pass it down to the key and
the store, instead of five loose keyword arguments repeated through every signature. Later key schema
versions add to it (the upstream, for one); callers that build a ``Scope`` need not change.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy
from promptcache._validate import parse_enum

__all__ = ["Scope", "scope_from_keywords"]


@dataclass(frozen=True, slots=True)
class Scope:
    """The scope of a cached answer.

    Attributes:
        agent_id: The agent the answers belong to; agents never share entries.
        agent_version: Bump it when the agent's prompts change.
        tenant: Optional tenant; tenants never share entries.
        ttl: Seconds to keep answers; ``None`` means the cache's ``default_ttl``.
        policy: Text policy override; ``None`` means the cache's policy.
        upstream: An alias for the upstream a wrapped client talks to; clients with one alias share
            entries. ``None`` keys by the upstream's URL (scheme, host, port, path prefix).
        key_headers: Lower-case names of request headers that select the answer, on top of
            :data:`promptcache._route.KEY_HEADERS`.
        cache_server_state: Cache requests that refer to mutable provider state (a conversation, an
            unversioned prompt template, a container, a background job); they bypass otherwise.

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.3.0 ``upstream``, ``key_headers``, ``cache_server_state``.
    """

    agent_id: str
    agent_version: str = DEFAULT_AGENT_VERSION
    tenant: str | None = None
    ttl: float | None = None
    policy: KeyPolicy | None = None
    upstream: str | None = None
    key_headers: tuple[str, ...] = ()
    cache_server_state: bool = False

    def replace(self, **changes: Any) -> Scope:  # noqa: ANN401 - the fields' own types
        """A copy with ``changes`` applied (per-request overrides such as control headers)."""
        return dataclasses.replace(self, **changes)


def scope_from_keywords(  # noqa: PLR0913 - turns the documented loose scope keywords into one Scope, once
    method: str,
    scope: Scope | None,
    agent_id: str | None,
    agent_version: str,
    tenant: str | None,
    ttl: float | None,
    policy: KeyPolicy | str | None,
) -> Scope:
    """The Scope a public method was called with: ``scope`` itself, or one built from the keywords.

    Raises:
        TypeError: Both ``scope`` and a scope keyword, or neither ``scope`` nor ``agent_id``.
        ConfigError: ``policy`` is not a known value.
    """
    if scope is None:
        if agent_id is None:
            raise TypeError(f"{method}() needs agent_id= (or scope=)")
        parsed = None if policy is None else parse_enum(KeyPolicy, policy, "policy")
        try:
            return _keyword_scope(agent_id, agent_version, tenant, ttl, parsed)
        except TypeError:  # an unhashable id: not cached, and make_key rejects it with InvalidScopeError
            return Scope(agent_id, agent_version, tenant, ttl, parsed)
    given = [
        name
        for name, value in (("agent_id", agent_id), ("tenant", tenant), ("ttl", ttl), ("policy", policy))
        if value is not None
    ]
    if agent_version != DEFAULT_AGENT_VERSION:
        given.append("agent_version")
    if given:
        raise TypeError(f"{method}() takes scope= or the scope keywords ({', '.join(given)}=), not both")
    return scope


# Callers repeat the same few scopes on every request; building a frozen dataclass costs about as much as
# the rest of the door. typed=True keeps ttl=1, 1.0 and True apart (a bool ttl must still be refused).
@functools.lru_cache(maxsize=1024, typed=True)
def _keyword_scope(
    agent_id: str, agent_version: str, tenant: str | None, ttl: float | None, policy: KeyPolicy | None
) -> Scope:
    return Scope(agent_id, agent_version, tenant, ttl, policy)
