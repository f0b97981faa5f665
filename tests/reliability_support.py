"""Helpers of the reliability suite (``tests/reliability/``) and of ``benchmarks/faults.py``.

- :class:`FaultProxy`: a loopback TCP proxy in front of a redis-server, on its own thread and event loop
  (so it never shows up in the cache's ``asyncio.all_tasks()``), that can delay or trickle replies, reset
  a connection part-way through a reply, refuse new connections and reset every open one.
- :class:`EchoUpstream`: a fake provider whose answer names the tenant, prompt and request id it was made
  for, and which remembers every answer it gave, so a test can tell a right answer from a misrouted one.
- :class:`Ledger` / :class:`Rig`: "nothing lost" bookkeeping. Every request carries an id (in the ``user``
  field, which is outside the key), every answer is checked against its caller, and :meth:`Rig.finish`
  checks ``hits + misses + bypasses == requests``, ``upstream calls == misses`` (less the callers that
  were cancelled or shared a failed call), an idle connection pool and no asyncio task left over.

Private attributes of redis-py used here (there is no public count of a pool's checked-out connections):
``ConnectionPool._in_use_connections``, read by ``in_use_connections`` to prove a test leaks no connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Self

import redis.asyncio as aioredis
from helpers import leftover_tasks, other_tasks

from promptcache import CacheConfig, PromptCache
from promptcache.backends.redis import RedisStore
from promptcache.metrics import CacheEvent, StoreEvent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence
    from types import TracebackType

    import openai
    from fake_llm import FakeLLM
    from helpers import ShiftedClock

    from promptcache import CacheKey, CacheStats
    from promptcache.metrics import Hook

MODEL: Final = "gpt-4o-mini"
AGENT: Final = "support-bot"
READ_CHUNK: Final = 65536

# Fake credentials planted by the secret tests and the benchmark (S105: fakes, on purpose). Each is unique
# enough that finding it anywhere (a Redis value, a cassette, a log line, a repr) can only mean it leaked.
SECRET_API_KEY: Final = "sk-proj-PLANTEDapikey0000000000000000"  # noqa: S105
SECRET_ANTHROPIC_KEY: Final = "sk-ant-api03-PLANTEDanthropic000000"  # noqa: S105
SECRET_ORG: Final = "org-PLANTEDorganization0000"  # noqa: S105
SECRET_PROJECT: Final = "proj_PLANTEDproject000000"  # noqa: S105
SECRET_COOKIE: Final = "PLANTEDcookie-session-0000"  # noqa: S105
SECRET_QUERY: Final = "PLANTEDquerytoken0000"  # noqa: S105
SECRET_REDIS_PASSWORD: Final = "PLANTEDredispass0000"  # noqa: S105
SECRETS: Final = (
    SECRET_API_KEY,
    SECRET_ANTHROPIC_KEY,
    SECRET_ORG,
    SECRET_PROJECT,
    SECRET_COOKIE,
    SECRET_QUERY,
    SECRET_REDIS_PASSWORD,
)


def secrets_in(text: str | bytes, planted: Iterable[str] = SECRETS) -> list[str]:
    """The planted secrets that occur in ``text`` (also as the distinctive ``PLANTED...`` part)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = []
    for secret in planted:
        marker = secret[secret.index("PLANTED") :]
        if secret in text or marker in text:
            found.append(secret)
    return found


