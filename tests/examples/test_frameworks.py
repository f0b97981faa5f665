"""The pytest plugin records and replays what LangChain, Pydantic AI and the OpenAI Agents SDK send.

Two tests per framework, replayed from ``fixtures/cassettes/tests/examples/test_frameworks/<test>.yaml``
with every socket refused (``conftest.py``):

* ``..._plain``: the framework exactly as an application builds it, no promptcache in the code at all
  (its own SDK clients, built from a base URL and key): the plugin answers at the HTTP transport.
* ``..._recipe``: the recipe of ``examples/with_*.py`` (a wrapped client and a production cache) run
  twice: the plugin replays the first run, and the production cache answers the second.

Recorded from ``tests/fake_llm.py`` (``answer #<n> to: <question>``), never a real model; to record again
(offline)::

    .venv/bin/pytest tests/examples/test_frameworks.py --promptcache=rewrite

then put the provenance line back at the top of each cassette (``fixtures/README.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anthropic
import openai
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
from agents import Agent as AgentsSdkAgent
from agents import OpenAIResponsesModel
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from examples import with_langchain, with_openai_agents, with_pydantic_ai
from promptcache import PromptCache
from promptcache import anthropic as pc_anthropic
from promptcache import openai as pc_openai

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from promptcache.pytest_plugin import Recorder

pytestmark = pytest.mark.anyio

OPENAI_KEY = "not-a-real-key"  # replay sends nothing, and the local fake server ignores keys
ANTHROPIC_KEY = "not-a-real-key"
QUESTION = "Where is my order #1042?"
ANSWER = f"answer #1 to: {QUESTION}"
replayed = pytest.mark.promptcache(mode="replay", agent_id="frameworks", upstream="fake-llm")
# The recipes show their own production cache answering the second run: it must not step aside.
recipe = pytest.mark.promptcache(
    mode="replay", agent_id="frameworks", upstream="fake-llm", production_cache=True
)


class LLMUrls(Protocol):
    """The ``llm_urls`` fixture (``conftest.py``): OpenAI's and Anthropic's API roots."""

    openai: str
    anthropic: str


def assert_one_call(promptcache: Recorder, *, recording: bool) -> None:
    """Exactly one LLM call reached the HTTP transport: replayed, or (when recording) recorded."""
    if recording:
        assert promptcache.replayed + promptcache.recorded == 1
    else:
        assert (promptcache.replayed, promptcache.recorded, promptcache.missing) == (1, 0, 0)


async def close_if_recording(
    recording: bool, *clients: openai.AsyncOpenAI | anthropic.AsyncAnthropic
) -> None:
    """Close SDK clients a chat model built itself, once a recording used real sockets.

    LangChain shares each such client's HTTP client between its chat models of one base URL (an
    ``lru_cache``). In replay nothing is connected, and the replay URL is the same for every test: closing
    would break the next test's model. Each recording has its own FakeLLM port, so closing is safe there.
    """
    if recording:
        for client in clients:
            await client.close()


@pytest.fixture
async def cache() -> AsyncIterator[PromptCache]:
    async with PromptCache.from_url("memory://") as opened:
        yield opened


# --- LangChain -------------------------------------------------------------------------------------------


@replayed
async def test_langchain_chat_openai_plain(llm_urls: LLMUrls, promptcache: Recorder, recording: bool) -> None:
    chat = ChatOpenAI(model="gpt-4o-mini", base_url=llm_urls.openai, api_key=OPENAI_KEY)  # type: ignore[arg-type]
    assert (await chat.ainvoke(QUESTION)).content == ANSWER
    await close_if_recording(recording, chat.root_async_client)
    assert_one_call(promptcache, recording=recording)


@replayed
async def test_langchain_chat_anthropic_plain(
    llm_urls: LLMUrls, promptcache: Recorder, recording: bool
) -> None:
    chat = ChatAnthropic(
        model_name="claude-haiku-4-5",
        base_url=llm_urls.anthropic,
        api_key=ANTHROPIC_KEY,  # type: ignore[arg-type]
        max_tokens_to_sample=200,
        timeout=None,
        stop=None,
    )
    assert (await chat.ainvoke(QUESTION)).content == ANSWER
    await close_if_recording(recording, chat._async_client)
    assert_one_call(promptcache, recording=recording)


@recipe
async def test_langchain_recipe(
    llm_urls: LLMUrls, cache: PromptCache, promptcache: Recorder, recording: bool
) -> None:
    agent_id = with_langchain.AGENT_ID
    sync = pc_openai.wrap(
        openai.OpenAI(base_url=llm_urls.openai, api_key=OPENAI_KEY), cache, agent_id=agent_id
    )
    aclient = pc_openai.wrap(
        openai.AsyncOpenAI(base_url=llm_urls.openai, api_key=OPENAI_KEY), cache, agent_id=agent_id
    )
    chat = with_langchain.chat_openai(sync, aclient, model="gpt-4o-mini")
    try:
        assert (await chat.ainvoke(QUESTION)).content == ANSWER
        await cache.drain()
        assert (await chat.ainvoke(QUESTION)).content == ANSWER  # the production cache, not the cassette
    finally:
        sync.close()
        await aclient.close()
    assert cache.stats().hits == 1
    assert_one_call(promptcache, recording=recording)


# --- Pydantic AI -----------------------------------------------------------------------------------------


@replayed
async def test_pydantic_ai_openai_plain(llm_urls: LLMUrls, promptcache: Recorder, recording: bool) -> None:
    provider = OpenAIProvider(base_url=llm_urls.openai, api_key=OPENAI_KEY)
    agent = Agent(
        OpenAIChatModel("gpt-4o-mini", provider=provider), instructions=with_pydantic_ai.INSTRUCTIONS
    )
    async with agent:  # Pydantic AI closes the clients its providers built when the agent is exited
        assert (await agent.run(QUESTION)).output == ANSWER
    assert_one_call(promptcache, recording=recording)


@replayed
async def test_pydantic_ai_anthropic_plain(llm_urls: LLMUrls, promptcache: Recorder, recording: bool) -> None:
    provider = AnthropicProvider(base_url=llm_urls.anthropic, api_key=ANTHROPIC_KEY)
    agent = Agent(
        AnthropicModel("claude-haiku-4-5", provider=provider), instructions=with_pydantic_ai.INSTRUCTIONS
    )
    async with agent:
        assert (await agent.run(QUESTION)).output == ANSWER
    assert_one_call(promptcache, recording=recording)


@recipe
async def test_pydantic_ai_recipe(
    llm_urls: LLMUrls, cache: PromptCache, promptcache: Recorder, recording: bool
) -> None:
    client = pc_anthropic.wrap(
        anthropic.AsyncAnthropic(base_url=llm_urls.anthropic, api_key=ANTHROPIC_KEY),
        cache,
        agent_id=with_pydantic_ai.AGENT_ID,
    )
    agent = with_pydantic_ai.anthropic_agent(client, model="claude-haiku-4-5")
    try:
        assert (await agent.run(QUESTION)).output == ANSWER
        await cache.drain()
        assert (await agent.run(QUESTION)).output == ANSWER
    finally:
        await client.close()
    assert cache.stats().hits == 1
    assert_one_call(promptcache, recording=recording)


# --- OpenAI Agents SDK -----------------------------------------------------------------------------------


@replayed
async def test_openai_agents_sdk_plain(llm_urls: LLMUrls, promptcache: Recorder, recording: bool) -> None:
    client = openai.AsyncOpenAI(base_url=llm_urls.openai, api_key=OPENAI_KEY)
    agent = AgentsSdkAgent(
        name="support",
        instructions=with_openai_agents.INSTRUCTIONS,
        model=OpenAIResponsesModel("gpt-4o-mini", openai_client=client),
    )
    try:
        assert await with_openai_agents.run(agent, QUESTION) == ANSWER
    finally:
        await client.close()
    assert_one_call(promptcache, recording=recording)


@recipe
async def test_openai_agents_sdk_recipe(
    llm_urls: LLMUrls, cache: PromptCache, promptcache: Recorder, recording: bool
) -> None:
    client = pc_openai.wrap(
        openai.AsyncOpenAI(base_url=llm_urls.openai, api_key=OPENAI_KEY),
        cache,
        agent_id=with_openai_agents.AGENT_ID,
    )
    agent = with_openai_agents.support_agent(client, model="gpt-4o-mini")
    try:
        assert await with_openai_agents.run(agent, QUESTION) == ANSWER
        await cache.drain()
        assert await with_openai_agents.run(agent, QUESTION) == ANSWER
    finally:
        await client.close()
    assert cache.stats().hits == 1
    assert_one_call(promptcache, recording=recording)
