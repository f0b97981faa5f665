"""The OpenAI Agents SDK with promptcache inside the ``AsyncOpenAI`` client its model is given.

An Agents SDK model takes an ``openai_client``: give ``OpenAIResponsesModel`` (or
``OpenAIChatCompletionsModel``) an ``AsyncOpenAI`` wrapped by promptcache, or make it the default for every
agent with ``agents.set_default_openai_client(client)``. Each model request of a run then goes through the
cache with the SDK path's key; a run that asks what an earlier run asked makes no upstream call.

Tracing is unrelated to caching: the runner exports traces to OpenAI unless told not to, so
:func:`run` passes ``RunConfig(tracing_disabled=...)`` explicitly.

Run it offline against the project's local fake server (``tests/fake_llm.py``)::

    .venv/bin/python examples/with_openai_agents.py   # the same question twice: the second is a cache hit
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import openai
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner

from promptcache import PromptCache
from promptcache import openai as pc_openai

__all__ = ["AGENT_ID", "INSTRUCTIONS", "main", "run", "support_agent"]

AGENT_ID = "openai-agents-recipe"
INSTRUCTIONS = "You answer customers of an online shop in one short sentence."


def support_agent(client: openai.AsyncOpenAI, *, model: str) -> Agent[None]:
    """An Agents SDK agent on the Responses API, through ``client`` (wrapped; close it when done)."""
    return Agent(
        name="support", instructions=INSTRUCTIONS, model=OpenAIResponsesModel(model, openai_client=client)
    )


async def run(agent: Agent[None], question: str, *, tracing: bool = False) -> str:
    """The agent's final answer to ``question``."""
    result = await Runner.run(agent, question, run_config=RunConfig(tracing_disabled=not tracing))
    return str(result.final_output)


async def _demo(base_url: str, api_key: str) -> None:
    async with PromptCache.from_url("memory://") as cache:
        client = pc_openai.wrap(
            openai.AsyncOpenAI(base_url=base_url, api_key=api_key), cache, agent_id=AGENT_ID
        )
        agent = support_agent(client, model="gpt-4o-mini")
        for attempt in (1, 2):
            answer = await run(agent, "Where is my order #1042?")
            sys.stdout.write(f"run {attempt}: {answer!r}\n")
        stats = cache.stats()
        sys.stdout.write(f"cache: {stats.hits} hits, {stats.misses} misses, {stats.upstream_calls} calls\n")
        await client.close()


def main() -> int:
    """Run the agent on the same question twice, against the local fake server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fake_llm import OPENAI_TEST_KEY, FakeLLM  # noqa: PLC0415 - the demo's server

    with FakeLLM() as server:
        asyncio.run(_demo(server.base_url, OPENAI_TEST_KEY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
