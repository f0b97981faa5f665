"""The canonical cache key (schema v2): one request, one digest, in every process and on every machine.

The same key serves the production cache and the pytest record/replay harness, so what a test records is
exactly what production would look up. The rules (see DESIGN.md, "The key", and docs/KEY_FIELDS.md):

1. The request body minus the fields that cannot change the answer (:mod:`promptcache._fields`, per
   endpoint) is the material; every other field joins it, including ones nobody has heard of yet. A
   request that refers to mutable provider state is not keyed at all (:class:`ServerStateError`), unless
   its scope opts in.
2. The route (:mod:`promptcache._route`: upstream, method, query string, the answer-selecting headers),
   when the request came through a wrapped SDK client, joins the material (schema v2).
3. The scope (namespace, agent id, agent version, tenant) and the endpoint join the material and, escaped,
   the store key's prefix.
4. Canonical JSON: sorted object keys, no whitespace, UTF-8, integral floats written as integers
   (``0 == 0.0``), list order kept, omitted parameters left omitted (:mod:`promptcache._canonical`).
5. The :class:`KeyPolicy` is applied to message text only (the rules are in :mod:`promptcache._canonical`;
   which fields hold text is decided here).
6. sha256 over the schema tag plus the canonical bytes.

Schema v1 entries live under ``<namespace>:v1:`` and are simply never found by v2 lookups.
Nothing here does I/O; it is pure and safe to call from any thread.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from promptcache._canonical import (
    COLLAPSE_RULE,
    EXACT_RULE,
    TRIM_RULE,
    TextRule,
    _canon_checked,
    _dumps,
    _fast_canonical,
    _with_text_policy,
)
from promptcache._endpoints import Endpoint
from promptcache._fields import FIELD_RULES, Rule, key_body, server_state_reason
from promptcache._validate import parse_enum
from promptcache.exceptions import InvalidScopeError, ServerStateError, UncacheableRequestError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from promptcache._route import Route

__all__ = [
    "DEFAULT_AGENT_VERSION",
    "DEFAULT_NAMESPACE",
    "DENY_LIST",
    "SCHEMA_VERSION",
    "CacheKey",
    "Endpoint",
    "KeyPolicy",
    "agent_prefix",
    "counters_key",
    "generate_cache_key",
    "make_key",
    "parse_store_key",
    "store_key_for",
]

SCHEMA_VERSION: Final = 2
"""Bumped whenever any rule here changes a digest; the golden-file test enforces it."""

DEFAULT_NAMESPACE: Final = "promptcache"
STREAM_SUFFIX: Final = ":stream"
"""Ends a streamed answer's store key (after the ``{digest}`` hash tag; no escaped id contains it there)."""
DEFAULT_AGENT_VERSION: Final = "0"

DENY_LIST: Final = frozenset(r.name for r in FIELD_RULES if r.rule is Rule.OUT)
"""Fields left out of the key on at least one endpoint (the rules: :mod:`promptcache._fields`)."""

_SAFE_ID: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_NO_TENANT: Final = "~"  # never produced by _escape, so "no tenant" cannot collide with any tenant id


