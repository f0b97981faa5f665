"""Helpers shared by test modules: fake clocks, a fake provider call, chat bodies, polling, worker processes.

Each lived as a copy in two to four test modules; a fix to one copy now reaches every test.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    Run = Callable[..., tuple[int, str, str]]  # the `cli` fixture: promptcache ARGS -> (exit code, out, err)

    import pytest
    import redis

    from promptcache import PromptCache

MODEL: Final = "gpt-4o-mini"
ROOT: Final = Path(__file__).resolve().parents[1]
SINGLE_FLIGHT_WORKER: Final = Path(__file__).with_name("single_flight_worker.py")


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShiftedClock:
    """Real monotonic time plus an offset the test moves on: cool-downs pass at once, deadlines still run."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def chat_body(
    content: str | None = "4", finish_reason: str | None = "stop", *, rid: str = "1", **message: Any
) -> dict[str, Any]:
    """An OpenAI chat.completion body with id ``chatcmpl-<rid>``."""
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def answer_for(prompt: str) -> dict[str, Any]:
    """The body :meth:`Upstream.for_prompt` answers ``prompt`` with: it names the prompt."""
    return chat_body(f"answer to {prompt}", rid=prompt)


def check_answer(body: Any, prompt: str) -> None:
    """The body is the one the fake upstream gives ``prompt`` (and no other request's)."""
    assert isinstance(body, dict), body
    assert body["id"] == f"chatcmpl-{prompt}", (body["id"], prompt)
    assert body["choices"][0]["message"]["content"] == f"answer to {prompt}"


class Upstream:
    """A fake provider call: counts calls, answers ``answer <n>``, can block, fail or record cancellation.

    Called directly it is one call site; :meth:`for_prompt` gives per-prompt calls that share the count.
    """

    def __init__(
        self,
        make: Callable[[int], Any] | None = None,
        *,
        error: BaseException | None = None,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.make = make if make is not None else (lambda n: chat_body(f"answer {n}"))
        self.error = error
        self.delay = delay
        self.gate = gate
        self.calls = 0
        self.cancelled = 0

    async def _answer(self, make: Callable[[int], Any]) -> Any:
        self.calls += 1
        n = self.calls
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return make(n)

    async def __call__(self) -> Any:
        return await self._answer(self.make)

    def answer(self, prompt: str) -> dict[str, Any]:
        """What :meth:`for_prompt` calls answer (without counting a call)."""
        return answer_for(prompt)

    def for_prompt(self, prompt: str) -> Callable[[], Awaitable[Any]]:
        """A call that answers with :func:`answer_for` ``(prompt)``."""
        return lambda: self._answer(lambda _n: answer_for(prompt))


def waiters(cache: PromptCache) -> int:
    """Callers currently sharing an in-flight upstream call."""
    return sum(f.waiters for f in cache._flight.flights.values())


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], what: str = "condition", within: float = 5.0
) -> None:
    """Poll ``predicate`` (sync or async) on the event loop until it holds; fail after ``within`` seconds.

    ``within`` only keeps a broken test from hanging: it is no claim about speed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert loop.time() < deadline, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.002)


def run_single_flight_workers(
    counters: redis.Redis | redis.RedisCluster, prefix: str, processes: int, args: list[str]
) -> tuple[list[dict[str, Any]], int]:
    """Start ``processes`` copies of ``single_flight_worker.py`` with ``args``, release them together.

    ``counters`` is a client on the store the workers count in (``<prefix>ready``, ``<prefix>go``,
    ``<prefix>upstream``); it is closed here. Returns each worker's JSON output and the upstream calls
    counted across all of them.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    argv = [sys.executable, str(SINGLE_FLIGHT_WORKER), *args]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 30
        while int(counters.get(prefix + "ready") or 0) < processes:
            assert all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            assert time.monotonic() < deadline, "workers did not get ready"
            time.sleep(0.01)
        counters.set(prefix + "go", b"1")
        outputs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        upstream_count = int(counters.get(prefix + "upstream") or 0)
        counters.close()

    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    return [json.loads(out) for out, _ in outputs], upstream_count


def outputs(pytester: pytest.Pytester) -> dict[str, Any]:
    """What the inner tests noted since the last call (the log is consumed)."""
    path = pytester.path / "outputs.jsonl"
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    path.unlink()
    return dict(map(json.loads, lines))


def other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the running loop other than the current one."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current}


