"""Streams and bodies of one key in the engine: store keys, conversions, the compact stream form."""

from __future__ import annotations

import json
from typing import Any

import fake_llm
import orjson
import pytest
from helpers import Upstream, chat_body
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache import Endpoint, PromptCache, make_key
from promptcache._assemble import body_from_events
from promptcache._cassette import dump_cassette
from promptcache._convert import body_from_stream, compact_stream, expand_stream, shape_stream
from promptcache._keys import digest_of, is_stream_key
from promptcache._synth import events_from_body
from promptcache.backends.memory import MemoryStore

pytestmark = pytest.mark.anyio

REQUEST = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def hash_tag(store_key: str) -> str:
    """What Redis Cluster hashes: the text between the first ``{`` and the ``}`` after it."""
    start = store_key.index("{")
    return store_key[start + 1 : store_key.index("}", start)]


def test_stream_store_key_shares_the_digest_slot_and_prefix() -> None:
    key = make_key(REQUEST, agent_id="a", tenant="t")
    assert key.stream_store_key != key.store_key
    assert key.stream_store_key.startswith(key.prefix)  # invalidating the agent deletes both kinds
    assert hash_tag(key.stream_store_key) == hash_tag(key.store_key) == hash_tag(key.lock_key) == key.digest
    assert digest_of(key.stream_store_key) == digest_of(key.store_key) == key.digest
    assert is_stream_key(key.stream_store_key)
    assert not is_stream_key(key.store_key)


def fake_events(
    endpoint: Endpoint, prompt: str, *, pieces: int = fake_llm.STREAM_PIECES, **request: Any
) -> tuple[list[dict[str, Any]], Any]:
    """The events and the body the fake server sends for one turn (call #1) of ``endpoint``."""
    body = {"model": "m", **request}
    api = {Endpoint.CHAT_COMPLETIONS: "chat", Endpoint.RESPONSES: "responses"}.get(endpoint, "anthropic")
    field = "input" if endpoint is Endpoint.RESPONSES else "messages"
    body[field] = [{"role": "user", "content": prompt}]
    turn = fake_llm._turn(1, body, body[field], fake_llm._tool_name(body, api), None, fake_llm.FakeLLM())
    pairs: list[tuple[str | None, dict[str, Any]]]
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        usage = "stream_options" in request
        pairs = [(None, c) for c in fake_llm._chat_chunks(turn, include_usage=usage, pieces=pieces)]
        final = fake_llm._chat_completion(turn)
    elif endpoint is Endpoint.RESPONSES:
        pairs, final = fake_llm._response_events(turn, body, pieces=pieces), fake_llm._response(turn, body)
    else:
        pairs, final = fake_llm._anthropic_events(turn, pieces=pieces), fake_llm._anthropic_message(turn)
    events = [{"event": name, "data": json.loads(json.dumps(data))} for name, data in pairs]
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        events.append({"event": None, "text": "[DONE]"})
    return events, final


TOOLS = {
    Endpoint.CHAT_COMPLETIONS: [{"type": "function", "function": {"name": "lookup"}}],
    Endpoint.RESPONSES: [{"type": "function", "name": "lookup"}],
    Endpoint.ANTHROPIC_MESSAGES: [{"name": "lookup", "input_schema": {}}],
}
STREAMING = [Endpoint.CHAT_COMPLETIONS, Endpoint.RESPONSES, Endpoint.ANTHROPIC_MESSAGES]


@pytest.mark.parametrize("endpoint", STREAMING)
@pytest.mark.parametrize("prompt", ["hello there, friend", "please use_tool"])
def test_assembled_body_and_synthesised_stream_are_inverse(endpoint: Endpoint, prompt: str) -> None:
    """The fake's body is what its stream assembles to, and the stream synthesised from that body (cut
    where the live one was) is the live stream; the compact form needs no patches."""
    extra: dict[str, Any] = {"tools": TOOLS[endpoint]} if "use_tool" in prompt else {}
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        extra["stream_options"] = {"include_usage": True}
    events, final = fake_events(endpoint, prompt, **extra)
    body = body_from_events(endpoint, events)
    assert body is not None
    assert {k: v for k, v in body.items() if k not in {"created", "created_at", "completed_at"}} == {
        k: v for k, v in final.items() if k not in {"created", "created_at", "completed_at"}
    }
    compact = compact_stream(endpoint, events)
    assert compact is not None
    assert "patches" not in compact
    assert expand_stream(endpoint, compact) == events


def test_compact_form_patches_what_it_cannot_derive() -> None:
    """Fields the synthesiser does not produce (a provider's extra field) come back through patches."""
    events, _ = fake_events(Endpoint.CHAT_COMPLETIONS, "patch me")
    events[2]["data"]["obfuscation"] = "xyz"
    del events[1]["data"]["system_fingerprint"]
    compact = compact_stream(Endpoint.CHAT_COMPLETIONS, events)
    assert compact is not None
    assert compact["patches"] == {"1": [["data/system_fingerprint"]], "2": [["data/obfuscation", "xyz"]]}
    assert expand_stream(Endpoint.CHAT_COMPLETIONS, compact) == events
    text = dump_cassette({"version": 1, "recordings": [{"key": "k", "endpoint": "x", "stream": compact}]})
    assert "- [data/obfuscation, xyz]" in text  # one line per patched field


