"""Which request fields join the key, which are left out (and why), and which make a request bypass.

This module is the one source of the key's field rules (key schema v2). ``docs/KEY_FIELDS.md`` is
generated from :data:`FIELD_RULES` (``promptcache key-fields``) and a test checks it against this module
and against every parameter the installed SDKs know, so the table can never drift from the code.

Three outcomes for a request field:

* **in the key** (the default): every field not listed here, including ones nobody has heard of yet;
* **out of the key**: listed in :data:`FIELD_RULES` with :attr:`Rule.OUT` and a reason; the field cannot
  change the answer (delivery, bookkeeping, provider-side caching hints);
* **bypass**: the request refers to mutable state kept by the provider (a conversation, an unversioned
  prompt template, a container, a background job). The same request can get another answer tomorrow, so
  it goes upstream uncached (counted, with the reason) unless the agent opts in
  (``wrap(..., cache_server_state=True)``).

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from promptcache._endpoints import Endpoint

__all__ = [
    "ALL_ENDPOINTS",
    "FIELD_RULES",
    "FieldRule",
    "Rule",
    "key_body",
    "server_state_reason",
]


class Rule(StrEnum):
    """What a field does to the key."""

    IN = "in the key"
    OUT = "out of the key"
    BYPASS = "bypass"
    NORMALISED = "in the key, normalised"


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One row of the field table."""

    name: str
    endpoints: tuple[Endpoint, ...]
    rule: Rule
    why: str


ALL_ENDPOINTS: Final = tuple(Endpoint)
_CHAT: Final = (Endpoint.CHAT_COMPLETIONS,)
_RESP: Final = (Endpoint.RESPONSES,)
_ANTH: Final = (Endpoint.ANTHROPIC_MESSAGES,)
_GEN: Final = (Endpoint.CHAT_COMPLETIONS, Endpoint.RESPONSES, Endpoint.ANTHROPIC_MESSAGES)

_DELIVERY = "delivery, not content: a streamed and a plain answer are kept side by side and converted"
_BOOKKEEPING = "end-user / bookkeeping id the provider documents as not affecting generation"
_CACHING_HINT = "a hint to the provider's own prompt cache; never changes the answer"
_TIER = "latency and price tier of the same model; the answer is drawn from the same model"

FIELD_RULES: Final[tuple[FieldRule, ...]] = (
    FieldRule("stream", ALL_ENDPOINTS, Rule.OUT, _DELIVERY),
    FieldRule(
        "stream_options",
        ALL_ENDPOINTS,
        Rule.OUT,
        "delivery; a replay has the shape the caller asked for (a usage chunk iff include_usage)",
    ),
    FieldRule("user", ALL_ENDPOINTS, Rule.OUT, _BOOKKEEPING),
    FieldRule("metadata", ALL_ENDPOINTS, Rule.OUT, _BOOKKEEPING),
    FieldRule("safety_identifier", ALL_ENDPOINTS, Rule.OUT, _BOOKKEEPING),
    FieldRule("prompt_cache_key", ALL_ENDPOINTS, Rule.OUT, _CACHING_HINT),
    FieldRule("prompt_cache_retention", ALL_ENDPOINTS, Rule.OUT, _CACHING_HINT),
    FieldRule("prompt_cache_options", ALL_ENDPOINTS, Rule.OUT, _CACHING_HINT),
    FieldRule("service_tier", ALL_ENDPOINTS, Rule.OUT, _TIER),
    FieldRule(
        "store",
        _CHAT,
        Rule.OUT,
        "keeps a copy for distillation/evals on the provider; the answer is the same",
    ),
    FieldRule(
        "store",
        _RESP,
        Rule.NORMALISED,
        "decides whether the answer's id can be used as previous_response_id: store=false is its own "
        "key; omitted and true are the same (true is the default)",
    ),
    FieldRule(
        "timeout",
        ALL_ENDPOINTS,
        Rule.OUT,
        "an SDK transport option that sometimes travels inside a request dict given to get_or_call",
    ),
    FieldRule("extra_headers", ALL_ENDPOINTS, Rule.OUT, "an SDK option; headers are keyed by the route"),
    FieldRule(
        "extra_query", ALL_ENDPOINTS, Rule.OUT, "an SDK option; the query string is keyed by the route"
    ),
    FieldRule(
        "cache_control",
        _ANTH,
        Rule.OUT,
        "prompt-caching markers (top level, on system blocks, content blocks and tools) never change "
        "the answer; a content list that is one plain text block keys like the string",
    ),
    FieldRule(
        "conversation",
        _RESP,
        Rule.BYPASS,
        "a conversation is mutable provider state: the same request answers differently as it grows",
    ),
    FieldRule(
        "prompt",
        _RESP,
        Rule.BYPASS,
        "a prompt template id without a version resolves to whatever version is latest (with a version "
        "it is in the key)",
    ),
    FieldRule("background", _RESP, Rule.BYPASS, "background=true returns a job whose state changes"),
    FieldRule(
        "container",
        _ANTH,
        Rule.BYPASS,
        "a code-execution container is mutable provider state (its files change between calls)",
    ),
    FieldRule(
        "previous_response_id",
        _RESP,
        Rule.IN,
        "a stored response is immutable; its id is valid only in its organisation/project, which the "
        "route keys",
    ),
    FieldRule(
        "messages / input / system / instructions",
        _GEN,
        Rule.NORMALISED,
        "message text follows the key policy (trim: CRLF to LF, trailing spaces at line ends and blank "
        "lines at both ends of the joined text of a message; tabs, indentation and the final assistant "
        "prefill are kept exactly)",
    ),
)
"""Every field with a rule other than "in the key", plus the normalised ones, by endpoint."""

