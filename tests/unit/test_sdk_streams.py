"""Streams through the real SDKs, sync and async, over the local FakeLLM server: framing, shape, kinds."""

from __future__ import annotations

import json
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from sdk_driver import AnthropicProvider, OpenAIProvider, Provider, ProviderDriver, SdkDriver
from stream_support import cut_client, wrapped_driver

from promptcache import PromptCache

if TYPE_CHECKING:
    from collections.abc import Callable

    from fake_llm import FakeLLM

pytestmark = pytest.mark.usefixtures("collect_abandoned_streams")

KINDS = ["sync", "async"]


def chat_stream(text: str, **kw: Any) -> Callable[[Any], Any]:
    messages = [{"role": "user", "content": text}]
    return lambda c: c.chat.completions.create(model="gpt-test", messages=messages, stream=True, **kw)


def messages_stream(text: str) -> Callable[[Any], Any]:
    messages = [{"role": "user", "content": text}]
    return lambda c: c.messages.create(model="claude-test", max_tokens=64, messages=messages, stream=True)


# --- 1. SSE framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_crlf_split_across_network_chunks_replays_the_same_events(
    sdk: Any, kind: str, server: FakeLLM
) -> None:
    """A stream whose CRLF line endings are cut between CR and LF is stored as the events the SDK read."""
    server.sse_line_end = b"\r\n"
    drv = wrapped_driver(sdk, kind, cut_client(sdk, kind, server), PromptCache.from_url("memory://"))
    try:
        open_stream = chat_stream("crlf") if sdk is openai else messages_stream("crlf")
        live = drv.events(open_stream)
        drv.drain()
        replayed = drv.events(open_stream)
        assert server.calls == 1
        assert replayed == live
    finally:
        drv.close()


# --- 2. the chat stream's shape: with or without the usage chunk -----------------------------------


def shape(events: list[Any]) -> list[tuple[Any, ...]]:
    """The wire shape of chat chunks: the fields sent, how many choices, whether usage has numbers."""
    return [(tuple(sorted(c.to_dict())), len(c.choices), c.usage is not None) for c in events]


def first_choices(events: list[Any]) -> list[Any]:
    """What a caller who did not ask for usage does with every chunk (IndexError on a usage chunk)."""
    return [c.choices[0].delta.content for c in events]


def chat_shapes(kind: str, server: FakeLLM) -> dict[bool, list[tuple[Any, ...]]]:
    """What the bare SDK reads from the fake server for each shape (with and without include_usage)."""
    bare = ProviderDriver(OpenAIProvider(), kind, server, wrapped=False)
    try:
        return {
            usage: shape(bare.events(chat_stream("bare", **(USAGE if usage else {}))))
            for usage in (False, True)
        }
    finally:
        bare.close()


USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}


@pytest.mark.parametrize("kind", KINDS)
def test_stream_recorded_with_usage_replays_without_it_to_a_caller_who_did_not_ask(
    kind: str, server: FakeLLM
) -> None:
    """A replay has the shape the caller asked for: no choices=[] usage chunk, no usage fields."""
    expected = chat_shapes(kind, server)
    server.reset()
    drv = ProviderDriver(OpenAIProvider(), kind, server)
    try:
        live = drv.events(chat_stream("shape", **USAGE))
        drv.drain()
        replayed = drv.events(chat_stream("shape"))
        assert server.calls == 1
        assert shape(replayed) == expected[False]
        assert "".join(text or "" for text in first_choices(replayed)) == "answer #1 to: shape"
        again = drv.events(chat_stream("shape", **USAGE))
        assert again == live
        assert server.calls == 1
    finally:
        drv.close()