# --- the fault-injecting TCP proxy ------------------------------------------------------------------


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN: the peer sees ECONNRESET, like a crash."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the peer: nothing left to reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port``, run on a thread of its own.

    Faults are attributes and methods the test thread may change at any time:

    - ``delay`` seconds (plus up to ``jitter`` more, random) are added before each reply chunk reaches
      the client; lowering ``delay`` releases chunks already held, so a large delay is a "pause";
    - ``trickle`` bytes: replies are forwarded in pieces of this size, each piece delayed;
    - :meth:`cut_replies`: the next replies longer than ``after`` bytes are forwarded only up to ``after``
      bytes, then the client connection is reset (a connection reset mid-value);
    - ``refuse``: new connections are reset at once; :meth:`reset_all` resets every open one.

    Bounded: at most ``max_connections`` at once (more are reset), reads of at most 64 KiB.
    """

    def __init__(
        self, target_port: int, *, max_connections: int = 256, seed: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.target_port = target_port
        self.host = host
        self.max_connections = max_connections
        self.delay = 0.0
        self.jitter = 0.0
        self.trickle: int | None = None
        self.refuse = False
        self.accepted = 0
        self.resets = 0
        self.held = 0  # reply chunks being held back right now (a test polls it to know a reply is waiting)
        self._cut_after = 0
        self._cuts_left = 0
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.target_port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):  # stopping is best effort: the loop may be gone already
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults, called from the test's thread ----------------------------------------------------------

    def cut_replies(self, after: int, times: int = 1) -> None:
        """Reset the connection of each of the next ``times`` replies longer than ``after`` bytes, after
        forwarding exactly ``after`` bytes of it."""
        with self._lock:
            self._cut_after, self._cuts_left = after, times

    @property
    def cuts_left(self) -> int:
        with self._lock:
            return self._cuts_left

    def reset_all(self) -> None:
        """Reset every open connection now (both sides)."""
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._reset_all(), loop).result(10)

    # -- the proxy's own loop ---------------------------------------------------------------------------

    async def _reset_all(self) -> None:
        for pair in list(self._pairs):
            self._drop(pair)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def _drop(self, pair: _Pair) -> None:
        if pair in self._pairs:
            self._pairs.discard(pair)
            self.resets += 1
        _reset(pair.client)
        _reset(pair.server)
        for task in pair.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.accepted += 1
        if self.refuse or len(self._pairs) >= self.max_connections:
            self.resets += 1
            _reset(cwriter)
            return
        try:
            sreader, swriter = await asyncio.open_connection(self.host, self.target_port)
        except OSError:  # the server is down: the client sees its connection reset
            self.resets += 1
            _reset(cwriter)
            return
        pair = _Pair(cwriter, swriter)
        self._pairs.add(pair)
        up = asyncio.create_task(self._pump(creader, swriter, pair, reply=False))
        down = asyncio.create_task(self._pump(sreader, cwriter, pair, reply=True))
        pair.tasks = [up, down]
        await asyncio.wait(pair.tasks, return_when=asyncio.FIRST_COMPLETED)
        if pair in self._pairs:
            self._pairs.discard(pair)
            for writer in (cwriter, swriter):
                with contextlib.suppress(Exception):  # closing a socket the peer already reset
                    writer.close()
        for task in pair.tasks:
            task.cancel()
        await asyncio.gather(*pair.tasks, return_exceptions=True)

    def _take_cut(self, size: int) -> int | None:
        with self._lock:
            if self._cuts_left > 0 and size > self._cut_after:
                self._cuts_left -= 1
                return self._cut_after
        return None

    async def _hold(self, arrived: float) -> None:
        # Re-reads `delay` while waiting, so lowering it releases held chunks.
        self.held += 1
        try:
            while True:
                extra = self._random.uniform(0, self.jitter) if self.jitter else 0.0
                remaining = arrived + self.delay + extra - time.monotonic()
                if remaining <= 0:
                    return
                await asyncio.sleep(min(remaining, 0.01))
        finally:
            self.held -= 1

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, *, reply: bool
    ) -> None:
        try:
            while data := await reader.read(READ_CHUNK):
                if not reply:
                    writer.write(data)
                    await writer.drain()
                    continue
                cut = self._take_cut(len(data))
                if cut is not None:
                    data = data[:cut]
                step = self.trickle or len(data) or 1
                for start in range(0, len(data), step):
                    await self._hold(time.monotonic())
                    writer.write(data[start : start + step])
                    await writer.drain()
                if cut is not None:
                    self._drop(pair)
                    return
        except (OSError, asyncio.IncompleteReadError):
            self._drop(pair)


# --- the echoing upstream ------------------------------------------------------------------------------


class UpstreamFailure(Exception):  # noqa: N818 - what a provider error looks like to the caller
    """An injected upstream error (a 429, a 500, a timeout): it must reach the caller, never be stored."""


def chat_request(prompt: str, rid: int) -> dict[str, Any]:
    """A chat request; ``user`` carries the request id (``user`` is on the key's deny-list)."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a terse support bot."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
        "user": f"rid-{rid}",
    }


