"""Instrumentation: one frozen event per request, store and breaker events, prices, and Prometheus output."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from promptcache import CacheConfig, ModelPrice, PriceTable, PromptCache, make_key
from promptcache._prices import DEFAULT_PRICES, PRICES_AS_OF
from promptcache.backends.memory import MemoryStore
from promptcache.cli._stats import parse_prometheus
from promptcache.metrics import (
    BreakerEvent,
    CacheEvent,
    MetricsRecorder,
    PrometheusHook,
    RequestEvent,
    Result,
    StoreEvent,
    render_prometheus,
    start_exporter,
)

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"


def request_for(prompt: str, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}


def answer(prompt: str, model: str = MODEL, tokens: tuple[int, int] = (100, 20)) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"re: {prompt}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)},
    }


def caller(prompt: str, model: str = MODEL, delay: float = 0.0) -> Callable[[], Any]:
    async def call() -> dict[str, Any]:
        if delay:
            await asyncio.sleep(delay)
        return answer(prompt, model)

    return call


class Collect:
    """A hook that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[CacheEvent] = []

    def __call__(self, event: CacheEvent) -> None:
        self.events.append(event)

    def requests(self) -> list[RequestEvent]:
        return [e for e in self.events if isinstance(e, RequestEvent)]

    def of(self, result: Result) -> list[RequestEvent]:
        return [e for e in self.requests() if e.result is result]


async def test_one_request_event_per_request_matching_the_stats() -> None:
    """Hits, misses and bypasses each produce exactly one event, and the events add up to ``stats()``."""
    hook = Collect()
    cache = PromptCache(MemoryStore(), hooks=[hook])
    for prompt in ["a", "b", "a", "a", "c", "b"]:
        await cache.get_or_call(request_for(prompt), caller(prompt), agent_id="agent")
    await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent", bypass=True)
    await cache.get_or_call({"model": MODEL, "x": float("nan")}, caller("nan"), agent_id="agent")
    await cache.drain()
    stats = cache.stats()
    assert len(hook.requests()) == stats.requests == 8
    assert len(hook.of(Result.HIT)) == stats.hits == 3
    assert len(hook.of(Result.MISS)) == stats.misses == 3
    assert [e.reason for e in hook.of(Result.BYPASS)] == ["requested", "uncacheable"]
    assert sum(e.input_tokens + e.output_tokens for e in hook.of(Result.HIT)) == stats.tokens_saved == 360
    assert {(e.agent_id, e.model) for e in hook.requests()} == {("agent", MODEL)}
    await cache.aclose()


async def test_events_are_frozen() -> None:
    """An event record cannot be changed by the hook that receives it."""
    hook = Collect()
    cache = PromptCache(MemoryStore(), hooks=[hook])
    await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hook.requests()[0].agent_id = "other"  # type: ignore[misc]
    await cache.aclose()


async def test_coalesced_callers_are_hits_counted_once_each() -> None:
    """Concurrent identical misses: one miss event for the caller that called, a hit for each other one."""
    hook = Collect()
    cache = PromptCache(MemoryStore(), hooks=[hook])
    await asyncio.gather(
        *(cache.get_or_call(request_for("x"), caller("x", delay=0.05), agent_id="agent") for _ in range(5))
    )
    stats = cache.stats()
    assert len(hook.of(Result.MISS)) == stats.misses == 1
    hits = hook.of(Result.HIT)
    assert len(hits) == stats.hits == 4
    assert all(e.coalesced for e in hits)
    assert sum(e.input_tokens for e in hits) == stats.input_tokens_saved == 400
    await cache.aclose()