@pytest.mark.parametrize("kind", KINDS)
def test_stream_recorded_without_usage_is_not_served_to_a_caller_who_asks(kind: str, server: FakeLLM) -> None:
    """Without a body entry, a usage-less stream does not answer include_usage: the call goes upstream,
    and the new stream (with usage) then serves both shapes."""
    expected = chat_shapes(kind, server)
    server.reset()
    drv = ProviderDriver(OpenAIProvider(), kind, server)
    try:
        drv.events(chat_stream("no usage"))
        drv.drain()
        with_usage = drv.events(chat_stream("no usage", **USAGE))
        assert server.calls == 2
        assert shape(with_usage) == expected[True]
        assert with_usage[-1].usage is not None
        drv.drain()
        assert shape(drv.events(chat_stream("no usage"))) == expected[False]
        assert shape(drv.events(chat_stream("no usage", **USAGE))) == expected[True]
        assert server.calls == 2
    finally:
        drv.close()


@pytest.mark.parametrize("kind", KINDS)
def test_usage_less_stream_and_a_body_serve_a_caller_who_asks_for_usage(kind: str, server: FakeLLM) -> None:
    """A stored stream without usage and a stored body: a caller asking for usage gets the body streamed."""
    expected = chat_shapes(kind, server)
    server.reset()
    drv = ProviderDriver(OpenAIProvider(), kind, server)
    try:
        drv.events(chat_stream("both"))
        drv.drain()
        body = drv.run(
            lambda c: c.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "both"}]
            )
        )
        assert server.calls == 2  # a usage-less stream makes no faithful body
        drv.drain()
        converted = drv.events(chat_stream("both", **USAGE))
        assert server.calls == 2
        # Synthesised from a body, the text comes in one piece: the same kinds of chunk, fewer of them.
        assert set(shape(converted)) == set(expected[True])
        assert shape(converted)[-1] == expected[True][-1]
        assert converted[-1].usage == body.usage
        assert drv.cache.stats().converted == 1
    finally:
        drv.close()


# --- what a parsed answer says, body or stream, for each endpoint ---------------------------------


def _usage(value: Any) -> dict[str, Any] | None:
    return None if value is None else value.model_dump()