class KeyPolicy(StrEnum):
    """How message text is normalised before it joins the key.

    .. versionadded:: 0.1.0
    """

    EXACT = "exact"
    """Bytes as sent."""
    TRIM = "trim"
    """CRLF to LF, trailing spaces/tabs on each line and blank lines at both ends removed.

    Indentation is always kept."""
    COLLAPSE = "collapse"
    """The seed tutorial's ``' '.join(s.split())``.

    More hits, but it merges prompts that differ only in indentation."""


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The key of one request in one scope.

    Attributes:
        digest: 64 hex characters, sha256 of the schema tag and the canonical material.
        store_key: The key under which stores keep the entry: an escaped scope prefix plus the digest in
            braces (a Redis Cluster hash tag, so an entry and its lock share a slot).
        prefix: The agent's prefix in this namespace; every key of the agent starts with it.
        canonical: The canonical JSON bytes of the request after the field rules and text policy.
        route: The upstream, query and keyed headers (schema v2), or None for a request keyed by its
            body alone (``get_or_call`` without ``route=``).
        model: The request's ``model`` field when it is a string (what metrics label), else None.

    .. versionadded:: 0.1.0
    """

    digest: str
    store_key: str
    prefix: str
    namespace: str
    agent_id: str
    agent_version: str
    tenant: str | None
    endpoint: Endpoint
    policy: KeyPolicy
    canonical: bytes = field(repr=False)
    schema: int = SCHEMA_VERSION
    route: Route | None = None
    # Read once from the request here, so nothing downstream parses ``canonical`` back to label an event.
    model: str | None = field(default=None, compare=False)

    @property
    def lock_key(self) -> str:
        """The single-flight lock's key: outside every agent prefix (invalidation never counts it), and
        in the entry's Redis Cluster slot (same ``{digest}`` hash tag)."""
        return f"{self.store_key.partition(':')[0]}:lock:{{{self.digest}}}"

    @property
    def stream_store_key(self) -> str:
        """Where the streamed answer is kept, beside the body under :attr:`store_key`: same agent prefix
        (invalidation deletes both) and same ``{digest}`` hash tag (same Redis Cluster slot)."""
        return self.store_key + STREAM_SUFFIX


_TEXT_RULES: Final[dict[KeyPolicy, TextRule]] = {
    KeyPolicy.EXACT: EXACT_RULE,
    KeyPolicy.TRIM: TRIM_RULE,
    KeyPolicy.COLLAPSE: COLLAPSE_RULE,
}

# Where each endpoint's message text lives: (top-level text fields, the field holding the messages).
# Embeddings are absent on purpose: their input is data, not a prompt, and whitespace changes the vector.
_TEXT_FIELDS: Final[dict[Endpoint, tuple[tuple[str, ...], str]]] = {
    Endpoint.CHAT_COMPLETIONS: ((), "messages"),
    Endpoint.RESPONSES: (("instructions", "input"), "input"),
    Endpoint.ANTHROPIC_MESSAGES: (("system",), "messages"),
}


def _escape(value: object, what: str) -> str:
    """Escape one scope id so it holds no separator, glob or hash-tag character (injective)."""
    if not isinstance(value, str):
        raise InvalidScopeError(f"{what} must be a str, got {type(value).__qualname__}")
    return _escape_str("" + value, what)


@functools.lru_cache(maxsize=4096)  # ids repeat on every call; escaping each once is enough
def _escape_str(value: str, what: str) -> str:
    if not value:
        raise InvalidScopeError(f"{what} must not be empty")
    if _SAFE_ID.fullmatch(value):
        return value
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidScopeError(f"{what} {value!r} is not encodable as UTF-8") from exc
    # Why not urllib.parse.quote: it keeps "~", which we reserve for "no tenant".
    return "".join(chr(b) if chr(b).isascii() and _SAFE_ID.fullmatch(chr(b)) else f"%{b:02X}" for b in raw)


def agent_prefix(namespace: str, agent_id: str, agent_version: str | None = None) -> str:
    """The store-key prefix shared by every entry of an agent (and version, if given).

    The prefix holds no glob character, so a store can match it with ``prefix + "*"``.
    """
    head = f"{_escape(namespace, 'namespace')}:v{SCHEMA_VERSION}:{_escape(agent_id, 'agent_id')}:"
    if agent_version is None:
        return head
    return f"{head}{_escape(agent_version, 'agent_version')}:"


@functools.cache
def _material_head(endpoint: Endpoint, policy: KeyPolicy) -> bytes:
    """What is hashed before the request's bytes: the schema tag, then the material up to ``"request":``.

    The material is ``{"endpoint","policy","request","route","scope"}`` in canonical JSON.
    """
    head = _dumps({"endpoint": endpoint.value, "policy": policy.value})[:-1]
    return b'promptcache-key-v%d\n%s,"request":' % (SCHEMA_VERSION, head)


