"""A streamed answer's final body, assembled from its recorded events (pure functions, no I/O).

What the provider would have answered without ``stream``: the chat completion built from its chunks (text,
refusal, tool calls, logprobs, finish reason, usage), the Responses object of ``response.completed``, and
the Anthropic message built from ``message_start``, the content block events and ``message_delta``.
Events are the recorded SSE events of :mod:`promptcache.integrations._sse`:
``{"event": name | None, "data": JSON}`` (or ``"text"`` for data that is not JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from promptcache._keys import Endpoint

__all__ = ["TOOL_BLOCKS", "body_from_events", "obj"]

TOOL_BLOCKS: Final = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
"""Anthropic content blocks whose ``input`` streams as ``input_json_delta`` pieces."""
_MESSAGE_DELTA_FIELDS: Final = frozenset({"stop_reason", "stop_sequence", "container"})


def body_from_events(endpoint: Endpoint, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The body a non-streamed call would have returned, or None when the events do not make one."""
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        return _chat_body(events)
    if endpoint is Endpoint.RESPONSES:
        return _responses_body(events)
    if endpoint is Endpoint.ANTHROPIC_MESSAGES:
        return _anthropic_body(events)
    return None


def obj(value: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON
    """``value`` if it is a JSON object, else an empty one (to read optional nested fields)."""
    return value if isinstance(value, dict) else {}


def _datas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if isinstance(e, dict) and isinstance(e.get("data"), dict)]


# -- chat completions -------------------------------------------------------------------------------


@dataclass
class _Call:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    role: str | None = None
    content: list[str] | None = None
    refusal: list[str] | None = None
    calls: dict[int, _Call] = field(default_factory=dict)
    annotations: list[Any] = field(default_factory=list)
    logprobs: dict[str, list[Any]] | None = None
    finish: Any = None


def _add_delta(acc: _Choice, choice: dict[str, Any]) -> None:
    delta = obj(choice.get("delta"))
    if isinstance(delta.get("role"), str):
        acc.role = delta["role"]
    for name in ("content", "refusal"):
        piece = delta.get(name)
        if isinstance(piece, str):
            parts = getattr(acc, name)
            if parts is None:
                setattr(acc, name, parts := [])
            parts.append(piece)
    for call in delta.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        got = acc.calls.setdefault(int(call.get("index", 0)), _Call())
        got.id = call.get("id") or got.id
        got.type = call.get("type") or got.type
        function = obj(call.get("function"))
        got.name += function.get("name") or ""
        if isinstance(function.get("arguments"), str):
            got.arguments.append(function["arguments"])
    if isinstance(delta.get("annotations"), list):
        acc.annotations.extend(delta["annotations"])
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        acc.logprobs = acc.logprobs or {}
        for name in ("content", "refusal"):
            if isinstance(logprobs.get(name), list):
                acc.logprobs.setdefault(name, []).extend(logprobs[name])
    if choice.get("finish_reason") is not None:
        acc.finish = choice["finish_reason"]


def _message(acc: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": acc.role or "assistant",
        "content": None if acc.content is None else "".join(acc.content),
        "refusal": None if acc.refusal is None else "".join(acc.refusal),
        "annotations": acc.annotations,
    }
    if acc.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type,
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for _, call in sorted(acc.calls.items())
        ]
    return message


def _chat_body(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    datas = _datas(events)
    if not datas:
        return None
    choices: dict[int, _Choice] = {}
    usage: Any = None
    for data in datas:
        if isinstance(data.get("usage"), dict):
            usage = data["usage"]
        for choice in data.get("choices") or []:
            if isinstance(choice, dict):
                _add_delta(choices.setdefault(int(choice.get("index", 0)), _Choice()), choice)
    if not choices:
        return None
    first = datas[0]
    body: dict[str, Any] = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [
            {
                "index": index,
                "message": _message(acc),
                "logprobs": acc.logprobs,
                "finish_reason": acc.finish,
            }
            for index, acc in sorted(choices.items())
        ],
    }
    if usage is not None:
        body["usage"] = usage
    for name in ("service_tier", "system_fingerprint"):
        if name in first:
            body[name] = first[name]
    return body


# -- responses --------------------------------------------------------------------------------------


def _responses_body(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for data in reversed(_datas(events)):
        if data.get("type") == "response.completed" and isinstance(data.get("response"), dict):
            return dict(data["response"])
    return None


# -- anthropic messages -----------------------------------------------------------------------------


def _apply_block_delta(block: dict[str, Any], delta: dict[str, Any], partial: list[str]) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = str(block.get("text") or "") + str(delta.get("text") or "")
    elif kind == "input_json_delta":
        partial.append(str(delta.get("partial_json") or ""))
    elif kind == "thinking_delta":
        block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking") or "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "citations_delta":
        block["citations"] = [*(block.get("citations") or []), delta.get("citation")]


def _anthropic_body(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    for data in _datas(events):
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = dict(data["message"])
            message["usage"] = dict(message.get("usage") or {})
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            blocks[int(data.get("index", 0))] = dict(data["content_block"])
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            index = int(data.get("index", 0))
            if index in blocks:
                _apply_block_delta(blocks[index], data["delta"], partial.setdefault(index, []))
        elif kind == "message_delta" and message is not None:
            delta = obj(data.get("delta"))
            message.update({k: v for k, v in delta.items() if k in _MESSAGE_DELTA_FIELDS})
            if isinstance(data.get("usage"), dict):
                message["usage"].update({k: v for k, v in data["usage"].items() if v is not None})
    if message is None:
        return None
    for index, pieces in partial.items():
        text = "".join(pieces)
        if text:
            try:
                blocks[index]["input"] = json.loads(text)
            except ValueError:
                return None  # a tool input that does not parse: no faithful body
    message["content"] = [block for _, block in sorted(blocks.items())]
    return message
