"""Operating a two-worker deployment on one Redis: the figures ``promptcache stats`` shows are the sum.

Each worker is its own process (``tests/ops_worker.py``), answering through a PromptCache on the shared
redis-server. Worker A answers p0..p4 (5 misses) then p0..p3 (4 hits): 44.4 % alone. Worker B, after it,
answers p0..p4 and p0..p2 (8 hits). Together: 12 hits and 5 misses, 70.6 %.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
from helpers import until
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import promptcache.openai
from promptcache import CacheConfig, ConfigError, PromptCache, _tally
from promptcache.cli import main
from promptcache.metrics import PrometheusHook, multiprocess_registry, render_prometheus

if TYPE_CHECKING:
    from collections.abc import Callable

    from helpers import Run
    from redis_server import RedisServer

pytestmark = pytest.mark.redis


NS = "ops"
WORKER = Path(__file__).resolve().parents[1] / "ops_worker.py"
A_PROMPTS = ["p0", "p1", "p2", "p3", "p4", "p0", "p1", "p2", "p3"]  # 5 misses, 4 hits: 44.4 %
B_PROMPTS = ["p0", "p1", "p2", "p3", "p4", "p0", "p1", "p2"]  # after A: 8 hits
HITS, MISSES = 12, 5  # the deployment's true figures: 70.6 %


def start_worker(
    url: str, mode: str, prompts: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, NS, mode, *prompts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def total_row(out: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith("total"))


def writer_row(out: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith("writer"))


def test_stats_sums_two_workers_metrics_endpoints(cli: Run, redis_url: str) -> None:
    """Two worker processes each serve /metrics; one ``stats`` call with both shows their sum."""
    a = start_worker(redis_url, "export", A_PROMPTS)
    assert a.stdout is not None
    port_a = a.stdout.readline().split()[1]  # A has answered everything before it serves /metrics
    b = start_worker(redis_url, "export", B_PROMPTS)
    assert b.stdout is not None
    port_b = b.stdout.readline().split()[1]
    try:
        url_a, url_b = (f"http://127.0.0.1:{p}/metrics" for p in (port_a, port_b))
        code, out, _ = cli("stats", "--url", redis_url, "--namespace", NS, "--metrics", url_a)
        assert code == 0
        assert writer_row(out)[4:7] == ["4", "5", "44.4%"]  # one worker alone: what the issue saw
        code, out, _ = cli(
            "stats", "--url", redis_url, "--namespace", NS, "--metrics", url_a, "--metrics", url_b
        )
        assert code == 0
        assert writer_row(out)[2] == "5"  # entries in the store
        assert writer_row(out)[4:7] == [str(HITS), str(MISSES), f"{HITS / (HITS + MISSES):.1%}"]
        assert "the sum of 2 processes' counters" in out
    finally:
        for worker in (a, b):
            out, _ = worker.communicate(timeout=30)  # closes its stdin: the worker stops serving
            assert (worker.returncode, out.split()) == (0, ["done"])


def test_prometheus_multiprocess_mode_adds_up_two_workers(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """Both workers count into one PROMETHEUS_MULTIPROC_DIR; one exporter's registry shows their sum."""
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    for prompts in (A_PROMPTS, B_PROMPTS):
        worker = start_worker(redis_url, "multiprocess", prompts, env)
        out, _ = worker.communicate(timeout=60)
        assert (worker.returncode, out.split()) == (0, ["done"])
    metrics = tmp_path / "all.prom"
    metrics.write_text(render_prometheus(multiprocess_registry(str(shared))))
    code, out, _ = cli("stats", "--url", redis_url, "--namespace", NS, "--metrics", str(metrics))
    assert code == 0
    assert writer_row(out)[4:7] == [str(HITS), str(MISSES), f"{HITS / (HITS + MISSES):.1%}"]
    # The footnote says what the figures are: both workers' sum, not "that process's counters".
    assert f"the sum of 2 worker processes' counters (multiprocess mode), from {metrics}" in out
    text = metrics.read_text()
    assert text.count("promptcache_breaker_state{") >= 2  # one closed-state series per worker (pid label)


