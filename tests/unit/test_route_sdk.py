"""Key schema v2 through the real SDKs: what besides the body selects an answer keeps answers apart.

Each test sends two requests through wrapped clients sharing one cache and counts what reached the fake
server: a second request that must not be served from the first one's answer has to arrive there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeLLM

from promptcache import ConfigError, PromptCache
from promptcache.metrics import RequestEvent
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Iterator

MESSAGES: Any = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def cache() -> Iterator[PromptCache]:
    cache = PromptCache.from_url("memory://")
    yield cache
    cache.close()


def oai(server: FakeLLM, cache: PromptCache, **kw: Any) -> openai.OpenAI:
    wrap_kw = {k: kw.pop(k) for k in ("upstream", "key_headers", "cache_server_state") if k in kw}
    client = openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url, max_retries=0, **kw)
    return wrap(client, cache, agent_id="agent", **wrap_kw)


def ant(server: FakeLLM, cache: PromptCache, **kw: Any) -> anthropic.Anthropic:
    wrap_kw = {k: kw.pop(k) for k in ("upstream", "cache_server_state") if k in kw}
    client = anthropic.Anthropic(
        api_key=ANTHROPIC_TEST_KEY, base_url=server.anthropic_base_url, max_retries=0, **kw
    )
    return wrap(client, cache, agent_id="agent", **wrap_kw)


def chat(client: openai.OpenAI, **kw: Any) -> str:
    reply = client.chat.completions.create(model="gpt-test", messages=MESSAGES, **kw)
    return str(reply.choices[0].message.content)


def test_an_organisation_never_gets_another_organisations_answer(server: FakeLLM, cache: PromptCache) -> None:
    """OpenAI-Organization and OpenAI-Project select the tenant: org B's call goes upstream."""
    a = oai(server, cache, organization="org-a")
    b = oai(server, cache, organization="org-b")
    p = oai(server, cache, organization="org-a", project="proj-1")
    answers = {chat(a), chat(b), chat(p)}
    assert server.calls == len(answers) == 3
    assert chat(oai(server, cache, organization="org-b")) in answers  # the same org hits
    assert server.calls == 3


def test_another_host_is_another_answer_unless_aliased(cache: PromptCache) -> None:
    """Two upstreams with the same model name never share answers; one alias makes them share."""
    with FakeLLM() as one, FakeLLM() as two:
        chat(oai(one, cache))
        chat(oai(two, cache))
        assert (one.calls, two.calls) == (1, 1)
        chat(oai(one, cache, upstream="shared"))
        chat(oai(two, cache, upstream="shared"))
        assert (one.calls, two.calls) == (2, 1)


def test_the_query_string_is_part_of_the_key(server: FakeLLM, cache: PromptCache) -> None:
    """extra_query selects the answer (Azure's api-version travels there too)."""
    client = oai(server, cache)
    chat(client, extra_query={"api-version": "2024-10-21"})
    chat(client, extra_query={"api-version": "2025-01-01"})
    chat(client)
    assert server.calls == 3
    chat(client, extra_query={"api-version": "2025-01-01"})
    assert server.calls == 3


def test_headers_on_the_allow_list_select_the_answer(server: FakeLLM, cache: PromptCache) -> None:
    """A header the agent names in key_headers joins the key; an unlisted header never does."""
    client = oai(server, cache, key_headers=["x-route"])
    chat(client, extra_headers={"x-route": "eu", "x-request-id": "1"})
    chat(client, extra_headers={"x-route": "us", "x-request-id": "1"})
    chat(client, extra_headers={"x-route": "eu", "x-request-id": "2"})
    assert server.calls == 2


def test_a_beta_call_is_not_served_the_plain_answer(server: FakeLLM, cache: PromptCache) -> None:
    """client.beta.messages.create(betas=[...]) after a plain call of the same prompt goes upstream."""
    client = ant(server, cache)
    kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 50, "messages": MESSAGES}
    client.messages.create(**kw)
    client.beta.messages.create(**kw, betas=["files-api-2025-04-14"])
    client.messages.create(**kw, extra_headers={"anthropic-version": "2024-01-01"})
    assert server.calls == 3
    client.beta.messages.create(**kw, betas=["files-api-2025-04-14"])
    assert server.calls == 3


def test_cache_control_markers_hit_the_plain_entry(server: FakeLLM, cache: PromptCache) -> None:
    """Prompt-caching markers never change the answer, so they never cost a miss."""
    client = ant(server, cache)
    eph: Any = {"type": "ephemeral"}
    client.messages.create(model="claude-test", max_tokens=50, system="Be terse.", messages=MESSAGES)
    client.messages.create(
        model="claude-test",
        max_tokens=50,
        system=[{"type": "text", "text": "Be terse.", "cache_control": eph}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": MESSAGES[0]["content"], "cache_control": eph}],
            }
        ],
    )
    assert server.calls == 1


