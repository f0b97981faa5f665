"""The stored envelope: versioned JSON (zlib-compressed above a threshold), never pickle.

An entry records the digest and scope it was written for; :func:`decode_entry` checks both against the key
it was found under, so a value copied from another key, agent or tenant is a miss, never an answer. Only
strict JSON is ever parsed: nothing stored can make the reader run code.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache.exceptions import EntryError

if TYPE_CHECKING:
    from promptcache._keys import CacheKey

__all__ = ["ENTRY_FORMAT", "Entry", "decode_entry", "encode_entry", "is_compressed", "parse_entry"]

ENTRY_FORMAT: Final = 1
_ZLIB_MAGIC: Final = b"PCZ1"  # cannot start a JSON document, so plain and compressed values never mix up
_MAX_INFLATED: Final = 64 * 1024 * 1024  # a hostile compressed value must not inflate without bound


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached response.

    Attributes:
        digest: The key digest the entry was written for.
        scope: ``[namespace, agent_id, agent_version, tenant]`` it was written for.
        endpoint: The endpoint value (``"chat.completions"`` ...).
        created_at: Wall-clock seconds when written.
        expires_at: Wall-clock seconds after which the entry is stale even if the store still has it.
        body: The full response body (non-streamed), or None for a stream.
        chunks: The complete list of stream chunks (each a JSON value), or None.
        model: The model that answered, if the body says.
        usage: Token usage as the provider reported it.
        latency: Seconds the upstream call took (what a hit saves).
        request: The canonical request, kept for diffs when enabled; None otherwise.
        route: The route the key was made with, in its cassette form (kept with ``request``).
        converted: Built from the other kind of stored answer (a stream from a body, or a body from a
            stream) for this read; never stored.
        from_tier: Read from the in-process hot tier rather than the store; never stored.
    """

    digest: str
    scope: tuple[str, str, str, str | None]
    endpoint: str
    created_at: float
    expires_at: float
    body: Any = None
    chunks: list[Any] | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    latency: float = 0.0
    request: Any = field(default=None, repr=False)
    route: Any = field(default=None, repr=False)
    converted: bool = field(default=False, compare=False)
    from_tier: bool = field(default=False, compare=False)


def scope_of(key: CacheKey) -> tuple[str, str, str, str | None]:
    return (key.namespace, key.agent_id, key.agent_version, key.tenant)


def encode_entry(entry: Entry, *, compress_above: int | None = 32 * 1024) -> bytes:
    """Serialise ``entry``; compress when the JSON is larger than ``compress_above`` bytes."""
    doc: dict[str, Any] = {
        "version": ENTRY_FORMAT,
        "digest": entry.digest,
        "scope": list(entry.scope),
        "endpoint": entry.endpoint,
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
        "model": entry.model,
        "usage": entry.usage,
        "latency": entry.latency,
    }
    if entry.chunks is not None:
        doc["chunks"] = entry.chunks
    else:
        doc["body"] = entry.body
    if entry.request is not None:
        doc["request"] = entry.request
    if entry.route is not None:
        doc["route"] = entry.route
    raw = orjson.dumps(doc)
    if compress_above is not None and len(raw) > compress_above:
        return _ZLIB_MAGIC + zlib.compress(raw, 1)
    return raw


def is_compressed(raw: bytes) -> bool:
    """Whether stored bytes are a compressed entry (as :func:`encode_entry` writes above its threshold)."""
    return raw.startswith(_ZLIB_MAGIC)


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw[len(_ZLIB_MAGIC) :], _MAX_INFLATED)
    except zlib.error as exc:
        raise EntryError(f"compressed entry is corrupt ({exc})") from None
    if inflater.unconsumed_tail:
        raise EntryError(f"compressed entry inflates beyond {_MAX_INFLATED} bytes")
    return out


