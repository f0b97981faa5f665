"""The real Anthropic SDK, sync and async, wrapped by promptcache and pointed at the local FakeLLM server."""

from __future__ import annotations

import gc
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anthropic
import pytest
from anthropic.types import Message
from fake_llm import ANTHROPIC_TEST_KEY, FakeLLM
from sdk_driver import SdkDriver, raised_by

from promptcache import ConfigError, PromptCache
from promptcache.anthropic import wrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anthropic.types import MessageParam, ToolParam

LOOKUP_TOOL: ToolParam = {"name": "lookup", "input_schema": {"type": "object"}}

ALL_CONTROLS = {
    "x-promptcache-bypass": "0",
    "x-promptcache-refresh": "0",
    "x-promptcache-ttl": "60",
    "x-promptcache-agent-id": "other-agent",
    "x-promptcache-agent-version": "9",
    "x-promptcache-tenant": "acme",
}


def claude(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def make_client(kind: str, server: FakeLLM) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    options: dict[str, Any] = {
        "api_key": ANTHROPIC_TEST_KEY,
        "base_url": server.anthropic_base_url,
        "max_retries": 2,
    }
    if kind == "sync":
        return anthropic.Anthropic(**options, http_client=anthropic.DefaultHttpxClient(verify=False))
    return anthropic.AsyncAnthropic(**options, http_client=anthropic.DefaultAsyncHttpxClient(verify=False))


class Driver(SdkDriver):
    """An Anthropic client, sync or async, wrapped with a memory cache."""

    def __init__(self, kind: str, server: FakeLLM, *, wrapped: bool = True, **wrap_kw: Any) -> None:
        cache = PromptCache.from_url("memory://")
        raw = make_client(kind, server)
        super().__init__(
            kind, cache, wrap(raw, cache, **{"agent_id": "tests", **wrap_kw}) if wrapped else raw
        )

    def helper(self, **kw: Any) -> tuple[list[str], Message]:
        """The text pieces and final message of the SDK's ``messages.stream()`` helper."""
        if self._runner is None:
            with self.client.messages.stream(**kw) as stream:
                pieces = list(stream.text_stream)
                return pieces, stream.get_final_message()

        async def read() -> tuple[list[str], Message]:
            async with self.client.messages.stream(**kw) as stream:
                got = [piece async for piece in stream.text_stream]
                return got, await stream.get_final_message()

        return self._runner.run(read())


@pytest.fixture(scope="module", autouse=True)
def _collect_abandoned_streams() -> Iterator[None]:
    """Finalise the byte iterators of sync streams closed early while the portal loop still runs."""
    yield
    gc.collect()


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest, server: FakeLLM) -> Iterator[Driver]:
    driver = Driver(request.param, server)
    yield driver
    driver.close()


def create(text: str, **kw: Any) -> Callable[[Any], Any]:
    options: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": claude(text), **kw}
    return lambda c: c.messages.create(**options)


def text_of(message: Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def streamed_text(events: list[Any]) -> str:
    return "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )


# --- hits and misses -----------------------------------------------------------------------------


def test_second_identical_call_is_a_hit_without_http(drv: Driver, server: FakeLLM) -> None:
    """A repeated identical messages.create is served from the cache, makes no request and parses equal."""
    first = drv.run(create("bonjour"))
    second = drv.run(create("bonjour"))
    assert isinstance(second, Message)
    assert second == first
    assert text_of(second) == "answer #1 to: bonjour"
    assert len(server.requests) == 1
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses) == (2, 1, 1)
    assert stats.output_tokens_saved == first.usage.output_tokens


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"tools": [LOOKUP_TOOL]}, id="tools"),
        pytest.param({"system": "be terse"}, id="system"),
        pytest.param({"extra_body": {"temperature": 0.3}}, id="extra_body"),
        pytest.param({"max_tokens": 65}, id="max_tokens"),
        pytest.param({"stop_sequences": ["END"]}, id="stop_sequences"),
    ],
)
def test_changed_parameter_misses(drv: Driver, server: FakeLLM, change: dict[str, Any]) -> None:
    """Changing tools, system, an extra body field, max_tokens or stop sequences is a miss."""
    drv.run(create("same"))
    drv.run(create("same", **change))
    assert server.calls == 2
    assert drv.cache.stats().hits == 0


