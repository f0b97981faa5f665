"""How soon another process's change reaches this process's hot tier, and whether an old answer is ever read.

Run it with ``make bench``, or alone: ``.venv/bin/python benchmarks/tier_invalidation.py``. It starts its own
redis-server on a free loopback port (the test suite's :class:`RedisServer`) and two processes on it:

* A (this script run with ``--reader URL``, its own interpreter and cache, default config: the tier on)
  holds a few entries in its tier and reads them in a loop (``PromptCache.get``), round robin, and reports
  every change of answer it reads for a key: the new answer, when that read started and returned, and when
  the last read of the previous answer started;
* B (this process) changes one thing at a time, each once A holds the current answers in its tier:
  overwrites an entry (``cache.set``), refreshes one (``get_or_call(..., refresh=True)``, then ``drain()``:
  the write is done), or invalidates the agent (``cache.invalidate(agent_id=...)``: every entry of A
  becomes a miss), after which it writes every entry again ("restore", A reads misses until then, so
  these are not tier reads).

For every change: the time from B's call returning to the return of A's first read that sees the change
(both on ``CLOCK_MONOTONIC``, one clock for every process of the machine), p50/p99 per kind and overall.
Wrong reads are counted and printed (each must be 0): A reading an answer other than the current one after
it had read the current one; and A returning the old answer from a read that began after B's call had
returned (what the README promises never happens). Aim of issue 17: seen within 5 ms p99 on loopback.
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisServer

from promptcache import CacheConfig, PromptCache

AGENT = "inv-bench"
KEYS = 8
OVERWRITES = 240
REFRESHES = 240
INVALIDATIONS = 20
GAP_S = (0.001, 0.004)  # B's pause between changes: A's tier holds the new answer again by then
SEEN_WITHIN_S = 2.0  # a change A has not seen by then is counted as not seen
AIM_P99_MS = 5.0
TIER = "hot_tier_bytes" in CacheConfig.__dataclass_fields__
ABSENT = "-"


def request_for(k: int) -> dict[str, Any]:
    question = f"Invalidation benchmark, question {k}: where is order 18-{k:04d}?"
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], "temperature": 0}


def answer(token: str) -> dict[str, Any]:
    return {
        "id": token,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"Answer {token}.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }


def tier_hits(cache: PromptCache) -> int:
    return int(getattr(cache.stats(), "tier_hits", 0))


# --- process A ---------------------------------------------------------------------------------------


async def reader(url: str) -> None:
    """Read the entries round robin; print ``ready`` once every one comes from the tier, then one line per
    change of answer: ``key token read_start read_end last_old_read_start`` (monotonic ns)."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stop = asyncio.ensure_future(stdin.readline())  # B writes a line (or closes the pipe) to stop A
    cache = PromptCache.from_url(url)
    requests = [request_for(k) for k in range(KEYS)]
    clock = time.monotonic_ns
    last = [ABSENT] * KEYS
    last_start = [0] * KEYS
    out = sys.stdout

    async def read(k: int) -> tuple[str, int, int]:
        started = clock()
        body = await cache.get(requests[k], agent_id=AGENT)
        return (ABSENT if body is None else str(body["id"])), started, clock()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # warm-up: the subscription goes live in the background
        before = tier_hits(cache)
        for k in range(KEYS):
            last[k], last_start[k], _ = await read(k)
        if tier_hits(cache) - before == KEYS:
            break
        await asyncio.sleep(0.01)
    out.write("ready\n")
    out.flush()
    start_stats, start_tier = cache.stats(), tier_hits(cache)
    reads = 0
    while not stop.done():
        for k in range(KEYS):
            token, started, ended = await read(k)
            if token != last[k]:
                out.write(f"{k} {token} {started} {ended} {last_start[k]}\n")
                out.flush()
                last[k] = token
            last_start[k] = started
        reads += KEYS
        if reads % 256 == 0:
            await asyncio.sleep(0)  # let the stop line (and the cache's own tasks) in
    end = cache.stats()
    out.write(
        f"stats {reads} {end.hits - start_stats.hits} {tier_hits(cache) - start_tier} "
        f"{end.misses - start_stats.misses} {end.store_timeouts + end.store_errors}\n"
    )
    out.flush()
    await cache.aclose()


# --- process B ---------------------------------------------------------------------------------------


