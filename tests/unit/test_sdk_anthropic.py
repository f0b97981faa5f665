"""The real Anthropic SDK, sync and async, wrapped by promptcache and pointed at the local FakeLLM server.

Only what is Anthropic's own is here; the scenarios both SDKs run are in ``test_sdk_common.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sdk_driver import AnthropicProvider, ProviderDriver

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anthropic.types import Message, MessageParam, ToolParam
    from fake_llm import FakeLLM

ANTHROPIC = AnthropicProvider()
LOOKUP_TOOL: ToolParam = {"name": "lookup", "input_schema": {"type": "object"}}
create = ANTHROPIC.create
streamed_text = ANTHROPIC.streamed_text

pytestmark = pytest.mark.usefixtures("collect_abandoned_streams")


def claude(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def text_of(message: Message) -> str:
    text = ANTHROPIC.text(message)
    assert text is not None
    return text


class Driver(ProviderDriver):
    """An Anthropic client, sync or async, wrapped with a memory cache."""

    def __init__(self, kind: str, server: FakeLLM, *, wrapped: bool = True, **wrap_kw: Any) -> None:
        super().__init__(ANTHROPIC, kind, server, wrapped=wrapped, **wrap_kw)

    def helper(self, **kw: Any) -> tuple[list[str], Message]:
        """The text pieces and final message of the SDK's ``messages.stream()`` helper."""
        if self._runner is None:
            with self.client.messages.stream(**kw) as stream:
                pieces = list(stream.text_stream)
                return pieces, stream.get_final_message()

        async def read() -> tuple[list[str], Message]:
            async with self.client.messages.stream(**kw) as stream:
                got = [piece async for piece in stream.text_stream]
                return got, await stream.get_final_message()

        return self._runner.run(read())


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest, server: FakeLLM) -> Iterator[Driver]:
    driver = Driver(request.param, server)
    yield driver
    driver.close()


# --- hits and misses -----------------------------------------------------------------------------


def test_metadata_does_not_change_the_key(drv: Driver, server: FakeLLM) -> None:
    """metadata (the end-user id) is on the deny-list: a request differing only there is a hit."""
    first = drv.run(create("meta", metadata={"user_id": "u-1"}))
    second = drv.run(create("meta", metadata={"user_id": "u-2"}))
    assert second == first
    assert server.calls == 1


def test_tool_use_answer_is_cached(drv: Driver, server: FakeLLM) -> None:
    """An answer that stops for tool_use is storable, and the hit carries the same tool input."""
    first = drv.run(create("use_tool now", tools=[LOOKUP_TOOL]))
    second = drv.run(create("use_tool now", tools=[LOOKUP_TOOL]))
    assert second.stop_reason == "tool_use"
    block = second.content[0]
    assert block.type == "tool_use"
    assert block.input == {"query": "use_tool now"}
    assert second == first
    assert server.calls == 1


# --- streaming -----------------------------------------------------------------------------------


def test_raw_stream_replay_equals_recording(drv: Driver, server: FakeLLM) -> None:
    """create(stream=True) is recorded whole and replayed as equal events, stop reason and usage included."""
    recorded = drv.events(create("raw", stream=True))
    drv.drain()
    replayed = drv.events(create("raw", stream=True))
    assert server.calls == 1
    assert replayed == recorded
    types = [e.type for e in replayed]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert replayed[-2].delta.stop_reason == "end_turn"
    assert replayed[-2].usage == recorded[-2].usage
    assert streamed_text(replayed) == "answer #1 to: raw"
    stats = drv.cache.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1)


def test_stream_helper_replay(drv: Driver, server: FakeLLM) -> None:
    """The SDK's messages.stream() helper gets the same pieces and final message from a replay."""
    kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": claude("helper")}
    pieces, final = drv.helper(**kw)
    drv.drain()
    again, replayed = drv.helper(**kw)
    assert again == pieces
    assert len(pieces) >= 3
    assert replayed == final
    assert replayed.stop_reason == "end_turn"
    assert replayed.usage.output_tokens == final.usage.output_tokens
    assert server.calls == 1


# --- stats -----------------------------------------------------------------------------------------


def test_stats_match_what_happened(drv: Driver, server: FakeLLM) -> None:
    """Hits, misses and bypasses add up to the cached calls made, streams included."""
    drv.run(create("a"))
    drv.run(create("a"))
    drv.events(create("b", stream=True))
    drv.drain()
    drv.events(create("b", stream=True))
    drv.run(create("a", extra_headers={"x-promptcache-bypass": "1"}))
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.bypasses) == (5, 2, 2, 1)
    assert server.calls == 3
