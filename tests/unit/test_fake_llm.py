"""FakeLLM speaks the OpenAI and Anthropic wire formats well enough for the real SDKs, sync and async."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

import anthropic
import openai
import pytest
from fake_llm import FakeLLM, anthropic_clients, openai_clients

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anthropic.types import MessageParam
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolParam

OpenAIPair = tuple[openai.OpenAI, openai.AsyncOpenAI]
AnthropicPair = tuple[anthropic.Anthropic, anthropic.AsyncAnthropic]


def chat(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def claude(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


LOOKUP_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


@pytest.fixture
def oai_pair(server: FakeLLM) -> Iterator[OpenAIPair]:
    client, aclient = openai_clients(server)
    yield client, aclient
    client.close()
    if not aclient.is_closed():
        asyncio.run(aclient.close())


@pytest.fixture
def oai(oai_pair: OpenAIPair) -> openai.OpenAI:
    return oai_pair[0]


@pytest.fixture
def aoai(oai_pair: OpenAIPair) -> openai.AsyncOpenAI:
    return oai_pair[1]


@pytest.fixture
def ant_pair(server: FakeLLM) -> Iterator[AnthropicPair]:
    client, aclient = anthropic_clients(server)
    yield client, aclient
    client.close()
    if not aclient.is_closed():
        asyncio.run(aclient.close())


# --- lifecycle -----------------------------------------------------------------------------------


def test_urls_and_lifecycle() -> None:
    """The server exposes loopback base URLs while running, and stop() is idempotent and complete."""
    fake = FakeLLM().start()
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    assert fake.anthropic_base_url == f"http://127.0.0.1:{fake.port}"
    port, thread = fake.port, fake._thread
    assert thread is not None
    fake.stop()
    fake.stop()
    # Complete, not merely requested: the serving thread has ended and the port no longer accepts.
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url


# --- chat completions ----------------------------------------------------------------------------


def test_chat_completion_typed_fields(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A chat completion parses into the SDK's typed object, echoing the model and numbering each call."""
    first = oai.chat.completions.create(model="gpt-test", messages=chat("hello there"))
    assert first.id == "chatcmpl-1"
    assert first.object == "chat.completion"
    assert first.model == "gpt-test"
    assert isinstance(first.created, int)
    choice = first.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "answer #1 to: hello there"
    assert choice.finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.completion_tokens == 5
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    second = oai.chat.completions.create(model="gpt-test", messages=chat("hello there"))
    assert second.choices[0].message.content == "answer #2 to: hello there"
    assert server.calls == 2


@pytest.mark.anyio
async def test_chat_completion_async(server: FakeLLM, aoai: openai.AsyncOpenAI) -> None:
    """The async client gets the same deterministic chat completion."""
    async with aoai:
        reply = await aoai.chat.completions.create(model="gpt-test", messages=chat("async hi"))
    assert reply.choices[0].message.content == "answer #1 to: async hi"
    assert server.calls == 1


