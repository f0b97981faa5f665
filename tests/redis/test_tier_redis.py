"""The hot tier against a real redis-server: another process's writes reach this process's tier through
Redis, and nothing a lost subscription may have missed is ever served. Every test counts wrong answers.

Process A is ``tests/tier_worker.py`` (its own interpreter, its own tier); process B is the test itself.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
from helpers import FakeClock, attempts, chat_body
from tier_worker import AGENT, request_for

from promptcache import PromptCache
from promptcache.backends._tracking import CLIENT_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from redis_server import RedisServer

pytestmark = pytest.mark.redis

NS = "tier"
WORKER = Path(__file__).resolve().parents[1] / "tier_worker.py"


class Worker:
    """Process A: a cache with its own tier, driven line by line."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, NS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(WORKER.parents[1]),
        )

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"the worker died on {line!r}"
        out: dict[str, Any] = orjson.loads(reply)
        return out

    def get(self, prompt: str) -> tuple[str | None, int]:
        out = self.ask(f"get {prompt}")
        return out["value"], out["tier_hits"]

    def warm(self, prompt: str, want: str) -> None:
        """Read until A answers ``prompt`` from its tier (its subscription connects in the background)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            value, before = self.get(prompt)
            assert value == want
            value, after = self.get(prompt)
            assert value == want
            if after > before:
                return
        pytest.fail("process A never served from its tier")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def worker(redis_url: str) -> Iterator[Worker]:
    w = Worker(redis_url)
    yield w
    w.close()


def b_side(url: str, action: Callable[[PromptCache], Any]) -> Any:
    async def go() -> Any:
        cache = PromptCache.from_url(url, namespace=NS, hot_tier_bytes=0)
        try:
            return await action(cache)
        finally:
            await cache.aclose()

    return asyncio.run(go())


def test_another_process_overwrite_refresh_and_invalidation_reach_this_tier(
    worker: Worker, redis_url: str
) -> None:
    """After B's write returns, A's next read is the new value or a miss, never the old one."""
    wrong = 0
    for round_ in range(20):
        request = request_for(f"q{round_}")

        async def write(cache: PromptCache, content: str, request: dict[str, Any] = request) -> Any:
            return await cache.set(request, chat_body(content), agent_id=AGENT)

        async def refresh(cache: PromptCache, request: dict[str, Any] = request) -> Any:
            # The write finishes before B's cache closes.
            return await cache.get_or_call(request, _answering("v3"), agent_id=AGENT, refresh=True)

        prompt = f"q{round_}"
        b_side(redis_url, lambda c: write(c, "v1"))
        worker.warm(prompt, "v1")
        b_side(redis_url, lambda c: write(c, "v2"))  # overwrite
        wrong += worker.get(prompt)[0] != "v2"
        worker.warm(prompt, "v2")
        b_side(redis_url, refresh)  # B calls upstream again and replaces the entry
        wrong += worker.get(prompt)[0] != "v3"
        worker.warm(prompt, "v3")
        assert b_side(redis_url, lambda c: c.invalidate(AGENT)) >= 1  # invalidation of the agent
        wrong += worker.get(prompt)[0] is not None
    assert wrong == 0
    stats = worker.ask("stats")
    assert stats["tier_hits"] >= 60  # the tier was really serving between the changes


def _answering(content: str) -> Callable[[], Any]:
    async def call() -> dict[str, Any]:
        return chat_body(content)

    return call


def test_a_killed_subscription_empties_the_tier(worker: Worker, redis_url: str) -> None:
    b_side(redis_url, lambda c: c.set(request_for("k"), chat_body("v1"), agent_id=AGENT))
    worker.warm("k", "v1")
    client = redis.Redis.from_url(redis_url)
    assert client.execute_command("CLIENT", "KILL", "ID", _tier_client_id(client)) == 1  # type: ignore[no-untyped-call]
    # Killed, and the entry changed with nobody to tell A: A must not serve its kept copy.
    client.delete(*client.keys(f"{NS}:*"))
    assert worker.get("k")[0] is None
    b_side(redis_url, lambda c: c.set(request_for("k"), chat_body("v2"), agent_id=AGENT))
    worker.warm("k", "v2")  # A subscribes again and its tier serves again


def _tier_client_id(client: redis.Redis) -> int:
    found = [c for c in client.client_list() if c.get("name") == CLIENT_NAME]
    assert len(found) == 1, found
    return int(found[0]["id"])


def test_redis_restarted_empty_serves_nothing_stale(private_redis: Callable[..., RedisServer]) -> None:
    server = private_redis()
    w = Worker(server.url)
    try:
        b_side(server.url, lambda c: c.set(request_for("r"), chat_body("v1"), agent_id=AGENT))
        w.warm("r", "v1")
        server.stop()
        server.start()  # same port, empty
        wrong = sum(w.get("r")[0] is not None for _ in range(20))
        assert wrong == 0
        b_side(server.url, lambda c: c.set(request_for("r"), chat_body("v2"), agent_id=AGENT))
        w.warm("r", "v2")
    finally:
        w.close()


def test_a_flush_reaches_the_tier(worker: Worker, redis_url: str) -> None:
    b_side(redis_url, lambda c: c.set(request_for("f"), chat_body("v1"), agent_id=AGENT))
    worker.warm("f", "v1")
    redis.Redis.from_url(redis_url).flushall()
    assert worker.get("f")[0] is None


def test_the_entry_expiry_is_honoured_by_the_tier(redis_url: str) -> None:
    """An entry kept in the tier is not served past its expiry (the same instant as its store TTL)."""
    clock = FakeClock(start=1_000_000.0)

    async def go() -> tuple[Any, Any, int]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        cache._flight._clock = clock
        cache._writer._clock = clock
        await cache.set(request_for("e"), chat_body("v1"), agent_id=AGENT, ttl=60)
        await read_until_tiered(cache, "e")
        assert cache.stats().tier_hits, "never served from the tier"
        before = await cache.get(request_for("e"), agent_id=AGENT)
        clock.advance(61)
        after = await cache.get(request_for("e"), agent_id=AGENT)
        await cache.aclose()
        return before, after, cache.stats().tier_hits

    before, after, _ = asyncio.run(go())
    assert before is not None
    assert after is None


def test_this_process_sees_its_own_writes_at_once(redis_url: str) -> None:
    """A write, refresh or invalidation made here is never followed by the old answer from the tier."""

    async def go() -> int:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        wrong = 0
        for i in range(50):
            await cache.set(request_for("own"), chat_body(f"v{i}"), agent_id=AGENT)
            for _ in range(3):
                got = await cache.get(request_for("own"), agent_id=AGENT)
                wrong += got is not None and got["choices"][0]["message"]["content"] != f"v{i}"
        await cache.invalidate(AGENT)
        wrong += await cache.get(request_for("own"), agent_id=AGENT) is not None
        tier_hits = cache.stats().tier_hits
        await cache.aclose()
        assert tier_hits > 0
        return wrong

    assert asyncio.run(go()) == 0


def test_a_tier_hit_makes_no_store_call(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    def gets() -> int:
        return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    async def go() -> tuple[int, int]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        await cache.set(request_for("n"), chat_body("v1"), agent_id=AGENT)
        await read_until_tiered(cache, "n")
        before_hits, before_gets = cache.stats().tier_hits, gets()
        for _ in range(100):
            assert await cache.get(request_for("n"), agent_id=AGENT) is not None
        served = cache.stats().tier_hits - before_hits
        await cache.aclose()
        return served, gets() - before_gets

    served, store_gets = asyncio.run(go())
    assert served == 100
    assert store_gets == 0


def test_hot_tier_off_reads_the_store_every_time(redis_url: str) -> None:
    async def go() -> int:
        cache = PromptCache.from_url(redis_url, namespace=NS, hot_tier_bytes=0)
        await cache.set(request_for("o"), chat_body("v1"), agent_id=AGENT)
        for _ in range(20):
            assert await cache.get(request_for("o"), agent_id=AGENT) is not None
        await cache.aclose()
        return cache.stats().tier_hits

    assert asyncio.run(go()) == 0
    assert not [c for c in redis.Redis.from_url(redis_url).client_list() if c.get("name") == CLIENT_NAME]


def _sdk_fixture() -> tuple[Any, Any, Any, Any]:
    import openai  # noqa: PLC0415
    from fake_llm import OPENAI_TEST_KEY, FakeLLM  # noqa: PLC0415

    from promptcache.openai import wrap  # noqa: PLC0415

    return openai, OPENAI_TEST_KEY, FakeLLM, wrap


MESSAGES: list[Any] = [{"role": "user", "content": "tiered question"}]


def _warm_sync(cache: PromptCache, client: Any) -> Any:
    from promptcache.integrations import _portal  # noqa: PLC0415

    first = client.chat.completions.create(
        model="gpt-test", messages=MESSAGES
    )  # the miss: the SDK's own parse
    _portal.call(cache.drain)
    for _ in attempts():
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        if cache.stats().tier_hits:
            return first
    pytest.fail("never served from the tier")


def test_a_sync_sdk_tier_hit_is_answered_on_the_callers_thread(redis_url: str) -> None:
    """A wrapped sync client's hot-tier hits equal the SDK's own parse of the upstream answer, and make no
    call through the portal thread."""
    openai, key, fake_llm, wrap = _sdk_fixture()
    from promptcache.integrations import _portal  # noqa: PLC0415

    with fake_llm() as server:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        client = wrap(openai.OpenAI(api_key=key, base_url=server.base_url), cache, agent_id=AGENT)
        portal_calls = 0
        real_call = _portal.call

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal portal_calls
            portal_calls += 1
            return real_call(*args, **kwargs)

        try:
            first = _warm_sync(cache, client)
            _portal.call = counting
            try:
                answers = [
                    client.chat.completions.create(model="gpt-test", messages=MESSAGES) for _ in range(20)
                ]
            finally:
                _portal.call = real_call
            assert portal_calls == 0
            assert cache.stats().tier_hits == 21
            assert all(a == first for a in answers)
            assert server.calls == 1
        finally:
            client.close()
            cache.close()


def test_a_sync_sdk_stream_tier_hit_is_answered_on_the_callers_thread(redis_url: str) -> None:
    """A streamed hot-tier hit on a sync client: the same chunks as the SDK parsed from upstream, and no
    call through the portal thread."""
    openai, key, fake_llm, wrap = _sdk_fixture()
    from promptcache.integrations import _portal  # noqa: PLC0415

    def events(client: Any) -> list[Any]:
        with client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True) as stream:
            return list(stream)

    with fake_llm() as server:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        client = wrap(openai.OpenAI(api_key=key, base_url=server.base_url), cache, agent_id=AGENT)
        try:
            recorded = events(client)
            _portal.call(cache.drain)
            for _ in attempts():
                if events(client) and cache.stats().tier_hits:
                    break
            else:
                pytest.fail("never served from the tier")
            real_call = _portal.call
            _portal.call = None  # type: ignore[assignment] # any hop would raise here
            try:
                replayed = [events(client) for _ in range(5)]
            finally:
                _portal.call = real_call
            assert replayed == [recorded] * 5
            assert server.calls == 1
        finally:
            client.close()
            cache.close()


def test_an_async_sdk_client_sees_another_process_overwrite_through_the_tier(redis_url: str) -> None:
    openai, key, fake_llm, wrap = _sdk_fixture()

    async def go(base_url: str) -> list[Any]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        client = wrap(openai.AsyncOpenAI(api_key=key, base_url=base_url), cache, agent_id=AGENT)
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        await cache.drain()
        for _ in attempts():
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            if cache.stats().tier_hits:
                break
        assert cache.stats().tier_hits == 1
        # Another worker refreshes the entry through its own client: upstream answers anew.
        other = PromptCache.from_url(redis_url, namespace=NS, hot_tier_bytes=0)
        other_client = wrap(openai.AsyncOpenAI(api_key=key, base_url=base_url), other, agent_id=AGENT)
        fresh = await other_client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, extra_headers={"x-promptcache-refresh": "1"}
        )
        await other_client.close()
        await other.aclose()  # its write is finished
        first_after = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert first_after == fresh
        out = [await client.chat.completions.create(model="gpt-test", messages=MESSAGES) for _ in range(5)]
        assert all(answer == fresh for answer in out)
        await client.close()
        await cache.aclose()
        return out

    with fake_llm() as server:
        after = asyncio.run(go(server.base_url))
        assert server.calls == 2  # the first miss and the refresh
    assert len(after) == 5


def test_a_forked_child_never_reads_its_parents_subscription(redis_url: str) -> None:
    """A cache made before a fork (gunicorn --preload): the child starts with an empty tier and its own
    subscription, and the parent's tier keeps working."""
    import os  # noqa: PLC0415

    cache = PromptCache.from_url(redis_url, namespace=NS)

    async def warm_here() -> int:
        await cache.set(request_for("fork"), chat_body("v1"), agent_id=AGENT)
        await read_until_tiered(cache, "fork")
        return cache.stats().tier_hits

    assert asyncio.run(warm_here()) == 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first read must not come from the inherited tier
        try:
            before = cache.stats().tier_hits
            got = asyncio.run(cache.get(request_for("fork"), agent_id=AGENT))
            ok = got is not None and cache.stats().tier_hits == before
            os.write(write_end, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    verdict = os.read(read_end, 2)
    os.waitpid(pid, 0)
    os.close(read_end)
    assert verdict == b"ok"
    assert asyncio.run(cache.get(request_for("fork"), agent_id=AGENT)) is not None
    assert cache.stats().tier_hits == 2  # the parent's tier still serves
    cache.close()


def test_a_read_begun_after_an_overwrite_returned_never_shares_an_older_read(redis_url: str) -> None:
    """Concurrent reads of one key share one GET, but not one sent before a change that has since
    returned: 8 readers against a writer (another cache, on its own thread and loop, as another process
    would be) never answer an entry older than the last write that returned before their read began.
    (From a user trial: 6-21 old answers per 8 s before.) The readers begin once the tier's subscription
    is live: before it, nothing tells a reader of another process's change, and reads share as with no
    tier (a landing run that started at once saw 7 readers join one GET sent before the change)."""
    import threading  # noqa: PLC0415

    current = [0]
    stop = threading.Event()

    def writer() -> None:
        async def go() -> None:
            cache = PromptCache.from_url(redis_url, namespace=NS, hot_tier_bytes=0)
            version = 0
            while not stop.is_set():
                version += 1
                if await cache.set(request_for("join"), chat_body(str(version)), agent_id=AGENT):
                    current[0] = version
                await asyncio.sleep(0.003)
            await cache.aclose()

        asyncio.run(go())

    async def readers() -> tuple[list[tuple[int, int]], int]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        await cache.set(request_for("live"), chat_body("live"), agent_id=AGENT)
        await read_until_tiered(cache, "live")  # the subscription is live
        thread = threading.Thread(target=writer)
        thread.start()
        old: list[tuple[int, int]] = []
        try:
            await until_async(lambda: current[0] > 0)
            end = time.monotonic() + 4

            async def read() -> None:
                while time.monotonic() < end:
                    floor = current[0]
                    got = await cache.get(request_for("join"), agent_id=AGENT)
                    if got is not None and int(got["choices"][0]["message"]["content"]) < floor:
                        old.append((int(got["choices"][0]["message"]["content"]), floor))
                    await asyncio.sleep(0)

            await asyncio.gather(*(read() for _ in range(8)))
        finally:
            stop.set()
            thread.join()
            await cache.aclose()
        return old, cache.stats().hits

    old, hits = asyncio.run(readers())
    assert hits > 100
    assert old == []


async def read_until_tiered(cache: PromptCache, prompt: str) -> None:
    """Read ``prompt`` until ``cache`` answers it from its tier (it subscribes in the background)."""
    for _ in attempts():
        await cache.get(request_for(prompt), agent_id=AGENT)
        if cache.stats().tier_hits:
            return
    pytest.fail(f"never served from the tier: {cache.stats()}")


async def until_async(predicate: Callable[[], bool]) -> None:
    for _ in attempts():
        if predicate():
            return
        await asyncio.sleep(0.005)
    pytest.fail("never happened")


def test_tier_hits_in_a_loop_let_the_event_loop_run_its_other_tasks(redis_url: str) -> None:
    """A tier hit awaits no I/O; a task answered from the tier again and again still gives the loop turns
    (a ticker task keeps running), as a Redis hit would at each GET. (From a user trial: 0 ticks in 300.)"""

    async def go() -> tuple[int, int]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        await cache.set(request_for("busy"), chat_body("v1"), agent_id=AGENT)
        await read_until_tiered(cache, "busy")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        for _ in range(320):
            await cache.get(request_for("busy"), agent_id=AGENT)
        during = ticks - before
        task.cancel()
        served = cache.stats().tier_hits
        await cache.aclose()
        return during, served

    during, served = asyncio.run(go())
    assert served > 300
    assert during >= 10
