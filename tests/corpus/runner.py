"""Running the corpus: each pair on a fresh cache, A then B, judged by whether the server saw B.

For every pair: reset the server's world, open ``PromptCache.from_url("memory://")``, build and wrap A's and
B's clients, send A (streams read to the end), wait for the cache's background writes, run the pair's
``between`` step, then send B. B was a hit iff the server's model-call count did not move.

* must-miss, B hit: a **wrong hit**;
* must-hit, B went upstream: a **false miss**;
* any hit whose content is not A's answer, or whose shape differs from what the bare SDK gets for B
  (B sent again through an unwrapped client of the same kind): a **wrong hit** too;
* ``EITHER`` pairs (a stream with and without ``include_usage``) may miss; a hit must have B's shape.

A pair that cannot run (``wrap()`` refuses an option, A fails) is counted apart and listed.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corpus.clients import build, wrap_client
from corpus.server import CorpusServer
from corpus.views import Got, content, difference, shape

from promptcache import PromptCache
from promptcache.integrations import _portal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from corpus.clients import ClientSpec
    from corpus.world import World


class Expect(enum.Enum):
    HIT = "must-hit"
    MISS = "must-miss"
    EITHER = "hit-or-miss"  # a hit must have the shape the caller asked for


@dataclass(frozen=True)
class Side:
    """One request: the client it goes through and ``call(client)`` (awaited for async clients)."""

    client: ClientSpec
    call: Callable[[Any], Any]
    mode: str = "plain"  # "plain", "stream" (read every event) or "manager" (an SDK .stream() helper)


@dataclass(frozen=True)
class Pair:
    name: str
    expect: Expect
    a: Side
    b: Side
    between: Callable[[World], None] | None = None


@dataclass(frozen=True)
class Outcome:
    pair: Pair
    hit: bool | None  # None: the pair could not run
    problem: str | None = None  # why a hit was wrong although B was allowed to hit
    error: str | None = None

    @property
    def wrong_hit(self) -> bool:
        return bool(self.hit) and (self.pair.expect is Expect.MISS or self.problem is not None)

    @property
    def false_miss(self) -> bool:
        return self.hit is False and self.pair.expect is Expect.HIT

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.pair.name} [{self.pair.expect.value}]: could not run: {self.error}"
        what = "wrong hit" if self.wrong_hit else "false miss"
        detail = f": {self.problem}" if self.problem else ""
        return f"{self.pair.name} [{self.pair.expect.value}]: {what}{detail}"


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def wrong_hits(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.wrong_hit]

    @property
    def false_misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.false_miss]

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def line(self) -> str:
        counts = (len(self.wrong_hits), len(self.false_misses), len(self.outcomes))
        text = "wrong hits {}, false misses {} of {}".format(*counts)
        return text + (f" ({len(self.errors)} pairs could not run)" if self.errors else "")

    def text(self) -> str:
        failing = [o.describe() for o in self.outcomes if o.wrong_hit or o.false_miss or o.error]
        return "\n".join([self.line(), *("  " + f for f in failing)])


class Driver:
    """Runs sides on the right loop: sync clients in this thread, async ones on one private loop."""

    def __init__(self, server: CorpusServer) -> None:
        self.server = server
        self.runner = asyncio.Runner()

    def close(self) -> None:
        self.runner.close()

    def execute(self, side: Side, client: Any) -> Got:
        import anthropic  # noqa: PLC0415
        import openai  # noqa: PLC0415

        try:
            if side.client.kind == "sync":
                return _consume(side.mode, side.call(client))
            return self.runner.run(_consume_async(side.mode, side.call, client))
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            return Got("error", (type(exc).__name__, exc.status_code))

    def close_client(self, spec: ClientSpec, client: Any) -> None:
        if spec.kind == "sync":
            client.close()
        else:
            self.runner.run(client.close())

    def drain(self, cache: PromptCache, spec: ClientSpec) -> None:
        if spec.kind == "sync":
            _portal.call(cache.drain)
        else:
            self.runner.run(cache.drain())

    def bare(self, side: Side) -> Got:
        client = build(side.client, self.server)
        try:
            return self.execute(side, client)
        finally:
            self.close_client(side.client, client)

    def run_pair(self, pair: Pair) -> Outcome:
        self.server.reset()
        cache = PromptCache.from_url("memory://")
        opened: list[tuple[ClientSpec, Any]] = []
        try:
            for spec in (pair.a.client, pair.b.client):
                opened.append((spec, build(spec, self.server)))
                wrap_client(spec, opened[-1][1], cache)
            got_a = self.execute(pair.a, opened[0][1])
            if got_a.kind == "error":
                return Outcome(pair, None, error=f"A failed: {got_a.describe()}")
            self.drain(cache, pair.a.client)
            if pair.between is not None:
                pair.between(self.server.world)
            before = self.server.calls
            got_b = self.execute(pair.b, opened[1][1])
            hit = self.server.calls == before
            self.drain(cache, pair.b.client)
        except Exception as exc:  # noqa: BLE001 - any failure of a pair is reported, not raised
            return Outcome(pair, None, error=f"{type(exc).__name__}: {exc}")
        finally:
            for spec, client in opened:
                self.close_client(spec, client)
            _close_cache(self, cache, opened)
        if hit and got_b.kind == "error":  # answered by the wrapper itself, never by the server
            return Outcome(pair, hit, f"B never reached the server and failed: {got_b.describe()}")
        judged = hit and pair.expect is not Expect.MISS
        return Outcome(pair, hit, self._judge_hit(pair, got_a, got_b) if judged else None)

    def _judge_hit(self, pair: Pair, got_a: Got, got_b: Got) -> str | None:
        """Why a hit that was allowed is still wrong: not A's answer, or not the shape B asked for."""
        if content(got_b) != content(got_a):
            return "not A's answer: " + difference(content(got_a), content(got_b), ("A got", "the hit gave"))
        bare = self.bare(pair.b)
        if shape(bare) != shape(got_b):
            return "not B's shape: " + difference(
                shape(bare), shape(got_b), ("the bare SDK gives", "the hit gave")
            )
        return None

    def bare_pair(self, pair: Pair) -> tuple[Got, Got]:
        """A and B through unwrapped clients (the pair's ``between`` step included): the server's answers."""
        self.server.reset()
        got_a = self.bare(pair.a)
        if pair.between is not None:
            pair.between(self.server.world)
        return got_a, self.bare(pair.b)


