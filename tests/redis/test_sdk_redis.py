"""Wrapped SDK clients sharing a real Redis: what one client instance stored, another one replays."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeLLM

from promptcache import PromptCache
from promptcache.anthropic import wrap as wrap_anthropic
from promptcache.integrations import _portal
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Iterator

    from openai.types.chat import ChatCompletionMessageParam

pytestmark = pytest.mark.redis

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "shared question"}]


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake
    assert fake.errors == []


def sync_openai(server: FakeLLM) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=OPENAI_TEST_KEY, base_url=server.base_url, http_client=openai.DefaultHttpxClient(verify=False)
    )


def async_openai(server: FakeLLM) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=OPENAI_TEST_KEY,
        base_url=server.base_url,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    )


def test_sync_hit_across_two_client_instances(redis_url: str, server: FakeLLM) -> None:
    """A sync client with its own cache replays what another sync client stored in the same Redis."""
    caches = [PromptCache.from_url(redis_url), PromptCache.from_url(redis_url)]
    clients = [wrap(sync_openai(server), cache, agent_id="shared") for cache in caches]
    try:
        first = clients[0].chat.completions.create(model="gpt-test", messages=MESSAGES)
        _portal.call(caches[0].drain)
        second = clients[1].chat.completions.create(model="gpt-test", messages=MESSAGES)
    finally:
        for client in clients:
            client.close()
        for cache in caches:
            _portal.call(cache.aclose)
    assert second == first
    assert server.calls == 1
    assert (caches[0].stats().misses, caches[1].stats().hits) == (1, 1)


@pytest.mark.anyio
async def test_async_hit_across_two_client_instances(redis_url: str, server: FakeLLM) -> None:
    """An async client with its own cache replays a plain call and a stream stored by another client."""
    streamed: list[ChatCompletionMessageParam] = [{"role": "user", "content": "streamed"}]
    async with (
        PromptCache.from_url(redis_url) as one,
        PromptCache.from_url(redis_url) as two,
        wrap(async_openai(server), one, agent_id="shared") as a,
        wrap(async_openai(server), two, agent_id="shared") as b,
    ):
        first = await a.chat.completions.create(model="gpt-test", messages=MESSAGES)
        async with await a.chat.completions.create(model="gpt-test", messages=streamed, stream=True) as s1:
            recorded = [chunk async for chunk in s1]
        await one.drain()
        second = await b.chat.completions.create(model="gpt-test", messages=MESSAGES)
        async with await b.chat.completions.create(model="gpt-test", messages=streamed, stream=True) as s2:
            replayed = [chunk async for chunk in s2]
        assert two.stats().hits == 2
    assert second == first
    assert replayed == recorded
    assert server.calls == 2


def test_sync_store_async_replay(redis_url: str, server: FakeLLM) -> None:
    """An entry a sync client wrote (on the portal loop) is a hit for an async client on another loop."""
    sync_cache = PromptCache.from_url(redis_url)
    client = wrap(sync_openai(server), sync_cache, agent_id="mixed")
    try:
        first = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    finally:
        client.close()
        _portal.call(sync_cache.aclose)

    async def replay() -> Any:
        async with (
            PromptCache.from_url(redis_url) as cache,
            wrap(async_openai(server), cache, agent_id="mixed") as aclient,
        ):
            return await aclient.chat.completions.create(model="gpt-test", messages=MESSAGES)

    assert asyncio.run(replay()) == first
    assert server.calls == 1


@pytest.mark.anyio
async def test_anthropic_hit_across_instances_and_tenants(redis_url: str, server: FakeLLM) -> None:
    """Two Anthropic clients share entries per tenant through Redis; another tenant misses."""

    def make() -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=ANTHROPIC_TEST_KEY,
            base_url=server.anthropic_base_url,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
        )

    ask: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "q"}],
    }
    async with (
        PromptCache.from_url(redis_url) as one,
        PromptCache.from_url(redis_url) as two,
        wrap_anthropic(make(), one, agent_id="claude", tenant="acme") as a,
        wrap_anthropic(make(), two, agent_id="claude") as b,
    ):
        first = await a.messages.create(**ask)
        await one.drain()
        same_tenant = await b.messages.create(**ask, extra_headers={"x-promptcache-tenant": "acme"})
        other_tenant = await b.messages.create(**ask)
    assert same_tenant == first
    assert other_tenant != first
    assert server.calls == 2