def make_key(  # noqa: PLR0913 - the scope is four ids; bundling them would only move the arguments
    request: Mapping[str, Any],
    *,
    namespace: str = DEFAULT_NAMESPACE,
    agent_id: str,
    agent_version: str = DEFAULT_AGENT_VERSION,
    tenant: str | None = None,
    endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
    policy: KeyPolicy | str = KeyPolicy.TRIM,
    route: Route | None = None,
    server_state: bool = False,
) -> CacheKey:
    """Build the canonical key of ``request`` in a scope.

    Args:
        request: The request body as it would be sent upstream (a JSON-like mapping). Not modified.
        namespace: Separates applications sharing one store.
        agent_id: The agent the answer belongs to; invalidation works per agent.
        agent_version: Bump it when the agent's prompts change.
        tenant: Optional; entries of different tenants never share a key.
        endpoint: Which API the request is for.
        policy: How message text is normalised.
        route: Where the request goes and the headers/query that select its answer (a wrapped SDK
            client passes it; see :mod:`promptcache._route`).
        server_state: Key requests that refer to mutable provider state too (the agent opted in).

    Returns:
        The frozen :class:`CacheKey`.

    Raises:
        ServerStateError: The request refers to mutable provider state and ``server_state`` is False.
        UncacheableRequestError: A request value has no canonical JSON form (the cache bypasses).
        InvalidScopeError: A scope id is empty, not a string or not encodable.
        ConfigError: ``endpoint`` or ``policy`` is not a known value.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.3.0 ``route`` and ``server_state`` (key schema v2).
    """
    ep = parse_enum(Endpoint, endpoint, "endpoint")
    pol = parse_enum(KeyPolicy, policy, "policy")
    if not isinstance(request, dict):
        if not hasattr(request, "items"):
            raise UncacheableRequestError(f"request must be a mapping, got {type(request).__qualname__}")
        request = dict(request.items())
    prefix = agent_prefix(namespace, agent_id) + _escape(agent_version, "agent_version") + ":"
    tenant_part = _tenant_part(tenant)
    if not server_state:
        reason = server_state_reason(ep, request)
        if reason is not None:
            raise ServerStateError(reason)
    body = key_body(ep, request)
    if pol is not KeyPolicy.EXACT and ep in _TEXT_FIELDS:
        text_fields, messages_field = _TEXT_FIELDS[ep]
        body = _with_text_policy(body, text_fields, messages_field, _TEXT_RULES[pol])
    canonical = _fast_canonical(body)
    if canonical is None:  # something needs normalising (or is invalid): the full walk decides
        canonical = _dumps(_canon_checked(body))
    # The material is {"endpoint", "policy", "request", "route", "scope"} in canonical JSON; the request's
    # bytes are hashed where they lie rather than serialised twice or copied into one buffer. The raw ids
    # (not the escaped ones) go in, so the digest never depends on the escaping rule.
    where = b"null" if route is None else _route_bytes(route)
    scope = _dumps([namespace, agent_id, agent_version, tenant])
    hasher = hashlib.sha256(_material_head(ep, pol))
    hasher.update(canonical)
    hasher.update(b',"route":%s,"scope":%s}' % (where, scope))
    digest = hasher.hexdigest()
    return CacheKey(
        digest=digest,
        store_key=_join_store_key(prefix, tenant_part, digest),
        prefix=prefix,
        namespace=namespace,
        agent_id=agent_id,
        agent_version=agent_version,
        tenant=tenant,
        endpoint=ep,
        policy=pol,
        canonical=canonical,
        route=route,
        model=_model_of(body),
    )


@functools.lru_cache(maxsize=256)  # a client has one route per endpoint and header set
def _route_bytes(route: Route) -> bytes:
    return _dumps(route.material())