def label(prompt: str) -> str:
    """How an answer names its prompt: the prompt itself, or its digest when the prompt is long."""
    if len(prompt) <= 200:
        return prompt
    return "sha256:" + hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def echo_body(tenant: str | None, prompt: str, rid: int, pad: int = 0) -> dict[str, Any]:
    """A chat.completion that names what it answers: tenant, prompt and the id of the request it served."""
    prompt = label(prompt)
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{tenant}|{prompt}", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        # Incompressible padding (hex of random bytes), so a large answer stays large once compressed.
        "x_echo": {
            "tenant": tenant,
            "prompt": prompt,
            "rid": rid,
            "pad": random.Random(rid).randbytes(pad // 2).hex(),
        },
    }


class EchoUpstream:
    """A fake provider. ``call_for(...)`` returns the zero-argument call ``get_or_call`` takes.

    Args:
        delay: Seconds each call takes (plus up to ``jitter`` more).
        pad: Characters of padding in each answer (to make large values).
        served: The record of answers given, shared by the upstreams of caches sharing one Redis.
    """

    def __init__(
        self,
        delay: float = 0.0,
        *,
        jitter: float = 0.0,
        pad: int = 0,
        seed: int = 0,
        served: dict[int, tuple[str | None, str]] | None = None,
    ) -> None:
        self.delay = delay
        self.jitter = jitter
        self.pad = pad
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        # Shared between the upstreams of several caches that share one Redis (one per "process").
        self.served: dict[int, tuple[str | None, str]] = {} if served is None else served
        self.fail_with: Callable[[str | None, str], BaseException | None] | None = None
        self.gate: asyncio.Event | None = None
        self._random = random.Random(seed)

    def call_for(self, tenant: str | None, prompt: str, rid: int) -> Callable[[], Awaitable[Any]]:
        async def call() -> dict[str, Any]:
            self.started += 1
            try:
                if self.gate is not None:
                    await self.gate.wait()
                pause = self.delay + (self._random.uniform(0, self.jitter) if self.jitter else 0.0)
                if pause:
                    await asyncio.sleep(pause)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            error = self.fail_with(tenant, prompt) if self.fail_with is not None else None
            if error is not None:
                self.failed += 1
                raise error
            self.completed += 1
            self.served[rid] = (tenant, label(prompt))
            return echo_body(tenant, prompt, rid, self.pad)

        return call

    def wrong(self, body: Any, tenant: str | None, prompt: str) -> str | None:
        """Why ``body`` is not a right answer for (tenant, prompt), or None when it is."""
        if not isinstance(body, dict) or not isinstance(body.get("x_echo"), dict):
            return f"not an answer: {str(body)[:80]!r}"
        echo = body["x_echo"]
        prompt = label(prompt)
        if (echo.get("tenant"), echo.get("prompt")) != (tenant, prompt):
            return f"answer for {echo.get('tenant')!r}/{echo.get('prompt')!r} given to {tenant!r}/{prompt!r}"
        if self.served.get(echo.get("rid")) != (tenant, prompt):
            return f"answer {echo.get('rid')!r} was never given by upstream for {tenant!r}/{prompt!r}"
        if body["choices"][0]["message"]["content"] != f"{tenant}|{prompt}":
            return "answer text does not match its echo"
        return None


# --- nothing lost ---------------------------------------------------------------------------------------


_REQUEST_IDS = itertools.count(1)


