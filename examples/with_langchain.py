"""LangChain's ``ChatOpenAI`` and ``ChatAnthropic`` with promptcache inside their SDK clients.

Give the chat model SDK clients wrapped by :func:`promptcache.openai.wrap` or
:func:`promptcache.anthropic.wrap`: the cache then sits at the HTTP request the SDK sends, so its key is
exactly the key of the SDK path (the same entries serve LangChain code and plain SDK code, and the pytest
plugin's cassettes match both).
That is the recipe for production; :mod:`promptcache.langchain` (``set_llm_cache``) is the other door,
keyed on LangChain's own prompt string instead.

``ChatOpenAI`` takes the clients as ``client``/``root_client`` (sync) and ``async_client``/
``root_async_client`` (async). ``ChatAnthropic`` has no such parameter: it builds its clients lazily in
``_client``/``_async_client``, so the recipe sets those two (do not wrap the clients it builds itself:
they share one HTTP client per base URL with every other ``ChatAnthropic``).

Run it offline against the project's local fake server (``tests/fake_llm.py``)::

    .venv/bin/python examples/with_langchain.py     # each question twice: the second is a cache hit
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import anthropic
import openai
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI

from promptcache import PromptCache
from promptcache import anthropic as pc_anthropic
from promptcache import openai as pc_openai

__all__ = ["AGENT_ID", "chat_anthropic", "chat_openai", "main"]

AGENT_ID = "langchain-recipe"


def chat_openai(
    client: openai.OpenAI,
    async_client: openai.AsyncOpenAI,
    *,
    model: str,
    **chat_options: Any,  # noqa: ANN401
) -> ChatOpenAI:
    """A ``ChatOpenAI`` on two wrapped OpenAI clients (``invoke`` uses the sync one, ``ainvoke`` the other).

    The clients stay yours: close them when done (``ChatOpenAI`` does not).
    """
    return ChatOpenAI(
        model=model,
        api_key=client.api_key,  # type: ignore[arg-type]  # ChatOpenAI checks that it has one
        client=client.chat.completions,
        root_client=client,
        async_client=async_client.chat.completions,
        root_async_client=async_client,
        **chat_options,
    )


def chat_anthropic(
    client: anthropic.Anthropic,
    async_client: anthropic.AsyncAnthropic,
    *,
    model: str,
    **chat_options: Any,  # noqa: ANN401
) -> ChatAnthropic:
    """A ``ChatAnthropic`` on two wrapped Anthropic clients; close them when done."""
    chat = ChatAnthropic(model_name=model, api_key=client.api_key, **chat_options)  # type: ignore[arg-type]
    # `_client` and `_async_client` are cached properties: setting them is how ChatAnthropic takes clients.
    chat._client = client  # noqa: SLF001
    chat._async_client = async_client  # noqa: SLF001
    return chat


async def _demo(openai_url: str, anthropic_url: str, openai_key: str, anthropic_key: str) -> None:
    async with PromptCache.from_url("memory://") as cache:
        scope: dict[str, Any] = {"agent_id": AGENT_ID, "agent_version": "1"}
        oa = pc_openai.wrap(openai.OpenAI(base_url=openai_url, api_key=openai_key), cache, **scope)
        aoa = pc_openai.wrap(openai.AsyncOpenAI(base_url=openai_url, api_key=openai_key), cache, **scope)
        an = pc_anthropic.wrap(
            anthropic.Anthropic(base_url=anthropic_url, api_key=anthropic_key), cache, **scope
        )
        aan = pc_anthropic.wrap(
            anthropic.AsyncAnthropic(base_url=anthropic_url, api_key=anthropic_key), cache, **scope
        )
        models = {
            "ChatOpenAI": chat_openai(oa, aoa, model="gpt-4o-mini"),
            "ChatAnthropic": chat_anthropic(an, aan, model="claude-haiku-4-5", max_tokens=200),
        }
        for name, chat in models.items():
            for run in (1, 2):
                reply = await chat.ainvoke("Where is my order #1042?")
                sys.stdout.write(f"{name} run {run}: {reply.content!r}\n")
        stats = cache.stats()
        sys.stdout.write(f"cache: {stats.hits} hits, {stats.misses} misses, {stats.upstream_calls} calls\n")
        for client in (oa, an):
            client.close()
        for aclient in (aoa, aan):
            await aclient.close()


def main() -> int:
    """Ask each chat model the same question twice, against the local fake server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeLLM  # noqa: PLC0415 - the demo's server

    with FakeLLM() as server:
        asyncio.run(_demo(server.base_url, server.anthropic_base_url, OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
