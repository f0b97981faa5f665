"""``promptcache demo``: the workload, the simulated upstream, and a results table agreeing with the cache."""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING, Any

import pytest
from fake_llm import OPENAI_TEST_KEY, FakeLLM

from promptcache import ConfigError, PriceTable, make_key
from promptcache.cli import main
from promptcache.cli._stats import format_table, parse_prometheus
from promptcache.demo._report import RunSummary, improvement, percentile, render_results
from promptcache.demo._run import DemoResult, SimulatedLLM, run_demo
from promptcache.demo._workload import AGENTS, WorkloadParams, build_workload

if TYPE_CHECKING:
    from pathlib import Path

FAST = 1000.0  # the simulated clock's speed-up in tests: sleeps of a few milliseconds


def run_tiny(calls: int = 120, seed: int = 3, url: str | None = None) -> DemoResult:
    workload = WorkloadParams(calls=calls, seed=seed)
    return asyncio.run(run_demo(workload, SimulatedLLM(scale=FAST), scale=FAST, concurrency=8, url=url))


def test_the_measured_table_agrees_with_the_cache_stats() -> None:
    """Hits, upstream calls, tokens and spend in the table are the cache's own counters and the meter's."""
    result = run_tiny()
    before, after, stats = result.before, result.after, result.stats
    assert (before.calls, before.upstream_calls, before.hits) == (120, 120, 0)
    assert after.calls == stats.requests == 120
    assert after.hits == stats.hits
    assert after.hit_rate == pytest.approx(stats.hit_rate)
    assert after.upstream_calls == stats.upstream_calls == stats.misses
    assert before.tokens - after.tokens == stats.tokens_saved
    assert result.recorder.total().hits == stats.hits
    assert result.recorder.total().tokens_saved == stats.tokens_saved
    assert sum(row.entries for row in result.stored.values()) == stats.writes == stats.misses
    assert after.spend == PriceTable().cost("gpt-4o", after.input_tokens, after.output_tokens)
    table = render_results(before, after, calls_per_day=15_000)
    hit_row = next(line for line in table.splitlines() if line.startswith("Cache Hit Rate"))
    assert hit_row.split()[-2] == f"{stats.hit_rate:.0%}"
    calls_row = next(line for line in table.splitlines() if line.startswith("Upstream Calls"))
    assert calls_row.split()[2:4] == ["120", str(stats.upstream_calls)]


def test_a_given_store_starts_cold_every_run(tmp_path: Path) -> None:
    """On an explicit store the demo clears its own agents' entries first, so a rerun measures the same."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first, second = run_tiny(60, url=url), run_tiny(60, url=url)
    assert first.cleared == 0
    assert second.cleared == first.stats.writes
    assert second.stats.hits == first.stats.hits


def test_the_command_prints_parameters_and_the_results_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``promptcache demo`` states its parameters and prints the seed's table with the cache's hit rate."""
    metrics = tmp_path / "demo.prom"
    code = main(["demo", "--calls", "80", "--scale", str(FAST), "--metrics-out", str(metrics)])
    out = capsys.readouterr().out
    assert code == 0
    assert "offline: simulated upstream" in out
    assert "latency lognormal, median 1.80 s, p99 4.20 s" in out
    assert "80 calls from 8 agents" in out
    for row in ("P50 Latency", "P99 Latency", "Daily Token Spend", "Cache Hit Rate"):
        assert row in out
    counters = re.search(r"(\d+) requests = (\d+) hits", out)
    assert counters is not None
    requests, hits = int(counters[1]), int(counters[2])
    hit_row = next(line for line in out.splitlines() if line.startswith("Cache Hit Rate"))
    assert hit_row.split()[-2] == f"{hits / requests:.0%}"
    assert "(equal to the tokens the cache counted as saved)" in out
    exported = parse_prometheus(metrics.read_text())
    assert sum(row.hits for row in exported.values()) == hits


def test_the_same_workload_runs_against_an_openai_compatible_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--base-url`` the calls go to a real HTTP endpoint through the openai SDK (key from the env)."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    with FakeLLM() as server:
        code = main(["demo", "--calls", "30", "--base-url", server.base_url, "--concurrency", "4"])
        calls = server.calls
    out = capsys.readouterr().out
    assert code == 0
    assert "a REAL endpoint" in out
    assert "model gpt-4o-mini" in out
    counters = re.search(r"(\d+) misses", out)
    assert counters is not None
    assert calls == 30 + int(counters[1])  # every call once without the cache, the misses once more