def test_chat_stream_reassembles(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A streamed chat arrives as role, several content deltas, a finish chunk and a usage chunk."""
    stream = oai.chat.completions.create(
        model="gpt-test", messages=chat("stream me"), stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == "chatcmpl-1" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces) == "answer #1 to: stream me"
    with_choices = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choices] == [None] * (len(with_choices) - 1) + ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert server.last_request.headers["accept"] != ""


@pytest.mark.anyio
async def test_chat_stream_async(aoai: openai.AsyncOpenAI) -> None:
    """The async client reassembles a streamed chat to the same text a plain call would return."""
    async with aoai:
        stream = await aoai.chat.completions.create(
            model="gpt-test", messages=chat("async stream"), stream=True
        )
        text = ""
        finish = None
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason
    assert text == "answer #1 to: async stream"
    assert finish == "stop"


def test_chat_tool_call(oai: openai.OpenAI) -> None:
    """A prompt containing use_tool, with tools declared, is answered by a call of the first tool."""
    reply = oai.chat.completions.create(
        model="gpt-test", messages=chat("please use_tool now"), tools=[LOOKUP_TOOL]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "please use_tool now"}


def test_chat_tool_call_streamed(oai: openai.OpenAI) -> None:
    """A streamed tool call delivers the arguments in pieces and finishes with tool_calls."""
    with oai.chat.completions.create(
        model="gpt-test", messages=chat("use_tool"), tools=[LOOKUP_TOOL], stream=True
    ) as stream:
        chunks = list(stream)
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None
    assert calls[0].function.name == "lookup"
    arguments = "".join(call.function.arguments or "" for call in calls if call.function)
    assert json.loads(arguments) == {"query": "use_tool"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_finish_reason_is_one_shot_or_per_request(server: FakeLLM, oai: openai.OpenAI) -> None:
    """next_finish_reason applies to the next answer only, and a header forces it per request."""
    server.next_finish_reason = "length"
    assert oai.chat.completions.create(model="m", messages=chat("a")).choices[0].finish_reason == "length"
    assert oai.chat.completions.create(model="m", messages=chat("b")).choices[0].finish_reason == "stop"
    forced = oai.chat.completions.create(
        model="m", messages=chat("c"), extra_headers={"x-fake-finish-reason": "content_filter"}
    )
    assert forced.choices[0].finish_reason == "content_filter"


# --- responses -----------------------------------------------------------------------------------


def test_responses_create(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A Responses API call returns a completed response with one assistant message and usage."""
    response = oai.responses.create(model="gpt-resp", input="what is up", instructions="short")
    assert response.id == "resp_1"
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "gpt-resp"
    assert response.output_text == "answer #1 to: what is up"
    message = response.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert server.last_request.body["instructions"] == "short"


def test_responses_create_stream_events(oai: openai.OpenAI) -> None:
    """create(stream=True) yields created, several text deltas and completed with the full response."""
    with oai.responses.create(
        model="gpt-resp", input=[{"role": "user", "content": "raw"}], stream=True
    ) as stream:
        events = list(stream)
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) >= 3
    assert "".join(deltas) == "answer #1 to: raw"
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.output_text == "answer #1 to: raw"
    assert [event.sequence_number for event in events] == list(range(len(events)))


@pytest.mark.anyio
async def test_responses_stream_helper_async(aoai: openai.AsyncOpenAI) -> None:
    """The SDK's responses.stream() helper accumulates the deltas into the final response."""
    async with aoai, aoai.responses.stream(model="gpt-resp", input="helper") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "answer #1 to: helper"
    assert final.output_text == "answer #1 to: helper"


