"""A stream synthesised from a final body: the events the provider sends for that answer (pure functions).

The inverse of :mod:`promptcache._assemble`: for a chat completion, a Responses object or an Anthropic
message, the SSE events (in the shape of :mod:`promptcache.integrations._sse`) that the SDKs parse to the
same text, tool calls, finish reason and usage. Streamed text goes out as one delta per text, or cut where
a :class:`Pieces` plan says (the lengths of a recorded stream's deltas, for the compact cassette form).
"""

from __future__ import annotations

import json
from typing import Any

from promptcache._assemble import TOOL_BLOCKS, obj
from promptcache._keys import Endpoint

__all__ = ["Pieces", "events_from_body", "input_json"]

Event = dict[str, Any]


class Pieces:
    """Where streamed texts are cut: consumed in order, one length per delta event; None sends each whole.

    ``inputs``: the JSON text an Anthropic tool block's input streamed as, by block index, where it is not
    what ``json.dumps`` writes (another spacing or escaping).
    """

    def __init__(self, lengths: list[int] | None = None, inputs: dict[int, str] | None = None) -> None:
        self._lengths = list(lengths or [])
        self._at = 0
        self.inputs = dict(inputs or {})

    def split(self, text: str) -> list[str]:
        """The delta texts ``text`` goes out as (none for an empty text)."""
        out: list[str] = []
        rest = text
        while rest:
            size = self._lengths[self._at] if self._at < len(self._lengths) else len(rest)
            if not 0 < size <= len(rest):
                size = len(rest)  # the plan does not fit this text: send the rest whole
            self._at += 1
            out.append(rest[:size])
            rest = rest[size:]
        return out


def events_from_body(
    endpoint: Endpoint,
    body: object,
    *,
    include_usage: bool = True,
    pieces: Pieces | None = None,
) -> list[Event] | None:
    """The events of ``body`` streamed, or None when it cannot be streamed (embeddings, not an object).

    ``include_usage`` is the chat completions ``stream_options.include_usage`` of the caller: with it every
    chunk carries ``usage`` (null) and a last chunk without choices carries the body's usage.
    """
    if not isinstance(body, dict):
        return None
    plan = pieces if pieces is not None else Pieces()
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        return _chat_events(body, plan, include_usage=include_usage)
    if endpoint is Endpoint.RESPONSES:
        return _responses_events(body, plan)
    if endpoint is Endpoint.ANTHROPIC_MESSAGES:
        return _anthropic_events(body, plan)
    return None


def input_json(value: object) -> str:
    """The JSON text a tool input streams as by default (none for an empty input)."""
    return json.dumps(value, ensure_ascii=False) if value else ""


# -- chat completions -------------------------------------------------------------------------------


def _call_head(index: int, call: dict[str, Any]) -> dict[str, Any]:
    function = obj(call.get("function"))
    return {
        "index": index,
        "id": call.get("id"),
        "type": call.get("type", "function"),
        "function": {"name": function.get("name"), "arguments": ""},
    }


