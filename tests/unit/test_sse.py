"""The SSE parser: line endings CR, LF and CRLF (the SSE specification), with a stream split anywhere."""

from __future__ import annotations

from typing import Any

import fake_llm
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.integrations._sse import SSEParser, encode_events

# A recorded stream's events: OpenAI chunks (with non-ASCII text, so a cut can fall inside a character),
# Anthropic named events, and OpenAI's non-JSON terminator.
EVENTS: list[dict[str, Any]] = [
    {"event": None, "data": {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}},
    {"event": None, "data": {"choices": [{"index": 0, "delta": {"content": "Grüße, 世界"}}]}},
    {"event": "content_block_delta", "data": {"type": "content_block_delta", "delta": {"text": "a\\nb"}}},
    {"event": "message_stop", "data": {"type": "message_stop"}},
    {"event": None, "text": "[DONE]"},
]


def wire(events: list[dict[str, Any]], end: bytes) -> bytes:
    """The bytes a server sends for ``events`` with ``end`` ending every line, plus a keep-alive comment."""
    out = b": keep-alive" + end + end
    for event in events:
        if event["event"]:
            out += b"event: " + event["event"].encode() + end
        payload = event["text"].encode() if "text" in event else orjson.dumps(event["data"])
        out += b"data: " + payload + end + end
    return out


def parse(pieces: list[bytes]) -> list[dict[str, Any]]:
    parser = SSEParser()
    for piece in pieces:
        parser.feed(piece)
    return parser.events


ENDINGS = [pytest.param(b"\n", id="LF"), pytest.param(b"\r\n", id="CRLF"), pytest.param(b"\r", id="CR")]


@pytest.mark.parametrize("end", ENDINGS)
def test_every_single_cut_gives_the_same_events(end: bytes) -> None:
    """Cut the recorded stream in two at every byte: always the same events (the CRLF cut included)."""
    data = wire(EVENTS, end)
    assert parse([data]) == EVENTS
    for cut in range(len(data) + 1):
        assert parse([data[:cut], data[cut:]]) == EVENTS, f"cut at byte {cut}: {data[:cut][-12:]!r}"


def test_crlf_split_between_cr_and_lf_does_not_merge_events() -> None:
    """The reported case: ``…\\r\\n\\r`` then ``\\ndata:…`` is two events, not one with two data lines."""
    first, second = b'data: {"a":1}\r\n\r', b'\ndata: {"b":2}\r\n\r\n'
    assert parse([first, second]) == [{"event": None, "data": {"a": 1}}, {"event": None, "data": {"b": 2}}]


@settings(max_examples=300, deadline=None)
@given(
    end=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40),
)
def test_random_pieces_give_the_same_events(end: bytes, cuts: list[int]) -> None:
    data = wire(EVENTS, end)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert b"".join(pieces) == data
    assert parse(pieces) == EVENTS


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_written_events_parse_back(text: str, cuts: list[int]) -> None:
    """What the replay writer sends parses back to the recorded events, however it is cut."""
    events: list[dict[str, Any]] = [
        {"event": "delta", "data": {"text": text}},
        {"event": None, "text": "[DONE]"},
    ]
    data = encode_events(events)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert parse(pieces) == events


def recorded_stream() -> list[dict[str, Any]]:
    """A whole recorded Anthropic tool-use stream and a chat stream with usage, as the fake server sends."""
    fake = fake_llm.FakeLLM()
    body = {"model": "m", "messages": [{"role": "user", "content": "please use_tool ünïcode"}]}
    body["tools"] = [{"name": "lookup", "input_schema": {}}]
    turn = fake_llm._turn(1, body, body["messages"], "lookup", None, fake)
    events = [{"event": name, "data": data} for name, data in fake_llm._anthropic_events(turn, pieces=7)]
    chat = fake_llm._turn(2, body, body["messages"], None, None, fake)
    events += [{"event": None, "data": c} for c in fake_llm._chat_chunks(chat, include_usage=True, pieces=5)]
    return [*orjson.loads(orjson.dumps(events)), {"event": None, "text": "[DONE]"}]


@pytest.mark.parametrize("end", ENDINGS)
def test_a_recorded_stream_cut_at_every_byte_gives_the_same_events(end: bytes) -> None:
    events = recorded_stream()
    data = wire(events, end)
    for cut in range(len(data) + 1):
        assert parse([data[:cut], data[cut:]]) == events, f"cut at byte {cut}"
