"""``Scope``: who an answer belongs to and how long it is kept, as one frozen value.

The SDK wrapper, ``CachedAgent`` and the pytest plugin build one ``Scope`` and pass it down to the key and
the store, instead of five loose keyword arguments repeated through every signature. Later key schema
versions add to it (the upstream, for one); callers that build a ``Scope`` need not change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy

__all__ = ["Scope"]


@dataclass(frozen=True, slots=True)
class Scope:
    """The scope of a cached answer.

    Attributes:
        agent_id: The agent the answers belong to; agents never share entries.
        agent_version: Bump it when the agent's prompts change.
        tenant: Optional tenant; tenants never share entries.
        ttl: Seconds to keep answers; ``None`` means the cache's ``default_ttl``.
        policy: Text policy override; ``None`` means the cache's policy.

    .. versionadded:: 0.2.0
    """

    agent_id: str
    agent_version: str = DEFAULT_AGENT_VERSION
    tenant: str | None = None
    ttl: float | None = None
    policy: KeyPolicy | None = None

    def replace(self, **changes: Any) -> Scope:  # noqa: ANN401 - the fields' own types
        """A copy with ``changes`` applied (per-request overrides such as control headers)."""
        return dataclasses.replace(self, **changes)
