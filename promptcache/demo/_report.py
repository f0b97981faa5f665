"""The seed tutorial's "Real-World Results" table, filled with what the demo's two runs measured.

Pure functions over measured numbers; nothing here measures, prints or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptcache.cli._stats import format_table, money

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["RunSummary", "improvement", "percentile", "render_results"]


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * p / 100), at least the first value
    return ordered[int(rank) - 1]


def improvement(before: float, after: float) -> str:
    """How much lower ``after`` is than ``before``, as the seed's "Improvement" column shows it."""
    if before <= 0:
        return "N/A"
    return f"{(before - after) / before:.0%}"


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What one run of the workload measured (latencies in seconds at real scale, money in dollars).

    ``spend`` is None when the model has no price in the price table.
    """

    calls: int
    latencies: tuple[float, ...]
    upstream_calls: int
    input_tokens: int
    output_tokens: int
    spend: float | None
    hits: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def hit_rate(self) -> float:
        return self.hits / self.calls if self.calls else 0.0


def render_results(before: RunSummary, after: RunSummary, *, calls_per_day: int) -> str:
    """The seed tutorial's "Real-World Results" table, filled with what the two runs measured."""
    b50, a50 = percentile(before.latencies, 50), percentile(after.latencies, 50)
    b99, a99 = percentile(before.latencies, 99), percentile(after.latencies, 99)

    def per_day(run: RunSummary) -> float | None:
        return None if run.spend is None or not run.calls else run.spend / run.calls * calls_per_day

    spend_gain = "N/A"
    if before.spend is not None and after.spend is not None:
        spend_gain = improvement(before.spend, after.spend)
    day_before, day_after = per_day(before), per_day(after)
    rows = [
        ["P50 Latency", f"{b50:.2f}s", f"{a50:.2f}s", improvement(b50, a50)],
        ["P99 Latency", f"{b99:.2f}s", f"{a99:.2f}s", improvement(b99, a99)],
        ["Upstream Calls", f"{before.upstream_calls:,}", f"{after.upstream_calls:,}",
         improvement(before.upstream_calls, after.upstream_calls)],
        ["Tokens Spent", f"{before.tokens:,}", f"{after.tokens:,}", improvement(before.tokens, after.tokens)],
        ["Token Spend (this run)", money(before.spend), money(after.spend), spend_gain],
        [f"Daily Token Spend ({calls_per_day:,}/day)", money(day_before), money(day_after), spend_gain],
        ["Cache Hit Rate", f"{before.hit_rate:.0%}", f"{after.hit_rate:.0%}", "N/A"],
    ]  # fmt: skip
    return format_table(["Metric", "Before Cache", "After Cache", "Improvement"], rows, "lrrr")
