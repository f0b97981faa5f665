"""Never cached: errors, empty or filtered answers, cut-off answers and broken JSON are never stored.

Each case goes through the real OpenAI (or Anthropic) SDK wrapped by promptcache, to the local fake
provider, with a real Redis behind the cache. The bad answer reaches the caller as the provider sent it,
Redis holds nothing for the request, and the next identical request goes upstream again (and, once it is a
success, is stored and then hit).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from fake_llm import ANTHROPIC_TEST_KEY, FakeLLM
from helpers import other_tasks
from reliability_support import (
    AGENT,
    finish_sdk,
    sdk_answer_is_for,
    sdk_messages,
    wrapped_openai,
)

from promptcache import CacheConfig, PromptCache
from promptcache.anthropic import wrap as wrap_anthropic

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _fail(status: int, body: Any = None) -> Callable[[FakeLLM], None]:
    return lambda server: server.fail_next(status, body=body)


def _finish(reason: str) -> Callable[[FakeLLM], None]:
    def arm(server: FakeLLM) -> None:
        server.next_finish_reason = reason

    return arm


def _invalid_body(server: FakeLLM) -> None:
    server.invalid_json_next = True


EMPTY_CHOICES = {"id": "chatcmpl-x", "object": "chat.completion", "model": "gpt-x", "choices": []}
ERROR_AS_200 = {"error": {"message": "overloaded, try again", "type": "server_error"}}
REFUSAL = {
    "id": "chatcmpl-r",
    "object": "chat.completion",
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            "finish_reason": "stop",
        }
    ],
}

API_ERROR = (openai.APIError,)
NO_ERROR: tuple[type[Exception], ...] = ()

# case -> (how to arm the fake provider, what the SDK raises, extra request fields)
CASES: dict[str, tuple[Callable[[FakeLLM], None], tuple[type[Exception], ...], dict[str, Any]]] = {
    "400": (_fail(400), API_ERROR, {}),
    "401": (_fail(401), API_ERROR, {}),
    "404": (_fail(404), API_ERROR, {}),
    "429": (_fail(429), API_ERROR, {}),
    "500": (_fail(500), API_ERROR, {}),
    "503": (_fail(503), API_ERROR, {}),
    "empty-choices": (_fail(200, EMPTY_CHOICES), NO_ERROR, {}),
    "error-body-with-200": (_fail(200, ERROR_AS_200), NO_ERROR, {}),
    "refusal": (_fail(200, REFUSAL), NO_ERROR, {}),
    "content-filter": (_finish("content_filter"), NO_ERROR, {}),
    "length": (_finish("length"), NO_ERROR, {}),
    "invalid-json-under-json-format": (
        lambda _s: None,
        NO_ERROR,
        {"response_format": {"type": "json_object"}},
    ),
    # The body passes through as sent, and the SDK's own JSON parsing fails on it.
    "truncated-json-body": (_invalid_body, (openai.APIError, ValueError), {}),
}


async def _keys(cache: PromptCache) -> list[str]:
    store: Any = cache.store
    keys: list[str] = await store.keys(cache.config.namespace + ":")
    return keys


@pytest.mark.parametrize("case", list(CASES))
async def test_an_unstorable_openai_answer_is_never_cached(
    redis_url: str, fake_llm: FakeLLM, case: str
) -> None:
    """A 4xx/5xx, empty choices, an error body, a refusal, content_filter, finish_reason "length", invalid
    JSON under a JSON response_format or a truncated body reaches the caller as sent and is never stored;
    the next identical request goes upstream again."""
    arm, raises, extra = CASES[case]
    tasks_before = other_tasks()
    cache = PromptCache.from_url(redis_url, CacheConfig(store_timeout=1.0))
    client = wrapped_openai(fake_llm, cache)
    prompt = f"never cache {case}"
    messages: Any = sdk_messages(prompt)

    async def ask() -> Any:
        return await client.chat.completions.create(model="gpt-x", messages=messages, **extra)

    try:
        arm(fake_llm)
        if raises:
            with pytest.raises(raises):
                await ask()
        else:
            await ask()
        await cache.drain()
        assert await _keys(cache) == []
        assert fake_llm.calls == 1

        second = await ask()  # not served from the cache: a new upstream call
        assert fake_llm.calls == 2
        assert sdk_answer_is_for(second.choices[0].message.content, prompt)
        await cache.drain()
        stored = len(await _keys(cache))
        await ask()
        stats = await finish_sdk(cache, client, tasks_before)
        if case == "invalid-json-under-json-format":  # the fake never answers JSON: never storable
            assert (stored, fake_llm.calls, stats.hits) == (0, 3, 0)
        else:
            assert (stored, fake_llm.calls, stats.hits) == (1, 2, 1)
        assert stats.requests == 3
    finally:
        await client.close()
        await cache.aclose()


ANTHROPIC_CASES: dict[str, Callable[[FakeLLM], None]] = {
    "529": lambda s: s.fail_next(529),
    "max-tokens": lambda s: setattr(s, "next_finish_reason", "max_tokens"),
    "refusal": lambda s: setattr(s, "next_finish_reason", "refusal"),
}


@pytest.mark.parametrize("case", list(ANTHROPIC_CASES))
async def test_an_unstorable_anthropic_answer_is_never_cached(
    redis_url: str, fake_llm: FakeLLM, case: str
) -> None:
    """An Anthropic overload (529), a max_tokens stop or a refusal stop is never stored; the next identical
    request goes upstream again and its success is stored."""
    tasks_before = other_tasks()
    cache = PromptCache.from_url(redis_url, CacheConfig(store_timeout=1.0))
    client = wrap_anthropic(
        anthropic.AsyncAnthropic(
            api_key=ANTHROPIC_TEST_KEY,
            base_url=fake_llm.anthropic_base_url,
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
        ),
        cache,
        agent_id=AGENT,
    )
    prompt = f"never cache anthropic {case}"

    async def ask() -> Any:
        return await client.messages.create(model="claude-x", max_tokens=64, messages=sdk_messages(prompt))

    try:
        ANTHROPIC_CASES[case](fake_llm)
        if case == "529":  # the caller sees the overload, as sent
            with pytest.raises(anthropic.APIStatusError) as raised:
                await ask()
            assert raised.value.status_code == 529
        else:
            await ask()
        await cache.drain()
        assert await _keys(cache) == []
        reply = await ask()
        assert fake_llm.calls == 2
        assert sdk_answer_is_for(reply.content[0].text, prompt)
        await cache.drain()
        assert len(await _keys(cache)) == 1
        stats = await finish_sdk(cache, client, tasks_before)
        assert (stats.requests, stats.misses, stats.not_stored + stats.upstream_errors) == (2, 2, 1)
    finally:
        await client.close()
        await cache.aclose()


async def test_concurrent_callers_of_an_unstorable_answer_each_get_it_and_none_is_stored(
    redis_url: str, fake_llm: FakeLLM
) -> None:
    """Eight concurrent identical requests answered with finish_reason "length" share one upstream call,
    each caller gets the cut-off answer, and nothing is stored."""
    tasks_before = other_tasks()
    cache = PromptCache.from_url(redis_url, CacheConfig(store_timeout=1.0))
    client = wrapped_openai(fake_llm, cache)
    prompt = "long essay"
    try:
        fake_llm.delay = 0.3
        fake_llm.next_finish_reason = "length"
        replies = await asyncio.gather(
            *(client.chat.completions.create(model="gpt-x", messages=sdk_messages(prompt)) for _ in range(8))
        )
        assert {r.choices[0].finish_reason for r in replies} == {"length"}
        assert all(sdk_answer_is_for(r.choices[0].message.content, prompt) for r in replies)
        assert fake_llm.calls == 1
        await cache.drain()
        assert await _keys(cache) == []
        stats = await finish_sdk(cache, client, tasks_before)
        assert (stats.requests, stats.misses, stats.hits, stats.not_stored) == (8, 1, 7, 1)
    finally:
        await client.close()
        await cache.aclose()
