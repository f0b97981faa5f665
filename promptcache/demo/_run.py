"""``promptcache demo``: one agent workload run twice, without and with the cache, measured both times.

The upstream is :class:`SimulatedLLM` (offline: an async fake that sleeps per a stated lognormal latency
distribution, on a clock running ``scale`` times faster, and answers chat.completion bodies with token
counts), or any OpenAI-compatible endpoint through :class:`OpenAIUpstream`. Both runs send the same calls
with the same concurrency; every number in the results table is measured: wall time per call, and the
calls and tokens the upstream actually served. Nothing here prints; :mod:`._cli` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from promptcache._cache import PromptCache
from promptcache._gate import usage_of
from promptcache._keys import namespace_prefix
from promptcache._prices import PriceTable
from promptcache.cli._stats import StoredRow, stored_rows
from promptcache.cli._support import list_keys, read_entries
from promptcache.demo._report import RunSummary
from promptcache.demo._workload import AGENT_VERSION, AGENTS, Call, WorkloadParams, build_workload
from promptcache.exceptions import ConfigError
from promptcache.metrics import MetricsRecorder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from promptcache._stats import CacheStats
    from promptcache.metrics import Hook

__all__ = ["DEMO_NAMESPACE", "DemoResult", "Metered", "OpenAIUpstream", "SimulatedLLM", "run_demo"]

DEMO_NAMESPACE: Final = "promptcache-demo"
Z99: Final = 2.326_347_874  # the standard normal's 99th percentile
STORE_READ_TIMEOUT: Final = 60.0


class Upstream(Protocol):
    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SimulatedLLM:
    """An offline chat-completions upstream with a stated latency distribution and token counts.

    Latency is lognormal with the given median and 99th percentile, slept on a clock ``scale`` times
    faster than real time. Prompt tokens are about one per four characters of the messages plus four per
    message; completion tokens are lognormal (median ``completion_median``) clipped to ``[16,
    max_tokens]``. The answer, its tokens and its latency depend on the words of the request (not its
    whitespace), so a repeated question costs what it cost the first time.
    """

    median: float = 1.8
    p99: float = 4.2
    scale: float = 20.0
    completion_median: int = 150
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0 < self.median < self.p99:
            raise ConfigError(f"latency needs 0 < median < p99, got median {self.median}, p99 {self.p99}")
        if self.scale <= 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")

    @property
    def sigma(self) -> float:
        return math.log(self.p99 / self.median) / Z99

    def describe(self) -> str:
        return (
            f"simulated chat.completions: latency lognormal, median {self.median:.2f} s, p99 {self.p99:.2f} s"
            f" (sigma {self.sigma:.3f}), slept {self.scale:g}x faster and shown x{self.scale:g}; prompt"
            f" tokens ~ characters/4 + 4 per message; completion tokens lognormal, median"
            f" {self.completion_median}, clipped to 16..max_tokens"
        )

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = request.get("messages") or []
        words = [" ".join(str(m.get("content", "")).split()) for m in messages]
        digest = hashlib.sha256("\x00".join([str(self.seed), request.get("model", ""), *words]).encode())
        rng = random.Random(digest.digest())  # noqa: S311 - simulated latency, not cryptography
        latency = rng.lognormvariate(math.log(self.median), self.sigma)
        prompt_tokens = sum(len(w) for w in words) // 4 + 4 * len(words)
        cap = int(request.get("max_tokens") or 4096)
        completion_tokens = max(
            16, min(cap, round(rng.lognormvariate(math.log(self.completion_median), 0.5)))
        )
        await asyncio.sleep(latency / self.scale)
        return {
            "id": f"chatcmpl-sim-{digest.hexdigest()[:16]}",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": request.get("model", "simulated"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"(simulated answer to: {words[-1][:60]})"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class OpenAIUpstream:
    """A real OpenAI-compatible endpoint, through the ``openai`` SDK (``pip install promptcache[openai]``).

    Args:
        base_url: The API base URL; None means the SDK's default (api.openai.com).
        api_key: The key; None lets the SDK read ``OPENAI_API_KEY`` (local servers accept any string).
    """

    def __init__(self, base_url: str | None, api_key: str | None = None) -> None:
        try:
            import openai  # noqa: PLC0415 - optional extra
        except ImportError:
            raise ImportError(
                "a real endpoint needs the openai SDK: pip install 'promptcache[openai]'"
            ) from None
        self.base_url = base_url
        self.errors: tuple[type[Exception], ...] = (openai.APIError,)
        try:
            # With api_key=None the SDK itself reads OPENAI_API_KEY; promptcache does not.
            self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        except openai.OpenAIError as exc:
            raise ConfigError(f"cannot use the endpoint: {exc}") from None

    def describe(self) -> str:
        return f"OpenAI-compatible endpoint at {self.base_url or 'the SDK default'} (real latency and tokens)"

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        completion = await self.client.chat.completions.create(**request)
        body: dict[str, Any] = completion.model_dump(mode="json", exclude_unset=True)
        return body

    async def aclose(self) -> None:
        await self.client.close()


@dataclass
class Metered:
    """Counts what an upstream actually served: calls and the tokens its answers reported."""

    inner: Upstream
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        body = await self.inner(request)
        inp, out = usage_of(body)
        self.calls += 1
        self.input_tokens += inp
        self.output_tokens += out
        return body


@dataclass(frozen=True)
class DemoResult:
    """Both runs' measurements, the cache's own counters, and what ended up stored."""

    workload: WorkloadParams
    kinds: dict[str, int]
    before: RunSummary
    after: RunSummary
    stats: CacheStats
    recorder: MetricsRecorder
    stored: dict[tuple[str, str], StoredRow]
    cleared: int
    seconds: tuple[float, float]


async def _run(
    calls: Sequence[Call], answer: Callable[[Call], Awaitable[bool]], concurrency: int, scale: float
) -> tuple[list[float], int]:
    """Send ``calls`` in order, ``concurrency`` at a time; per-call latency at real scale, and hits."""
    latencies = [0.0] * len(calls)
    hits = 0
    queue = iter(range(len(calls)))

    async def worker() -> None:
        nonlocal hits
        for i in queue:  # a shared iterator: each index goes to exactly one worker, in order
            started = time.perf_counter()
            hit = await answer(calls[i])
            latencies[i] = (time.perf_counter() - started) * scale
            hits += hit  # after the await: `hits += await ...` would read hits before awaiting

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return latencies, hits


def _summary(latencies: list[float], meter: Metered, hits: int, prices: PriceTable, model: str) -> RunSummary:
    return RunSummary(
        calls=len(latencies),
        latencies=tuple(latencies),
        upstream_calls=meter.calls,
        input_tokens=meter.input_tokens,
        output_tokens=meter.output_tokens,
        spend=prices.cost(model, meter.input_tokens, meter.output_tokens),
        hits=hits,
    )


async def run_demo(  # noqa: PLR0913 - the demo's knobs, each shown on screen
    workload: WorkloadParams,
    upstream: Upstream,
    *,
    scale: float,
    concurrency: int = 16,
    url: str | None = None,
    prices: PriceTable | None = None,
    hooks: Sequence[Hook] = (),
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the workload without the cache, then with it, and measure both runs.

    Args:
        workload: The calls to make.
        upstream: Answers a chat.completions request body with a response body.
        scale: How much faster than real time the upstream runs; measured times are multiplied by it.
        concurrency: Calls in flight at once, in both runs.
        url: The store; None means SQLite in a temporary directory. On a given store the demo first
            deletes the demo agents' entries in its own namespace, so both runs start cold.
        prices: Prices for the spend rows.
        hooks: More metrics hooks for the cached run (a Prometheus hook, say).
        progress: Called with a line of progress text.
    """
    prices = prices if prices is not None else PriceTable()
    say = progress or (lambda _line: None)
    calls = build_workload(workload)
    kinds: dict[str, int] = {}
    for call in calls:
        kinds[call.kind] = kinds.get(call.kind, 0) + 1

    say(f"run 1/2: {len(calls)} calls straight to the upstream ...")
    plain = Metered(upstream)

    async def direct(call: Call) -> bool:
        await plain(call.request)
        return False

    started = time.perf_counter()
    latencies, _ = await _run(calls, direct, concurrency, scale)
    before = _summary(latencies, plain, 0, prices, workload.model)
    first = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="promptcache-demo-") as tmp:
        store_url = url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        recorder = MetricsRecorder(prices)
        cache = PromptCache.from_url(
            store_url, namespace=DEMO_NAMESPACE, keep_request=True, hooks=[recorder, *hooks]
        )
        try:
            cleared = 0
            if url is not None:
                for spec in AGENTS:
                    cleared += await cache.invalidate(spec.agent_id)
            say(f"run 2/2: the same {len(calls)} calls through the cache ...")
            cached = Metered(upstream)

            async def through_cache(call: Call) -> bool:
                called = False

                async def fetch() -> dict[str, Any]:
                    nonlocal called
                    called = True
                    return await cached(call.request)

                await cache.get_or_call(
                    call.request, fetch, agent_id=call.agent_id, agent_version=AGENT_VERSION
                )
                return not called

            started = time.perf_counter()
            latencies, hits = await _run(calls, through_cache, concurrency, scale)
            second = time.perf_counter() - started
            await cache.drain()
            after = _summary(latencies, cached, hits, prices, workload.model)
            async with asyncio.timeout(STORE_READ_TIMEOUT):  # direct store reads: no guard, so a deadline
                keys = await list_keys(cache.store, namespace_prefix(DEMO_NAMESPACE))
                stored = stored_rows(await read_entries(cache.store, keys))
            stats = cache.stats()
        finally:
            await cache.aclose()
    return DemoResult(workload, kinds, before, after, stats, recorder, stored, cleared, (first, second))