def _choice_deltas(choice: dict[str, Any], plan: Pieces) -> list[dict[str, Any]]:
    """One choice of a chat completion as the choice entries of its chunks, in order."""
    index = choice.get("index", 0)
    out: list[dict[str, Any]] = []

    def delta(fields: dict[str, Any], finish: object = None, logprobs: object = None) -> None:
        out.append({"index": index, "delta": fields, "logprobs": logprobs, "finish_reason": finish})

    message = obj(choice.get("message"))
    content = message.get("content")
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    first: dict[str, Any] = {"role": message.get("role", "assistant")}
    first["content"] = "" if isinstance(content, str) else None
    if content is None and calls:
        first["tool_calls"] = [_call_head(0, calls[0])]
    first["refusal"] = None
    delta(first)
    for n, piece in enumerate(plan.split(_text(content))):
        delta({"content": piece}, logprobs=choice.get("logprobs") if n == 0 else None)
    for piece in plan.split(_text(message.get("refusal"))):
        delta({"refusal": piece})
    for n, call in enumerate(calls):
        if n > 0 or content is not None:
            delta({"tool_calls": [_call_head(n, call)]})
        for piece in plan.split(_text(obj(call.get("function")).get("arguments"))):
            delta({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
    delta({}, choice.get("finish_reason"))
    return out


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _chat_events(body: dict[str, Any], plan: Pieces, *, include_usage: bool) -> list[Event] | None:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        return None
    if include_usage and not isinstance(body.get("usage"), dict):
        return None  # the caller asked for usage and this body has none to give
    base: dict[str, Any] = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    for name in ("service_tier", "system_fingerprint"):
        if name in body:
            base[name] = body[name]
    if include_usage:
        base["usage"] = None
    events: list[Event] = [
        {"event": None, "data": {**base, "choices": [entry]}}
        for choice in choices
        for entry in _choice_deltas(choice, plan)
    ]
    if include_usage:
        events.append({"event": None, "data": {**base, "choices": [], "usage": body["usage"]}})
    events.append({"event": None, "text": "[DONE]"})
    return events


# -- responses --------------------------------------------------------------------------------------


def _responses_events(body: dict[str, Any], plan: Pieces) -> list[Event]:
    events: list[Event] = []

    def emit(kind: str, **fields: object) -> None:
        events.append({"event": kind, "data": {"type": kind, "sequence_number": len(events), **fields}})

    started = {**body, "status": "in_progress", "output": [], "usage": None}
    for name in ("completed_at", "incomplete_details", "error"):
        if name in body:
            started[name] = None
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    for at, item in enumerate(body.get("output") or []):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            added = {**item, "status": "in_progress", "content": []}
            emit("response.output_item.added", output_index=at, item=added)
            for index, part in enumerate(item.get("content") or []):
                where = {"item_id": item.get("id"), "output_index": at, "content_index": index}
                _content_part(emit, where, part, plan)
        elif kind == "function_call":
            arguments = str(item.get("arguments") or "")
            added = {**item, "arguments": "", "status": "in_progress"}
            emit("response.output_item.added", output_index=at, item=added)
            where = {"item_id": item.get("id"), "output_index": at}
            for piece in plan.split(arguments):
                emit("response.function_call_arguments.delta", **where, delta=piece)
            emit("response.function_call_arguments.done", **where, name=item.get("name"), arguments=arguments)
        else:
            emit("response.output_item.added", output_index=at, item=item)
        emit("response.output_item.done", output_index=at, item=item)
    emit("response.completed", response=body)
    return events


def _content_part(emit: Any, where: dict[str, Any], part: Any, plan: Pieces) -> None:  # noqa: ANN401
    if not isinstance(part, dict):
        return
    kind = part.get("type")
    done = {k: v for k, v in part.items() if k != "logprobs"}
    if kind == "output_text":
        text = str(part.get("text") or "")
        emit("response.content_part.added", **where, part={"type": kind, "text": "", "annotations": []})
        for piece in plan.split(text):
            emit("response.output_text.delta", **where, delta=piece, logprobs=[])
        emit("response.output_text.done", **where, text=text, logprobs=[])
    elif kind == "refusal":
        text = str(part.get("refusal") or "")
        emit("response.content_part.added", **where, part={"type": kind, "refusal": ""})
        for piece in plan.split(text):
            emit("response.refusal.delta", **where, delta=piece)
        emit("response.refusal.done", **where, refusal=text)
    else:
        emit("response.content_part.added", **where, part=part)
    emit("response.content_part.done", **where, part=done)


# -- anthropic messages -----------------------------------------------------------------------------


def _anthropic_events(body: dict[str, Any], plan: Pieces) -> list[Event]:
    events: list[Event] = []

    def emit(kind: str, **fields: object) -> None:
        events.append({"event": kind, "data": {"type": kind, **fields}})

    usage = obj(body.get("usage"))
    output_tokens = usage.get("output_tokens")
    if not isinstance(output_tokens, int):
        output_tokens = 0
    start_usage = {**usage, "output_tokens": min(1, output_tokens)}
    message = {**body, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    emit("message_start", message=message)
    for index, block in enumerate(body.get("content") or []):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            emit("content_block_start", index=index, content_block={**block, "text": ""})
            for piece in plan.split(str(block.get("text") or "")):
                emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        elif kind in TOOL_BLOCKS:
            emit("content_block_start", index=index, content_block={**block, "input": {}})
            text = plan.inputs.get(index, input_json(block.get("input")))
            for piece in plan.split(text):
                json_delta = {"type": "input_json_delta", "partial_json": piece}
                emit("content_block_delta", index=index, delta=json_delta)
        elif kind == "thinking":
            emit("content_block_start", index=index, content_block={**block, "thinking": "", "signature": ""})
            for piece in plan.split(str(block.get("thinking") or "")):
                emit("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
            if block.get("signature"):
                signed = {"type": "signature_delta", "signature": block["signature"]}
                emit("content_block_delta", index=index, delta=signed)
        else:
            emit("content_block_start", index=index, content_block=block)
        emit("content_block_stop", index=index)
    delta = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    emit("message_delta", delta=delta, usage={"output_tokens": output_tokens})
    emit("message_stop")
    return events