@dataclass
class Ledger:
    """What callers asked and got: every request is answered, cancelled or failed, and never wrongly."""

    requests: int = 0
    answered: int = 0
    cancelled: int = 0
    upstream_failures: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)

    @staticmethod
    def next_id() -> int:
        """A request id unique in this process (so several caches can share one record of answers)."""
        return next(_REQUEST_IDS)

    def summary(self) -> str:
        return (
            f"requests={self.requests} answered={self.answered} cancelled={self.cancelled} "
            f"upstream_failures={self.upstream_failures} wrong={self.wrong[:3]} errors={self.errors[:3]}"
        )


class StoreEvents:
    """A metrics hook keeping every store event (to see which unlocks did not go through)."""

    def __init__(self) -> None:
        self.events: list[StoreEvent] = []

    def __call__(self, event: CacheEvent) -> None:
        if isinstance(event, StoreEvent):
            self.events.append(event)

    def failed(self, operation: str) -> int:
        return sum(1 for e in self.events if e.operation == operation and e.outcome != "ok")


def in_use_connections(cache: PromptCache) -> int:
    """Connections the cache's Redis pool has handed out and not taken back."""
    store = cache.store
    if not isinstance(store, RedisStore):
        return 0
    return len(store.client.connection_pool._in_use_connections)


async def lock_keys(raw: aioredis.Redis) -> list[bytes]:
    return [k async for k in raw.scan_iter(match="*:lock:*", count=1000)]


