"""Issue #13, rows 1 and 2: one cache serves every event loop and thread that calls it.

Row 1: a module-level cache used from successive ``asyncio.run(...)`` calls (scripts, Celery-style workers,
pytest-asyncio's per-test loops). Row 2: one cache shared at the same time by coroutines on the main
thread's loop and by a sync SDK client used from threads. Both for Redis, SQLite and memory; "nothing
lost": no caller error, every answer right, upstream calls == misses, no store error, no task left over.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest
from fake_llm import openai_clients
from helpers import leftover_tasks, other_tasks
from loops_support import (
    AGENT,
    MODEL,
    Upstream,
    answer_is_for,
    chat_request,
    fail_cleanly,
)

from promptcache import PromptCache
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fake_llm import FakeLLM

ROW1 = "issue #13: a module-level PromptCache used from two successive asyncio.run(...) stops serving hits"
ROW2 = (
    "issue #13: one cache shared by the main thread's loop and a sync SDK client in threads raises "
    "'attached to a different loop' to callers"
)


def _stores(reason: str, *, xfail: tuple[str, ...]) -> list[Any]:
    marks: dict[str, list[pytest.MarkDecorator]] = {"redis": [pytest.mark.redis], "sqlite": [], "memory": []}
    for kind in xfail:
        marks[kind].append(pytest.mark.xfail(strict=True, reason=reason))
    return [pytest.param(kind, marks=marks[kind], id=kind) for kind in ("redis", "sqlite", "memory")]


BATCH = [f"batch question {i}" for i in range(20)]


async def _ask(cache: PromptCache, upstream: Upstream, prompt: str) -> Any:
    body = await cache.get_or_call(chat_request(prompt), upstream.call_for(prompt), agent_id=AGENT)
    assert answer_is_for(body, prompt), (prompt, body)
    return body


@pytest.mark.parametrize("kind", _stores(ROW1, xfail=()))
def test_module_level_cache_serves_successive_asyncio_runs(kind: str, url: str) -> None:
    """A cache created once and used from five successive ``asyncio.run`` calls stores in the first and
    serves hits in every later one, with no store error and no lost write."""
    fail_cleanly(lambda: _successive_runs(kind, url))


BUSY = [f"written while the file is busy {i}" for i in range(5)]


def _hold_write_lock(path: str, seconds: float) -> threading.Timer:
    """Another process writing to the SQLite file: take its write lock, give it back ``seconds`` later."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        conn.execute("COMMIT")
        conn.close()

    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()
    return timer


async def _busy_script_run(cache: PromptCache, upstream: Upstream, path: str) -> threading.Timer:
    """A script whose answers arrive while another process holds the file's write lock for a second; the
    loop ends as soon as the callers have their answers (their writes still waiting for the lock)."""
    arrived = 0
    all_in = asyncio.Event()
    held: list[threading.Timer] = []

    def call_for(prompt: str) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            nonlocal arrived
            arrived += 1
            if arrived == len(BUSY):  # every lock is taken and every call is in flight: the file gets busy
                held.append(_hold_write_lock(path, 1.0))
                all_in.set()
            await all_in.wait()
            return await upstream.call_for(prompt)()

        return call

    bodies = await asyncio.gather(
        *(cache.get_or_call(chat_request(p), call_for(p), agent_id=AGENT) for p in BUSY)
    )
    assert all(answer_is_for(b, p) for b, p in zip(bodies, BUSY, strict=True)), bodies
    return held[0]