def _field(doc: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:  # noqa: ANN401 - JSON
    value = doc.get(name)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        raise EntryError(f"entry field {name!r} is missing or has the wrong type")
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _load(raw: bytes | str) -> Any:  # noqa: ANN401 - JSON
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if is_compressed(raw):
        raw = _inflate(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EntryError(f"entry is not valid JSON ({exc})") from None


def _entry_of(doc: Any) -> Entry:  # noqa: ANN401 - parsed JSON, checked here
    if not isinstance(doc, dict):
        raise EntryError("entry is not a JSON object")
    if doc.get("version") != ENTRY_FORMAT:
        raise EntryError(f"entry format {doc.get('version')!r} is not {ENTRY_FORMAT}")
    scope = _field(doc, "scope", list)
    if (
        len(scope) != 4
        or not all(isinstance(s, str) for s in scope[:3])
        or not isinstance(scope[3], str | None)
    ):
        raise EntryError("entry scope is malformed")
    chunks = doc.get("chunks")
    if chunks is not None and not isinstance(chunks, list):
        raise EntryError("entry chunks are not a list")
    if chunks is None and "body" not in doc:
        raise EntryError("entry has neither body nor chunks")
    usage = doc.get("usage")
    model = doc.get("model")
    return Entry(
        digest=_field(doc, "digest", str),
        scope=(scope[0], scope[1], scope[2], scope[3]),
        endpoint=_field(doc, "endpoint", str),
        created_at=float(_field(doc, "created_at", (int, float))),
        expires_at=float(_field(doc, "expires_at", (int, float))),
        body=doc.get("body"),
        chunks=chunks,
        model=model if isinstance(model, str) else None,
        usage=usage if isinstance(usage, dict) else None,
        latency=float(doc["latency"]) if isinstance(doc.get("latency"), int | float) else 0.0,
        request=doc.get("request"),
        route=doc.get("route") if isinstance(doc.get("route"), dict) else None,
    )


def parse_entry(raw: bytes | str) -> Entry:
    """Parse stored bytes into an Entry without checking it against a key.

    Raises:
        EntryError: Not a promptcache entry of a known format.
    """
    return _entry_of(_load(raw))


def decode_entry(raw: bytes | str, key: CacheKey, now: float, *, from_tier: bool = False) -> Entry | None:
    """Parse stored bytes and check them against the key they were found under (``from_tier``: the bytes
    came from the hot tier, which the entry records).

    The identity checks (digest, scope, endpoint) run on the parsed document first, so a foreign value
    is rejected before any of it is turned into an entry.

    Returns:
        The entry, or None when it has expired (the app-level check behind the store's own TTL).

    Raises:
        EntryError: Corrupt, foreign (written for another digest or scope) or of another format.
    """
    if type(raw) is bytes and not raw.startswith(_ZLIB_MAGIC):  # the common case, parsed here at once
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EntryError(f"entry is not valid JSON ({exc})") from None
    else:
        doc = _load(raw)
    if type(doc) is not dict:
        _entry_of(doc)  # raises the precise EntryError
    get = doc.get
    if get("version") != ENTRY_FORMAT:
        _entry_of(doc)
    if get("digest") != key.digest:
        raise EntryError("entry was written for another key")
    scope = (key.namespace, key.agent_id, key.agent_version, key.tenant)
    if get("scope") != [*scope]:
        raise EntryError("entry was written for another scope")
    endpoint = get("endpoint")
    if endpoint != key.endpoint:  # a StrEnum: equal to its value (the stored string, kept below)
        raise EntryError("entry was written for another endpoint")
    expires_at = get("expires_at")
    created_at = get("created_at")
    chunks = get("chunks")
    if (
        type(expires_at) not in (int, float)
        or type(created_at) not in (int, float)
        or (chunks is None and "body" not in doc)
        or (chunks is not None and type(chunks) is not list)
    ):
        _entry_of(doc)  # raises the precise EntryError
    if expires_at <= now:
        return None
    usage = get("usage")
    model = get("model")
    latency = get("latency")
    return Entry(
        key.digest,
        scope,
        endpoint,
        float(created_at),
        float(expires_at),
        get("body"),
        chunks,
        model if type(model) is str else None,
        usage if type(usage) is dict else None,
        float(latency) if type(latency) in (int, float) else 0.0,
        get("request"),
        from_tier=from_tier,
    )
