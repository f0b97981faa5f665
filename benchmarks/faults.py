"""A bounded load-and-fault run: many tenants and prompts over a real Redis that is slowed, killed, reset
and paused mid-run, with nothing lost.

Run it with ``.venv/bin/python benchmarks/faults.py`` (``--seconds N`` changes the traffic phase, 20 s by
default; the whole run stays under a minute). It starts its own password-protected redis-server on a free
loopback port, puts the suite's fault proxy (``tests/reliability_support.FaultProxy``) in front of it,
and drives two caches (two "processes" sharing Redis through single-flight locks) with many concurrent
callers, some of which cancel at random. Mid-run, on a fixed schedule: replies are delayed past the store
deadline, Redis is SIGKILLed and restarted, replies are reset mid-value, every connection is reset, and
Redis is paused (CLIENT PAUSE).

Every request carries its own id (in ``user``, outside the key) and a fake API key (in ``metadata``,
also outside the key); the fake upstream echoes the tenant, prompt and id into its answer, and every answer
is checked against its caller. At the end it scans every Redis value, every log line and the reprs for
the planted secrets (the API key and the Redis password), and prints one table.

Exit status: 0 when there were no wrong answers, no errors seen by callers, no secrets found and the
accounting held (hits + misses + bypasses = requests, upstream calls = misses less cancelled callers, an
idle connection pool, no task left over); 1 otherwise; 2 when redis-server is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import leftover_tasks, other_tasks
from redis_server import RedisServer
from reliability_support import (
    SECRET_API_KEY,
    SECRET_REDIS_PASSWORD,
    EchoUpstream,
    FaultProxy,
    LogCapture,
    Rig,
    in_use_connections,
    secrets_in,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache import CacheStats

TENANTS = 24
PROMPTS = 40
PROCESSES = 2
WORKERS = 48
CANCEL_RATE = 0.08
STORE_TIMEOUT = 0.05
PLANTED = (SECRET_API_KEY, SECRET_REDIS_PASSWORD)


@dataclass
class Fault:
    at: float  # fraction of the traffic phase
    name: str
    action: Callable[[], Awaitable[None]]
    done_at: float | None = None


@dataclass
class Totals:
    latencies: list[float] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


def protect(server: RedisServer) -> None:
    """Require the planted password (set at run time: the test helper pings without one on start)."""
    reply = server.command("CONFIG", "SET", "requirepass", SECRET_REDIS_PASSWORD)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"CONFIG SET requirepass failed: {reply!r}")


def url_for(port: int) -> str:
    return f"redis://default:{SECRET_REDIS_PASSWORD}@127.0.0.1:{port}/0"


def schedule(server: RedisServer, proxy: FaultProxy) -> list[Fault]:
    async def slow() -> None:
        proxy.delay = 0.3

    async def fast() -> None:
        proxy.delay = 0.0

    async def kill() -> None:
        server.kill()

    async def restart() -> None:
        await asyncio.to_thread(server.start)
        protect(server)

    async def cut() -> None:
        proxy.cut_replies(after=200, times=40)

    async def reset() -> None:
        await asyncio.to_thread(proxy.reset_all)

    async def pause() -> None:
        raw = aioredis.Redis.from_url(url_for(server.port))
        try:
            await raw.client_pause(1500, all=True)
        finally:
            await raw.aclose()

    return [
        Fault(0.10, "replies delayed 0.3 s (past the 50 ms deadline)", slow),
        Fault(0.22, "replies back to normal", fast),
        Fault(0.35, "Redis SIGKILLed", kill),
        Fault(0.47, "Redis restarted (empty)", restart),
        Fault(0.58, "40 replies reset mid-value", cut),
        Fault(0.68, "every connection reset", reset),
        Fault(0.78, "CLIENT PAUSE 1.5 s", pause),
    ]


async def traffic(rigs: list[Rig], seconds: float, faults: list[Fault], totals: Totals) -> None:
    rng = random.Random(42)
    started = time.monotonic()
    stop = started + seconds
    # Zipf-like popularity, so most requests are repeats (hits) and some are rare (misses).
    weights = [1 / (rank + 1) for rank in range(PROMPTS)]
    planted = {"metadata": {"api_key": SECRET_API_KEY}}

    async def one(rig: Rig) -> None:
        tenant = f"tenant-{rng.randrange(TENANTS)}"
        prompt = f"prompt-{rng.choices(range(PROMPTS), weights)[0]}"
        began = time.monotonic()
        if rng.random() < CANCEL_RATE:
            task = asyncio.create_task(rig.ask(tenant, prompt, extra=planted))
            await asyncio.sleep(rng.uniform(0, 0.02))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        await rig.ask(tenant, prompt, extra=planted)
        totals.latencies.append(time.monotonic() - began)

    async def worker(i: int) -> None:
        rig = rigs[i % len(rigs)]
        while time.monotonic() < stop:
            await one(rig)

    async def injector() -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, started + fault.at * seconds - time.monotonic()))
            await fault.action()
            fault.done_at = time.monotonic() - started
            totals.faults.append(f"{fault.done_at:5.1f} s  {fault.name}")

    await asyncio.gather(injector(), *(worker(i) for i in range(WORKERS)))


async def scan_redis(url: str) -> list[bytes]:
    raw = aioredis.Redis.from_url(url)
    try:
        out: list[bytes] = []
        async for key in raw.scan_iter(count=1000):
            out.append(key)
            if await raw.type(key) == b"string":
                value = await raw.get(key)
                out.append(value if isinstance(value, bytes) else b"")
        return out
    finally:
        await raw.aclose()


def accounting(rigs: list[Rig], stats: list[CacheStats]) -> list[str]:
    problems = []
    for i, (rig, st) in enumerate(zip(rigs, stats, strict=True)):
        try:
            rig.check_ledger(st)
        except AssertionError as exc:
            problems.append(f"process {i}: {exc}")
    return problems


@dataclass
class Outcome:
    """Everything one run produced, gathered before Redis and the proxy go away."""

    rigs: list[Rig]
    stats: list[CacheStats]
    elapsed: float
    in_use: int
    tasks_left: list[str]
    scanned: list[bytes | str]  # every Redis key and value, log line and repr, for the secret scan
    problems: list[str]


async def run(server: RedisServer, seconds: float, totals: Totals, capture: LogCapture) -> Outcome:
    tasks_before = other_tasks()
    with FaultProxy(server.port, seed=7) as proxy:
        served: dict[int, tuple[str | None, str]] = {}  # answers given by any process's upstream
        rigs = [
            Rig.open(
                url_for(proxy.port),
                raw_url=url_for(server.port),
                upstream=EchoUpstream(delay=0.002, jitter=0.01, seed=p, served=served),
                store_timeout=STORE_TIMEOUT,
                breaker_cooldown=0.5,
                lock_wait=1.0,
                keep_request=True,
            )
            for p in range(PROCESSES)
        ]
        started = time.monotonic()
        await traffic(rigs, seconds, schedule(server, proxy), totals)
        proxy.delay = 0.0
        await asyncio.sleep(0.6)  # past the last cool-down
        for rig in rigs:
            await rig.settle()
        elapsed = time.monotonic() - started
        stats = [rig.cache.stats() for rig in rigs]
        in_use = sum(in_use_connections(rig.cache) for rig in rigs)
        scanned: list[bytes | str] = [*await scan_redis(url_for(server.port))]
        for rig in rigs:
            store = rig.cache.store
            scanned += [repr(rig.cache), repr(store), repr(getattr(store, "client", ""))]
        scanned += [str(st) for st in stats]
        problems = accounting(rigs, stats)
        for rig in rigs:
            await rig.close()
        left = await leftover_tasks(tasks_before)
    scanned += capture.lines
    if in_use:
        problems.append(f"{in_use} pooled connections still in use")
    if left:
        problems.append(f"{len(left)} asyncio tasks left over: {left[:3]}")
    return Outcome(rigs, stats, elapsed, in_use, left, scanned, problems)


def report(outcome: Outcome, totals: Totals) -> int:
    """Print the table; the exit status."""
    rigs, stats = outcome.rigs, outcome.stats
    leaks = [t for t in outcome.scanned if secrets_in(t, PLANTED)]
    wrong = sum(len(rig.ledger.wrong) for rig in rigs)
    errors = sum(len(rig.ledger.errors) for rig in rigs)

    def total(name: str) -> int:
        return sum(int(getattr(st, name)) for st in stats)

    rows: list[tuple[str, object]] = [
        ("requests", total("requests")),
        ("hits", total("hits")),
        ("misses", total("misses")),
        ("bypasses", total("bypasses")),
        ("upstream calls", sum(rig.upstream.completed for rig in rigs)),
        ("cancelled by their callers", sum(rig.ledger.cancelled for rig in rigs)),
        ("wrong answers", wrong),
        ("errors seen by callers", errors),
        ("secrets found", len(leaks)),
        (
            "store errors / timeouts / skipped",
            f"{total('store_errors')} / {total('store_timeouts')} / {total('store_skipped')}",
        ),
        ("breaker opened", total("breaker_opened")),
        ("lock waits / lock timeouts", f"{total('lock_waits')} / {total('lock_timeouts')}"),
        ("corrupt entries seen", total("corrupt_entries")),
        ("connections in use at the end", outcome.in_use),
        ("asyncio tasks left over", len(outcome.tasks_left)),
        ("latency p50 / p99 / max (ms)", _latency(totals.latencies)),
        ("accounting", "ok" if not outcome.problems else f"{len(outcome.problems)} problem(s), below"),
    ]
    print(
        f"promptcache fault run: {outcome.elapsed:.1f} s of traffic, {PROCESSES} processes x "
        f"{WORKERS // PROCESSES} workers, {TENANTS} tenants x {PROMPTS} prompts, "
        f"{CANCEL_RATE:.0%} of requests cancelled at random"
    )
    print("faults:")
    for line in totals.faults:
        print("  " + line)
    width = max(len(name) for name, _ in rows)
    print(f"\n{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for problem in outcome.problems:
        print(f"\nACCOUNTING: {problem[:600]}")
    for leak in leaks[:5]:
        text = leak.decode(errors="replace") if isinstance(leak, bytes) else leak
        print(f"\nLEAK: {text[:300]}")
    for rig in rigs:
        for item in [*rig.ledger.wrong[:3], *rig.ledger.tracebacks[:1]]:
            print(f"\nPROBLEM: {item[-3000:]}")
    return 1 if wrong or errors or leaks or outcome.problems else 0


async def main_async(seconds: float) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found on PATH; install it (apt-get install redis-server)", file=sys.stderr)
        return 2
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    server = RedisServer(binary)
    totals = Totals()
    try:
        server.start()
        protect(server)
        outcome = await run(server, seconds, totals, capture)
    finally:
        server.cleanup()
        root.removeHandler(capture)
    return report(outcome, totals)


def _latency(latencies: list[float]) -> str:
    if not latencies:
        return "-"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:.1f} / {p99 * 1000:.1f} / {ordered[-1] * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the traffic phase (<= 45)")
    args = parser.parse_args()
    return asyncio.run(main_async(min(max(args.seconds, 2.0), 45.0)))


if __name__ == "__main__":
    sys.exit(main())