def test_server_state_requests_bypass_and_are_counted(server: FakeLLM, cache: PromptCache) -> None:
    """A Responses call in a conversation is never answered from the cache (its history changes)."""
    events: list[RequestEvent] = []
    hooked = PromptCache.from_url(
        "memory://", hooks=[lambda e: events.append(e) if isinstance(e, RequestEvent) else None]
    )
    client = oai(server, hooked)
    for _ in range(2):
        client.responses.create(model="gpt-test", input="next step", conversation="conv_1")
    assert server.calls == 2
    stats = hooked.stats()
    assert (stats.server_state, stats.bypasses, stats.hits) == (2, 2, 0)
    assert [e.reason for e in events] == ["server-state: conversation"] * 2
    hooked.close()
    opted = oai(server, cache, cache_server_state=True)
    for _ in range(2):
        opted.responses.create(model="gpt-test", input="next step", conversation="conv_1")
    assert server.calls == 3


def test_store_false_is_never_served_to_store_true(server: FakeLLM, cache: PromptCache) -> None:
    """An answer that was never stored upstream cannot be continued: store=true asks again."""
    client = oai(server, cache)
    client.responses.create(model="gpt-test", input="hi", store=False)
    client.responses.create(model="gpt-test", input="hi", store=True)
    client.responses.create(model="gpt-test", input="hi")  # true is the default
    assert server.calls == 2


def test_async_clients_key_the_route_too(server: FakeLLM, cache: PromptCache) -> None:
    async def go() -> None:
        async with PromptCache.from_url("memory://") as own:
            a = wrap(
                openai.AsyncOpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url, organization="a"),
                own,
                agent_id="x",
            )
            b = wrap(
                openai.AsyncOpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url, organization="b"),
                own,
                agent_id="x",
            )
            for client in (a, b, a):
                await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            await a.close()
            await b.close()

    asyncio.run(go())
    assert server.calls == 2


def test_sdk_clients_sharing_one_http_client_keep_their_own_scope(
    server: FakeLLM, cache: PromptCache
) -> None:
    """One http_client shared for pooling: each wrapped client caches under its own agent, an unwrapped
    one is never answered from the cache (a user trial found it served another agent's entry)."""
    shared = openai.DefaultHttpxClient()

    def build() -> openai.OpenAI:
        return openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url, http_client=shared)

    classifier = wrap(build(), cache, agent_id="classifier")
    writer = wrap(build(), cache, agent_id="writer")  # not "already wrapped": another client
    bare = build()
    assert chat(classifier) == chat(classifier)  # a hit
    assert server.calls == 1
    chat(writer)  # another agent: its own entry
    assert server.calls == 2
    raw = bare.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    assert raw.headers.get("x-promptcache") is None
    assert server.calls == 3
    assert "x-promptcache-client" not in server.requests[-1].headers  # never sent upstream
    with pytest.raises(ConfigError, match="already wrapped"):
        wrap(classifier, cache, agent_id="again")
    chat(classifier.with_options(timeout=5))  # a copy keeps its client's scope: a hit
    assert server.calls == 3
    shared.close()


@pytest.mark.parametrize("flavour", ["httpx", "httpx2"])
def test_control_and_keyed_headers_read_as_headers_items_reads_them(flavour: str) -> None:
    """The transport reads headers from ``Headers.raw``: any case, repeated, non-ASCII values come out as
    ``Headers.items()`` gives them, every control header is removed, and only keyed headers route."""
    import importlib  # noqa: PLC0415

    from promptcache._scope import Scope  # noqa: PLC0415
    from promptcache.integrations._http import HEADER_PREFIX, request_route, take_controls  # noqa: PLC0415

    mod = importlib.import_module(flavour)
    sent: list[tuple[str, str | bytes]] = [
        ("X-PromptCache-Agent-Id", "bot"),
        ("x-promptcache-tenant", "acme"),
        ("X-PROMPTCACHE-TENANT", "more"),
        ("OpenAI-Organization", "org-é".encode()),
        ("x-stainless-retry-count", "0"),
        ("X-Team", "blue"),
    ]
    request = mod.Request("POST", "https://api.example/v1/chat/completions", headers=sent)
    expected = {k: v for k, v in request.headers.items() if k.startswith(HEADER_PREFIX)}
    scope = Scope(agent_id="bot", key_headers=("x-team",))
    expected_picked = [
        (k, v) for k, v in request.headers.multi_items() if k in {"openai-organization", "x-team"}
    ]
    route = request_route(request, "/v1", scope)
    assert (
        take_controls(request.headers)
        == expected
        == {"x-promptcache-agent-id": "bot", "x-promptcache-tenant": "acme, more"}
    )
    assert not [k for k in request.headers if k.startswith(HEADER_PREFIX)]
    assert route == request_route(request, "/v1", scope)  # the controls never mattered to the route
    other = mod.Request(
        "POST",
        "https://api.example/v1/chat/completions",
        headers=[(k, v.encode()) for k, v in expected_picked],
    )
    assert request_route(other, "/v1", scope) == route
    assert route != request_route(mod.Request("POST", "https://api.example/v1/x"), "/v1", scope)