OUT_OF_KEY: Final[dict[Endpoint, frozenset[str]]] = {
    ep: frozenset(r.name for r in FIELD_RULES if r.rule is Rule.OUT and ep in r.endpoints) for ep in Endpoint
}


def server_state_reason(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    """Why ``body`` refers to mutable provider state (so it must not be served from the cache), or None."""
    if endpoint is Endpoint.RESPONSES:
        if body.get("conversation") is not None:
            return "conversation"
        prompt = body.get("prompt")
        if isinstance(prompt, dict) and prompt.get("id") is not None and prompt.get("version") is None:
            return "prompt without version"
        if body.get("background") is True:
            return "background"
    elif endpoint is Endpoint.ANTHROPIC_MESSAGES and body.get("container") is not None:
        return "container"
    return None


def key_body(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    """``request`` minus the fields that stay out of the key, normalised per :data:`FIELD_RULES`.

    Copy-on-write: the caller's objects are never changed.
    """
    out = OUT_OF_KEY[endpoint]
    body = {k: v for k, v in request.items() if k not in out}
    if endpoint is Endpoint.RESPONSES and body.get("store", True) is True:
        body.pop("store", None)  # true is the default: omitted and true are one request
    elif endpoint is Endpoint.ANTHROPIC_MESSAGES:
        body = _without_cache_control(body)
    return body


def _plain_text(blocks: Any) -> Any:  # noqa: ANN401 - JSON
    """A content list that is exactly one plain text block is the string itself."""
    if (
        isinstance(blocks, list)
        and len(blocks) == 1
        and isinstance(blocks[0], dict)
        and blocks[0].keys() == {"type", "text"}
        and blocks[0]["type"] == "text"
        and isinstance(blocks[0]["text"], str)
    ):
        return blocks[0]["text"]
    return blocks


def _without_key(value: Any, name: str) -> Any:  # noqa: ANN401 - JSON
    if isinstance(value, dict) and name in value:
        return {k: v for k, v in value.items() if k != name}
    return value


def _strip_blocks(blocks: Any) -> Any:  # noqa: ANN401 - JSON
    if not isinstance(blocks, list):
        return blocks
    if not any(isinstance(b, dict) and "cache_control" in b for b in blocks):
        return _plain_text(blocks)
    return _plain_text([_without_key(b, "cache_control") for b in blocks])


def _without_cache_control(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("cache_control", None)
    if "system" in body:
        body["system"] = _strip_blocks(body["system"])
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "cache_control" in t for t in tools):
        body["tools"] = [_without_key(t, "cache_control") for t in tools]
    messages = body.get("messages")
    if isinstance(messages, list):
        changed: list[Any] | None = None
        for i, message in enumerate(messages):
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                content = _strip_blocks(message["content"])
                if content is not message["content"]:
                    if changed is None:
                        changed = list(messages)
                    changed[i] = {**message, "content": content}
        if changed is not None:
            body["messages"] = changed
    return body
