"""Streams in cassettes: recorded compactly (the answer readable), replayed chunk for chunk, in the shape
the test asks for (chat usage chunk or not)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from helpers import outputs

from promptcache._cassette import dump_cassette, load_cassette, recorded_events

if TYPE_CHECKING:
    import pytest
    from fake_llm import FakeLLM


def cassette(pytester: pytest.Pytester, name: str) -> dict[str, Any]:
    doc = load_cassette(pytester.path / "fixtures" / "cassettes" / f"{name}.yaml")
    assert doc is not None, f"no cassette {name}"
    return doc


def go_offline(server: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the fake LLM and make the inner project refuse (and log) every connection."""
    server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")


def summary(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if re.match(r"promptcache: \d+ replayed", line)]
    assert len(lines) == 1, result.outlines
    return lines[0]


STREAM_TESTS = """
import asyncio

import llm

CHAT_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
RESPONSES_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
ANTHROPIC_TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
USAGE = {"stream_options": {"include_usage": True}}


def dump(events):
    # Every field the SDK parsed from every chunk, as sent (exclude_unset): what replay must reproduce.
    return [e.model_dump(mode="json", exclude_unset=True) for e in events]


def chat(prompt, **kw):
    with llm.openai_client() as c:
        return dump(c.chat.completions.create(model="gpt-x", messages=llm.user(prompt), stream=True, **kw))


async def achat(prompt, **kw):
    async with llm.async_openai_client() as c:
        stream = await c.chat.completions.create(model="gpt-x", messages=llm.user(prompt), stream=True, **kw)
        return dump([e async for e in stream])


def responses(prompt, **kw):
    with llm.openai_client() as c:
        return dump(c.responses.create(model="gpt-r", input=llm.user(prompt), stream=True, **kw))


async def aresponses(prompt, **kw):
    async with llm.async_openai_client() as c:
        stream = await c.responses.create(model="gpt-r", input=llm.user(prompt), stream=True, **kw)
        return dump([e async for e in stream])


def messages(prompt, **kw):
    with llm.anthropic_client() as c:
        return dump(
            c.messages.create(model="claude-x", max_tokens=64, messages=llm.user(prompt), stream=True, **kw)
        )


async def amessages(prompt, **kw):
    async with llm.async_anthropic_client() as c:
        stream = await c.messages.create(
            model="claude-x", max_tokens=64, messages=llm.user(prompt), stream=True, **kw
        )
        return dump([e async for e in stream])


def test_chat_sync():
    llm.note("chat_sync", chat("Say something short about the Moon please", **USAGE))


def test_chat_plain_async():
    llm.note("chat_plain_async", asyncio.run(achat("No usage chunk for me")))


def test_chat_tool_sync():
    llm.note("chat_tool_sync", chat("please use_tool", tools=[CHAT_TOOL]))


def test_chat_tool_async():
    llm.note("chat_tool_async", asyncio.run(achat("please use_tool now", tools=[CHAT_TOOL], **USAGE)))


def test_responses_sync():
    llm.note("responses_sync", responses("Name a river"))


def test_responses_tool_async():
    llm.note("responses_tool_async", asyncio.run(aresponses("please use_tool", tools=[RESPONSES_TOOL])))


def test_messages_tool_sync():
    llm.note("messages_tool_sync", messages("please use_tool", tools=[ANTHROPIC_TOOL]))


def test_messages_async():
    llm.note("messages_async", asyncio.run(amessages("Name a planet")))
"""