class Watch:
    """A's reports, matched against what B has changed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.truth = [ABSENT] * KEYS
        self.latency: dict[str, list[float]] = {}
        self.after_seen = 0  # A read another answer after it had read the current one
        self.after_return = 0  # A read the old answer on a read begun after B's call returned
        self.unseen = 0
        self.stats = ""
        self.calls: list[float] = []  # B's own calls, start to return (ms): this machine's scheduling noise

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), SEEN_WITHIN_S)
        if not raw:
            raise EOFError("process A ended")
        return raw.decode().strip()

    async def expect(self, kind: str, changes: dict[int, str], returned: int) -> None:
        """Wait until A reads each changed key's new answer (``returned``: when B's call returned)."""
        for k, token in changes.items():
            self.truth[k] = token
        pending = dict(changes)
        while pending:
            try:
                text = await self.line()
            except TimeoutError:
                self.unseen += len(pending)
                return
            k_text, token, _started, ended, old_started = text.split()
            k = int(k_text)
            if token != self.truth[k] or k not in pending:
                self.after_seen += 1  # a change of answer B did not make
                continue
            del pending[k]
            self.latency.setdefault(kind, []).append((int(ended) - returned) / 1e6)
            if int(old_started) > returned:
                self.after_return += 1


async def writer(url: str) -> Watch:
    cache = PromptCache.from_url(url)
    gen = 0
    for k in range(KEYS):
        assert await cache.set(request_for(k), answer(f"g{gen}-k{k}"), agent_id=AGENT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--reader",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watch = Watch(proc)
    watch.truth = [f"g{gen}-k{k}" for k in range(KEYS)]
    assert proc.stdout is not None
    ready = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert ready.strip() == b"ready", ready
    plan = ["overwrite"] * OVERWRITES + ["refresh"] * REFRESHES + ["invalidate"] * INVALIDATIONS
    random.Random(17).shuffle(plan)
    rng = random.Random(4)
    clock = time.monotonic_ns
    for kind in plan:
        await asyncio.sleep(rng.uniform(*GAP_S))
        gen += 1
        called = clock()
        if kind == "invalidate":
            await cache.invalidate(agent_id=AGENT)
            returned = clock()
            watch.calls.append((returned - called) / 1e6)
            await watch.expect(kind, dict.fromkeys(range(KEYS), ABSENT), returned)
            for k in range(KEYS):
                token = f"g{gen}-k{k}"
                assert await cache.set(request_for(k), answer(token), agent_id=AGENT)
                await watch.expect("restore", {k: token}, clock())
            continue
        k = rng.randrange(KEYS)
        token = f"g{gen}-k{k}"
        if kind == "overwrite":
            assert await cache.set(request_for(k), answer(token), agent_id=AGENT)
        else:

            async def upstream(token: str = token) -> dict[str, Any]:
                return answer(token)

            await cache.get_or_call(request_for(k), upstream, agent_id=AGENT, refresh=True)
            await cache.drain()
        returned = clock()
        watch.calls.append((returned - called) / 1e6)
        await watch.expect(kind, {k: token}, returned)
    assert proc.stdin is not None
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    while True:  # the last lines: any late change of answer, then the stats
        text = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if text.startswith("stats"):
            watch.stats = text
            break
        watch.after_seen += 1
    await proc.wait()
    await cache.aclose()
    return watch


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(watch: Watch) -> None:
    print(f"{KEYS} entries; changes one at a time, {GAP_S[0] * 1e3:.0f}-{GAP_S[1] * 1e3:.0f} ms apart")
    print(f"  {'change':<12}{'seen':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    every: list[float] = []
    for kind in ("overwrite", "refresh", "invalidate", "restore"):
        values = watch.latency.get(kind, [])
        if kind != "restore":
            every += values
        if values:
            p50, p99 = pct(values, 0.5), pct(values, 0.99)
            print(f"  {kind:<12}{len(values):>6}{p50:>9.3f}{p99:>9.3f}{max(values):>9.3f}")
    print("  (restore: writes after an invalidation, read by A as misses until then: not tier reads;")
    print(f"  invalidate: each of the {KEYS} entries, A reading them round robin, each miss a store read)")
    calls = watch.calls
    print(
        f"for scale, B's own calls (overwrite, refresh, invalidate; start to return): p50 "
        f"{pct(calls, 0.5):.3f} ms, p99 {pct(calls, 0.99):.3f} ms, max {max(calls):.3f} ms"
    )
    _, reads, hits, tier, misses, faults = watch.stats.split()
    print(
        f"process A: {int(reads):,} reads, {int(hits):,} hits ({int(tier):,} from the tier), "
        f"{int(misses):,} misses, {faults} store timeouts/errors"
    )
    print(f"wrong reads: another answer after the current one was read: {watch.after_seen} (must be 0)")
    print(
        f"wrong reads: the old answer, read begun after the change returned: {watch.after_return} (must be 0)"
    )
    print(f"changes A never saw within {SEEN_WITHIN_S:.0f} s: {watch.unseen} (must be 0)")
    if every:
        p99 = pct(every, 0.99)
        verdict = "met" if p99 <= AIM_P99_MS else "NOT met"
        print(
            f"Aim of issue 17: a change seen by another process's tier within {AIM_P99_MS:.0f} ms p99: "
            f"p50 {pct(every, 0.5):.3f} ms, p99 {p99:.3f} ms over {len(every)} tier reads: {verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reader", metavar="URL", help="run as process A against this Redis")
    args = parser.parse_args()
    if args.reader:
        asyncio.run(reader(args.reader))
        return 0
    if not TIER:
        print("tier invalidation: n/a (tier not available)")
        return 0
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found on PATH; install it with `apt-get install redis-server`")
        return 2
    started = time.monotonic()
    with RedisServer(binary) as server:
        watch = asyncio.run(writer(server.url))
    report(watch)
    print(f"total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