def test_a_stream_the_synthesiser_cannot_follow_is_not_compacted() -> None:
    """Two choices interleaved chunk by chunk make another event order: keep the events as they are."""
    events, _ = fake_events(Endpoint.CHAT_COMPLETIONS, "two choices")
    second = json.loads(json.dumps(events[1]))
    second["data"]["choices"][0]["index"] = 1
    events.insert(2, second)
    assert compact_stream(Endpoint.CHAT_COMPLETIONS, events) is None


def test_shape_strips_usage_for_a_caller_who_did_not_ask() -> None:
    with_usage, _ = fake_events(Endpoint.CHAT_COMPLETIONS, "x", stream_options={"include_usage": True})
    without, _ = fake_events(Endpoint.CHAT_COMPLETIONS, "x")
    assert shape_stream(Endpoint.CHAT_COMPLETIONS, with_usage, include_usage=False) == without
    assert shape_stream(Endpoint.CHAT_COMPLETIONS, without, include_usage=True) is None
    assert body_from_stream(Endpoint.CHAT_COMPLETIONS, without) is None  # a body always has usage
    synthesised = events_from_body(Endpoint.CHAT_COMPLETIONS, chat_body("x"), include_usage=True)
    assert synthesised is not None
    assert synthesised[-2]["data"]["usage"] == chat_body("x")["usage"]


async def test_get_or_call_serves_a_body_assembled_from_a_stored_stream() -> None:
    """get_or_call stays body-only, but a stored stream answers it (converted, counted) without a call."""
    events, final = fake_events(Endpoint.CHAT_COMPLETIONS, "hi", stream_options={"include_usage": True})
    up = Upstream()
    async with PromptCache.from_url("memory://") as cache:
        key = cache.key(REQUEST, agent_id="a")
        assert await cache.put_entry(key, REQUEST, chunks=events)
        assert await cache.store.get(key.store_key) is None  # the stream lives beside the body
        body = await cache.get_or_call(REQUEST, up, agent_id="a")
        assert body["choices"][0]["message"]["content"] == final["choices"][0]["message"]["content"]
        assert body["usage"] == final["usage"]
        stats = cache.stats()
        assert (up.calls, stats.hits, stats.converted) == (0, 1, 1)


@settings(max_examples=120, deadline=None)
@given(
    endpoint=st.sampled_from(STREAMING),
    text=st.text(max_size=40),
    tool=st.booleans(),
    usage=st.booleans(),
    parts=st.integers(min_value=1, max_value=30),
)
def test_any_fake_stream_assembles_to_its_body_and_compacts_exactly(
    endpoint: Endpoint, text: str, tool: bool, usage: bool, parts: int
) -> None:
    """Whatever the text (any characters) and however it is cut, a stream assembles to the body the
    server would have sent, and its compact form expands back to exactly the recorded events."""
    fake = fake_llm.FakeLLM()
    fake.stream_pieces = parts
    prompt = f"use_tool {text}" if tool else text
    extra: dict[str, Any] = {"tools": TOOLS[endpoint]} if tool else {}
    if endpoint is Endpoint.CHAT_COMPLETIONS and usage:
        extra["stream_options"] = {"include_usage": True}
    events, final = fake_events(endpoint, prompt, pieces=parts, **extra)
    body = body_from_events(endpoint, events)
    assert body is not None
    if endpoint is Endpoint.CHAT_COMPLETIONS and not usage:
        final = {k: v for k, v in final.items() if k != "usage"}
    volatile = {"created", "created_at", "completed_at"}
    assert {k: v for k, v in body.items() if k not in volatile} == {
        k: v for k, v in final.items() if k not in volatile
    }
    compact = compact_stream(endpoint, events)
    assert compact is not None
    assert "patches" not in compact
    assert expand_stream(endpoint, orjson.loads(orjson.dumps(compact))) == events


class CountingStore(MemoryStore):
    """A memory store that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.gets.append(key)
        return await super().get(key)


async def test_a_same_kind_hit_is_one_read_and_the_other_kind_is_read_only_on_a_miss() -> None:
    events, _ = fake_events(Endpoint.CHAT_COMPLETIONS, "hi", stream_options={"include_usage": True})
    store = CountingStore()
    async with PromptCache(store) as cache:
        key = cache.key(REQUEST, agent_id="a")
        assert await cache.put_entry(key, REQUEST, chunks=events)
        assert await cache.get_entry(key, stream=True, include_usage=True) is not None
        assert store.gets == [key.stream_store_key]  # a stream hit: one GET
        store.gets.clear()
        converted = await cache.get_entry(key)
        assert converted is not None
        assert converted.converted
        assert store.gets == [key.store_key, key.stream_store_key]  # a body miss, then the stream
        assert await cache.put_entry(key, REQUEST, body=converted.body)
        store.gets.clear()
        assert await cache.get_or_call(REQUEST, Upstream(), agent_id="a") == converted.body
        assert store.gets == [key.store_key]  # a body hit: one GET
