"""CachedAgent: the seed tutorial's agent API over the real AsyncOpenAI SDK and the local FakeLLM server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import openai
import pytest
from fake_llm import OPENAI_TEST_KEY, FakeLLM

from promptcache import CachedAgent, PromptCache, generate_cache_key
from promptcache._keys import chat_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

SYSTEM = "You classify support tickets."


@pytest.fixture
async def client(server: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=OPENAI_TEST_KEY,
        base_url=server.base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    ) as aclient:
        yield aclient


@pytest.fixture
async def cache() -> AsyncIterator[PromptCache]:
    async with PromptCache.from_url("memory://") as memory:
        yield memory


async def test_second_think_is_a_hit(server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache) -> None:
    """The same question twice makes one upstream call and returns the same text."""
    agent = CachedAgent(client, cache, model="gpt-test", agent_id="classifier")
    first = await agent.think(SYSTEM, "my order is late")
    second = await agent.think(SYSTEM, "my order is late")
    assert first == second == "answer #1 to: my order is late"
    assert server.calls == 1
    assert agent.get_cache_stats() == {"hit_rate": 50.0, "hits": 1, "misses": 1, "total_calls": 2}


async def test_stats_before_any_call_have_the_seed_shape(
    client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Before the first call the stats are the seed's zero dict."""
    agent = CachedAgent(client, cache)
    assert agent.get_cache_stats() == {"hit_rate": 0, "hits": 0, "misses": 0}


async def test_hit_rate_is_a_rounded_percentage(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Two hits out of three calls report 66.67 percent, as the seed's example expects."""
    agent = CachedAgent(client, cache, model="gpt-test")
    for _ in range(3):
        await agent.think(SYSTEM, "refund please")
    assert agent.get_cache_stats() == {"hit_rate": 66.67, "hits": 2, "misses": 1, "total_calls": 3}
    assert server.calls == 1


async def test_request_sent_is_the_seed_request(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """The agent sends the seed's chat body: model, system and user messages, temperature and max_tokens."""
    agent = CachedAgent(client, cache, model="gpt-test", temperature=0.2, max_tokens=77)
    await agent.think(SYSTEM, "hello")
    body = server.last_request.body
    assert body["model"] == "gpt-test"
    assert body["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 77


async def test_entry_is_found_under_the_seed_key(client: openai.AsyncOpenAI, cache: PromptCache) -> None:
    """The answer is stored under the seed request's key, whose digest generate_cache_key also gives."""
    agent = CachedAgent(client, cache, model="gpt-test", temperature=0.1, max_tokens=64, agent_id="a1")
    await agent.think(SYSTEM, "where is it")
    await cache.drain()
    request = chat_request(SYSTEM, "where is it", "gpt-test", 0.1, 64)
    body = await cache.get(request, agent_id="a1")
    assert body is not None
    assert body["choices"][0]["message"]["content"] == "answer #1 to: where is it"
    digest = generate_cache_key(SYSTEM, "where is it", "gpt-test", 0.1, 64, agent_id="a1")
    assert digest == cache.key(request, agent_id="a1").digest


async def test_upstream_error_is_raised_not_returned(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """A 500 is raised as the SDK's error, never returned as "ERROR: ..." text, and nothing is cached."""
    agent = CachedAgent(client, cache, model="gpt-test")
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        await agent.think(SYSTEM, "crash")
    answer = await agent.think(SYSTEM, "crash")
    assert answer == "answer #2 to: crash"
    assert not answer.startswith("ERROR")
    assert server.calls == 2
    assert cache.stats().writes == 1


async def test_failed_call_counts_as_a_miss(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """A call that raised still counts in the stats (as the seed's miss), so hits + misses == total_calls."""
    agent = CachedAgent(client, cache, model="gpt-test")
    server.fail_next(429, count=1)
    with pytest.raises(openai.RateLimitError):
        await agent.think(SYSTEM, "busy")
    stats = agent.get_cache_stats()
    assert stats["total_calls"] == 1
    assert stats["hits"] + stats["misses"] == stats["total_calls"]


async def test_shared_failed_call_is_not_a_hit(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Callers that shared one failed upstream call all raise, and none of them counts as a hit."""
    agent = CachedAgent(client, cache, model="gpt-test")
    server.fail_next(500)
    results = await asyncio.gather(
        *[agent.think(SYSTEM, "fail together") for _ in range(3)], return_exceptions=True
    )
    assert all(isinstance(result, openai.InternalServerError) for result in results)
    assert server.calls == 1
    assert agent.get_cache_stats() == {"hit_rate": 0.0, "hits": 0, "misses": 3, "total_calls": 3}


async def test_truncated_answer_is_not_cached(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """An answer cut by max_tokens (finish_reason=length) is returned once but not stored."""
    agent = CachedAgent(client, cache, model="gpt-test")
    server.next_finish_reason = "length"
    assert await agent.think(SYSTEM, "long story") == "answer #1 to: long story"
    assert await agent.think(SYSTEM, "long story") == "answer #2 to: long story"
    assert await agent.think(SYSTEM, "long story") == "answer #2 to: long story"
    assert server.calls == 2
    assert agent.get_cache_stats()["hits"] == 1


async def test_agents_do_not_share_entries(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Two agent ids, or two versions of one agent, keep separate entries for the same prompt."""
    base = CachedAgent(client, cache, model="gpt-test", agent_id="router", agent_version="1")
    other_id = CachedAgent(client, cache, model="gpt-test", agent_id="writer", agent_version="1")
    bumped = CachedAgent(client, cache, model="gpt-test", agent_id="router", agent_version="2")
    answers = [await agent.think(SYSTEM, "same") for agent in (base, other_id, bumped, base)]
    assert answers == ["answer #1 to: same", "answer #2 to: same", "answer #3 to: same", "answer #1 to: same"]
    assert server.calls == 3


async def test_sampling_parameters_are_part_of_the_key(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Agents differing only in model, temperature or max_tokens do not share answers."""
    agents = [
        CachedAgent(client, cache, model="gpt-test", temperature=0.1, max_tokens=100),
        CachedAgent(client, cache, model="gpt-other", temperature=0.1, max_tokens=100),
        CachedAgent(client, cache, model="gpt-test", temperature=0.7, max_tokens=100),
        CachedAgent(client, cache, model="gpt-test", temperature=0.1, max_tokens=200),
    ]
    for agent in agents:
        await agent.think(SYSTEM, "param")
    assert server.calls == 4


async def test_concurrent_identical_thinks_make_one_call(
    server: FakeLLM, client: openai.AsyncOpenAI, cache: PromptCache
) -> None:
    """Five concurrent identical questions share one upstream call; the stats still add up."""
    agent = CachedAgent(client, cache, model="gpt-test")
    answers = await asyncio.gather(*[agent.think(SYSTEM, "rush") for _ in range(5)])
    assert set(answers) == {"answer #1 to: rush"}
    assert server.calls == 1
    stats = agent.get_cache_stats()
    assert stats["hits"] + stats["misses"] == stats["total_calls"] == 5
    assert stats["misses"] == 1


async def test_cache_stats_count_the_agent_calls(client: openai.AsyncOpenAI, cache: PromptCache) -> None:
    """The cache's own stats agree with the agent's: one miss, then hits."""
    agent = CachedAgent(client, cache, model="gpt-test")
    for _ in range(3):
        await agent.think(SYSTEM, "count me")
    stats = cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.upstream_calls) == (3, 2, 1, 1)
    assert stats.output_tokens_saved > 0