async def test_key_only_path_labels_events_with_the_requested_model() -> None:
    """``get_entry`` (how the SDK transport reads) reports the model from the canonical request."""
    hook = Collect()
    cache = PromptCache(MemoryStore(), hooks=[hook])
    key = cache.key(request_for("q", model="gpt-4.1"), agent_id="agent")
    assert await cache.get_entry(key) is None
    await cache.put_entry(
        key, request_for("q", model="gpt-4.1"), body=answer("q", model="gpt-4.1-2025-04-14")
    )
    assert await cache.get_entry(key) is not None
    assert [(e.result, e.model) for e in hook.requests()] == [
        (Result.MISS, "gpt-4.1"),
        (Result.HIT, "gpt-4.1"),
    ]
    await cache.aclose()


async def test_store_calls_are_reported_with_their_operation() -> None:
    """Every store call reaches the hooks as a StoreEvent naming the operation and its outcome."""
    hook = Collect()
    cache = PromptCache(MemoryStore(), hooks=[hook])
    await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent")
    await cache.drain()
    store = [e for e in hook.events if isinstance(e, StoreEvent)]
    # A miss reads the body, then the stream it could be assembled from (convert_kinds); its answer is
    # checked against newer changes (the fence read), then written (its fences checked again in the same
    # step as the write: the memory store is a FencingStore).
    assert [(e.operation, e.outcome) for e in store] == [
        ("get", "ok"),
        ("get", "ok"),
        ("fence", "ok"),
        ("set", "ok"),
    ]
    assert all(e.seconds >= 0 for e in store)
    await cache.aclose()


class BrokenStore(MemoryStore):
    """A store whose reads and writes always fail."""

    async def get(self, key: str) -> bytes | None:  # noqa: ARG002 - the Store signature
        raise ConnectionError("down")

    async def set(self, key: str, value: bytes, ttl: float) -> None:  # noqa: ARG002
        raise ConnectionError("down")


async def test_store_errors_and_breaker_transitions_are_reported() -> None:
    """Failing store calls are error events, the breaker opening a BreakerEvent, skipped calls reported."""
    hook = Collect()
    cache = PromptCache(BrokenStore(), CacheConfig(breaker_threshold=2, breaker_cooldown=60), hooks=[hook])
    for prompt in ["a", "b", "c"]:
        await cache.get_or_call(request_for(prompt), caller(prompt), agent_id="agent")
    await cache.drain()
    store = [e for e in hook.events if isinstance(e, StoreEvent)]
    assert [e.outcome for e in store][:2] == ["error", "error"]
    assert store[0].error == "ConnectionError"
    assert "skipped" in {e.outcome for e in store}
    assert [(e.old, e.new) for e in hook.events if isinstance(e, BreakerEvent)] == [("closed", "open")]
    assert len(hook.of(Result.MISS)) == cache.stats().misses == 3
    await cache.aclose()


