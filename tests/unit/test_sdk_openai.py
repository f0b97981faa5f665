"""The real OpenAI SDK, sync and async, wrapped by promptcache and pointed at the local FakeLLM server.

Only what is OpenAI's own is here; the scenarios both SDKs run are in ``test_sdk_common.py``.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pydantic
import pytest
from fake_llm import OPENAI_TEST_KEY, FakeLLM
from sdk_driver import OpenAIProvider, ProviderDriver, bare_raises, sdk_http

from promptcache import ConfigError, Endpoint, InvalidScopeError, PromptCache, PromptCacheError
from promptcache._scope import Scope
from promptcache.backends.memory import MemoryStore
from promptcache.integrations import _portal
from promptcache.integrations._http import plan_request
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

TESTS_DIR = Path(__file__).resolve().parents[1]
HTTP = sdk_http(openai)  # httpx2 for current releases, httpx for older ones
OPENAI = OpenAIProvider()

pytestmark = pytest.mark.usefixtures("collect_abandoned_streams")

LOOKUP_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def chat(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def sync_client(server: FakeLLM, **kw: Any) -> openai.OpenAI:
    options: dict[str, Any] = {"api_key": OPENAI_TEST_KEY, "base_url": server.base_url, "max_retries": 2}
    return openai.OpenAI(**{**options, **kw}, http_client=openai.DefaultHttpxClient(verify=False))


def async_client(server: FakeLLM, **kw: Any) -> openai.AsyncOpenAI:
    options: dict[str, Any] = {"api_key": OPENAI_TEST_KEY, "base_url": server.base_url, "max_retries": 2}
    return openai.AsyncOpenAI(**{**options, **kw}, http_client=openai.DefaultAsyncHttpxClient(verify=False))


class Driver(ProviderDriver):
    """An OpenAI client, sync or async, wrapped with a cache (memory by default)."""

    def __init__(
        self,
        kind: str,
        server: FakeLLM,
        cache: PromptCache | None = None,
        *,
        wrapped: bool = True,
        **wrap_kw: Any,
    ) -> None:
        super().__init__(OPENAI, kind, server, cache, wrapped=wrapped, **wrap_kw)


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest, server: FakeLLM) -> Iterator[Driver]:
    driver = Driver(request.param, server)
    yield driver
    driver.close()


content = OPENAI.text
create = OPENAI.create


# --- hits and misses -----------------------------------------------------------------------------


def test_text_policy_trims_trailing_whitespace(drv: Driver, server: FakeLLM) -> None:
    """Under the default trim policy a prompt that differs only by trailing spaces is the same request."""
    drv.run(create("spaces"))
    again = drv.run(create("spaces   \n"))
    assert content(again) == "answer #1 to: spaces"
    assert server.calls == 1


def test_with_options_copy_is_still_cached(drv: Driver, server: FakeLLM) -> None:
    """A client copy from with_options() shares the wrapped HTTP client, so it hits the same entries."""
    first = drv.run(create("copy"))
    copy = drv.run(
        lambda c: c.with_options(max_retries=0).chat.completions.create(
            model="gpt-test", messages=chat("copy")
        )
    )
    assert copy == first
    assert server.calls == 1


# --- streaming -----------------------------------------------------------------------------------


def test_stream_replay_equals_recording(drv: Driver, server: FakeLLM) -> None:
    """A streamed miss is stored whole; its replay has equal chunks in order, finish reason and usage."""
    open_stream = create("stream me", stream=True, stream_options={"include_usage": True})
    recorded = drv.events(open_stream)
    drv.drain()
    replayed = drv.events(open_stream)
    assert server.calls == 1
    assert replayed == recorded
    assert [c.id for c in replayed] == ["chatcmpl-1"] * len(recorded)
    finishes = [c.choices[0].finish_reason for c in replayed if c.choices]
    assert finishes[-1] == "stop"
    assert replayed[-1].usage is not None
    assert replayed[-1].usage == recorded[-1].usage
    text = "".join(c.choices[0].delta.content or "" for c in replayed if c.choices)
    assert text == "answer #1 to: stream me"
    stats = drv.cache.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1)


def test_stream_tool_call_replays(drv: Driver, server: FakeLLM) -> None:
    """A streamed tool call (finish_reason tool_calls) is stored and replayed with the same arguments."""
    open_stream = create("please use_tool", stream=True, tools=[LOOKUP_TOOL])
    recorded = drv.events(open_stream)
    drv.drain()
    replayed = drv.events(open_stream)
    assert replayed == recorded
    assert replayed[-1].choices[0].finish_reason == "tool_calls"
    assert server.calls == 1


def test_stream_hit_is_marked_in_raw_headers(drv: Driver) -> None:
    """A replayed stream carries x-promptcache: hit, the recorded one x-promptcache: miss."""

    def sync_header(c: Any) -> str:
        raw = c.chat.completions.with_raw_response.create(model="gpt-test", messages=chat("rs"), stream=True)
        stream = raw.parse()
        list(stream)
        stream.close()
        return str(raw.headers["x-promptcache"])

    async def async_header(c: Any) -> str:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=chat("rs"), stream=True
        )
        stream = raw.parse()
        async for _ in stream:
            pass
        await stream.close()
        return str(raw.headers["x-promptcache"])

    header = sync_header if drv.kind == "sync" else async_header
    assert drv.run(header) == "miss"
    drv.drain()
    assert drv.run(header) == "hit"


# --- failures are never cached ---------------------------------------------------------------------


def test_500_is_retried_by_the_sdk(drv: Driver, server: FakeLLM) -> None:
    """Two 500s then a success: the SDK's retries all reach the server and the success is cached."""
    server.fail_next(500, count=2)
    reply = drv.run(create("flaky"))
    assert content(reply) == "answer #3 to: flaky"
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]
    assert drv.run(create("flaky")) == reply
    assert server.calls == 3