def test_labels_outside_the_allow_list_are_other(redis_url: str) -> None:
    """Default allow-lists: priced models and agents configured in code; anything else is ``other``."""
    registry = CollectorRegistry()

    async def go() -> None:
        cache = PromptCache.from_url(redis_url, namespace="labels", hooks=[PrometheusHook(registry)])
        promptcache.openai.wrap(
            AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9"), cache, agent_id="configured"
        )
        for agent, model in [
            ("configured", "gpt-4o"),
            ("configured", "my-finetune-123"),
            ("from-a-header", "gpt-4o"),
        ]:
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": agent}]}

            async def call(model: str = model) -> dict[str, Any]:
                return {
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "x"},
                            "finish_reason": "stop",
                        }
                    ],
                }

            await cache.get_or_call(body, call, agent_id=agent)
        await cache.aclose()

    asyncio.run(go())
    seen = {
        (s.labels["agent"], s.labels["model"])
        for family in text_string_to_metric_families(render_prometheus(registry))
        for s in family.samples
        if s.name == "promptcache_requests_total"
    }
    assert seen == {("configured", "gpt-4o"), ("configured", "other"), ("other", "gpt-4o")}


def test_counters_kept_in_the_store_add_up_two_workers_with_no_metrics_endpoint(
    cli: Run, redis_url: str
) -> None:
    """With count_in_store, both workers' counts land in one Redis hash; plain ``stats`` shows the sum."""
    for prompts in (A_PROMPTS, B_PROMPTS):
        worker = start_worker(redis_url, "store", prompts)
        out, _ = worker.communicate(timeout=60)
        assert (worker.returncode, out.split()) == (0, ["done"])
    code, out, _ = cli("stats", "--url", redis_url, "--namespace", NS)
    assert code == 0
    row = writer_row(out)
    assert row[2] == "5"
    assert row[4:8] == [str(HITS), str(MISSES), f"{HITS / (HITS + MISSES):.1%}", str(HITS * 15)]
    assert "kept in the store (count_in_store=True)" in out
    code, out, _ = cli("stats", "--url", redis_url, "--namespace", NS, "--json")
    rows = orjson.loads(out)["rows"]
    assert [(r["agent"], r["hits"], r["misses"]) for r in rows] == [("writer", HITS, MISSES)]


