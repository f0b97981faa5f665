"""Scenarios both SDKs run, written once: OpenAI and Anthropic, sync and async, wrapped by promptcache.

Each test runs against the local FakeLLM server for every provider and kind of client. What differs
between the SDKs (call shapes, finish reasons, the non-cached endpoint) comes from the ``Provider`` in
``sdk_driver``; tests specific to one SDK stay in ``test_sdk_openai.py`` and ``test_sdk_anthropic.py``.
Exception types are never written here: each failing scenario is first run on a bare (unwrapped) client,
and the wrapped one must raise the same.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from sdk_driver import (
    ALL_CONTROLS,
    AnthropicProvider,
    OpenAIProvider,
    Provider,
    ProviderDriver,
    bare_raises,
)

from promptcache import ConfigError, PromptCache
from promptcache.integrations._http import CONTROL_HEADERS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fake_llm import FakeLLM

OPENAI = OpenAIProvider()
ANTHROPIC = AnthropicProvider()
pytestmark = pytest.mark.usefixtures("collect_abandoned_streams")
PROVIDERS = [pytest.param(OPENAI, id="openai"), pytest.param(ANTHROPIC, id="anthropic")]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def drv(provider: Provider, kind: str, server: FakeLLM) -> Iterator[ProviderDriver]:
    driver = ProviderDriver(provider, kind, server)
    yield driver
    driver.close()


# --- hits and misses -----------------------------------------------------------------------------


def test_second_identical_call_is_a_hit_without_http(drv: ProviderDriver, server: FakeLLM) -> None:
    """A repeated identical call is served from the cache, makes no request and parses equal."""
    p = drv.provider
    first = drv.run(p.create("hello"))
    second = drv.run(p.create("hello"))
    assert type(second) is type(first)
    assert second == first
    assert p.text(second) == "answer #1 to: hello"
    assert len(server.requests) == 1
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses) == (2, 1, 1)
    assert stats.output_tokens_saved == p.output_tokens(first)


OPENAI_CHANGES = [
    (
        "tools",
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
    ),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("seed", {"seed": 7}),
    ("temperature", {"temperature": 0.5}),
    ("model", {"model": "gpt-other"}),
]
ANTHROPIC_CHANGES = [
    ("tools", {"tools": [{"name": "lookup", "input_schema": {"type": "object"}}]}),
    ("system", {"system": "be terse"}),
    ("extra_body", {"extra_body": {"temperature": 0.3}}),
    ("max_tokens", {"max_tokens": 65}),
    ("stop_sequences", {"stop_sequences": ["END"]}),
]


@pytest.mark.parametrize(
    ("provider", "change"),
    [pytest.param(OPENAI, change, id=f"openai-{name}") for name, change in OPENAI_CHANGES]
    + [pytest.param(ANTHROPIC, change, id=f"anthropic-{name}") for name, change in ANTHROPIC_CHANGES],
    indirect=["provider"],
)
def test_changed_parameter_misses(drv: ProviderDriver, server: FakeLLM, change: dict[str, Any]) -> None:
    """Changing a field that selects the answer (tools, format, sampling, model, limits) is a miss."""
    drv.run(drv.provider.create("same"))
    drv.run(drv.provider.create("same", **change))
    assert server.calls == 2
    assert drv.cache.stats().hits == 0


# --- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 4])
def test_stream_closed_after_k_events_stores_nothing(drv: ProviderDriver, server: FakeLLM, k: int) -> None:
    """A stream the caller closes after k events stores nothing; the next identical stream goes upstream."""
    p = drv.provider
    got = drv.events(p.create("abandon", stream=True), limit=k)
    assert len(got) == k
    drv.drain()
    assert drv.cache.stats().writes == 0
    full = drv.events(p.create("abandon", stream=True))
    assert p.streamed_text(full) == "answer #2 to: abandon"
    assert server.calls == 2


def test_dropped_stream_stores_nothing(drv: ProviderDriver, server: FakeLLM) -> None:
    """A stream cut by the server raises exactly what the bare SDK raises for the same cut; nothing stored."""
    p = drv.provider
    server.stream_drop_after = p.drop_after
    expected = bare_raises(drv, server, p.create("bare drop", stream=True), stream=True)
    with pytest.raises(expected) as caught:
        drv.events(p.create("drop", stream=True))
    assert type(caught.value) is expected
    drv.drain()
    assert drv.cache.stats().writes == 0
    server.stream_drop_after = None
    assert p.streamed_text(drv.events(p.create("drop", stream=True))) == "answer #3 to: drop"
    assert server.calls == 3  # the bare cut, the wrapped cut, the full stream


def test_stream_cut_at_the_token_limit_is_not_stored(drv: ProviderDriver, server: FakeLLM) -> None:
    """A stream that stops at the token limit (length, max_tokens) reaches the caller but is not stored."""
    p = drv.provider
    server.next_finish_reason = "length"
    cut = drv.events(p.create("long", stream=True))
    assert p.stream_finish(cut) == p.cut_finish
    drv.drain()
    whole = drv.events(p.create("long", stream=True))
    assert p.stream_finish(whole) == p.done_finish
    assert server.calls == 2
    assert drv.cache.stats().writes == 1


def test_stream_and_body_entries_are_separate(provider: Provider, kind: str, server: FakeLLM) -> None:
    """With conversion off, a stream is served only from a stream entry and a plain call only from a body
    entry, and the two kinds no longer evict each other: alternating callers hit after one call each."""
    drv = ProviderDriver(provider, kind, server, PromptCache.from_url("memory://", convert_kinds=False))
    try:
        p = drv.provider
        drv.run(p.create("kinds"))
        first = drv.events(p.create("kinds", stream=True))
        assert p.streamed_text(first) == "answer #2 to: kinds"
        drv.drain()
        for _ in range(2):
            assert p.text(drv.run(p.create("kinds"))) == "answer #1 to: kinds"
            assert p.streamed_text(drv.events(p.create("kinds", stream=True))) == "answer #2 to: kinds"
        assert server.calls == 2
        assert drv.cache.stats().converted == 0
    finally:
        drv.close()


# --- failures are never cached ---------------------------------------------------------------------


@pytest.mark.parametrize("overloaded", [False, True], ids=["429", "overloaded"])
def test_retryable_errors_are_retried_and_not_cached(
    drv: ProviderDriver, server: FakeLLM, overloaded: bool
) -> None:
    """A 429 (or the provider's overloaded status) is retried by the SDK as without the cache; only the
    later success is stored."""
    p = drv.provider
    server.fail_next(p.overloaded if overloaded else 429)
    reply = drv.run(p.create("busy"))
    assert p.text(reply) == "answer #2 to: busy"
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert drv.run(p.create("busy")) == reply
    assert server.calls == 2


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_an_sdk_retry_is_not_counted_as_another_request(
    drv: ProviderDriver, server: FakeLLM, stream: bool
) -> None:
    """One create() the SDK retried twice is one request (a miss), so the hit rate an operator reads is per
    call, not per HTTP attempt (seen live: 864 requests counted for 803 sent under upstream connection
    resets, understating the hit rate). Its failed attempts are upstream errors, its success an upstream
    call, for a stream as for a body."""
    p = drv.provider
    ask = p.create("retried", stream=True) if stream else p.create("retried")
    go = drv.events if stream else drv.run
    server.fail_next(500, count=2)
    first = go(ask)
    drv.drain()
    assert go(ask) == first
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses) == (2, 1, 1)
    assert (stats.upstream_calls, stats.upstream_errors) == (1, 2)


def test_a_retry_answered_from_the_cache_counts_nothing_again(drv: ProviderDriver, server: FakeLLM) -> None:
    """An attempt the SDK marks as a retry (``x-stainless-retry-count`` above 0) is answered from the cache
    when it can be, but its call was counted by the attempt before it, so it counts no request again."""
    p = drv.provider
    first = drv.run(p.create("stored"))
    again = drv.run(p.create("stored", extra_headers={"x-stainless-retry-count": "1"}))
    assert again == first
    assert server.calls == 1
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.output_tokens_saved) == (1, 0, 1, 0)
    drv.run(p.create("stored", extra_headers={"x-stainless-retry-count": "0"}))  # a first attempt counts
    assert (drv.cache.stats().requests, drv.cache.stats().hits) == (2, 1)


def test_500_without_retries_raises_and_is_not_cached(drv: ProviderDriver, server: FakeLLM) -> None:
    """A 500 reaches the caller as the bare SDK raises it, and the next identical call goes upstream."""
    p = drv.provider
    no_retries = p.body("boom")

    def call(c: Any) -> Any:
        return p.resource(c.with_options(max_retries=0)).create(**no_retries)

    server.fail_next(500)
    expected = bare_raises(drv, server, call)
    server.fail_next(500)
    with pytest.raises(expected) as caught:
        drv.run(call)
    assert type(caught.value) is expected
    assert getattr(caught.value, "status_code", None) == 500
    assert p.text(drv.run(p.create("boom"))) == "answer #3 to: boom"
    assert p.text(drv.run(p.create("boom"))) == "answer #3 to: boom"
    assert server.calls == 3  # the bare 500, the wrapped 500, the success


def test_invalid_json_is_not_cached(drv: ProviderDriver, server: FakeLLM) -> None:
    """A 200 whose body is not JSON fails in the SDK as without the cache, and is not stored."""
    p = drv.provider
    server.invalid_json_next = True
    expected = bare_raises(drv, server, p.create("bare broken"))
    server.invalid_json_next = True
    with pytest.raises(expected) as caught:
        drv.run(p.create("broken"))
    assert type(caught.value) is expected
    assert p.text(drv.run(p.create("broken"))) == "answer #3 to: broken"
    assert server.calls == 3


def test_answer_cut_at_the_token_limit_is_not_cached(drv: ProviderDriver, server: FakeLLM) -> None:
    """A truncated answer (finish reason length, stop reason max_tokens) is returned but not stored."""
    p = drv.provider
    server.next_finish_reason = "length"
    assert p.finish(drv.run(p.create("cut"))) == p.cut_finish
    whole = drv.run(p.create("cut"))
    assert p.finish(whole) == p.done_finish
    assert drv.run(p.create("cut")) == whole
    assert server.calls == 2
    assert drv.cache.stats().not_stored == 1


# --- control headers -------------------------------------------------------------------------------


def test_control_headers_never_reach_the_server(drv: ProviderDriver, server: FakeLLM) -> None:
    """Every x-promptcache-* header is stripped from cached, streamed, retried, bypassed and passed-through
    requests, and the credentials still reach the server."""
    p = drv.provider
    assert set(ALL_CONTROLS) == CONTROL_HEADERS
    expected = bare_raises(drv, server, p.passthrough())  # the bare request carries no control header
    server.fail_next(p.overloaded)
    drv.run(p.create("strip", extra_headers=ALL_CONTROLS))
    drv.events(p.create("strip stream", stream=True, extra_headers=ALL_CONTROLS))
    drv.run(p.create("strip", extra_headers={**ALL_CONTROLS, "x-promptcache-bypass": "1"}))
    with pytest.raises(expected):
        drv.run(p.passthrough(extra_headers=ALL_CONTROLS))
    assert len(server.requests) == 6
    for request in server.requests:
        assert not [name for name in request.headers if name.startswith("x-promptcache")]
        assert p.api_key in request.headers.get("x-api-key", request.headers.get("authorization", ""))


def test_tenant_header_keeps_entries_apart(drv: ProviderDriver, server: FakeLLM) -> None:
    """The same request for two tenants makes two entries; each tenant then hits its own."""
    p = drv.provider
    acme = drv.run(p.create("tenant", extra_headers={"x-promptcache-tenant": "acme"}))
    umbrella = drv.run(p.create("tenant", extra_headers={"x-promptcache-tenant": "umbrella"}))
    assert p.text(acme) == "answer #1 to: tenant"
    assert p.text(umbrella) == "answer #2 to: tenant"
    assert drv.run(p.create("tenant", extra_headers={"x-promptcache-tenant": "acme"})) == acme
    assert drv.run(p.create("tenant", extra_headers={"x-promptcache-tenant": "umbrella"})) == umbrella
    assert p.text(drv.run(p.create("tenant"))) == "answer #3 to: tenant"
    assert server.calls == 3


@pytest.mark.parametrize("value", ["abc", "0", "-5", "", "nan", "5s", "inf", "1e400", "soon"])
def test_bad_ttl_header_is_a_clear_error(drv: ProviderDriver, server: FakeLLM, value: str) -> None:
    """A ttl header that is not a positive, finite number of seconds fails as the bare SDK fails on an
    HTTP 400, with a message naming the header (not a retried "Connection error."); nothing is sent."""
    p = drv.provider
    server.fail_next(400)
    expected = bare_raises(drv, server, p.create("bare ttl"))
    assert not issubclass(expected, ConfigError)
    with pytest.raises(expected, match="x-promptcache-ttl"):
        drv.run(p.create("ttl", extra_headers={"x-promptcache-ttl": value}))
    assert len(server.requests) == 1  # the bare client's


# --- SDK features, other endpoints ---------------------------------------------------------------


def test_with_raw_response_reports_hit(drv: ProviderDriver, server: FakeLLM) -> None:
    """with_raw_response works on a hit: x-promptcache: hit, status 200 and parse() equal to the miss."""
    raw = drv.provider.raw(drv.kind, "raw")
    miss_header, _, miss = drv.run(raw)
    hit_header, hit_status, hit = drv.run(raw)
    assert (miss_header, hit_header) == ("miss", "hit")
    assert hit_status == 200
    assert hit == miss
    assert server.calls == 1


def test_non_cached_endpoint_passes_through_uncounted(drv: ProviderDriver, server: FakeLLM) -> None:
    """A call to an endpoint that is not cached reaches the server untouched and is not counted."""
    p = drv.provider
    expected = bare_raises(drv, server, p.passthrough())
    for _ in range(2):
        with pytest.raises(expected):
            drv.run(p.passthrough())
    assert [r.path for r in server.requests] == [p.passthrough_path] * 3
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.bypasses) == (0, 0, 0, 0)


# --- wrapping and threads ------------------------------------------------------------------------


def test_wrap_keeps_the_type_and_refuses_a_second_wrap(drv: ProviderDriver, server: FakeLLM) -> None:
    """wrap() changes the client in place and returns it, so its type is unchanged; wrapping it again
    raises ConfigError and leaves the first wrapping working."""
    p = drv.provider
    assert type(drv.client) is p.client_type(drv.kind)
    with pytest.raises(ConfigError, match="already wrapped"):
        p.wrap(drv.client, drv.cache, agent_id="again")
    drv.run(p.create("once"))
    drv.run(p.create("once"))
    assert server.calls == 1


def test_sync_client_used_from_many_threads(provider: Provider, server: FakeLLM) -> None:
    """One wrapped sync client used from 8 threads gives each thread the answer to its own prompt."""
    drv = ProviderDriver(provider, "sync", server)
    prompts = [f"thread-{i % 5}" for i in range(40)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda q: (q, provider.text(drv.run(provider.create(q)))), prompts))
    finally:
        drv.close()
    by_prompt: dict[str, set[str | None]] = {}
    for prompt, answer in answers:
        assert answer is not None
        assert answer.endswith(f" to: {prompt}")
        by_prompt.setdefault(prompt, set()).add(answer)
    assert all(len(texts) == 1 for texts in by_prompt.values())
    assert server.calls == 5  # concurrent identical misses share one upstream call