class Rig:
    """A cache, an echoing upstream and a ledger; :meth:`finish` checks that nothing was lost.

    Args:
        cache: The cache under test (a Redis one, usually).
        upstream: The fake provider.
        raw_url: The real server (not the proxy), for looking at keys; None when there is none.
    """

    def __init__(
        self,
        cache: PromptCache,
        upstream: EchoUpstream | None = None,
        *,
        raw_url: str | None = None,
        events: StoreEvents | None = None,
    ) -> None:
        self.cache = cache
        self.upstream = upstream if upstream is not None else EchoUpstream()
        self.ledger = Ledger()
        self.events = events
        self.clock: ShiftedClock | None = None
        self.raw = aioredis.Redis.from_url(raw_url) if raw_url is not None else None
        self._tasks_before = other_tasks()
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        raw_url: str | None = None,
        upstream: EchoUpstream | None = None,
        max_connections: int | None = None,
        hooks: Sequence[Hook] = (),
        clock: ShiftedClock | None = None,
        **config: Any,
    ) -> Rig:
        """A rig on a Redis cache at ``url`` (maybe a proxy); ``raw_url`` defaults to ``url``.

        ``clock`` is the cache's monotonic clock; :func:`hits_resume` advances it past the cool-down.
        """
        events = StoreEvents()
        store = RedisStore.from_url(url, max_connections=max_connections)
        monotonic = clock if clock is not None else time.monotonic
        cache = PromptCache(store, CacheConfig(**config), hooks=[events, *hooks], monotonic=monotonic)
        rig = cls(cache, upstream, raw_url=raw_url or url, events=events)
        rig.clock = clock
        return rig

    async def ask(
        self,
        tenant: str | None,
        prompt: str,
        *,
        agent_id: str = AGENT,
        agent_version: str = "1",
        expect_failure: bool = False,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One request through ``get_or_call``, checked against its caller; never raises but cancellation.

        ``extra`` fields join the request body (to send values that have no canonical form).
        """
        ledger = self.ledger
        rid = ledger.next_id()
        ledger.requests += 1
        request = chat_request(prompt, rid)
        if extra:
            request.update(extra)
        try:
            body = await self.cache.get_or_call(
                request,
                self.upstream.call_for(tenant, prompt, rid),
                agent_id=agent_id,
                agent_version=agent_version,
                tenant=tenant,
                **kwargs,
            )
        except asyncio.CancelledError:
            ledger.cancelled += 1
            raise
        except UpstreamFailure:
            ledger.upstream_failures += 1
            if not expect_failure:
                ledger.errors.append("unexpected upstream failure")
            return None
        except Exception as exc:  # noqa: BLE001 - anything else reaching a caller is what we count
            ledger.errors.append(f"{type(exc).__name__}: {exc}")
            ledger.tracebacks.append(traceback.format_exc())
            return None
        ledger.answered += 1
        why = self.upstream.wrong(body, tenant, prompt)
        if why is not None:
            ledger.wrong.append(why)
        return body

    def key_of(
        self, tenant: str | None, prompt: str, *, agent_id: str = AGENT, agent_version: str = "1"
    ) -> CacheKey:
        """The key :meth:`ask` uses for (tenant, prompt); the request id is outside the key."""
        return self.cache.key(
            chat_request(prompt, 0), agent_id=agent_id, agent_version=agent_version, tenant=tenant
        )

    async def settle(self, within: float = 5.0) -> None:
        """Wait until no upstream call is in flight and every background write has finished."""
        deadline = time.monotonic() + within
        while self.cache._flight.flights and time.monotonic() < deadline:  # noqa: ASYNC110 - the cache has no event
            await asyncio.sleep(0.005)
        await self.cache.drain()

    async def store_keys(self, match: str = "*") -> list[bytes]:
        assert self.raw is not None
        return [k async for k in self.raw.scan_iter(match=match, count=1000)]

    def check_ledger(self, stats: CacheStats, *, lock_losses: int = 0) -> None:
        """The accounting every test ends with (see the module docstring)."""
        ledger, upstream = self.ledger, self.upstream
        assert ledger.wrong == [], ledger.summary()
        assert ledger.errors == [], ledger.summary()
        assert ledger.answered + ledger.cancelled + ledger.upstream_failures == ledger.requests
        assert stats.requests == ledger.requests, (stats, ledger.summary())
        assert stats.hits + stats.misses + stats.bypasses == stats.requests, stats
        # Bypasses call upstream outside the cache's own count.
        assert stats.upstream_calls <= upstream.completed <= stats.upstream_calls + stats.bypasses, (
            stats,
            upstream.completed,
        )
        assert upstream.started == upstream.completed + upstream.failed + upstream.cancelled
        # Each upstream call is one caller's miss; the other misses are callers that were cancelled or
        # shared a failed call. `lock_losses` allows for documented cross-process double calls.
        unpaid = stats.misses - stats.upstream_calls
        assert -lock_losses <= unpaid <= ledger.cancelled + ledger.upstream_failures, (
            stats,
            ledger.summary(),
        )

    async def finish(self, *, lock_losses: int = 0, locks_may_remain: bool = False) -> CacheStats:
        """Settle, then check the ledger, an idle pool, no lock left behind, and no task left over."""
        await self.settle()
        stats = self.cache.stats()
        self.check_ledger(stats, lock_losses=lock_losses)
        assert in_use_connections(self.cache) == 0, "a connection was never given back to the pool"
        if self.raw is not None and not locks_may_remain:
            left = await lock_keys(self.raw)
            unlock_failures = self.events.failed("unlock") if self.events is not None else 0
            assert len(left) <= unlock_failures, (left, unlock_failures)
        await self.close()
        left_tasks = await leftover_tasks(self._tasks_before)
        assert left_tasks == [], left_tasks
        return stats

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.cache.aclose()
        finally:
            if self.raw is not None:
                await self.raw.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def run_traffic(
    rig: Rig,
    asks: Sequence[tuple[str | None, str]],
    *,
    concurrency: int = 16,
    between: Callable[[int], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> None:
    """Send ``asks`` (tenant, prompt) through ``concurrency`` workers; ``between(i)`` runs after each."""
    queue = iter(enumerate(asks))

    async def worker() -> None:
        for i, (tenant, prompt) in queue:
            await rig.ask(tenant, prompt, **kwargs)
            if between is not None:
                await between(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def hits_resume(
    rig: Rig, asks: Sequence[tuple[str | None, str]], *, attempts: int = 3, cooldown: float = 0.4
) -> tuple[bool, list[str]]:
    """After a fault: a half-open probe, then ``asks`` (all stored), until one round is all hits.

    A stray store timeout on a busy 2-core machine can re-open the breaker for a cool-down, so a few
    rounds are allowed; the notes say what the store did in each round that missed.
    """
    notes: list[str] = []
    for _ in range(attempts):
        await rig.ask("tenant-probe", "probe")  # the probe; others skip the store while it is out
        hits, seen = rig.cache.stats().hits, len(rig.events.events) if rig.events else 0
        await run_traffic(rig, asks, concurrency=4)
        if rig.cache.stats().hits - hits == len(asks):
            return True, notes
        events = rig.events.events[seen:] if rig.events else []
        notes.append(str(Counter((e.operation, e.outcome, e.error) for e in events)))
        if rig.clock is not None:
            rig.clock.advance(cooldown)
        else:
            await asyncio.sleep(cooldown)
    return False, notes


def traffic(tenants: int, prompts: int, rounds: int, seed: int = 0) -> list[tuple[str | None, str]]:
    """``rounds`` shuffled passes over every (tenant, prompt) pair: the first pass misses, later ones hit."""
    rng = random.Random(seed)
    pairs: list[tuple[str | None, str]] = [
        (f"tenant-{t}", f"prompt-{p}") for t in range(tenants) for p in range(prompts)
    ]
    out: list[tuple[str | None, str]] = []
    for _ in range(rounds):
        batch = pairs[:]
        rng.shuffle(batch)
        out += batch
    return out


def wrapped_openai(
    server: FakeLLM,
    cache: PromptCache,
    *,
    tenant: str | None = None,
    timeout: float = 10.0,
    **options: Any,
) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client on ``server`` (no SDK retries) with ``cache`` inside its transport."""
    import openai  # noqa: PLC0415 - only the SDK tests need it
    from fake_llm import OPENAI_TEST_KEY  # noqa: PLC0415

    from promptcache.openai import wrap  # noqa: PLC0415

    options = {"api_key": OPENAI_TEST_KEY, **options}
    client = openai.AsyncOpenAI(
        base_url=server.base_url,
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
        **options,
    )
    return wrap(client, cache, agent_id=AGENT, tenant=tenant)


async def finish_sdk(cache: PromptCache, client: Any, tasks_before: set[asyncio.Task[Any]]) -> CacheStats:
    """The "nothing lost" checks for tests that go through an SDK client: every request counted once, an
    idle pool, and, once client and cache are closed, no task left over."""
    await cache.drain()
    stats = cache.stats()
    assert stats.hits + stats.misses + stats.bypasses == stats.requests, stats
    assert in_use_connections(cache) == 0, "a connection was never given back to the pool"
    await client.close()
    await cache.aclose()
    left = await leftover_tasks(tasks_before)
    assert left == [], left
    return stats


def sdk_messages(prompt: str) -> Any:
    """One user message, as the SDKs take it."""
    return [{"role": "user", "content": prompt}]


def sdk_answer_is_for(text: str | None, prompt: str) -> bool:
    """FakeLLM answers ``answer #<n> to: <prompt>``: is ``text`` an answer to ``prompt``?"""
    return text is not None and text.startswith("answer #") and text.split(" to: ", 1)[1] == prompt


class LogCapture(logging.Handler):
    """Every formatted log line of every logger, for the secret scans of the benchmark."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if record.exc_info:
            line += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(line)


AUDITED: Final = frozenset(
    {"pickle.find_class", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen"}
)


class CodeRunWatch:
    """Records the audit events that mean "something unpickled an object or ran a program" while armed.

    Audit hooks cannot be removed, so one is installed per process and armed only inside ``with``.
    """

    _installed = False
    _armed: list[CodeRunWatch] = []  # noqa: RUF012 - class-level registry the single hook reads

    def __init__(self) -> None:
        self.events: list[str] = []

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls._armed and event in AUDITED:
            for watch in cls._armed:
                watch.events.append(f"{event}{args!r}"[:200])

    def __enter__(self) -> Self:
        if not CodeRunWatch._installed:
            sys.addaudithook(CodeRunWatch._hook)
            CodeRunWatch._installed = True
        CodeRunWatch._armed.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        CodeRunWatch._armed.remove(self)
