"""``promptcache demo``: its flags, and what it prints (the parameters first, then the measured tables)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from promptcache._prices import PriceTable
from promptcache._stores import redact_url
from promptcache.cli._stats import render_stats
from promptcache.cli._support import echo
from promptcache.demo._report import render_results
from promptcache.demo._run import DEMO_NAMESPACE, DemoResult, OpenAIUpstream, SimulatedLLM, run_demo
from promptcache.demo._workload import AGENTS, WorkloadParams
from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    import argparse

    from promptcache.metrics import Hook

__all__ = ["add_demo_parser", "cmd_demo"]

SEED_CALLS_PER_DAY = 15_000  # the seed tutorial's logistics client


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` and its flags."""
    d = WorkloadParams()
    sim = SimulatedLLM()
    p = sub.add_parser(
        "demo",
        help="an agent workload without and with the cache, measured (offline by default)",
        description="Runs one agent workload twice against an upstream - without the cache, then with it -"
        " and prints the seed tutorial's results table from what was measured.",
    )
    p.add_argument("--calls", type=int, default=d.calls, help="calls per run (default: %(default)s)")
    p.add_argument(
        "--agents", type=int, default=d.agents, help=f"agents, 1..{len(AGENTS)} (default: %(default)s)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight (default: %(default)s)")
    p.add_argument(
        "--repeat-share", type=float, default=d.repeat_share, help="exact repeats (default: %(default)s)"
    )
    p.add_argument("--whitespace-share", type=float, default=d.whitespace_share,
                   help="repeats with whitespace noise (default: %(default)s)")  # fmt: skip
    p.add_argument("--reworded-share", type=float, default=d.reworded_share,
                   help="reworded repeats (default: %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="workload seed (default: %(default)s)")
    p.add_argument(
        "--model", help="model to request (default: gpt-4o simulated, gpt-4o-mini on a real endpoint)"
    )
    p.add_argument(
        "--median-latency", type=float, default=sim.median, help="simulated median, s (default: %(default)s)"
    )
    p.add_argument(
        "--p99-latency", type=float, default=sim.p99, help="simulated p99, s (default: %(default)s)"
    )
    p.add_argument("--scale", type=float, default=sim.scale,
                   help="simulated clock speed-up (default: %(default)s)")  # fmt: skip
    p.add_argument("--calls-per-day", type=int, default=SEED_CALLS_PER_DAY, help="for the daily spend row")
    p.add_argument("--url", help="store URL (default: SQLite in a temporary directory)")
    p.add_argument(
        "--base-url", help="a real OpenAI-compatible endpoint (key: OPENAI_API_KEY, read by the SDK)"
    )
    p.add_argument("--metrics-out", metavar="FILE", help="write the cached run's Prometheus metrics here")
    p.add_argument("--debug", action="store_true", help="log debug output and show tracebacks")
    p.set_defaults(handler=cmd_demo)


def _field(name: str, text: str) -> str:
    """One labelled block of the parameters, wrapped under its label."""
    return textwrap.fill(text, width=104, initial_indent=f"  {name:<8}  ", subsequent_indent=" " * 12)


def _params_text(w: WorkloadParams, upstream_text: str, store_text: str, prices: PriceTable) -> str:
    fresh = 1 - w.repeat_share - w.whitespace_share - w.reworded_share
    names = ", ".join(a.agent_id for a in AGENTS[: w.agents])
    price = prices.lookup(w.model)
    price_text = (
        f"{w.model}: ${price.input:.2f} in / ${price.output:.2f} out per 1M tokens"
        if price is not None
        else f"{w.model}: no price in the table (spend shown as unpriced)"
    )
    workload = (
        f"{w.calls} calls from {w.agents} agents ({names}), seed {w.seed}. Each call is drawn as: a fresh"
        f" question {fresh:.0%}, an exact repeat {w.repeat_share:.0%}, a repeat with whitespace noise"
        f" {w.whitespace_share:.0%} (the same key under the 'trim' policy), a reworded repeat"
        f" {w.reworded_share:.0%} (a new key: exact caching keeps paraphrases apart)"
    )
    return "\n".join(
        [
            _field("workload", workload),
            _field("requests", f"chat.completions, model {w.model}, temperature {w.temperature}, "
                               f"max_tokens {w.max_tokens}"),
            _field("upstream", upstream_text),
            _field("prices", f"{price_text} (price table as of {prices.as_of})"),
            _field("store", f"{store_text}, namespace {DEMO_NAMESPACE!r}"),
        ]
    )  # fmt: skip


def _report(result: DemoResult, scale: float, calls_per_day: int) -> str:
    s = result.stats
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.kinds.items()))
    saved_cost = result.recorder.total().cost_saved
    spent = result.before.tokens - result.after.tokens
    lines = [
        "",
        f"Real-World Results (measured: {result.before.calls} calls per run; drawn: {kinds})",
        "",
        render_results(result.before, result.after, calls_per_day=calls_per_day),
        "",
    ]
    if scale != 1:
        lines.append(
            f"Latencies were measured on a clock {scale:g}x faster and are shown x{scale:g}"
            " (so the cache's own sub-millisecond work is magnified too)."
        )
    same = "equal to" if spent == s.tokens_saved else "NOT equal to"
    lines += [
        (
            f"The cache's own counters: {s.requests} requests = {s.hits} hits ({s.coalesced} shared an"
            f" in-flight call) + {s.misses} misses + {s.bypasses} bypasses; {s.upstream_calls} upstream"
            f" calls; {s.tokens_saved:,} tokens and ${saved_cost:,.4f} saved."
        ),
        (
            f"Cross-check: tokens spent without the cache minus with it = {spent:,}"
            f" ({same} the tokens the cache counted as saved)."
        ),
        "",
        "By agent and model (what `promptcache stats` shows; hits and savings from this process's hook):",
        "",
        render_stats(result.stored, result.recorder.rows),
    ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo and print what it measured."""
    if args.concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {args.concurrency}")
    real = args.base_url is not None
    model = args.model or ("gpt-4o-mini" if real else "gpt-4o")
    workload = WorkloadParams(
        calls=args.calls,
        agents=args.agents,
        repeat_share=args.repeat_share,
        whitespace_share=args.whitespace_share,
        reworded_share=args.reworded_share,
        model=model,
        seed=args.seed,
    )
    prices = PriceTable()
    upstream: SimulatedLLM | OpenAIUpstream
    if real:
        upstream, scale = OpenAIUpstream(args.base_url), 1.0
    else:
        upstream = SimulatedLLM(median=args.median_latency, p99=args.p99_latency, scale=args.scale)
        scale = args.scale
    store_text = "SQLite in a temporary directory (embedded)" if args.url is None else redact_url(args.url)
    mode = "a REAL endpoint: calls cost money" if real else "offline: simulated upstream"
    echo(
        f"promptcache demo - an agent workload without and with the cache ({mode})",
        _params_text(workload, upstream.describe(), store_text, prices),
        _field("load", f"{args.concurrency} calls in flight at a time, in both runs"),
    )
    hooks: list[Hook] = []
    registry = None
    if args.metrics_out is not None:
        from prometheus_client import CollectorRegistry  # noqa: PLC0415 - optional extra

        from promptcache.metrics import PrometheusHook  # noqa: PLC0415

        registry = CollectorRegistry()
        hooks.append(PrometheusHook(registry, prices, agents=[spec.agent_id for spec in AGENTS]))

    async def run() -> DemoResult:
        try:
            return await run_demo(
                workload,
                upstream,
                scale=scale,
                concurrency=args.concurrency,
                url=args.url,
                prices=prices,
                hooks=hooks,
                progress=echo,
            )
        finally:
            if isinstance(upstream, OpenAIUpstream):
                await upstream.aclose()

    failures = upstream.errors if isinstance(upstream, OpenAIUpstream) else ()
    try:
        result = asyncio.run(run())
    except failures as exc:
        raise ConfigError(f"the endpoint at {args.base_url} failed: {type(exc).__name__}: {exc}") from exc
    if result.cleared:
        echo(f"(cleared {result.cleared} entries of earlier demo runs first)")
    echo(_report(result, scale, args.calls_per_day))
    if registry is not None:
        from promptcache.metrics import render_prometheus  # noqa: PLC0415

        Path(args.metrics_out).write_text(render_prometheus(registry), encoding="utf-8")
        echo("", f"Prometheus metrics of the cached run written to {args.metrics_out}")
    return 0