def test_streams_are_stored_compactly_and_replay_every_parsed_chunk(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chat (text, tool calls, with and without usage), Responses and Anthropic (text, tool_use), sync and
    async: each cassette holds the final answer instead of the chunks, and replay, offline, gives the SDK
    the same parsed chunks (every field) as the live stream."""
    project.makepyfile(test_streams=STREAM_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=8)
    assert llm_server.calls == 8
    live = outputs(project)
    for name in live:
        recording = cassette(project, f"test_streams/test_{name}")["recordings"][0]
        assert "chunks" not in recording
        assert "patches" not in recording["stream"]  # everything is derived from the final answer
    moon = cassette(project, "test_streams/test_chat_sync")["recordings"][0]["stream"]
    text = "answer #1 to: Say something short about the Moon please"
    assert moon["response"]["choices"][0]["message"]["content"] == text
    assert moon["include_usage"] is True

    go_offline(llm_server, monkeypatch)
    replayed = project.runpytest("--promptcache=replay")
    replayed.assert_outcomes(passed=8)
    assert summary(replayed).startswith("promptcache: 8 replayed, 0 recorded, 0 missing;")
    assert outputs(project) == live


def test_a_streamed_answer_reads_as_text_in_a_short_cassette(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """A 55-character streamed answer, sent as a real API does (a delta per token or so), is one readable
    line in a short cassette, not every chunk as YAML."""
    llm_server.stream_pieces = 14
    project.makepyfile(test_streams=STREAM_TESTS)
    project.runpytest("--promptcache=auto", "-k", "test_chat_sync").assert_outcomes(passed=1)
    path = project.path / "fixtures/cassettes/test_streams/test_chat_sync.yaml"
    text = path.read_text(encoding="utf-8")
    answer = "answer #1 to: Say something short about the Moon please"
    assert len(answer) == 55
    assert f"content: '{answer}'" in text or f"content: {answer}" in text
    doc = load_cassette(path)
    assert doc is not None
    events = recorded_events(doc["recordings"][0])
    assert events is not None
    as_chunks = {**doc["recordings"][0], "chunks": events}
    del as_chunks["stream"]
    old_form = dump_cassette({**doc, "recordings": [as_chunks]})
    assert len(events) == 1 + 14 + 2 + 1  # role, text deltas, finish, usage, [DONE]
    assert len(text.splitlines()) < 70  # header, request, usage and the answer: not a chunk each
    assert len(text.splitlines()) * 4 < len(old_form.splitlines())


def test_old_chunks_form_still_replays(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cassette written before the compact form (``chunks:``) still loads and replays."""
    project.makepyfile(test_streams=STREAM_TESTS)
    project.runpytest("--promptcache=auto", "-k", "chat_sync or messages_async").assert_outcomes(passed=2)
    live = outputs(project)
    for name in ("chat_sync", "messages_async"):
        path = project.path / f"fixtures/cassettes/test_streams/test_{name}.yaml"
        doc = load_cassette(path)
        assert doc is not None
        recording = doc["recordings"][0]
        recording["chunks"] = recorded_events(recording)
        del recording["stream"]
        path.write_text(dump_cassette(doc), encoding="utf-8")
    go_offline(llm_server, monkeypatch)
    project.runpytest("--promptcache=replay", "-k", "chat_sync or messages_async").assert_outcomes(passed=2)
    assert outputs(project) == live


SHAPE_TESTS = """
import os

import llm


def test_stream():
    kw = {"stream_options": {"include_usage": True}} if os.environ.get("PC_USAGE") else {}
    with llm.openai_client() as c:
        stream = c.chat.completions.create(model="gpt-x", messages=llm.user("shape"), stream=True, **kw)
        chunks = [e.model_dump(mode="json", exclude_unset=True) for e in stream]
    if not kw:
        [chunk["choices"][0] for chunk in chunks]  # what a caller who did not ask for usage may do
    llm.note("chunks", chunks)
"""


def _without_created(chunks: list[dict[str, Any]]) -> bytes:
    return orjson.dumps([{k: v for k, v in c.items() if k != "created"} for c in chunks])


def test_replay_has_the_usage_shape_the_test_asks_for(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded with include_usage, replayed to a test without it: the chunks the API sends without it
    (no choices=[] usage chunk). Recorded without usage, a test asking for it is a replay miss that says
    why; ``auto`` records it once and replays it from then on."""
    project.makepyfile(test_shape=SHAPE_TESTS)
    monkeypatch.setenv("PC_USAGE", "1")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    monkeypatch.delenv("PC_USAGE")
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    replayed = outputs(project)["chunks"]
    llm_server.reset()  # the same turn (call #1) of the fake, live and without usage
    project.runpytest("--promptcache=off").assert_outcomes(passed=1)
    assert _without_created(replayed) == _without_created(outputs(project)["chunks"])

    project.runpytest("--promptcache=rewrite").assert_outcomes(passed=1)  # a stream without usage
    monkeypatch.setenv("PC_USAGE", "1")
    missed = project.runpytest("--promptcache=replay")
    missed.assert_outcomes(failed=1)
    assert "include_usage" in missed.stdout.str()
    calls = llm_server.calls
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    assert llm_server.calls == calls + 1
    again = project.runpytest("--promptcache=auto")
    again.assert_outcomes(passed=1)
    assert llm_server.calls == calls + 1
    assert summary(again).startswith("promptcache: 1 replayed, 0 recorded")