async def test_a_failing_hook_never_breaks_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged once and the cache keeps answering (and calling the other hooks)."""

    def broken(event: CacheEvent) -> None:
        raise RuntimeError("metrics backend down")

    good = Collect()
    cache = PromptCache(MemoryStore(), hooks=[broken, good])
    with caplog.at_level(logging.ERROR, logger="promptcache"):
        for _ in range(3):
            body = await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent")
            assert body["choices"][0]["message"]["content"] == "re: a"
    assert len([r for r in caplog.records if "metrics hook" in r.getMessage()]) == 1
    assert len(good.requests()) == 3
    await cache.aclose()


async def test_no_hooks_means_no_events_are_built() -> None:
    """Without hooks the emitter is never called, on hits, misses, bypasses or store calls."""
    cache = PromptCache(MemoryStore())

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built without hooks")

    for name in ("request", "bypass", "store", "breaker", "emit"):
        setattr(cache._events, name, fail)
    for prompt in ["a", "a", "b"]:
        await cache.get_or_call(request_for(prompt), caller(prompt), agent_id="agent")
    await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent", bypass=True)
    await cache.drain()
    assert cache.stats().hits == 1
    await cache.aclose()


async def test_recorder_prices_hits_and_flags_unknown_models() -> None:
    """MetricsRecorder prices saved tokens by the price table; an unknown model counts as unpriced."""
    recorder = MetricsRecorder(PriceTable({MODEL: (1.0, 2.0)}))
    cache = PromptCache(MemoryStore(), hooks=[recorder])
    for model in [MODEL, MODEL, "house-model", "house-model"]:
        await cache.get_or_call(request_for("q", model), caller("q", model), agent_id="agent")
    known, unknown = recorder.rows[("agent", MODEL)], recorder.rows[("agent", "house-model")]
    assert (known.hits, known.misses, known.unpriced_hits) == (1, 1, 0)
    assert known.cost_saved == pytest.approx((100 * 1.0 + 20 * 2.0) / 1_000_000)
    assert (unknown.hits, unknown.cost_saved, unknown.unpriced_hits) == (1, 0.0, 1)
    assert recorder.total().hits == cache.stats().hits == 2
    await cache.aclose()


def test_price_table_resolves_snapshots_and_never_crashes() -> None:
    """Dated snapshots and provider prefixes resolve to their family; unknown models cost None, no error."""
    prices = PriceTable()
    assert prices.as_of == PRICES_AS_OF
    assert prices.lookup("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert prices.lookup("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert prices.lookup("openai/GPT-4.1") == DEFAULT_PRICES["gpt-4.1"]
    assert prices.lookup("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4-5"]
    assert prices.lookup("gpt-5.1-codex") == DEFAULT_PRICES["gpt-5.1"]  # not gpt-5: "." is no separator
    assert prices.cost("no-such-model", 10, 10) is None
    assert prices.cost(None, 10, 10) is None
    assert "gpt-4o" in prices
    assert prices.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.50)


def test_price_table_overrides_and_replaces_defaults() -> None:
    """User prices override the defaults, accept tuples, and can stand alone with their own date."""
    prices = PriceTable({"GPT-4o": (2.0, 8.0), "house": ModelPrice(0.5, 0.5)}, as_of="2027-01-01")
    assert prices.lookup("gpt-4o") == ModelPrice(2.0, 8.0)
    assert prices.cost("house-v2", 2_000_000, 0) == pytest.approx(1.0)
    assert prices.as_of == "2027-01-01"
    alone = PriceTable({"house": (1.0, 1.0)}, include_defaults=False)
    assert alone.lookup("gpt-4o") is None


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_prometheus_output_parses_and_counts_by_agent_and_model() -> None:
    """The exposition parses with prometheus-client's parser and holds requests, tokens, cost and latency."""
    registry = CollectorRegistry()
    cache = PromptCache(
        MemoryStore(),
        hooks=[PrometheusHook(registry, PriceTable({MODEL: (1.0, 2.0)}), agents=["classifier"])],
    )
    for prompt in ["a", "a", "a", "b"]:
        await cache.get_or_call(request_for(prompt), caller(prompt), agent_id="classifier")
    await cache.drain()
    samples = _samples(render_prometheus(registry))

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    agent = {"agent": "classifier", "model": MODEL}
    assert value("promptcache_requests_total", **agent, result="hit") == 2
    assert value("promptcache_requests_total", **agent, result="miss") == 2
    tokens = "promptcache_tokens_saved_total"
    assert value(tokens, **agent, token_type="input") == 200  # noqa: S106 - a label, not a password
    assert value(tokens, **agent, token_type="output") == 40  # noqa: S106
    assert value("promptcache_cost_saved_usd_total", **agent) == pytest.approx(2 * 140 / 1_000_000)
    # A hit is one GET; a miss reads the body, then the stream it could be assembled from (convert_kinds),
    # and its write is one fence read and one fenced SET.
    stats = cache.stats()
    assert value("promptcache_store_latency_seconds_count", operation="get") == stats.hits + 2 * stats.misses
    assert value("promptcache_store_latency_seconds_count", operation="fence") == stats.writes
    assert value("promptcache_store_latency_seconds_count", operation="set") == stats.writes
    assert value("promptcache_breaker_state", namespace="promptcache", state="closed") == 1
    assert value("promptcache_breaker_state", namespace="promptcache", state="open") == 0
    await cache.aclose()


