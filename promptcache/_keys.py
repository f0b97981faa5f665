"""The canonical cache key (schema v1): one request, one digest, in every process and on every machine.

The same key serves the production cache and the pytest record/replay harness, so what a test records is
exactly what production would look up. The rules (see DESIGN.md, "The key"):

1. The request body minus :data:`DENY_LIST` (fields that cannot change the output) is the material; every
   other field joins it, including ones nobody has heard of yet.
2. The scope (namespace, agent id, agent version, tenant) and the endpoint join the material and, escaped,
   the store key's prefix.
3. Canonical JSON: sorted object keys, no whitespace, UTF-8, integral floats written as integers
   (``0 == 0.0``), list order kept, omitted parameters left omitted.
4. The :class:`KeyPolicy` is applied to message text only.
5. sha256 over the schema tag plus the canonical bytes.

Nothing here does I/O; it is pure and safe to call from any thread.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import orjson

from promptcache._validate import parse_enum
from promptcache.exceptions import InvalidScopeError, UncacheableRequestError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "DEFAULT_AGENT_VERSION",
    "DEFAULT_NAMESPACE",
    "DENY_LIST",
    "SCHEMA_VERSION",
    "CacheKey",
    "Endpoint",
    "KeyPolicy",
    "agent_prefix",
    "canonical_json",
    "generate_cache_key",
    "make_key",
    "store_key_for",
]

SCHEMA_VERSION: Final = 1
"""Bumped whenever any rule here changes a digest; the golden-file test enforces it."""

DEFAULT_NAMESPACE: Final = "promptcache"
DEFAULT_AGENT_VERSION: Final = "0"

DENY_LIST: Final = frozenset(
    {
        # Delivery, not content: a streamed and a non-streamed answer to one request are the same answer.
        "stream",
        "stream_options",
        # End-user / bookkeeping identifiers that providers document as not affecting generation.
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        # SDK transport options that sometimes travel inside a request dict given to get_or_call.
        "timeout",
        "extra_headers",
        "extra_query",
    }
)
"""Top-level request fields left out of the key. Everything not listed here is part of the key."""

# 2**53: integral floats above this are not exactly representable as the same integer everywhere.
_MAX_SAFE_INT: Final = 9_007_199_254_740_992
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


class Endpoint(StrEnum):
    """The upstream API a request is for; part of the key material.

    .. versionadded:: 0.1.0
    """

    CHAT_COMPLETIONS = "chat.completions"
    RESPONSES = "responses"
    EMBEDDINGS = "embeddings"
    ANTHROPIC_MESSAGES = "anthropic.messages"


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The key of one request in one scope.

    Attributes:
        digest: 64 hex characters, sha256 of the schema tag and the canonical material.
        store_key: The key under which stores keep the entry: an escaped scope prefix plus the digest in
            braces (a Redis Cluster hash tag, so an entry and its lock share a slot).
        prefix: The agent's prefix in this namespace; every key of the agent starts with it.
        canonical: The canonical JSON bytes of the request after the deny-list and text policy.
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
    # Read once from the request here, so nothing downstream parses ``canonical`` back to label an event.
    model: str | None = field(default=None, compare=False)

    @property
    def lock_key(self) -> str:
        """The single-flight lock's key: outside every agent prefix (invalidation never counts it), and
        in the entry's Redis Cluster slot (same ``{digest}`` hash tag)."""
        return f"{self.store_key.partition(':')[0]}:lock:{{{self.digest}}}"


def trim_text(text: str) -> str:
    """Apply :attr:`KeyPolicy.TRIM`: never touches indentation or characters inside a line."""
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return "\n".join(lines[start:end])


def collapse_text(text: str) -> str:
    """Apply :attr:`KeyPolicy.COLLAPSE`: exactly the seed tutorial's whitespace rule."""
    return " ".join(text.split())


def _exact_text(text: str) -> str:
    return text


_TEXT_RULES: Final[dict[KeyPolicy, Callable[[str], str]]] = {
    KeyPolicy.EXACT: _exact_text,
    KeyPolicy.TRIM: trim_text,
    KeyPolicy.COLLAPSE: collapse_text,
}


class _BadValue(Exception):  # noqa: N818 - internal signal, re-raised as UncacheableRequestError
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.parts: list[str] = []