def test_non_json_content_under_json_format_is_not_cached(drv: Driver, server: FakeLLM) -> None:
    """Text that is not JSON where response_format asked for JSON is returned but not stored."""
    ask = create("give json", response_format={"type": "json_object"})
    drv.run(ask)
    drv.run(ask)
    assert server.calls == 2


def test_stream_429_is_retried_then_recorded(drv: Driver, server: FakeLLM) -> None:
    """A 429 on a streamed call is retried by the SDK; the stream that follows is recorded and replayed."""
    server.fail_next(429)
    first = drv.events(create("busy stream", stream=True))
    drv.drain()
    again = drv.events(create("busy stream", stream=True))
    assert again == first
    assert "".join(c.choices[0].delta.content or "" for c in again) == "answer #2 to: busy stream"
    assert server.calls == 2


# --- control headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["x-promptcache-agent-id", "x-promptcache-agent-version"])
def test_agent_headers_scope_entries(drv: Driver, server: FakeLLM, header: str) -> None:
    """An agent id or version given per request scopes the entry away from the wrapped default."""
    drv.run(create("scoped"))
    other = drv.run(create("scoped", extra_headers={header: "v-other"}))
    assert content(other) == "answer #2 to: scoped"
    assert drv.run(create("scoped", extra_headers={header: "v-other"})) == other
    assert server.calls == 2


def test_bypass_header_neither_reads_nor_writes(drv: Driver, server: FakeLLM) -> None:
    """x-promptcache-bypass: 1 goes upstream even when an entry exists, and stores nothing."""
    cached = drv.run(create("bypass"))
    fresh = drv.run(create("bypass", extra_headers={"x-promptcache-bypass": "true"}))
    assert content(fresh) == "answer #2 to: bypass"
    assert drv.run(create("bypass")) == cached
    assert drv.events(create("bypass", extra_headers={"x-promptcache-bypass": "1"}, stream=True))
    stats = drv.cache.stats()
    assert stats.bypasses == 2
    assert stats.hits == 1


