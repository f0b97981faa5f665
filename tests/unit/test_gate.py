"""The write gate on Responses answers under a JSON text format (what structured-output agents send)."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache._gate import refusal_reason, stream_refusal
from promptcache._keys import Endpoint

JSON_FORMAT: dict[str, Any] = {
    "model": "gpt-x",
    "input": "Where is my order?",
    "tools": [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}],
    "text": {"format": {"type": "json_schema", "name": "OrderStatus", "schema": {"type": "object"}}},
}
TOOL_CALL: dict[str, Any] = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "lookup_order",
    "arguments": '{"order_id": "1042"}',
    "status": "completed",
}


def message(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [part]}


def response(*output: dict[str, Any]) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "completed", "output": list(output)}


def as_stream(body: dict[str, Any]) -> list[dict[str, Any]]:
    done = {"type": "response.completed", "response": body}
    return [{"event": "response.completed", "data": done}]


@pytest.mark.parametrize(
    "output",
    [(TOOL_CALL,), (message("Let me look that up."), TOOL_CALL)],
    ids=["tool-call", "text-then-tool-call"],
)
def test_a_tool_call_turn_under_a_json_format_is_stored(output: tuple[dict[str, Any], ...]) -> None:
    """The JSON answer comes after the tool's output; the turn that calls the tool is a success too."""
    body = response(*output)
    assert refusal_reason(Endpoint.RESPONSES, body, JSON_FORMAT) is None
    assert stream_refusal(Endpoint.RESPONSES, as_stream(body), JSON_FORMAT) is None


def test_a_final_answer_under_a_json_format_must_still_be_json() -> None:
    assert refusal_reason(Endpoint.RESPONSES, response(message('{"order_id": "1042"}')), JSON_FORMAT) is None
    refused = refusal_reason(Endpoint.RESPONSES, response(message("shipped")), JSON_FORMAT)
    assert refused == "invalid JSON under a JSON text format"
    streamed = stream_refusal(Endpoint.RESPONSES, as_stream(response(message("shipped"))), JSON_FORMAT)
    assert streamed == refused