def test_a_failing_endpoint_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that rejects the key ends the demo with one line naming it, exit 1."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    with FakeLLM() as server:
        server.fail_next(status=401)
        base_url = server.base_url
        code = main(["demo", "--calls", "5", "--base-url", base_url, "--concurrency", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"promptcache: error: the endpoint at {base_url} failed: AuthenticationError")


def test_bad_demo_parameters_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An impossible workload is reported in one line with exit 1."""
    assert main(["demo", "--agents", "99"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"promptcache: error: agents must be between 1 and {len(AGENTS)}, got 99"


def test_workload_is_reproducible_and_seeded() -> None:
    """The same parameters give the same calls; another seed gives other calls."""
    params = WorkloadParams(calls=200)
    assert build_workload(params) == build_workload(params)
    assert build_workload(params) != build_workload(WorkloadParams(calls=200, seed=99))


def test_near_repeats_share_or_change_the_key_as_stated() -> None:
    """Whitespace repeats get an earlier call's key under 'trim'; reworded ones get a key of their own."""
    calls = build_workload(WorkloadParams(calls=400))
    fresh_keys = {make_key(c.request, agent_id=c.agent_id).digest for c in calls if c.kind == "fresh"}
    whitespace = [c for c in calls if c.kind == "whitespace"]
    reworded = [c for c in calls if c.kind == "reworded"]
    assert whitespace
    assert reworded
    assert all(make_key(c.request, agent_id=c.agent_id).digest in fresh_keys for c in whitespace)
    assert all(make_key(c.request, agent_id=c.agent_id).digest not in fresh_keys for c in reworded)
    assert not any(
        make_key(c.request, agent_id=c.agent_id, policy="exact").digest in fresh_keys for c in whitespace
    )


@pytest.mark.parametrize(
    "options",
    [{"agents": 0}, {"calls": 0}, {"repeat_share": 0.9, "whitespace_share": 0.2}, {"reworded_share": -0.1}],
)
def test_impossible_workloads_are_refused(options: dict[str, Any]) -> None:
    """Zero agents, zero calls and impossible shares raise ConfigError naming the problem."""
    with pytest.raises(ConfigError, match="must be"):
        WorkloadParams(**options)


def test_impossible_latency_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A p99 below the median, a zero clock scale or no concurrency is one line and exit 1."""
    assert main(["demo", "--median-latency", "2", "--p99-latency", "1"]) == 1
    assert "0 < median < p99" in capsys.readouterr().err
    assert main(["demo", "--scale", "0"]) == 1
    assert "scale must be > 0" in capsys.readouterr().err
    assert main(["demo", "--concurrency", "0"]) == 1
    assert "concurrency must be at least 1" in capsys.readouterr().err


def test_simulated_upstream_answers_by_words_not_whitespace() -> None:
    """The same words give the same answer and usage; other words another answer; tokens stay in bounds."""
    llm = SimulatedLLM(scale=FAST)
    base = {
        "model": "gpt-4o",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Where is my order?"}],
    }
    spaced = {**base, "messages": [{"role": "user", "content": "  Where is   my order?\n"}]}
    other = {**base, "messages": [{"role": "user", "content": "Where is my refund?"}]}

    async def ask() -> list[dict[str, object]]:
        return [await llm(base), await llm(spaced), await llm(other)]

    first, second, third = asyncio.run(ask())
    assert first == second
    assert first["id"] != third["id"]
    usage = first["usage"]
    assert isinstance(usage, dict)
    assert 16 <= usage["completion_tokens"] <= 64
    assert first["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


def test_stated_latency_distribution_has_the_stated_percentiles() -> None:
    """The lognormal's sigma is chosen so that its median and 99th percentile are the stated ones."""
    llm = SimulatedLLM(median=1.8, p99=4.2)
    assert math.exp(math.log(1.8) + 2.326_347_874 * llm.sigma) == pytest.approx(4.2)
    assert "median 1.80 s, p99 4.20 s" in llm.describe()


def test_report_helpers() -> None:
    """Nearest-rank percentiles, the improvement column and the table formatter."""
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert percentile([], 50) == 0.0
    assert improvement(4.0, 1.0) == "75%"
    assert improvement(0.0, 1.0) == "N/A"
    assert format_table(["a", "bb"], [["xyz", "1"]], "lr").splitlines() == ["a    bb", "---  --", "xyz   1"]


def test_unpriced_models_are_shown_as_unpriced() -> None:
    """A model missing from the price table shows 'unpriced' instead of a made-up amount."""
    run = RunSummary(
        calls=2, latencies=(1.0, 2.0), upstream_calls=2, input_tokens=10, output_tokens=5, spend=None, hits=0
    )
    table = render_results(run, run, calls_per_day=100)
    assert "unpriced" in next(line for line in table.splitlines() if line.startswith("Token Spend"))