def test_a_bypassed_answer_is_marked_bypass(drv: Driver) -> None:
    """What x-promptcache-bypass sent upstream comes back marked ``bypass`` (as stats count it), not miss."""
    bypass = {"x-promptcache-bypass": "1"}

    def sync_header(c: Any) -> str:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=chat("bp"), extra_headers=bypass
        )
        return str(raw.headers["x-promptcache"])

    async def async_header(c: Any) -> str:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=chat("bp"), extra_headers=bypass
        )
        return str(raw.headers["x-promptcache"])

    assert drv.run(sync_header if drv.kind == "sync" else async_header) == "bypass"
    assert drv.cache.stats().bypasses == 1


def test_refresh_header_overwrites_the_entry(drv: Driver, server: FakeLLM) -> None:
    """x-promptcache-refresh: 1 calls upstream and the new answer replaces the stored one."""
    drv.run(create("refresh"))
    renewed = drv.run(create("refresh", extra_headers={"x-promptcache-refresh": "yes"}))
    assert content(renewed) == "answer #2 to: refresh"
    drv.drain()
    assert drv.run(create("refresh")) == renewed
    assert server.calls == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ttl_header_sets_the_entry_lifetime(kind: str, server: FakeLLM) -> None:
    """An entry written with x-promptcache-ttl: 5 is gone 10 s later, while a default-TTL entry remains."""
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    drv = Driver(kind, server, PromptCache(store, clock=lambda: now[0]))
    try:
        drv.run(create("short", extra_headers={"x-promptcache-ttl": "5"}))
        drv.run(create("long"))
        drv.drain()
        now[0] += 10
        assert content(drv.run(create("short"))) == "answer #3 to: short"
        assert content(drv.run(create("long"))) == "answer #2 to: long"
        assert server.calls == 3
    finally:
        drv.close()


def test_bad_agent_header_is_a_clear_error(drv: Driver, server: FakeLLM) -> None:
    """An empty x-promptcache-agent-id header is a 400 naming the agent id, and nothing is sent."""
    server.fail_next(400)
    expected = bare_raises(drv, server, create("bare who"))  # what the SDK raises for an HTTP 400
    with pytest.raises(expected, match="agent_id must not be empty"):
        drv.run(create("who", extra_headers={"x-promptcache-agent-id": ""}))
    assert len(server.requests) == 1  # the bare client's


# --- other endpoints and SDK features --------------------------------------------------------------


def test_responses_api_hit(drv: Driver, server: FakeLLM) -> None:
    """responses.create is cached: the repeat is equal and makes no request."""
    first = drv.run(lambda c: c.responses.create(model="gpt-resp", input="what is up", instructions="short"))
    second = drv.run(lambda c: c.responses.create(model="gpt-resp", input="what is up", instructions="short"))
    assert second == first
    assert second.output_text == "answer #1 to: what is up"
    other = drv.run(lambda c: c.responses.create(model="gpt-resp", input="what is up", instructions="long"))
    assert other.output_text == "answer #2 to: what is up"
    assert server.calls == 2


def test_responses_stream_replay(drv: Driver, server: FakeLLM) -> None:
    """A streamed Responses call is replayed with the same events, ending in response.completed."""

    def open_stream(c: Any) -> Any:
        return c.responses.create(model="gpt-resp", input=[{"role": "user", "content": "hey"}], stream=True)

    recorded = drv.events(open_stream)
    drv.drain()
    replayed = drv.events(open_stream)
    assert replayed == recorded
    assert replayed[-1].type == "response.completed"
    assert replayed[-1].response.output_text == "answer #1 to: hey"
    assert replayed[-1].response.usage == recorded[-1].response.usage
    assert server.calls == 1


def test_responses_incomplete_is_not_cached(drv: Driver, server: FakeLLM) -> None:
    """An incomplete response (the Responses API's length finish) is not stored."""
    server.next_finish_reason = "length"
    cut = drv.run(lambda c: c.responses.create(model="gpt-resp", input="long"))
    assert cut.status == "incomplete"
    again = drv.run(lambda c: c.responses.create(model="gpt-resp", input="long"))
    assert again.status == "completed"
    assert server.calls == 2