def _close_cache(driver: Driver, cache: PromptCache, opened: list[tuple[ClientSpec, Any]]) -> None:
    if any(spec.kind == "async" for spec, _ in opened):
        driver.runner.run(cache.aclose())
    else:
        cache.close()


def _final(stream: Any) -> Any:
    for name in ("get_final_completion", "get_final_response", "get_final_message"):
        if hasattr(stream, name):
            return getattr(stream, name)()
    raise TypeError(f"no final-object accessor on {type(stream).__name__}")


def _consume(mode: str, result: Any) -> Got:
    if mode == "plain":
        return Got("plain", result)
    if mode == "stream":
        with result as stream:
            return Got("stream", list(stream))
    with result as stream:
        events = list(stream)
        return Got("manager", (events, _final(stream)))


async def _consume_async(mode: str, call: Callable[[Any], Any], client: Any) -> Got:
    if mode == "plain":
        return Got("plain", await call(client))
    if mode == "stream":
        async with await call(client) as stream:
            return Got("stream", [event async for event in stream])
    async with call(client) as stream:
        events = [event async for event in stream]
        return Got("manager", (events, await _final(stream)))


def run_corpus(pairs: Iterable[Pair], server: CorpusServer | None = None) -> Report:
    """Run every pair against ``server`` (a fresh one when None) and report."""
    report = Report()
    own = server is None
    server = server or CorpusServer().start()
    driver = Driver(server)
    try:
        for pair in pairs:
            report.outcomes.append(driver.run_pair(pair))
    finally:
        driver.close()
        if own:
            server.stop()
    return report
