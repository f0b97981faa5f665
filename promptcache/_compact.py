"""The compact, privacy-safe form of a request an entry keeps by default (``keep_request=False``).

Every text inside the message-bearing fields (``messages``, ``input``, ``system``, ``instructions``,
``prompt``) and the end-user fields (``user``, ``metadata``) becomes a short SHA-256 hash; structure,
roles and part types stay, and every other field (model, temperature, tools ...) is kept as it is. The
route keeps its upstream, with each header and query value hashed. So ``promptcache explain --against``
can always name the field that differs (``$.messages[1].content``, ``$.temperature``,
``route.headers.openai-organization``) without the store ever holding a prompt. ``keep_request=True``
keeps the whole canonical request and route instead.

A compact request carries :data:`COMPACT_MARK`; :func:`compact_request` applied to a full canonical
request gives exactly the form stored, so the two compare field by field.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

__all__ = ["COMPACT_MARK", "compact_request", "compact_route", "is_compact", "without_mark"]

COMPACT_MARK: Final = "$promptcache"
"""The top-level key marking a compact request; its value names the form (``compact-v1``)."""
COMPACT_FORM: Final = "compact-v1"
HASHED_FIELDS: Final = frozenset(
    {"messages", "input", "system", "instructions", "prompt", "user", "metadata"}
)
KEPT_KEYS: Final = frozenset({"role", "type", "name", "tool_call_id", "id", "cache_control"})
"""Keys inside the hashed fields whose string values are structure, not text: kept as they are."""


def text_hash(text: str) -> str:
    """A text's stand-in: ``sha256:`` and the first 16 hex digits of its UTF-8 bytes' digest."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _hashed(value: Any, key: str | None = None) -> Any:  # noqa: ANN401 - JSON
    if isinstance(value, str):
        return value if key in KEPT_KEYS else text_hash(value)
    if isinstance(value, list):
        return [_hashed(v, key) for v in value]
    if isinstance(value, dict):
        return {k: _hashed(v, k) for k, v in value.items()}
    return value


def compact_request(canonical: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a canonical request (see the module docstring)."""
    out = {k: (_hashed(v) if k in HASHED_FIELDS else v) for k, v in canonical.items()}
    out[COMPACT_MARK] = COMPACT_FORM
    return out


def compact_route(record: dict[str, Any]) -> dict[str, Any]:
    """A route record (``route_record``) with each header and query value hashed."""
    out = dict(record)
    headers = record.get("headers")
    if isinstance(headers, dict):
        out["headers"] = {name: text_hash(str(v)) for name, v in headers.items()}
    query = record.get("query")
    if isinstance(query, dict):
        out["query"] = {name: text_hash(str(v)) for name, v in query.items()}
    elif isinstance(query, list):
        out["query"] = [[pair[0], text_hash(str(pair[1]))] for pair in query if isinstance(pair, list)]
    return out


def is_compact(request: object) -> bool:
    """True for a request stored in the compact form."""
    return isinstance(request, dict) and request.get(COMPACT_MARK) == COMPACT_FORM


def without_mark(request: dict[str, Any]) -> dict[str, Any]:
    """A compact request without its mark (for diffs and display)."""
    return {k: v for k, v in request.items() if k != COMPACT_MARK}