def test_embeddings_hit(drv: Driver, server: FakeLLM) -> None:
    """Embeddings are cached per input; the repeat is equal and another input misses."""
    first = drv.run(lambda c: c.embeddings.create(model="emb-test", input=["alpha", "beta"]))
    second = drv.run(lambda c: c.embeddings.create(model="emb-test", input=["alpha", "beta"]))
    assert second == first
    assert len(second.data) == 2
    drv.run(lambda c: c.embeddings.create(model="emb-test", input=["beta", "alpha"]))
    assert server.calls == 2


def test_with_streaming_response_reads_a_hit(drv: Driver, server: FakeLLM) -> None:
    """with_streaming_response (a body read lazily) parses the same completion on a miss and on a hit."""

    def sync_read(c: Any) -> tuple[str, Any]:
        with c.chat.completions.with_streaming_response.create(model="gpt-test", messages=chat("lazy")) as r:
            return r.headers["x-promptcache"], r.parse()

    async def async_read(c: Any) -> tuple[str, Any]:
        async with c.chat.completions.with_streaming_response.create(
            model="gpt-test", messages=chat("lazy")
        ) as r:
            return r.headers["x-promptcache"], await r.parse()

    read = sync_read if drv.kind == "sync" else async_read
    miss_header, miss = drv.run(read)
    hit_header, hit = drv.run(read)
    assert (miss_header, hit_header) == ("miss", "hit")
    assert hit == miss
    assert server.calls == 1


class Lookup(pydantic.BaseModel):
    query: str


def parse_api(client: Any) -> Any:
    """``chat.completions.parse``: public there in current releases, under ``client.beta`` in older ones."""
    completions = client.chat.completions
    return completions if hasattr(completions, "parse") else client.beta.chat.completions


def test_parse_with_pydantic_tool(drv: Driver, server: FakeLLM) -> None:
    """chat.completions.parse with a pydantic function tool parses a hit into the same model."""

    def parse(c: Any) -> Any:
        return parse_api(c).parse(
            model="gpt-test", messages=chat("use_tool please"), tools=[openai.pydantic_function_tool(Lookup)]
        )

    first = drv.run(parse)
    second = drv.run(parse)
    call = second.choices[0].message.tool_calls[0]
    assert call.function.parsed_arguments == Lookup(query="use_tool please")
    assert second == first
    assert server.calls == 1


def test_stats_match_what_happened(drv: Driver, server: FakeLLM) -> None:
    """Hits, misses, bypasses and requests add up to the calls made, endpoint by endpoint."""
    drv.run(create("a"))
    drv.run(create("a"))
    drv.run(create("b"))
    drv.run(lambda c: c.embeddings.create(model="emb-test", input="x"))
    drv.run(lambda c: c.embeddings.create(model="emb-test", input="x"))
    drv.run(create("a", extra_headers={"x-promptcache-bypass": "1"}))
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.bypasses) == (6, 2, 3, 1)
    assert stats.hits + stats.misses + stats.bypasses == stats.requests
    assert stats.upstream_calls == server.calls - 1  # the bypass is not a cache-driven upstream call
    assert stats.input_tokens_saved > 0


def test_stream_miss_counts_an_upstream_call(drv: Driver, server: FakeLLM) -> None:
    """A streamed miss is an upstream call in the stats, as a plain miss is (upstream_calls equals misses)."""
    drv.events(create("counted", stream=True))
    drv.drain()
    drv.events(create("counted", stream=True))
    stats = drv.cache.stats()
    assert (stats.hits, stats.misses) == (1, 1)
    assert stats.upstream_calls == server.calls == 1


# --- wrapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("thing", [object(), "client", None], ids=["object", "str", "none"])
def test_wrapping_a_non_sdk_object_raises(thing: object) -> None:
    """wrap() refuses anything that is not an OpenAI or Anthropic SDK client."""
    cache = PromptCache.from_url("memory://")
    with pytest.raises(ConfigError, match="not an OpenAI or Anthropic SDK client"):
        wrap(thing, cache, agent_id="x")


