"""Session-wide fixtures: a real redis-server for tests marked ``redis``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fake_llm import FakeLLM
from redis_server import RedisServer, require_redis_binary

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from helpers import Run

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session, on a free loopback port, with no persistence."""
    binary = require_redis_binary()
    server = RedisServer(binary)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, flushed so each test starts empty (and restarted if a test stopped it)."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[Callable[..., RedisServer]]:
    """A factory of dedicated redis-servers for tests that kill, pause or reconfigure their server."""
    binary = require_redis_binary()
    servers: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        server = RedisServer(binary, *extra_args)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the loop redis.asyncio and the SDKs are used with in production)."""
    return "asyncio"


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    """A fresh fake LLM server on loopback; the test fails if the fake itself hit an internal error."""
    with FakeLLM() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``promptcache ARGS`` in process; returns (exit code, stdout, stderr). PROMPTCACHE_URL is unset."""
    from promptcache.cli import main  # noqa: PLC0415 - only the CLI tests need it

    monkeypatch.delenv("PROMPTCACHE_URL", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