def _model_of(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return "" + model if isinstance(model, str) else None


def _tenant_part(tenant: str | None) -> str:
    return _NO_TENANT if tenant is None else _escape(tenant, "tenant")


def _join_store_key(prefix: str, tenant_part: str, digest: str) -> str:
    # The digest in braces is a Redis Cluster hash tag: an entry and its lock share one slot.
    return f"{prefix}{tenant_part}:{{{digest}}}"


def store_key_for(namespace: str, agent_id: str, agent_version: str, tenant: str | None, digest: str) -> str:
    """The store key of the entry with ``digest`` in a scope, exactly as :func:`make_key` builds it.

    For tools that find an entry by its digest and scope (the CLI) without the request it was made from.

    Raises:
        InvalidScopeError: A scope id is empty, not a string or not encodable.
    """
    return _join_store_key(agent_prefix(namespace, agent_id, agent_version), _tenant_part(tenant), digest)


def generate_cache_key(  # noqa: PLR0913 - the seed tutorial's signature, kept for drop-in use
    system_prompt: str,
    user_prompt: str,
    model: str,
    temperature: float,
    max_tokens: int,
    agent_id: str | None = None,
    *,
    agent_version: str = DEFAULT_AGENT_VERSION,
    namespace: str = DEFAULT_NAMESPACE,
    policy: KeyPolicy | str = KeyPolicy.TRIM,
) -> str:
    """The seed tutorial's function, returning the digest the equivalent full request gets.

    The request is a chat completion with a system and a user message, exactly as ``CachedAgent`` sends
    it, so ``generate_cache_key(...) == make_key(that_request, ...).digest``. Unlike the seed, the default
    text policy is ``trim``: collapsing whitespace would merge prompts that differ only in indentation.

    .. versionadded:: 0.1.0
    """
    request = chat_request(system_prompt, user_prompt, model, temperature, max_tokens)
    return make_key(
        request,
        namespace=namespace,
        agent_id="default" if agent_id is None else agent_id,
        agent_version=agent_version,
        policy=policy,
    ).digest


def chat_request(
    system_prompt: str, user_prompt: str, model: str, temperature: float, max_tokens: int
) -> dict[str, Any]:
    """The chat-completion body the seed tutorial's agent sends for a system and a user prompt."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
    }


def namespace_prefix(namespace: str) -> str:
    """The prefix of every entry key in ``namespace`` (never of a lock key, ``<namespace>:lock:...``)."""
    return f"{_escape(namespace, 'namespace')}:v{SCHEMA_VERSION}:"


def agent_id_of(store_key: str) -> str:
    """The agent id an entry's store key was built for, unescaped (the inverse of the prefix rule)."""
    return unquote(store_key.split(":")[2])


def digest_of(store_key: str) -> str:
    """The digest inside an entry's ``{...}`` hash tag (a body's or a stream's store key)."""
    return store_key[store_key.rfind("{") + 1 : store_key.rfind("}")]


def is_stream_key(store_key: str) -> bool:
    """Whether a store key is a streamed answer's (:attr:`CacheKey.stream_store_key`)."""
    return store_key.endswith(STREAM_SUFFIX)


_STORE_KEY: Final = re.compile(
    r"(?P<ns>[^:]+):v(?P<schema>\d+):[^:]+:[^:]+:[^:]+:\{(?P<digest>[0-9a-f]{64})\}(?::stream)?"
)


def parse_store_key(text: str) -> tuple[str, int, str] | None:
    """``(namespace, schema, digest)`` of an entry's store key of any schema, or None when it is not one.

    The namespace is unescaped (the inverse of the prefix rule); a key of an older schema parses too, so
    a tool can say which schema it is instead of "not a key". A stream's key (``...}:stream``) parses too.
    """
    found = _STORE_KEY.fullmatch(text)
    if found is None:
        return None
    return unquote(found["ns"]), int(found["schema"]), found["digest"]


def counters_key(namespace: str) -> str:
    """The key of a namespace's cumulative request counters (``count_in_store``): never an entry's."""
    return f"{_escape(namespace, 'namespace')}:counters"