def test_wrapping_a_bare_http_client_raises() -> None:
    """A bare httpx/httpx2 client is not an SDK client either."""
    cache = PromptCache.from_url("memory://")
    with HTTP.Client() as http, pytest.raises(ConfigError):
        wrap(http, cache, agent_id="x")


def test_wrap_validates_the_agent_id(server: FakeLLM) -> None:
    """An empty agent_id is refused at wrap time, not on the first call."""
    cache = PromptCache.from_url("memory://")
    client = sync_client(server)
    try:
        with pytest.raises(InvalidScopeError):
            wrap(client, cache, agent_id="")
    finally:
        client.close()


# --- Azure ---------------------------------------------------------------------------------------


def test_plan_request_keys_the_azure_deployment() -> None:
    """plan_request puts the Azure deployment from the URL into the keyed body, so deployments differ."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    scope = Scope(agent_id="az")
    cache = PromptCache.from_url("memory://")
    keys = []
    for deployment in ["gpt-a", "gpt-b"]:
        request = HTTP.Request(
            "POST",
            f"https://x.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version=1",
            content=body,
            headers={"x-promptcache-tenant": "t1"},
        )
        plan = plan_request(request, scope)
        assert plan is not None
        assert plan.endpoint is Endpoint.CHAT_COMPLETIONS
        assert plan.body["azure_deployment"] == deployment
        assert plan.scope.tenant == "t1"
        assert "x-promptcache-tenant" not in request.headers
        keys.append(cache.key(plan.body, agent_id="az", endpoint=plan.endpoint).store_key)
    assert keys[0] != keys[1]


def test_plan_request_passes_other_endpoints_through() -> None:
    """GETs, unknown paths and non-JSON bodies get no plan, but their control headers are still removed."""
    scope = Scope(agent_id="x")
    cases = [
        HTTP.Request("GET", "http://h/v1/models", headers={"x-promptcache-ttl": "bad"}),
        HTTP.Request("POST", "http://h/v1/files", content=b"{}", headers={"x-promptcache-bypass": "1"}),
        HTTP.Request("POST", "http://h/v1/chat/completions", content=b"not json"),
        HTTP.Request("POST", "http://h/v1/chat/completions", content=b"[1, 2]"),
    ]
    for request in cases:
        assert plan_request(request, scope) is None
        assert not [name for name in request.headers if name.startswith("x-promptcache")]


def azure_reply(request: Any) -> Any:
    deployment = request.url.path.split("/deployments/")[1].split("/")[0]
    body = json.loads(request.content)
    reply = f"from {deployment} to {body['messages'][-1]['content']}"
    return HTTP.Response(
        200,
        json={
            "id": f"chatcmpl-{deployment}",
            "object": "chat.completion",
            "created": 1,
            "model": deployment,
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}
            ],
        },
    )


def test_azure_two_deployments_are_two_entries() -> None:
    """openai.AzureOpenAI: the same body sent to two deployments makes two entries, each then hit."""
    seen: list[str] = []

    def handler(request: Any) -> Any:
        seen.append(request.url.path)
        return azure_reply(request)

    cache = PromptCache.from_url("memory://")
    client = openai.AzureOpenAI(
        azure_endpoint="http://azure.invalid",
        api_version="2024-06-01",
        api_key="azure-key",
        http_client=HTTP.Client(transport=HTTP.MockTransport(handler)),
    )
    wrap(client, cache, agent_id="azure")
    try:
        answers = [
            client.chat.completions.create(model=deployment, messages=chat("hi")).choices[0].message.content
            for deployment in ["dep-a", "dep-b", "dep-a", "dep-b"]
        ]
    finally:
        client.close()
        _portal.call(cache.aclose)
    assert answers == ["from dep-a to hi", "from dep-b to hi"] * 2
    assert seen == [
        "/openai/deployments/dep-a/chat/completions",
        "/openai/deployments/dep-b/chat/completions",
    ]


# --- parse with response_format, over a mock upstream that answers JSON ----------------------------


class Weather(pydantic.BaseModel):
    city: str
    degrees: int


@pytest.mark.anyio
async def test_parse_with_pydantic_response_format() -> None:
    """chat.completions.parse(response_format=Model) is cached and a hit parses into an equal model."""
    calls: list[bytes] = []

    def handler(request: Any) -> Any:
        calls.append(request.content)
        answer = {"city": "Hanoi", "degrees": 31}
        return HTTP.Response(
            200,
            json={
                "id": "chatcmpl-w",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-test",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": json.dumps(answer), "refusal": None},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
            },
        )

    cache = PromptCache.from_url("memory://")
    client = wrap(
        openai.AsyncOpenAI(
            api_key=OPENAI_TEST_KEY,
            base_url="http://mock.invalid/v1",
            http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(handler)),
        ),
        cache,
        agent_id="parse",
    )
    async with client:
        first = await parse_api(client).parse(
            model="gpt-test", messages=chat("weather"), response_format=Weather
        )
        second = await parse_api(client).parse(
            model="gpt-test", messages=chat("weather"), response_format=Weather
        )
    await cache.aclose()
    assert second.choices[0].message.parsed == Weather(city="Hanoi", degrees=31)
    assert second == first
    assert len(calls) == 1
    assert json.loads(calls[0])["response_format"]["type"] == "json_schema"


GZIP_CHUNKS = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"zi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"pped"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def gzip_upstream(calls: list[str]) -> Callable[[Any], Any]:
    """A mock provider that gzips every answer, as the real APIs do."""

    def handler(request: Any) -> Any:
        calls.append(request.url.path)
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
            return HTTP.Response(200, headers=headers, content=gzip.compress(GZIP_CHUNKS))
        body = {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "zipped"}}
            ],
        }
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return HTTP.Response(200, headers=headers, content=gzip.compress(json.dumps(body).encode()))

    return handler


def test_gzipped_upstream_answers_are_cached_decoded() -> None:
    """Compressed answers (plain and streamed) are stored decoded and replayed as the same objects."""
    calls: list[str] = []
    cache = PromptCache.from_url("memory://")
    client = wrap(
        openai.OpenAI(
            api_key=OPENAI_TEST_KEY,
            base_url="http://mock.invalid/v1",
            http_client=HTTP.Client(transport=HTTP.MockTransport(gzip_upstream(calls))),
        ),
        cache,
        agent_id="gzip",
    )
    try:
        plain = [client.chat.completions.create(model="m", messages=chat("z")) for _ in range(2)]
        streams = []
        for _ in range(2):
            with client.chat.completions.create(model="m", messages=chat("zs"), stream=True) as stream:
                streams.append([c.choices[0].delta.content for c in stream])
            _portal.call(cache.drain)
    finally:
        client.close()
        _portal.call(cache.aclose)
    assert plain[1] == plain[0]
    assert content(plain[1]) == "zipped"
    assert streams == [["zi", "pped"], ["zi", "pped"]]
    assert len(calls) == 2


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_identical_async_misses_make_one_call(server: FakeLLM) -> None:
    """Five concurrent identical async calls make one upstream call and all get equal answers."""
    cache = PromptCache.from_url("memory://")
    client = wrap(async_client(server), cache, agent_id="tests")
    async with client:
        replies = await asyncio.gather(
            *[client.chat.completions.create(model="gpt-test", messages=chat("together")) for _ in range(5)]
        )
    await cache.aclose()
    assert all(reply == replies[0] for reply in replies)
    assert server.calls == 1
    assert cache.stats().coalesced == 4


@pytest.mark.anyio
async def test_a_retry_mark_ends_with_its_attempt(server: FakeLLM) -> None:
    """An attempt marked as a retry is uncounted only itself: the caller's task, which awaited it in
    place, goes on counting (a stale mark would hide every later call of that task from the stats)."""
    cache = PromptCache.from_url("memory://")
    client = wrap(async_client(server), cache, agent_id="tests")
    async with client:
        retry = {"x-stainless-retry-count": "1"}
        await client.chat.completions.create(model="gpt-test", messages=chat("marked"), extra_headers=retry)
        await client.chat.completions.create(model="gpt-test", messages=chat("marked"))
        await client.chat.completions.create(model="gpt-test", messages=chat("plain"))
    await cache.aclose()
    stats = cache.stats()
    assert (stats.requests, stats.hits, stats.misses, server.calls) == (2, 1, 1, 2)


def test_abandoned_sync_stream_cleans_up_when_collected_on_the_portal_thread(
    server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync stream closed early is cleaned up without error even if the collector runs on the portal."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    drv = Driver("sync", server)
    try:
        stream = drv.client.chat.completions.create(model="gpt-test", messages=chat("gc"), stream=True)
        next(iter(stream))
        stream.close()
        del stream
        collected = threading.Event()

        def collect() -> None:
            gc.collect()
            collected.set()

        _portal.portal().start_task_soon(collect)
        assert collected.wait(10)
    finally:
        drv.close()
    assert [(type(u.exc_value).__name__, str(u.exc_value)) for u in unraisable] == []


# --- process exit ----------------------------------------------------------------------------------

ABANDON_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import openai
from sdk_driver import SdkDriver, raised_by, sdk_http
from fake_llm import OPENAI_TEST_KEY, FakeLLM
from openai.types.chat import ChatCompletion
from promptcache import PromptCache
from promptcache.integrations import _portal
from promptcache.openai import wrap

with FakeLLM() as server:
    cache = PromptCache.from_url("memory://")
    client = wrap(
        openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url,
                      http_client=openai.DefaultHttpxClient(verify=False)),
        cache, agent_id="exit",
    )
    stream = client.chat.completions.create(
        model="m", messages=[{{"role": "user", "content": "bye"}}], stream=True
    )
    first = next(iter(stream))
    stream.close()
    client.close()
    _portal.call(cache.aclose)
print("done")
"""