def test_a_hit_costs_no_extra_round_trip_with_count_in_store(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting in the store adds no command to a hit: Redis sees one GET per hit, and the counts arrive
    in one pipelined flush per interval (here: at aclose)."""
    monkeypatch.setattr(_tally, "FLUSH_INTERVAL", 3600.0)
    client = redis.Redis.from_url(redis_url)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "rt"}]}

    async def call() -> dict[str, Any]:
        return {
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
            ],
        }

    async def go() -> tuple[_Calls, int, _Calls]:
        # The store's cold path (no hot tier): each hit is its one GET, and counting adds nothing to it.
        cache = PromptCache.from_url(redis_url, namespace="rt", count_in_store=True, hot_tier_bytes=0)
        await cache.get_or_call(body, call, agent_id="a")  # miss, written
        await cache.drain()
        before = commands(client)
        for _ in range(20):
            await cache.get_or_call(body, call, agent_id="a")
        during = commands(client) - before
        await cache.aclose()
        return during, cache.stats().hits, commands(client) - before

    during, hits, after_close = asyncio.run(go())
    assert hits == 20
    assert during["get"] == 20  # one GET per hit
    assert during["hincrby"] == 0  # the flush timer (made an hour) has not fired
    assert after_close["hincrby"] > 0
    assert client.hget("rt:counters", "a\tgpt-4o\thit") == b"20"
    client.close()


class _Calls(dict[str, int]):
    def __sub__(self, other: dict[str, int]) -> _Calls:
        return _Calls({k: self.get(k, 0) - other.get(k, 0) for k in self.keys() | other.keys()})

    def __missing__(self, key: str) -> int:
        return 0


def commands(client: redis.Redis) -> _Calls:
    """Calls per command so far, from INFO commandstats (cmdstat_get -> get)."""
    stats = client.info("commandstats")
    return _Calls({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def test_a_failed_counter_flush_fails_open_and_keeps_its_counts(
    private_redis: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down at flush time: answers still come (fail-open), the failure is counted, and the counts
    wait in process for the next flush instead of being lost."""
    monkeypatch.setattr(_tally, "FLUSH_INTERVAL", 3600.0)
    server = private_redis()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "down"}]}

    async def call() -> dict[str, Any]:
        return {
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
            ],
        }

    async def go() -> None:
        cache = PromptCache.from_url(server.url, namespace="down", count_in_store=True)
        tally = cache._writer.tally  # the flush is what is under test
        assert tally is not None
        for _ in range(3):
            await cache.get_or_call(body, call, agent_id="a")  # 1 miss, 2 hits
        await cache.drain()
        server.stop()
        errors = cache.stats().store_errors
        await tally.flush()
        assert cache.stats().store_errors == errors + 1  # counted like any store fault
        assert tally.flushes == 0
        server.start()
        await cache.aclose()  # the final flush carries the counts kept from the failed one
        assert tally.flushes == 1

    asyncio.run(go())
    client = redis.Redis.from_url(server.url)
    assert client.hgetall("down:counters") == {b"a\tgpt-4o\tmiss": b"1", b"a\tgpt-4o\thit": b"2"}
    client.close()


def test_counts_kept_from_a_failed_flush_reach_the_store_with_no_further_traffic(
    private_redis: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stalls during the last flush of a burst and traffic then stops (a quiet night): the kept
    counts are retried on their own, so `promptcache stats` catches up without waiting for the next
    request (seen live: 50 requests missing from stats after a CLIENT PAUSE until traffic resumed)."""
    monkeypatch.setattr(_tally, "FLUSH_INTERVAL", 0.05)
    server = private_redis()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "stall"}]}

    async def call() -> dict[str, Any]:
        return {
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
            ],
        }

    def stored() -> dict[bytes, bytes]:
        client = redis.Redis.from_url(server.url)
        try:
            return client.hgetall("stall:counters")  # type: ignore[return-value]
        finally:
            client.close()

    async def go() -> None:
        cache = PromptCache.from_url(
            server.url, namespace="stall", count_in_store=True, breaker_threshold=1000
        )
        tally = cache._writer.tally
        assert tally is not None
        await cache.get_or_call(body, call, agent_id="a")  # a miss, written
        await cache.drain()
        server.stop()
        await cache.get_or_call(body, call, agent_id="a")  # fail-open: answered, counted as a miss
        await cache.drain()  # its write has failed: from here on only a flush touches the store
        errors = cache.stats().store_errors
        await until(lambda: cache.stats().store_errors > errors, "a flush that failed")
        assert tally.flushes == 0
        server.start()
        await until(lambda: stored() == {b"a\tgpt-4o\tmiss": b"2"}, "the kept counts in the store")
        await cache.aclose()

    asyncio.run(go())


def test_count_in_store_needs_a_store_that_counts() -> None:
    """A store without the CountingStore capability is refused at construction, by name."""

    class Plain:
        async def get(self, key: str) -> bytes | None:  # noqa: ARG002 - the Store shape
            return None

    with pytest.raises(ConfigError, match="count_in_store=True needs a store that keeps counters"):
        PromptCache(Plain(), CacheConfig(count_in_store=True))  # type: ignore[arg-type]


def test_top_level_help_has_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    assert ":mod:" not in out