class Case:
    """One streaming endpoint: how to call it plain and streamed, and what a parsed answer says."""

    name: str
    provider: Provider

    def call(self, text: str, *, stream: bool, **kw: Any) -> Callable[[Any], Any]:
        raise NotImplementedError

    def of_body(self, reply: Any) -> dict[str, Any]:
        raise NotImplementedError

    def of_stream(self, events: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Chat(Case):
    name, provider = "chat", OpenAIProvider()

    def call(self, text: str, *, stream: bool, **kw: Any) -> Callable[[Any], Any]:
        if stream:
            kw.setdefault("stream_options", {"include_usage": True})
        messages = [{"role": "user", "content": text}]
        tools = {"tools": [CHAT_TOOL]} if "use_tool" in text else {}
        return lambda c: c.chat.completions.create(
            model="gpt-test", messages=messages, stream=stream, **tools, **kw
        )

    def of_body(self, reply: Any) -> dict[str, Any]:
        choice = reply.choices[0]
        calls = [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []]
        return {
            "text": choice.message.content,
            "calls": calls,
            "usage": _usage(reply.usage),
            "finish": choice.finish_reason,
        }

    def of_stream(self, events: list[Any]) -> dict[str, Any]:
        text: str | None = None
        calls: dict[int, list[Any]] = {}
        finish = None
        for chunk in events:
            for choice in chunk.choices:
                if choice.delta.content is not None:
                    text = (text or "") + choice.delta.content
                for call in choice.delta.tool_calls or []:
                    got = calls.setdefault(call.index, [None, "", ""])
                    got[0] = call.id or got[0]
                    got[1] += call.function.name or ""
                    got[2] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        usage = [_usage(c.usage) for c in events if c.usage is not None]
        return {
            "text": text or None,
            "calls": [tuple(v) for _, v in sorted(calls.items())],
            "usage": usage[-1] if usage else None,
            "finish": finish,
        }


class Responses(Case):
    name, provider = "responses", OpenAIProvider()

    def call(self, text: str, *, stream: bool, **kw: Any) -> Callable[[Any], Any]:
        tools = {"tools": [RESPONSES_TOOL]} if "use_tool" in text else {}
        given = [{"role": "user", "content": text}]
        return lambda c: c.responses.create(model="gpt-resp", input=given, stream=stream, **tools, **kw)

    def of_body(self, reply: Any) -> dict[str, Any]:
        calls = [(o.call_id, o.name, o.arguments) for o in reply.output if o.type == "function_call"]
        return {
            "text": reply.output_text,
            "calls": calls,
            "usage": _usage(reply.usage),
            "finish": reply.status,
        }

    def of_stream(self, events: list[Any]) -> dict[str, Any]:
        final = events[-1].response
        assert events[-1].type == "response.completed"
        streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        got = self.of_body(final)
        assert streamed == got["text"]
        assert arguments == "".join(c[2] for c in got["calls"])
        return got


class Messages(Case):
    name, provider = "anthropic", AnthropicProvider()

    def call(self, text: str, *, stream: bool, **kw: Any) -> Callable[[Any], Any]:
        tools = {"tools": [ANTHROPIC_TOOL]} if "use_tool" in text else {}
        messages = [{"role": "user", "content": text}]
        return lambda c: c.messages.create(
            model="claude-test", max_tokens=64, messages=messages, stream=stream, **tools, **kw
        )

    def of_body(self, reply: Any) -> dict[str, Any]:
        return {
            "text": "".join(b.text for b in reply.content if b.type == "text"),
            "calls": [(b.id, b.name, b.input) for b in reply.content if b.type == "tool_use"],
            "usage": _usage(reply.usage),
            "finish": reply.stop_reason,
        }

    def of_stream(self, events: list[Any]) -> dict[str, Any]:
        start = events[0].message
        blocks: dict[int, dict[str, Any]] = {}
        finish, usage = None, start.usage.model_dump()
        for event in events:
            if event.type == "content_block_start":
                blocks[event.index] = {"block": event.content_block, "text": "", "json": ""}
            elif event.type == "content_block_delta":
                got = blocks[event.index]
                if event.delta.type == "text_delta":
                    got["text"] += event.delta.text
                elif event.delta.type == "input_json_delta":
                    got["json"] += event.delta.partial_json
            elif event.type == "message_delta":
                finish = event.delta.stop_reason
                usage["output_tokens"] = event.usage.output_tokens
        ordered = [blocks[i] for i in sorted(blocks)]
        return {
            "text": "".join(b["text"] for b in ordered if b["block"].type == "text"),
            "calls": [
                (b["block"].id, b["block"].name, json.loads(b["json"]) if b["json"] else {})
                for b in ordered
                if b["block"].type == "tool_use"
            ],
            "usage": usage,
            "finish": finish,
        }


CHAT_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
RESPONSES_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
ANTHROPIC_TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
CASES = [pytest.param(case, id=case.name) for case in (Chat(), Responses(), Messages())]


def answer(drv: ProviderDriver, case: Case, text: str, *, stream: bool) -> dict[str, Any]:
    """What the parsed answer of one call says (the same dict for a body and for a stream)."""
    if stream:
        return case.of_stream(drv.events(case.call(text, stream=True)))
    return case.of_body(drv.run(case.call(text, stream=False)))


# --- 3. stream and body of one prompt ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prompt", ["hello there", "please use_tool"], ids=["text", "tool"])
@pytest.mark.parametrize("stream_first", [False, True], ids=["body-first", "stream-first"])
def test_mixed_stream_and_body_callers_make_one_upstream_call(
    case: Case, kind: str, prompt: str, stream_first: bool, server: FakeLLM
) -> None:
    """Callers alternating stream=True/False on one prompt: one upstream call; every answer, stored or
    converted, parses in the SDK to the same text, tool calls, usage and finish reason."""
    drv = ProviderDriver(case.provider, kind, server)
    try:
        first = answer(drv, case, prompt, stream=stream_first)
        drv.drain()
        later = [answer(drv, case, prompt, stream=s) for s in [not stream_first, stream_first] * 2]
        assert server.calls == 1
        assert all(got == first for got in later)
        assert "answer #1" in str(first["text"]) or first["calls"]
        stats = drv.cache.stats()
        assert (stats.hits, stats.converted, stats.misses) == (4, 2, 1)
    finally:
        drv.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_converted_answers_match_a_bare_call_of_that_kind(case: Case, kind: str, server: FakeLLM) -> None:
    """A stream synthesised from a body (and a body assembled from a stream) says what a bare SDK call
    of that kind says for the same turn of the fake model."""
    for stream_first in (False, True):
        server.reset()
        drv = ProviderDriver(case.provider, kind, server)
        bare = ProviderDriver(case.provider, kind, server, wrapped=False)
        try:
            answer(drv, case, "same turn", stream=stream_first)
            drv.drain()
            converted = answer(drv, case, "same turn", stream=not stream_first)
            server.reset()  # the bare call is call #1 again: the same turn of the fake model
            assert converted == answer(bare, case, "same turn", stream=not stream_first)
        finally:
            bare.close()
            drv.close()


def raw_marker(drv: SdkDriver, fn: Callable[[Any], Any], *, stream: bool) -> str:
    """The x-promptcache header of ``fn``'s raw response (``fn`` calls a ``with_raw_response`` method)."""

    def sync(c: Any) -> str:
        raw = fn(c)
        if stream:
            parsed = raw.parse()
            list(parsed)
            parsed.close()
        return str(raw.headers.get("x-promptcache"))

    async def run_async(c: Any) -> str:
        raw = await fn(c)
        if stream:
            parsed = raw.parse()
            parsed = await parsed if isawaitable(parsed) else parsed
            async for _ in parsed:
                pass
            await parsed.close()
        return str(raw.headers.get("x-promptcache"))

    return str(drv.run(sync if drv.kind == "sync" else run_async))


@pytest.mark.parametrize("kind", KINDS)
def test_converted_answers_are_marked_and_counted(kind: str, server: FakeLLM) -> None:
    """A converted answer carries x-promptcache: hit-converted and counts in stats().converted."""
    drv = ProviderDriver(OpenAIProvider(), kind, server)
    messages = [{"role": "user", "content": "marked"}]

    def create(*, stream: bool) -> Callable[[Any], Any]:
        return lambda c: c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=messages, stream=stream
        )

    try:
        assert raw_marker(drv, create(stream=False), stream=False) == "miss"
        assert raw_marker(drv, create(stream=True), stream=True) == "hit-converted"
        assert raw_marker(drv, create(stream=False), stream=False) == "hit"
        assert (drv.cache.stats().converted, server.calls) == (1, 1)
    finally:
        drv.close()


