"""Pydantic AI agents with promptcache inside the SDK client their provider is given.

Pydantic AI builds its OpenAI/Anthropic client inside the provider unless you give it one: give
``OpenAIProvider(openai_client=...)`` / ``AnthropicProvider(anthropic_client=...)`` an ``AsyncOpenAI`` /
``AsyncAnthropic`` wrapped by promptcache, and every model request of the agent goes through the cache
with the SDK path's key. Nothing else about the agent changes (tools, output types, retries).

Run it offline against the project's local fake server (``tests/fake_llm.py``)::

    .venv/bin/python examples/with_pydantic_ai.py   # each question twice: the second is a cache hit
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import anthropic
import openai
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from promptcache import PromptCache
from promptcache import anthropic as pc_anthropic
from promptcache import openai as pc_openai

__all__ = ["AGENT_ID", "INSTRUCTIONS", "anthropic_agent", "main", "openai_agent"]

AGENT_ID = "pydantic-ai-recipe"
INSTRUCTIONS = "You answer customers of an online shop in one short sentence."


def openai_agent(client: openai.AsyncOpenAI, *, model: str) -> Agent[None, str]:
    """A Pydantic AI agent on an OpenAI chat model, through ``client`` (wrapped; close it when done)."""
    return Agent(
        OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client)), instructions=INSTRUCTIONS
    )


def anthropic_agent(client: anthropic.AsyncAnthropic, *, model: str) -> Agent[None, str]:
    """A Pydantic AI agent on an Anthropic model, through ``client`` (wrapped; close it when done)."""
    return Agent(
        AnthropicModel(model, provider=AnthropicProvider(anthropic_client=client)), instructions=INSTRUCTIONS
    )


async def _demo(openai_url: str, anthropic_url: str, openai_key: str, anthropic_key: str) -> None:
    async with PromptCache.from_url("memory://") as cache:
        oa = pc_openai.wrap(
            openai.AsyncOpenAI(base_url=openai_url, api_key=openai_key), cache, agent_id=AGENT_ID
        )
        an = pc_anthropic.wrap(
            anthropic.AsyncAnthropic(base_url=anthropic_url, api_key=anthropic_key), cache, agent_id=AGENT_ID
        )
        agents = {
            "OpenAIProvider": openai_agent(oa, model="gpt-4o-mini"),
            "AnthropicProvider": anthropic_agent(an, model="claude-haiku-4-5"),
        }
        for name, agent in agents.items():
            for run in (1, 2):
                result = await agent.run("Where is my order #1042?")
                sys.stdout.write(f"{name} run {run}: {result.output!r}\n")
        stats = cache.stats()
        sys.stdout.write(f"cache: {stats.hits} hits, {stats.misses} misses, {stats.upstream_calls} calls\n")
        await oa.close()
        await an.close()


def main() -> int:
    """Run each agent on the same question twice, against the local fake server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeLLM  # noqa: PLC0415 - the demo's server

    with FakeLLM() as server:
        asyncio.run(_demo(server.base_url, server.anthropic_base_url, OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