def test_metadata_does_not_change_the_key(drv: Driver, server: FakeLLM) -> None:
    """metadata (the end-user id) is on the deny-list: a request differing only there is a hit."""
    first = drv.run(create("meta", metadata={"user_id": "u-1"}))
    second = drv.run(create("meta", metadata={"user_id": "u-2"}))
    assert second == first
    assert server.calls == 1


def test_tool_use_answer_is_cached(drv: Driver, server: FakeLLM) -> None:
    """An answer that stops for tool_use is storable, and the hit carries the same tool input."""
    first = drv.run(create("use_tool now", tools=[LOOKUP_TOOL]))
    second = drv.run(create("use_tool now", tools=[LOOKUP_TOOL]))
    assert second.stop_reason == "tool_use"
    block = second.content[0]
    assert block.type == "tool_use"
    assert block.input == {"query": "use_tool now"}
    assert second == first
    assert server.calls == 1


# --- streaming -----------------------------------------------------------------------------------


def test_raw_stream_replay_equals_recording(drv: Driver, server: FakeLLM) -> None:
    """create(stream=True) is recorded whole and replayed as equal events, stop reason and usage included."""
    recorded = drv.events(create("raw", stream=True))
    drv.drain()
    replayed = drv.events(create("raw", stream=True))
    assert server.calls == 1
    assert replayed == recorded
    types = [e.type for e in replayed]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert replayed[-2].delta.stop_reason == "end_turn"
    assert replayed[-2].usage == recorded[-2].usage
    assert streamed_text(replayed) == "answer #1 to: raw"
    stats = drv.cache.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1)


def test_stream_helper_replay(drv: Driver, server: FakeLLM) -> None:
    """The SDK's messages.stream() helper gets the same pieces and final message from a replay."""
    kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": claude("helper")}
    pieces, final = drv.helper(**kw)
    drv.drain()
    again, replayed = drv.helper(**kw)
    assert again == pieces
    assert len(pieces) >= 3
    assert replayed == final
    assert replayed.stop_reason == "end_turn"
    assert replayed.usage.output_tokens == final.usage.output_tokens
    assert server.calls == 1


@pytest.mark.parametrize("k", [1, 4])
def test_stream_closed_after_k_events_stores_nothing(drv: Driver, server: FakeLLM, k: int) -> None:
    """A stream the caller closes after k events stores nothing; the next identical stream goes upstream."""
    got = drv.events(create("abandon", stream=True), limit=k)
    assert len(got) == k
    drv.drain()
    assert drv.cache.stats().writes == 0
    full = drv.events(create("abandon", stream=True))
    assert streamed_text(full) == "answer #2 to: abandon"
    assert server.calls == 2


def test_dropped_stream_stores_nothing(drv: Driver, server: FakeLLM) -> None:
    """A stream cut by the server raises exactly what the bare SDK raises for the same cut; nothing stored."""
    server.stream_drop_after = 4
    bare = Driver(drv.kind, server, wrapped=False)
    try:
        expected = raised_by(lambda: bare.events(create("bare drop", stream=True)))
    finally:
        bare.close()
    with pytest.raises(expected) as caught:
        drv.events(create("drop", stream=True))
    assert type(caught.value) is expected
    drv.drain()
    assert drv.cache.stats().writes == 0
    server.stream_drop_after = None
    assert streamed_text(drv.events(create("drop", stream=True))) == "answer #3 to: drop"


def test_max_tokens_stream_is_not_stored(drv: Driver, server: FakeLLM) -> None:
    """A stream that stops for max_tokens reaches the caller but is not stored."""
    server.next_finish_reason = "length"
    cut = drv.events(create("long", stream=True))
    assert cut[-2].delta.stop_reason == "max_tokens"
    drv.drain()
    whole = drv.events(create("long", stream=True))
    assert whole[-2].delta.stop_reason == "end_turn"
    assert server.calls == 2