def _successive_runs(kind: str, url: str) -> None:
    cache = PromptCache.from_url(url, store_timeout=2.0)  # generous: this is about loops, not deadlines
    upstream = Upstream()
    stored = ["first question"]

    async def script_run() -> None:
        # A script: one call, then the loop ends at once (no drain, no close).
        await _ask(cache, upstream, "first question")

    async def worker_run(expect_hits: bool) -> None:
        before = other_tasks()
        hits = cache.stats().hits
        await asyncio.gather(*(_ask(cache, upstream, p) for p in stored))
        await asyncio.gather(*(_ask(cache, upstream, p) for p in BATCH))
        expected = len(stored) + (len(BATCH) if expect_hits else 0)
        assert cache.stats().hits - hits == expected, cache.stats()
        assert await leftover_tasks(before) == []

    asyncio.run(script_run())
    if kind == "sqlite":
        path = url.removeprefix("sqlite:///")
        asyncio.run(_busy_script_run(cache, upstream, path)).join(10)  # then wait for the file to be free
        stored += BUSY
    asyncio.run(worker_run(expect_hits=False))  # what the scripts stored hits; the batch is stored
    for _ in range(3):
        asyncio.run(worker_run(expect_hits=True))
    stats = cache.stats()
    assert upstream.calls == stats.misses == stats.upstream_calls == len(stored) + len(BATCH), stats
    assert (stats.store_errors, stats.store_timeouts, stats.store_skipped) == (0, 0, 0), stats
    assert stats.hits + stats.misses == stats.requests, stats
    asyncio.run(cache.aclose())
    if kind == "sqlite":
        # Nothing written in any of those loops was lost: a new cache on the same file hits them all.
        async def reread() -> None:
            async with PromptCache.from_url(url, store_timeout=2.0) as again:
                for prompt in [*stored, *BATCH]:
                    await _ask(again, upstream, prompt)
                assert again.stats().hits == len(stored) + len(BATCH), again.stats()

        asyncio.run(reread())
        assert upstream.calls == len(stored) + len(BATCH)


class _Callers:
    """Sync callers on threads and async callers on one loop asking the same prompts; what they got."""

    def __init__(self, server: FakeLLM, cache: PromptCache, prompts: list[str]) -> None:
        self.prompts = prompts
        self.sync_client, self.async_client = openai_clients(server, max_retries=0)
        wrap(self.sync_client, cache, agent_id=AGENT)
        wrap(self.async_client, cache, agent_id=AGENT)
        self.errors: list[str] = []
        self.wrong: list[str] = []
        self.answered = 0
        self._lock = threading.Lock()

    def record(self, text: str | None, prompt: str) -> None:
        with self._lock:
            self.answered += 1
            if not answer_is_for({"choices": [{"message": {"content": text}}]}, prompt):
                self.wrong.append(f"{text!r} for {prompt!r}")

    def sync_worker(self, rounds: int) -> None:
        for _ in range(rounds):
            for prompt in self.prompts:
                try:
                    reply = self.sync_client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt}]
                    )
                except Exception as exc:  # noqa: BLE001 - every caller error is the finding
                    self.errors.append(f"sync: {exc!r}"[:300])
                else:
                    self.record(reply.choices[0].message.content, prompt)

    async def async_one(self, prompt: str) -> None:
        try:
            reply = await self.async_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}]
            )
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"async: {exc!r}"[:300])
        else:
            self.record(reply.choices[0].message.content, prompt)

    async def run(self, threads: int, rounds: int) -> None:
        workers = [
            threading.Thread(target=self.sync_worker, args=(rounds,), name=f"sync-caller-{i}")
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for _ in range(rounds):
            await asyncio.gather(*(self.async_one(p) for p in self.prompts))

        def join() -> None:
            for worker in workers:
                worker.join(60)

        await asyncio.to_thread(join)
        assert not any(w.is_alive() for w in workers), "a sync caller hung"


@pytest.mark.parametrize("kind", _stores(ROW2, xfail=()))
def test_async_loop_and_sync_client_threads_share_one_cache(kind: str, url: str, server: FakeLLM) -> None:
    """Coroutines on the main thread's loop and a sync OpenAI client used from three threads share one
    cache at once: no caller error, every answer right, upstream calls == misses, and closing works."""
    fail_cleanly(lambda: _shared_by_loop_and_threads(url, server))


def _shared_by_loop_and_threads(url: str, server: FakeLLM) -> None:
    cache = PromptCache.from_url(url, store_timeout=2.0)
    callers = _Callers(server, cache, [f"shared question {i}" for i in range(10)])

    async def main() -> None:
        before = other_tasks()
        await callers.run(threads=3, rounds=3)
        await callers.async_client.close()
        await cache.aclose()
        assert await leftover_tasks(before) == []

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
        cache.close()  # the sync twin, from the thread the sync callers used: idempotent, no crash
        stats = cache.stats()
        assert callers.errors == [], callers.errors[:3]
        assert callers.wrong == [], callers.wrong[:3]
        assert callers.answered == (3 + 1) * 3 * len(callers.prompts)  # three sync threads and the loop
        assert server.calls == stats.upstream_calls == stats.misses, (server.calls, stats)
        assert stats.hits + stats.misses == stats.requests == callers.answered, stats
        assert (stats.store_errors, stats.store_timeouts) == (0, 0), stats
    finally:
        callers.sync_client.close()
