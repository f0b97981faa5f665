"""A stream read to its end and repeated at once is a hit: its entry is written before the SDK closes it.

Found by a user trial: a Responses stream consumed fully and requested again without yielding to the
event loop went upstream a second time (the entry was still a pending background write).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import anthropic
import openai
from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

from promptcache import PromptCache
from promptcache.anthropic import wrap as wrap_anthropic
from promptcache.openai import wrap

if TYPE_CHECKING:
    from fake_llm import FakeLLM


def test_async_streams_repeated_at_once_hit(server: FakeLLM) -> None:
    async def go() -> None:
        async with PromptCache.from_url("memory://") as cache:
            oai = wrap(
                openai.AsyncOpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url), cache, agent_id="r"
            )
            claude = wrap_anthropic(
                anthropic.AsyncAnthropic(api_key=ANTHROPIC_TEST_KEY, base_url=server.anthropic_base_url),
                cache,
                agent_id="r",
            )
            for _ in range(2):  # no await between the end of one stream and the next request
                _ = [e async for e in await oai.responses.create(model="m", input="again", stream=True)]
            for _ in range(2):
                chat = await oai.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "again"}], stream=True
                )
                _ = [c async for c in chat]
            for _ in range(2):
                msgs = await claude.messages.create(
                    model="m", max_tokens=16, messages=[{"role": "user", "content": "again"}], stream=True
                )
                _ = [e async for e in msgs]
            await oai.close()
            await claude.close()

    asyncio.run(go())
    assert server.calls == 3


def test_sync_streams_repeated_at_once_hit(server: FakeLLM) -> None:
    cache = PromptCache.from_url("memory://")
    client = wrap(openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url), cache, agent_id="r")
    with client:
        for _ in range(2):
            _ = list(client.responses.create(model="m", input="again", stream=True))
    cache.close()
    assert server.calls == 1