def test_stream_and_body_entries_are_separate(drv: Driver, server: FakeLLM) -> None:
    """As documented, a stream is served only from a stream entry and a plain call only from a body entry."""
    drv.run(create("kinds"))
    first = drv.events(create("kinds", stream=True))
    assert streamed_text(first) == "answer #2 to: kinds"
    assert server.calls == 2


# --- failures are never cached ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 529])
def test_retryable_errors_are_retried_and_not_cached(drv: Driver, server: FakeLLM, status: int) -> None:
    """A 429 or 529 is retried by the SDK as without the cache; only the later success is stored."""
    server.fail_next(status)
    reply = drv.run(create("busy"))
    assert text_of(reply) == "answer #2 to: busy"
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert drv.run(create("busy")) == reply
    assert server.calls == 2


def test_500_without_retries_raises_and_is_not_cached(drv: Driver, server: FakeLLM) -> None:
    """A 500 reaches the caller as InternalServerError and the next identical call goes upstream."""
    server.fail_next(500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        drv.run(
            lambda c: c.with_options(max_retries=0).messages.create(
                model="claude-test", max_tokens=64, messages=claude("boom")
            )
        )
    assert caught.value.status_code == 500
    assert text_of(drv.run(create("boom"))) == "answer #2 to: boom"
    assert text_of(drv.run(create("boom"))) == "answer #2 to: boom"
    assert server.calls == 2


def test_invalid_json_is_not_cached(drv: Driver, server: FakeLLM) -> None:
    """A 200 whose body is not JSON fails in the SDK as without the cache, and is not stored."""
    server.invalid_json_next = True
    with pytest.raises(ValueError, match="Unterminated string"):
        drv.run(create("broken"))
    assert text_of(drv.run(create("broken"))) == "answer #2 to: broken"
    assert server.calls == 2


def test_max_tokens_answer_is_not_cached(drv: Driver, server: FakeLLM) -> None:
    """An answer that stops for max_tokens is returned but not stored."""
    server.next_finish_reason = "length"
    assert drv.run(create("cut")).stop_reason == "max_tokens"
    whole = drv.run(create("cut"))
    assert whole.stop_reason == "end_turn"
    assert drv.run(create("cut")) == whole
    assert server.calls == 2


# --- headers, other endpoints, stats -------------------------------------------------------------


def test_control_headers_never_reach_the_server(drv: Driver, server: FakeLLM) -> None:
    """Every x-promptcache-* header is stripped from cached, streamed, retried and passed-through requests."""
    server.fail_next(529)
    drv.run(create("strip", extra_headers=ALL_CONTROLS))
    drv.events(create("strip stream", stream=True, extra_headers=ALL_CONTROLS))
    with pytest.raises(anthropic.NotFoundError):
        drv.run(
            lambda c: c.messages.count_tokens(
                model="claude-test", messages=claude("count"), extra_headers=ALL_CONTROLS
            )
        )
    assert len(server.requests) == 4
    for request in server.requests:
        assert not [name for name in request.headers if name.startswith("x-promptcache")]
        assert ANTHROPIC_TEST_KEY in request.headers.get(
            "x-api-key", request.headers.get("authorization", "")
        )


def test_count_tokens_passes_through_uncounted(drv: Driver, server: FakeLLM) -> None:
    """messages.count_tokens is not a cached endpoint: it reaches the server and is not counted."""
    for _ in range(2):
        with pytest.raises(anthropic.NotFoundError):
            drv.run(lambda c: c.messages.count_tokens(model="claude-test", messages=claude("count")))
    assert [r.path for r in server.requests] == ["/v1/messages/count_tokens"] * 2
    assert drv.cache.stats().requests == 0


def test_with_raw_response_reports_hit(drv: Driver, server: FakeLLM) -> None:
    """with_raw_response works on a hit: header x-promptcache: hit and parse() equal to the miss."""

    def sync_raw(c: Any) -> tuple[str, Message]:
        raw = c.messages.with_raw_response.create(model="claude-test", max_tokens=64, messages=claude("raw"))
        return raw.headers["x-promptcache"], raw.parse()

    async def async_raw(c: Any) -> tuple[str, Message]:
        raw = await c.messages.with_raw_response.create(
            model="claude-test", max_tokens=64, messages=claude("raw")
        )
        parsed = raw.parse()  # a coroutine in current releases; older ones return the model directly
        return raw.headers["x-promptcache"], await parsed if inspect.isawaitable(parsed) else parsed

    raw = sync_raw if drv.kind == "sync" else async_raw
    miss_header, miss = drv.run(raw)
    hit_header, hit = drv.run(raw)
    assert (miss_header, hit_header) == ("miss", "hit")
    assert hit == miss
    assert server.calls == 1


def test_tenant_header_keeps_entries_apart(drv: Driver, server: FakeLLM) -> None:
    """The same request for two tenants makes two entries; each tenant then hits its own."""
    acme = drv.run(create("tenant", extra_headers={"x-promptcache-tenant": "acme"}))
    other = drv.run(create("tenant", extra_headers={"x-promptcache-tenant": "umbrella"}))
    assert text_of(acme) == "answer #1 to: tenant"
    assert text_of(other) == "answer #2 to: tenant"
    assert drv.run(create("tenant", extra_headers={"x-promptcache-tenant": "acme"})) == acme
    assert drv.run(create("tenant", extra_headers={"x-promptcache-tenant": "umbrella"})) == other
    assert server.calls == 2


def test_bad_ttl_header_is_a_clear_error(drv: Driver, server: FakeLLM) -> None:
    """A bad ttl header fails with an error naming the header (not a retried "Connection error.")."""
    with pytest.raises((ConfigError, anthropic.BadRequestError), match="x-promptcache-ttl"):
        drv.run(create("ttl", extra_headers={"x-promptcache-ttl": "soon"}))
    assert server.requests == []


def test_stats_match_what_happened(drv: Driver, server: FakeLLM) -> None:
    """Hits, misses and bypasses add up to the cached calls made, streams included."""
    drv.run(create("a"))
    drv.run(create("a"))
    drv.events(create("b", stream=True))
    drv.drain()
    drv.events(create("b", stream=True))
    drv.run(create("a", extra_headers={"x-promptcache-bypass": "1"}))
    stats = drv.cache.stats()
    assert (stats.requests, stats.hits, stats.misses, stats.bypasses) == (5, 2, 2, 1)
    assert server.calls == 3


# --- wrapping and threads ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wrap_keeps_the_type_and_refuses_a_second_wrap(kind: str, server: FakeLLM) -> None:
    """wrap() returns the same Anthropic client type, and wrapping it again raises ConfigError."""
    drv = Driver(kind, server)
    try:
        assert type(drv.client) is (anthropic.Anthropic if kind == "sync" else anthropic.AsyncAnthropic)
        with pytest.raises(ConfigError, match="already wrapped"):
            wrap(drv.client, drv.cache, agent_id="again")
        drv.run(create("once"))
        drv.run(create("once"))
        assert server.calls == 1
    finally:
        drv.close()


def test_sync_client_used_from_many_threads(server: FakeLLM) -> None:
    """One wrapped sync Anthropic client used from 6 threads gives each thread its own prompt's answer."""
    drv = Driver("sync", server)
    prompts = [f"thread-{i % 4}" for i in range(24)]
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda p: (p, text_of(drv.run(create(p)))), prompts))
    finally:
        drv.close()
    seen: dict[str, set[str]] = {}
    for prompt, answer in answers:
        assert answer.endswith(f" to: {prompt}")
        seen.setdefault(prompt, set()).add(answer)
    assert all(len(texts) == 1 for texts in seen.values())
    assert server.calls == 4