def _canon_scalar(value: object) -> object:
    """Canonicalise a non-container value, or raise _BadValue naming what it is."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN test
            raise _BadValue(f"float {value!r} has no JSON form")
        # 0 == 0.0: an integral float is written as the integer (and -0.0 as 0).
        if value.is_integer() and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return int(value)
        return float(value)
    if isinstance(value, int):  # bool handled above; IntEnum and friends become plain ints
        return int(value)
    if isinstance(value, str):  # StrEnum and other str subclasses become plain str
        return "" + value
    # dict/list subclasses (OrderedDict ...) are written as their base, as orjson does.
    if isinstance(value, dict):
        return _canon(dict(value))
    if isinstance(value, list | tuple):
        return _canon(list(value))
    if isinstance(value, Enum):  # orjson writes an enum as its value; the slow path must agree
        return _canon(value.value)
    if isinstance(value, uuid.UUID):  # likewise written by orjson as its canonical string
        return str(value)
    raise _BadValue(f"{type(value).__qualname__} value has no JSON form")


def _canon(value: object) -> object:
    """Return a canonical deep copy: only dict/list/str/int/float/bool/None, floats normalised."""
    kind = type(value)
    if kind is dict:
        out: dict[str, object] = {}
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                if not isinstance(k, str):
                    raise _BadValue(f"dict key {k!r} is not a string")
                k = "" + k  # noqa: PLW2901 - a str-subclass key is written as plain str, as orjson does
            vk = type(v)
            try:
                out[k] = v if vk is str or vk is int or v is None else _canon(v)
            except _BadValue as exc:
                exc.parts.append(f".{k}")
                raise
        return out
    if kind is list or kind is tuple:
        items: list[object] = []
        for i, v in enumerate(value):  # type: ignore[arg-type]
            vk = type(v)
            try:
                items.append(v if vk is str or vk is int or v is None else _canon(v))
            except _BadValue as exc:
                exc.parts.append(f"[{i}]")
                raise
        return items
    if kind is str or kind is int:
        return value
    return _canon_scalar(value)


_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})


def _ruled(value: Any, rule: Callable[[str], str]) -> Any:  # noqa: ANN401 - JSON
    """``value`` with the rule applied if it is text or a list of text parts; copies only what changes."""
    if isinstance(value, str):
        return rule(value)
    if not isinstance(value, list):
        return value
    out: list[Any] | None = None
    for i, part in enumerate(value):
        if (
            isinstance(part, dict)
            and isinstance(part.get("type"), str)
            and part["type"] in _TEXT_PART_TYPES
            and isinstance(part.get("text"), str)
        ):
            text = rule(part["text"])
            if text != part["text"]:
                if out is None:
                    out = list(value)
                out[i] = {**part, "text": text}
    return value if out is None else out


def _with_text_policy(
    request: dict[str, Any], endpoint: Endpoint, rule: Callable[[str], str]
) -> dict[str, Any]:
    """``request`` with message text normalised, copy-on-write: the caller's objects are never changed.

    Only message text is touched: roles, tools, arguments and embedding input are not.
    """
    if endpoint is Endpoint.EMBEDDINGS:
        return request  # embedding input is data, not a prompt: whitespace changes the vector
    out = dict(request)
    fields: tuple[str, ...]
    if endpoint is Endpoint.RESPONSES:
        fields, messages_field = ("instructions", "input"), "input"
    elif endpoint is Endpoint.ANTHROPIC_MESSAGES:
        fields, messages_field = ("system",), "messages"
    else:
        fields, messages_field = (), "messages"
    for name in fields:
        if name in out:
            out[name] = _ruled(out[name], rule)
    messages = out.get(messages_field)
    if isinstance(messages, list):
        copied: list[Any] | None = None
        for i, message in enumerate(messages):
            if isinstance(message, dict) and "content" in message:
                content = _ruled(message["content"], rule)
                if content is not message["content"] and content != message["content"]:
                    if copied is None:
                        copied = list(messages)
                    copied[i] = {**message, "content": content}
        if copied is not None:
            out[messages_field] = copied
    return out


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


def _canon_checked(value: object) -> object:
    try:
        return _canon(value)
    except _BadValue as exc:
        raise UncacheableRequestError(str(exc), "$" + "".join(reversed(exc.parts))) from None
    except RecursionError:
        raise UncacheableRequestError("value is nested too deeply") from None


def _locate_unencodable(value: object, path: str = "$") -> tuple[str, str]:
    """Where in a canonical value orjson failed: a lone surrogate or an integer beyond 64 bits."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string holds a lone surrogate (not valid UTF-8)", path
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            return "integer is beyond 64 bits", path
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _locate_unencodable(k, f"{path}.{k!r}") if isinstance(k, str) else None
            if found and found[0]:
                return found
            found = _locate_unencodable(v, f"{path}.{k}")
            if found[0]:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _locate_unencodable(v, f"{path}[{i}]")
            if found[0]:
                return found
    return "", path


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # lone surrogates, integers beyond 64 bits
        what, where = _locate_unencodable(value)
        raise UncacheableRequestError(what or f"no canonical JSON form ({exc})", where) from None