async def leftover_tasks(before: set[asyncio.Task[Any]], within: float = 3.0) -> list[str]:
    """Tasks started since ``before`` that are still not done after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = other_tasks() - before
        if not left or time.monotonic() > deadline:
            return sorted(repr(t.get_coro()) for t in left)
        await asyncio.sleep(0.01)


def attempts(within: float = 15.0, pause: float = 0.002) -> Iterator[int]:
    """Numbers 0, 1, ... for ``within`` seconds, pausing ``pause`` between them: for polling something a
    background thread does (the hot tier's subscription), where a count of tries would depend on speed."""
    deadline = time.monotonic() + within
    n = 0
    while time.monotonic() < deadline:
        yield n
        n += 1
        time.sleep(pause)


# --- write fences on a real store (tests/redis/test_fences_redis.py, tests/cluster) ------------------


def _text_of(body: Any) -> str:
    return str(body["choices"][0]["message"]["content"])


def _from_url(url: str, **config: Any) -> PromptCache:
    from promptcache import PromptCache  # noqa: PLC0415 - helpers import promptcache lazily

    return PromptCache.from_url(url, **config)


FENCE_REQUEST: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "fenced?"}]}


async def fence_race(url: str, change: Callable[[PromptCache], Awaitable[object]]) -> list[str | None]:
    """Two caches on ``url`` stand for two processes: A's miss in flight, B's ``change``, then A's answer
    (superseded: write fences). What A (twice: the second may come from its tier) and B read after."""
    a, b = _from_url(url, namespace="fence"), _from_url(url, namespace="fence")
    try:
        gate, started = asyncio.Event(), asyncio.Event()

        async def held() -> dict[str, Any]:  # A's upstream call, answering once the gate opens
            started.set()
            await gate.wait()
            return chat_body("old")

        pending = asyncio.create_task(a.get_or_call(FENCE_REQUEST, held, agent_id="a"))
        await started.wait()
        await change(b)
        await b.drain()
        gate.set()
        assert _text_of(await pending) == "old"
        await a.drain()
        assert a.stats().superseded == 1
        seen: list[str | None] = []
        for cache in (a, a, b):  # A twice: its second read may come from its hot tier
            found = await cache.get(FENCE_REQUEST, agent_id="a")
            seen.append(None if found is None else _text_of(found))
        return seen
    finally:
        await a.aclose()
        await b.aclose()


async def fence_join_race(url: str, change: Callable[[PromptCache], Awaitable[object]]) -> tuple[str, str]:
    """A's miss in flight; B's ``change``; once A's hot tier has applied what Redis pushed since, a later
    identical caller in A: what the first and the later caller got (the later one must not join the older
    call: it is answered while that call is still held)."""
    a, b = _from_url(url, namespace="joins"), _from_url(url, namespace="joins")
    warm: dict[str, Any] = {**FENCE_REQUEST, "messages": [{"role": "user", "content": "warm"}]}

    async def warm_text() -> str | None:
        found = await a.get(warm, agent_id="other")
        return None if found is None else _text_of(found)

    async def served() -> bool:
        await warm_text()
        return a.stats().tier_hits > 0

    async def applied() -> bool:
        return await warm_text() == "w2"

    try:
        await a.set(warm, chat_body("w1"), agent_id="other")
        await until(served, "A's tier serving (its subscription connects in the background)", within=15)
        gate, started = asyncio.Event(), asyncio.Event()

        async def held() -> dict[str, Any]:
            started.set()
            await gate.wait()
            return chat_body("old")

        async def later_call() -> dict[str, Any]:
            return chat_body("later")

        pending = asyncio.create_task(a.get_or_call(FENCE_REQUEST, held, agent_id="a"))
        await started.wait()
        await change(b)
        await b.set(warm, chat_body("w2"), agent_id="other")  # pushed after the change's fence
        await b.drain()
        await until(applied, "A's tier applying what Redis pushed")
        later = asyncio.create_task(a.get_or_call(FENCE_REQUEST, later_call, agent_id="a"))
        await until(later.done, "the later caller answered while the older call is held")
        gate.set()
        return _text_of(await pending), _text_of(later.result())
    finally:
        await a.aclose()
        await b.aclose()


async def fence_refresh(b: PromptCache) -> None:
    async def new() -> dict[str, Any]:
        return chat_body("new")

    await b.get_or_call(FENCE_REQUEST, new, agent_id="a", refresh=True)


async def fence_invalidate(b: PromptCache) -> None:
    assert await b.invalidate("a") == 0


class ScriptedPushes:
    """A hot tier's invalidation source, scripted: the session number and the keys the store pushed as
    changed since the last poll."""

    def __init__(self) -> None:
        self.session = 1
        self.pending: list[str] | None = []
        self.closed = False
        self.polls = 0

    def push(self, *keys: str) -> None:
        if self.pending is not None:
            self.pending.extend(keys)

    def flush(self) -> None:
        self.pending = None

    def poll(self) -> tuple[int, list[str] | None]:
        self.polls += 1
        out, self.pending = self.pending, []
        return self.session, out

    def close(self) -> None:
        self.closed = True