def test_abandoned_sync_stream_does_not_hang_process_exit() -> None:
    """A process that closed a sync stream early (left to the garbage collector) still exits."""
    script = textwrap.dedent(ABANDON_SCRIPT).format(tests=str(TESTS_DIR))
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=6, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: a finaliser blocked on the stopped portal loop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_sync_cache_close_flushes_background_writes(server: FakeLLM, tmp_path: Path) -> None:
    """``cache.close()`` (the sync twin of aclose) finishes the portal's pending writes before returning."""
    cache = PromptCache.from_url(f"sqlite:///{tmp_path / 'sync.db'}")
    client = wrap(openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url), cache, agent_id="s")
    with client:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "sync close"}])
    cache.close()
    calls = server.calls
    reopened = PromptCache.from_url(f"sqlite:///{tmp_path / 'sync.db'}")
    again = wrap(openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=server.base_url), reopened, agent_id="s")
    with again:
        again.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "sync close"}])
    reopened.close()
    assert server.calls == calls  # the reopened store answered: the write was flushed by close()
    request = {"model": "gpt-test", "messages": [{"role": "user", "content": "sync close"}]}
    with pytest.raises(PromptCacheError, match="closed"):
        asyncio.run(cache.get(request, agent_id="s"))


def test_a_closed_cache_says_once_that_its_clients_now_call_upstream(
    drv: Driver, server: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrapped client outliving its cache still answers (uncached, counted as bypasses: an error would
    reach the caller only as the SDK's connection error) and the log says so, once per client."""
    drv.run(create("late"))
    if drv.kind == "sync":
        _portal.call(drv.cache.aclose)
    else:
        drv.run(lambda _client: drv.cache.aclose())  # on the loop the async client runs on
    with caplog.at_level("WARNING", logger="promptcache"):
        drv.run(create("late"))
        drv.run(create("late"))
    assert server.calls == 3
    told = [r for r in caplog.records if "cache is closed" in r.getMessage()]
    assert len(told) == 1
    assert drv.cache.stats().bypasses == 2
