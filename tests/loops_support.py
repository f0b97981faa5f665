"""Helpers of the issue #13 suite (``tests/loops/``): "one cache for every caller".

Only promptcache's public API is used here (``PromptCache``, ``CacheConfig`` fields, ``stats()``, the SDK
``wrap``), plus raw clients of the stores themselves (a sync redis-py client, the stdlib ``sqlite3``), so
these tests survive a restructure of promptcache's internals.

- :class:`Upstream`: a fake provider whose answer names the prompt it was made for and counts its calls,
  optionally held behind a gate (to keep calls in flight) or slowed down.
- :func:`store_url`: the URL of a fresh store of each kind (Redis, SQLite, memory).
- :func:`raw_redis`: a plain sync redis-py client for looking at the server from outside the cache.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import TYPE_CHECKING, Any, Final

import pytest
import redis

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

MODEL: Final = "gpt-4o-mini"
AGENT: Final = "loops-bot"
STORES: Final = ("redis", "sqlite", "memory")


def chat_request(prompt: str) -> dict[str, Any]:
    """A chat request for ``prompt``."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a terse support bot."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
    }


def answer_body(prompt: str, n: int) -> dict[str, Any]:
    """A storable chat.completion that names its prompt and the upstream call number that made it."""
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer #{n} to: {prompt}", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def answer_is_for(body: Any, prompt: str) -> bool:
    """Is ``body`` an answer (from :class:`Upstream` or FakeLLM) to ``prompt``?"""
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(text, str) and text.startswith("answer #") and text.split(" to: ", 1)[1] == prompt


class Upstream:
    """A fake provider, safe to call from any thread's event loop.

    ``call_for(prompt)`` returns the zero-argument async call ``get_or_call`` takes. Each call counts
    (``calls``), waits for ``gate`` (a threading.Event, so any loop can wait on it) when one is set,
    then sleeps ``delay`` seconds and answers naming its prompt.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate: threading.Event | None = None
        self.calls = 0
        self.in_flight = 0
        self._lock = threading.Lock()

    def call_for(self, prompt: str) -> Callable[[], Awaitable[Any]]:
        async def call() -> dict[str, Any]:
            with self._lock:
                self.calls += 1
                n = self.calls
                self.in_flight += 1
            try:
                gate = self.gate
                if gate is not None:
                    await asyncio.to_thread(gate.wait)
                if self.delay:
                    await asyncio.sleep(self.delay)
            finally:
                with self._lock:
                    self.in_flight -= 1
            return answer_body(prompt, n)

        return call


def store_url(kind: str, redis_url: str | None, tmp_path: Path) -> str:
    """The URL of a fresh store of ``kind`` (``redis`` needs the session server's flushed URL)."""
    if kind == "redis":
        assert redis_url is not None
        return redis_url
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'cache.db'}"
    if kind == "memory":
        return "memory://"
    raise ValueError(kind)


def raw_redis(url: str) -> redis.Redis:
    """A plain sync client for looking at the server from outside the cache (close it)."""
    return redis.Redis.from_url(url, socket_timeout=10)


def client_connections(raw: redis.Redis) -> int:
    """Connections the server has open, not counting ``raw``'s own."""
    clients = raw.client_list()
    own = raw.client_id()
    return sum(1 for c in clients if int(c["id"]) != own)


def lock_keys(raw: redis.Redis) -> list[bytes]:
    """Every single-flight lock key on the server (the public ``CacheKey.lock_key`` shape, ``*:lock:*``)."""
    return list(raw.scan_iter(match="*:lock:*", count=1000))


def _outcome(scenario: Callable[[], None]) -> str | None:
    try:
        scenario()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, as text
        return f"{type(exc).__name__}: {exc}"
    return None


def fail_cleanly(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` (which builds its own cache and loops); on failure, fail with its message only.

    A failing run can leave connections open on a closed loop. Reporting the failure without its traceback
    lets those objects die here, in a garbage collection inside this test, so their ResourceWarnings are
    blamed on this test rather than on whichever test happens to run when they are finally collected.
    """
    failure = _outcome(scenario)
    gc.collect()
    if failure is not None:
        pytest.fail(failure, pytrace=False)