def test_responses_length_is_incomplete(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A forced length finish turns into an incomplete response with max_output_tokens as the reason."""
    server.next_finish_reason = "length"
    response = oai.responses.create(model="gpt-resp", input="long")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings(server: FakeLLM, oai: openai.OpenAI) -> None:
    """Embeddings are 8 deterministic floats per input, identical in the SDK's base64 and float formats."""
    default = oai.embeddings.create(model="emb-test", input=["alpha", "beta"])
    floats = oai.embeddings.create(model="emb-test", input=["alpha", "beta"], encoding_format="float")
    assert server.requests[0].body["encoding_format"] == "base64"
    assert default.object == "list"
    assert default.model == "emb-test"
    assert [item.index for item in default.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in default.data)
    assert [item.embedding for item in default.data] == [item.embedding for item in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == default.usage.total_tokens == 2
    assert server.calls == 2


@pytest.mark.anyio
async def test_embeddings_async(aoai: openai.AsyncOpenAI) -> None:
    """The async client gets the same vector for the same single input."""
    async with aoai:
        first = await aoai.embeddings.create(model="emb-test", input="same")
        second = await aoai.embeddings.create(model="emb-test", input="same")
    assert first.data[0].embedding == second.data[0].embedding


# --- anthropic -----------------------------------------------------------------------------------


def test_anthropic_messages_create(server: FakeLLM, ant_pair: AnthropicPair) -> None:
    """An Anthropic message parses into the SDK's typed Message with text, stop reason and usage."""
    client, _ = ant_pair
    message = client.messages.create(model="claude-test", max_tokens=64, messages=claude("bonjour"))
    assert message.id == "msg_1"
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-test"
    block = message.content[0]
    assert block.type == "text"
    assert block.text == "answer #1 to: bonjour"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == 4
    request = server.last_request
    assert request.path == "/v1/messages"
    assert "sk-ant-test-0000" in request.headers.get("x-api-key", request.headers.get("authorization", ""))
    assert "anthropic-version" in request.headers


def test_anthropic_tool_use(ant_pair: AnthropicPair) -> None:
    """A use_tool prompt with tools declared is answered by a tool_use block."""
    client, _ = ant_pair
    message = client.messages.create(
        model="claude-test",
        max_tokens=64,
        messages=claude("use_tool please"),
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    )
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "lookup"
    assert block.input == {"query": "use_tool please"}
    assert message.stop_reason == "tool_use"


def test_anthropic_stream_helper(ant_pair: AnthropicPair) -> None:
    """The SDK's messages.stream() helper yields several text pieces and a final message."""
    client, _ = ant_pair
    with client.messages.stream(model="claude-test", max_tokens=64, messages=claude("stream")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 3
    assert "".join(pieces) == "answer #1 to: stream"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


@pytest.mark.anyio
async def test_anthropic_create_stream_async(ant_pair: AnthropicPair) -> None:
    """create(stream=True) on the async client yields Anthropic's raw event sequence."""
    _, aclient = ant_pair
    async with aclient:
        stream = await aclient.messages.create(
            model="claude-test", max_tokens=64, messages=claude("raw"), stream=True
        )
        events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = ""
    for event in events:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
    assert text == "answer #1 to: raw"
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"


# --- failures ------------------------------------------------------------------------------------


def test_429_then_success_is_retried(
    server: FakeLLM, oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 is retried by the SDK without a long sleep, and both attempts reach the server."""
    server.fail_next(429)
    slept: list[float] = []
    real_sleep = time.sleep

    def recorded_sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recorded_sleep)
    reply = oai.chat.completions.create(model="gpt-test", messages=chat("retry me"))
    # The wait the fake asked for (retry-after-ms: 1), not the SDK's own backoff (0.5 s and up).
    assert slept, "the SDK retried without waiting at all"
    assert max(slept) < 0.5, slept
    assert reply.choices[0].message.content == "answer #2 to: retry me"
    assert server.calls == 2
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]


@pytest.mark.anyio
async def test_anthropic_429_retried_async(server: FakeLLM, ant_pair: AnthropicPair) -> None:
    """The async Anthropic client retries an injected 429 and then succeeds."""
    _, aclient = ant_pair
    server.fail_next(429)
    async with aclient:
        message = await aclient.messages.create(model="claude-test", max_tokens=64, messages=claude("again"))
    assert message.content[0].type == "text"
    assert len(server.requests) == 2


def test_500_without_retries_raises(server: FakeLLM, oai: openai.OpenAI) -> None:
    """With max_retries=0 an injected 500 surfaces as openai.InternalServerError after one call."""
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError) as caught:
        oai.with_options(max_retries=0).chat.completions.create(model="gpt-test", messages=chat("boom"))
    assert caught.value.status_code == 500
    assert server.calls == 1


def test_custom_failure_body_and_headers(server: FakeLLM, oai: openai.OpenAI) -> None:
    """fail_next() sends the given status, JSON body and headers, for `count` calls in a row."""
    body = {"error": {"message": "nope", "type": "invalid_request_error", "code": "bad"}}
    server.fail_next(400, count=2, body=body, headers={"x-extra": "1"})
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(model="gpt-test", messages=chat("bad"))
        assert caught.value.response.headers["x-extra"] == "1"
        assert caught.value.body == body["error"]
    assert (
        oai.chat.completions.create(model="gpt-test", messages=chat("ok")).choices[0].finish_reason == "stop"
    )


def test_invalid_json_next(server: FakeLLM, oai: openai.OpenAI) -> None:
    """invalid_json_next makes the next answer a 200 whose body the SDK cannot parse, once."""
    server.invalid_json_next = True
    with pytest.raises(ValueError, match="Unterminated string"):
        oai.chat.completions.create(model="gpt-test", messages=chat("x"))
    assert oai.chat.completions.create(model="gpt-test", messages=chat("y")).id == "chatcmpl-2"


def test_delay_triggers_client_timeout(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A server delay longer than the client timeout raises openai.APITimeoutError."""
    server.delay = 2.0
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.1, max_retries=0).chat.completions.create(model="m", messages=chat("slow"))
    assert server.calls == 1


def test_stream_hang_after_is_abandoned(server: FakeLLM, oai: openai.OpenAI) -> None:
    """stream_hang_after=k holds a stream after k events, so a client can abandon it mid-way."""
    server.stream_hang_after = 2
    stream = oai.chat.completions.create(model="m", messages=chat("hang"), stream=True)
    iterator = iter(stream)
    received = [next(iterator), next(iterator)]
    assert received[1].choices[0].delta.content == "answe"  # "answer #1 to: hang" in 4 pieces
    assert server.stream_hung.wait(2)
    stream.close()


def test_stream_hang_released(server: FakeLLM, oai: openai.OpenAI) -> None:
    """release_hangs() lets a held stream finish normally."""
    server.stream_hang_after = 1
    stream = oai.chat.completions.create(model="m", messages=chat("later"), stream=True)
    timer = threading.Timer(0.05, server.release_hangs)
    timer.start()
    with stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    timer.join()
    assert text == "answer #1 to: later"


def test_stream_drop_after_raises(server: FakeLLM, oai: openai.OpenAI) -> None:
    """stream_drop_after=k cuts the connection after k events: the SDK yields k chunks, then raises."""
    server.stream_drop_after = 3
    stream = oai.chat.completions.create(model="m", messages=chat("drop"), stream=True)
    seen: list[ChatCompletionChunk] = []
    # Which type the SDK raises for a cut stream is its own business and has changed between releases
    # (httpx's RemoteProtocolError, then APIConnectionError); the cut itself is what is tested here.
    with pytest.raises(Exception), stream:  # noqa: PT011, B017
        seen.extend(stream)
    assert len(seen) == 3


# --- introspection -------------------------------------------------------------------------------


def test_request_headers_and_body_visible(server: FakeLLM, oai: openai.OpenAI) -> None:
    """Each request is recorded with method, path, query, lower-case headers and the parsed JSON body."""
    oai.chat.completions.create(
        model="gpt-test",
        messages=chat("look"),
        extra_headers={"X-Trace-Id": "trace-1"},
        extra_query={"debug": "1"},
    )
    request = server.last_request
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.query == {"debug": "1"}
    assert request.headers["x-trace-id"] == "trace-1"
    assert request.headers["authorization"] == "Bearer sk-test-0000000000000000000000"
    assert request.body["model"] == "gpt-test"
    assert request.body["messages"][-1] == {"role": "user", "content": "look"}
    assert json.loads(request.raw) == request.body
    assert server.requests_to("/v1/chat/completions") == [request]


def test_unknown_route_is_404_and_not_a_call(server: FakeLLM, oai: openai.OpenAI) -> None:
    """A route the fake does not serve answers 404, is recorded, and does not count as a model call."""
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert server.last_request.method == "GET"
    assert server.calls == 0


def test_reset(server: FakeLLM, oai: openai.OpenAI) -> None:
    """reset() forgets requests, calls, queued failures and knobs, restarting the numbering."""
    server.fail_next(500, count=3)
    server.delay = 5
    server.reset()
    assert server.requests == []
    assert server.calls == 0
    assert server.delay == 0
    reply = oai.chat.completions.create(model="gpt-test", messages=chat("fresh"))
    assert reply.choices[0].message.content == "answer #1 to: fresh"
