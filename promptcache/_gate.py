"""Write gating: which upstream answers may be stored. Pure functions, no I/O.

Only successes are written: a parseable body with non-empty choices/content, a finishing reason the policy
accepts (``length``, ``content_filter`` and refusals are not cached by default), valid JSON where the
request asked for JSON (unless the answer is a tool call: the JSON comes on a later turn), and for streams
only a stream that reached its terminal event. An error is never turned into a cached value.
"""

from __future__ import annotations

import json
from typing import Any, Final

from promptcache._keys import Endpoint

__all__ = [
    "DEFAULT_FINISH_REASONS",
    "is_terminal",
    "refusal_reason",
    "stream_refusal",
    "stream_summary",
    "tokens_of",
    "usage_of",
]

DEFAULT_FINISH_REASONS: Final = frozenset(
    {
        "stop",  # openai chat
        "tool_calls",
        "function_call",
        "end_turn",  # anthropic
        "tool_use",
        "stop_sequence",
    }
)
"""Finish reasons whose answers are stored by default; ``length`` and ``content_filter`` are not."""


def _wants_json(request: dict[str, Any] | None) -> bool:
    if not request:
        return False
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in {"json_object", "json_schema"}:
        return True
    text = request.get("text")  # Responses API: {"text": {"format": {"type": "json_schema", ...}}}
    if isinstance(text, dict):
        inner = text.get("format")
        return isinstance(inner, dict) and inner.get("type") in {"json_object", "json_schema"}
    return False


def _is_json(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _chat_refusal(
    body: dict[str, Any], request: dict[str, Any] | None, reasons: frozenset[str]
) -> str | None:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict):
            return "malformed choice"
        reason = choice.get("finish_reason")
        if reason not in reasons:
            return f"finish_reason {reason!r}"
        message = choice.get("message")
        if not isinstance(message, dict):
            return "choice without message"
        if message.get("refusal"):
            return "refusal"
        if reason == "stop" and _wants_json(request) and not _is_json(message.get("content")):
            return "invalid JSON under a JSON response_format"
    return None


def _responses_refusal(body: dict[str, Any], request: dict[str, Any] | None) -> str | None:
    if body.get("status") != "completed":
        return f"status {body.get('status')!r}"
    output = body.get("output")
    if not isinstance(output, list) or not output:
        return "no output"
    for item in output:
        for part in item.get("content") or [] if isinstance(item, dict) else []:
            if isinstance(part, dict) and part.get("type") == "refusal":
                return "refusal"
    if _awaits_client(output):  # a tool call: the JSON answer comes on a later turn (chat: `tool_calls`)
        return None
    if _wants_json(request) and not _is_json(body.get("output_text", _output_text(output))):
        return "invalid JSON under a JSON text format"
    return None


_CLIENT_CALLS: Final = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "computer_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
        "mcp_approval_request",
    }
)
"""Responses output items the client acts on before the model answers (its tools, an approval)."""


def _awaits_client(output: list[Any]) -> bool:
    return any(isinstance(item, dict) and item.get("type") in _CLIENT_CALLS for item in output)


def _output_text(output: list[Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in output
        if isinstance(item, dict)
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text"
    )


def _anthropic_refusal(body: dict[str, Any], reasons: frozenset[str]) -> str | None:
    if body.get("type") == "error":
        return "error body"
    content = body.get("content")
    if not isinstance(content, list) or not content:
        return "no content"
    reason = body.get("stop_reason")
    if reason not in reasons:
        return f"stop_reason {reason!r}"
    return None


def refusal_reason(
    endpoint: Endpoint,
    body: object,
    request: dict[str, Any] | None = None,
    *,
    finish_reasons: frozenset[str] = DEFAULT_FINISH_REASONS,
) -> str | None:
    """Why ``body`` must not be stored, or None when it may be.

    Args:
        endpoint: The endpoint the body came from.
        body: The parsed upstream response.
        request: The request, to check JSON output where JSON was asked for.
        finish_reasons: Accepted finishing reasons.
    """
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if body.get("error"):
        return "error body"
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        return _chat_refusal(body, request, finish_reasons)
    if endpoint is Endpoint.RESPONSES:
        return _responses_refusal(body, request)
    if endpoint is Endpoint.ANTHROPIC_MESSAGES:
        return _anthropic_refusal(body, finish_reasons)
    data = body.get("data")  # embeddings
    return None if isinstance(data, list) and data else "no embedding data"


def usage_of(body: object) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` reported in a body, for any endpoint; (0, 0) when absent."""
    return tokens_of(body.get("usage") if isinstance(body, dict) else None)


def tokens_of(usage: object) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` of a body's ``usage`` value; (0, 0) when it is not a dict."""
    if not isinstance(usage, dict):
        return (0, 0)
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else 0,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else 0,
    )


