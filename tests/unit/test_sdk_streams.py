"""Streams through the real SDKs, sync and async, over the local FakeLLM server: framing, shape, kinds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
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