_FAST_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def _floats_need_walk(value: dict[str, Any] | list[Any]) -> bool:
    """True if any float is NaN/inf (orjson would write null) or integral (must be written as an int)."""
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for item in items:
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float:
            if item != item or item.is_integer() or item in _INFINITIES:  # noqa: PLR0124 - NaN test
                return True
        elif kind is dict or kind is list:
            if _floats_need_walk(item):
                return True
        else:
            return True  # tuples, subclasses, enums ...: let the full walk decide
    return False


_INFINITIES: Final = (float("inf"), float("-inf"))


def _fast_canonical(body: dict[str, Any]) -> bytes | None:
    """The canonical bytes straight from orjson, or None when the full walk is needed.

    orjson sorts keys and refuses non-string keys, bytes, sets, callables and out-of-range ints. What it
    does differently from the rules is NaN/inf (written as null) and integral floats (``1.0``, not
    ``1``); a read-only scan sends any request holding one of those, or any unusual type, down the
    full walk, which decides exactly. Both paths give the same bytes for the same request.
    """
    try:
        if _floats_need_walk(body):
            return None
        return orjson.dumps(body, option=_FAST_OPTIONS)
    except (orjson.JSONEncodeError, TypeError, RecursionError):
        return None


@functools.cache
def _material_head(endpoint: Endpoint, policy: KeyPolicy) -> bytes:
    """``{"endpoint":...,"policy":...`` without the closing brace (the rest of the material follows)."""
    return _dumps({"endpoint": endpoint.value, "policy": policy.value})[:-1]


def canonical_json(value: object) -> bytes:
    """Canonical JSON bytes of any JSON-like value (sorted keys, compact, UTF-8, ``0 == 0.0``).

    Raises:
        UncacheableRequestError: The value (or something inside it) has no canonical JSON form.
    """
    return _dumps(_canon_checked(value))


def make_key(  # noqa: PLR0913 - the scope is four ids; bundling them would only move the arguments
    request: Mapping[str, Any],
    *,
    namespace: str = DEFAULT_NAMESPACE,
    agent_id: str,
    agent_version: str = DEFAULT_AGENT_VERSION,
    tenant: str | None = None,
    endpoint: Endpoint | str = Endpoint.CHAT_COMPLETIONS,
    policy: KeyPolicy | str = KeyPolicy.TRIM,
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

    Returns:
        The frozen :class:`CacheKey`.

    Raises:
        UncacheableRequestError: A request value has no canonical JSON form (the cache bypasses).
        InvalidScopeError: A scope id is empty, not a string or not encodable.
        ConfigError: ``endpoint`` or ``policy`` is not a known value.

    .. versionadded:: 0.1.0
    """
    ep = parse_enum(Endpoint, endpoint, "endpoint")
    pol = parse_enum(KeyPolicy, policy, "policy")
    if not isinstance(request, dict):
        if not hasattr(request, "items"):
            raise UncacheableRequestError(f"request must be a mapping, got {type(request).__qualname__}")
        request = dict(request.items())
    prefix = agent_prefix(namespace, agent_id) + _escape(agent_version, "agent_version") + ":"
    tenant_part = _tenant_part(tenant)
    body = {k: v for k, v in request.items() if k not in DENY_LIST}
    if pol is not KeyPolicy.EXACT:
        body = _with_text_policy(body, ep, _TEXT_RULES[pol])
    canonical = _fast_canonical(body)
    if canonical is None:  # something needs normalising (or is invalid): the full walk decides
        canonical = _dumps(_canon_checked(body))
    # The material is {"endpoint", "policy", "request", "scope"} in canonical JSON; the request's bytes
    # are spliced in rather than serialised twice. The raw ids (not the escaped ones) go in, so the
    # digest never depends on the escaping rule.
    head = _material_head(ep, pol)
    scope = _dumps([namespace, agent_id, agent_version, tenant])
    material = b'%s,"request":%s,"scope":%s}' % (head, canonical, scope)
    digest = hashlib.sha256(b"promptcache-key-v%d\n%s" % (SCHEMA_VERSION, material)).hexdigest()
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
        model=_model_of(body),
    )


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
    """The digest an entry's store key ends with (inside its ``{...}`` hash tag)."""
    return store_key.rpartition(":")[2].removeprefix("{").removesuffix("}")