def _chat_stream_refusal(events: list[dict[str, Any]], reasons: frozenset[str]) -> str | None:
    finished: dict[int, object] = {}
    for event in events:
        data = event.get("data")
        if not isinstance(data, dict):
            continue
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict):
                return "malformed chunk"
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("refusal"):
                return "refusal"
            if choice.get("finish_reason") is not None:
                finished[int(choice.get("index", 0))] = choice["finish_reason"]
    if not finished:
        return "stream without a finish_reason"
    bad = [r for r in finished.values() if r not in reasons]
    return f"finish_reason {bad[0]!r}" if bad else None


def is_terminal(endpoint: Endpoint, event: dict[str, Any]) -> bool:
    """Whether ``event`` is the one that ends a successful stream of ``endpoint``."""
    data = event.get("data")
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        return event.get("text") == "[DONE]"
    if endpoint is Endpoint.RESPONSES:
        return event.get("event") == "response.completed" or (
            isinstance(data, dict) and data.get("type") == "response.completed"
        )
    if endpoint is Endpoint.ANTHROPIC_MESSAGES:
        return event.get("event") == "message_stop" or (
            isinstance(data, dict) and data.get("type") == "message_stop"
        )
    return False


def _data_of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in events
        if isinstance(e.get("data"), dict) and (e.get("event") == kind or e["data"].get("type") == kind)
    ]


def stream_refusal(
    endpoint: Endpoint,
    events: list[dict[str, Any]],
    request: dict[str, Any] | None = None,
    *,
    finish_reasons: frozenset[str] = DEFAULT_FINISH_REASONS,
) -> str | None:
    """Why a recorded stream (a list of SSE events, see ``integrations._sse``) must not be stored, or None.

    A stream is storable only when it reached its terminal event and its final state would be storable.
    """
    if not events or not any(is_terminal(endpoint, e) for e in events):
        return "stream did not reach its terminal event"
    if any(e.get("event") == "error" for e in events):
        return "stream carried an error event"
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        return _chat_stream_refusal(events, finish_reasons)
    if endpoint is Endpoint.RESPONSES:
        done = _data_of_type(events, "response.completed")
        final = done[-1].get("response") if done else None
        return _responses_refusal(final, request) if isinstance(final, dict) else "no final response"
    if endpoint is Endpoint.ANTHROPIC_MESSAGES:
        deltas = _data_of_type(events, "message_delta")
        reason = deltas[-1].get("delta", {}).get("stop_reason") if deltas else None
        if not _data_of_type(events, "content_block_start"):
            return "no content"
        return None if reason in finish_reasons else f"stop_reason {reason!r}"
    return "endpoint does not stream"


def stream_summary(endpoint: Endpoint, events: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"model", "usage"}`` of a recorded stream, for stats and entries."""
    model: object = None
    usage: object = None
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        for event in events:
            data = event.get("data")
            if isinstance(data, dict):
                model = data.get("model", model)
                usage = data.get("usage") or usage
    elif endpoint is Endpoint.RESPONSES:
        done = _data_of_type(events, "response.completed")
        final = done[-1].get("response") if done else None
        if isinstance(final, dict):
            model, usage = final.get("model"), final.get("usage")
    elif endpoint is Endpoint.ANTHROPIC_MESSAGES:
        starts = _data_of_type(events, "message_start")
        message = starts[0].get("message") if starts else None
        merged: dict[str, Any] = {}
        if isinstance(message, dict):
            model = message.get("model")
            merged.update(message.get("usage") or {})
        for delta in _data_of_type(events, "message_delta"):
            merged.update(delta.get("usage") or {})
        usage = merged or None
    return {"model": model, "usage": usage}