@pytest.mark.parametrize("kind", KINDS)
def test_conversion_can_be_switched_off(kind: str, server: FakeLLM) -> None:
    """With convert_kinds=False a stream after a body goes upstream (and both then hit)."""
    cache = PromptCache.from_url("memory://", convert_kinds=False)
    drv = ProviderDriver(Chat.provider, kind, server, cache)
    try:
        case = Chat()
        answer(drv, case, "off", stream=False)
        streamed = answer(drv, case, "off", stream=True)
        assert streamed["text"] == "answer #2 to: off"
        assert (server.calls, drv.cache.stats().converted) == (2, 0)
    finally:
        drv.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("refresh_stream", [False, True], ids=["refresh-body", "refresh-stream"])
def test_a_refresh_replaces_the_answer_of_both_kinds(
    kind: str, refresh_stream: bool, server: FakeLLM
) -> None:
    """x-promptcache-refresh on one kind: the new answer also serves the other kind (converted); the old
    answer of the other kind is not served any more."""
    case = Chat()
    drv = ProviderDriver(case.provider, kind, server)
    refresh = {"extra_headers": {"x-promptcache-refresh": "1"}}
    try:
        answer(drv, case, "renew", stream=False)
        answer(drv, case, "renew", stream=True)
        drv.drain()
        assert server.calls == 1
        if refresh_stream:
            renewed = case.of_stream(drv.events(case.call("renew", stream=True, **refresh)))
        else:
            renewed = case.of_body(drv.run(case.call("renew", stream=False, **refresh)))
        drv.drain()
        assert renewed["text"] == "answer #2 to: renew"
        assert answer(drv, case, "renew", stream=not refresh_stream) == renewed
        assert answer(drv, case, "renew", stream=refresh_stream) == renewed
        assert server.calls == 2
    finally:
        drv.close()