async def test_stats_reads_back_what_prometheus_exposes() -> None:
    """Parsing the exposition (``stats --metrics``) gives the per-agent rows of the in-process recorder."""
    registry = CollectorRegistry()
    recorder = MetricsRecorder()
    cache = PromptCache(MemoryStore(), hooks=[PrometheusHook(registry, agents=["a", "b"]), recorder])
    for agent, prompt in [("a", "x"), ("a", "x"), ("b", "y"), ("b", "y"), ("b", "y")]:
        await cache.get_or_call(request_for(prompt), caller(prompt), agent_id=agent)
    parsed = parse_prometheus(render_prometheus(registry))
    assert set(parsed) == set(recorder.rows)
    for key, row in recorder.rows.items():
        got = parsed[key]
        assert (got.hits, got.misses, got.tokens_saved) == (row.hits, row.misses, row.tokens_saved)
        assert got.cost_saved == pytest.approx(row.cost_saved)
    await cache.aclose()


async def test_two_hooks_on_one_registry_share_series() -> None:
    """A second PrometheusHook on the same registry reuses the metrics instead of failing to register them."""
    registry = CollectorRegistry()
    first, second = PrometheusHook(registry, agents=["agent"]), PrometheusHook(registry, agents=["agent"])
    cache = PromptCache(MemoryStore(), hooks=[first, second])
    await cache.get_or_call(request_for("a"), caller("a"), agent_id="agent")
    samples = _samples(render_prometheus(registry))
    key = (
        "promptcache_requests_total",
        frozenset({"agent": "agent", "model": MODEL, "result": "miss"}.items()),
    )
    assert samples[key] == 2
    await cache.aclose()


async def test_breaker_gauge_follows_transitions() -> None:
    """The breaker-state gauge shows 1 for the state the breaker moved to."""
    registry = CollectorRegistry()
    hook = PrometheusHook(registry)
    hook(BreakerEvent(namespace="ns", old="closed", new="open"))
    samples = _samples(render_prometheus(registry))
    assert samples[("promptcache_breaker_state", frozenset({("namespace", "ns"), ("state", "open")}))] == 1
    assert samples[("promptcache_breaker_state", frozenset({("namespace", "ns"), ("state", "closed")}))] == 0


def test_exporter_serves_metrics_over_http() -> None:
    """``start_exporter`` on port 0 serves the registry at /metrics on loopback."""
    registry = CollectorRegistry()
    hook = PrometheusHook(registry, agents=["agent"])
    hook(RequestEvent(result=Result.MISS, namespace="ns", agent_id="agent", model=MODEL))
    server = start_exporter(0, registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    key = (
        "promptcache_requests_total",
        frozenset({"agent": "agent", "model": MODEL, "result": "miss"}.items()),
    )
    assert _samples(text)[key] == 1


def test_prometheus_hook_names_the_extra_when_missing() -> None:
    """Without prometheus-client, PrometheusHook raises an ImportError naming ``promptcache[prometheus]``."""
    code = (
        "import sys\nsys.modules['prometheus_client'] = None\n"
        "from promptcache.metrics import PrometheusHook\nPrometheusHook()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "pip install 'promptcache[prometheus]'" in out.stderr


def test_events_carry_the_key_scope() -> None:
    """A request event names the namespace, agent and version of the key it was counted under."""
    hook = Collect()
    key = make_key(request_for("q"), namespace="ns", agent_id="agent", agent_version="7")

    async def run() -> None:
        cache = PromptCache(MemoryStore(), CacheConfig(namespace="ns"), hooks=[hook])
        await cache.get_entry(key)
        await cache.aclose()

    asyncio.run(run())
    event = hook.requests()[0]
    assert (event.namespace, event.agent_id, event.agent_version) == ("ns", "agent", "7")
