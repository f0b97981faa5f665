"""Each framework recipe, run twice against a live FakeLLM: the second identical run makes no upstream call.

The FakeLLM numbers its answers (``answer #<n> to: ...``), so an answer equal to the first run's with the
server's call counter unchanged can only have come from the cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

pytest.importorskip(
    "langchain_openai", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
pytest.importorskip(
    "langchain_anthropic", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
pytest.importorskip(
    "pydantic_ai", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
pytest.importorskip(
    "agents", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeLLM, anthropic_clients, openai_clients

from examples import with_langchain, with_openai_agents, with_pydantic_ai
from promptcache import PromptCache
from promptcache import anthropic as pc_anthropic
from promptcache import openai as pc_openai

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import anthropic
    import openai

pytestmark = pytest.mark.anyio

QUESTION = "Where is my order #1042?"
AGENT = "recipe-test"


@pytest.fixture
async def cache() -> AsyncIterator[PromptCache]:
    async with PromptCache.from_url("memory://") as opened:
        yield opened


@pytest.fixture
async def oa(server: FakeLLM, cache: PromptCache) -> AsyncIterator[tuple[openai.OpenAI, openai.AsyncOpenAI]]:
    """A sync and an async OpenAI client on the FakeLLM, both wrapped by ``cache``."""
    sync, aclient = openai_clients(server, api_key=OPENAI_TEST_KEY)
    yield pc_openai.wrap(sync, cache, agent_id=AGENT), pc_openai.wrap(aclient, cache, agent_id=AGENT)
    sync.close()
    await aclient.close()


@pytest.fixture
async def an(
    server: FakeLLM, cache: PromptCache
) -> AsyncIterator[tuple[anthropic.Anthropic, anthropic.AsyncAnthropic]]:
    """A sync and an async Anthropic client on the FakeLLM, both wrapped by ``cache``."""
    sync, aclient = anthropic_clients(server, api_key=ANTHROPIC_TEST_KEY)
    yield pc_anthropic.wrap(sync, cache, agent_id=AGENT), pc_anthropic.wrap(aclient, cache, agent_id=AGENT)
    sync.close()
    await aclient.close()


async def test_langchain_chat_openai_second_run_is_a_cache_hit(
    server: FakeLLM, cache: PromptCache, oa: tuple[openai.OpenAI, openai.AsyncOpenAI]
) -> None:
    chat = with_langchain.chat_openai(*oa, model="gpt-4o-mini")
    first = await chat.ainvoke(QUESTION)
    assert first.content == f"answer #1 to: {QUESTION}"
    await cache.drain()
    again = await chat.ainvoke(QUESTION)
    assert again.content == first.content
    assert server.calls == 1
    assert (cache.stats().hits, cache.stats().upstream_calls) == (1, 1)


async def test_langchain_sync_invoke_hits_what_ainvoke_stored(
    server: FakeLLM, cache: PromptCache, oa: tuple[openai.OpenAI, openai.AsyncOpenAI]
) -> None:
    """``invoke`` (the sync client, on promptcache's portal) and ``ainvoke`` share one key and one entry."""
    chat = with_langchain.chat_openai(*oa, model="gpt-4o-mini")
    first = await chat.ainvoke(QUESTION)
    await cache.drain()
    again = chat.invoke(QUESTION)  # the sync client, from inside a running loop (as LangChain allows)
    assert again.content == first.content == f"answer #1 to: {QUESTION}"
    assert server.calls == 1


async def test_langchain_chat_anthropic_second_run_is_a_cache_hit(
    server: FakeLLM, cache: PromptCache, an: tuple[anthropic.Anthropic, anthropic.AsyncAnthropic]
) -> None:
    chat = with_langchain.chat_anthropic(*an, model="claude-haiku-4-5", max_tokens=200)
    first = await chat.ainvoke(QUESTION)
    assert first.content == f"answer #1 to: {QUESTION}"
    await cache.drain()
    again = await chat.ainvoke(QUESTION)
    assert again.content == first.content
    assert server.calls == 1


async def test_pydantic_ai_openai_provider_second_run_is_a_cache_hit(
    server: FakeLLM, cache: PromptCache, oa: tuple[openai.OpenAI, openai.AsyncOpenAI]
) -> None:
    agent = with_pydantic_ai.openai_agent(oa[1], model="gpt-4o-mini")
    first = await agent.run(QUESTION)
    assert first.output == f"answer #1 to: {QUESTION}"
    await cache.drain()
    again = await agent.run(QUESTION)
    assert again.output == first.output
    assert server.calls == 1


async def test_pydantic_ai_anthropic_provider_second_run_is_a_cache_hit(
    server: FakeLLM, cache: PromptCache, an: tuple[anthropic.Anthropic, anthropic.AsyncAnthropic]
) -> None:
    agent = with_pydantic_ai.anthropic_agent(an[1], model="claude-haiku-4-5")
    first = await agent.run(QUESTION)
    assert first.output == f"answer #1 to: {QUESTION}"
    await cache.drain()
    again = await agent.run(QUESTION)
    assert again.output == first.output
    assert server.calls == 1


async def test_openai_agents_sdk_second_run_is_a_cache_hit(
    server: FakeLLM, cache: PromptCache, oa: tuple[openai.OpenAI, openai.AsyncOpenAI]
) -> None:
    agent = with_openai_agents.support_agent(oa[1], model="gpt-4o-mini")
    first = await with_openai_agents.run(agent, QUESTION)
    assert first == f"answer #1 to: {QUESTION}"
    await cache.drain()
    assert await with_openai_agents.run(agent, QUESTION) == first
    assert server.calls == 1
    assert cache.stats().hits == 1


async def test_a_changed_question_still_reaches_the_model(
    server: FakeLLM, cache: PromptCache, oa: tuple[openai.OpenAI, openai.AsyncOpenAI]
) -> None:
    """The cache answers only what was asked before: another question is another upstream call."""
    agent = with_openai_agents.support_agent(oa[1], model="gpt-4o-mini")
    await with_openai_agents.run(agent, QUESTION)
    await cache.drain()
    other = await with_openai_agents.run(agent, "Can I change my address?")
    assert other == "answer #2 to: Can I change my address?"
    assert server.calls == 2
