"""Secrets: planted fake credentials never reach a cassette, a Redis value, a log line, an error or a repr.

The credentials (``reliability_support.SECRETS``) are planted where real ones live: the API key in the
``Authorization`` header, the organisation and project headers, a cookie, a query-string token, a Redis
URL password, and the provider's error body, which echoes them back (OpenAI's real 401/404 bodies name the
organisation and project verbatim). Every write path is checked: the production cache (miss, stream,
refresh), and the plugin's record, re-record (rewrite), prune and replay-miss paths, to a cassette folder
and to a Redis cassette store. ``promptcache export`` has no CLI yet, so that path is not covered here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import openai
import pytest
import redis.asyncio as aioredis
from helpers import leftover_tasks, other_tasks
from reliability_support import (
    SECRET_API_KEY,
    SECRET_COOKIE,
    SECRET_ORG,
    SECRET_PROJECT,
    SECRET_QUERY,
    SECRET_REDIS_PASSWORD,
    SECRETS,
    in_use_connections,
    sdk_messages,
    secrets_in,
    wrapped_openai,
)

from promptcache import CacheConfig, PromptCache, StoreError
from promptcache.pytest_plugin._stores import RedisCassetteStore, open_cassette_store

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from fake_llm import FakeLLM
    from redis_server import RedisServer

pytest_plugins = ["pytester"]

ECHOED_ERROR = {
    "error": {
        "message": (
            f"Incorrect API key provided: {SECRET_API_KEY}. No such organization: {SECRET_ORG}. "
            f"Project `{SECRET_PROJECT}` does not exist. Request had cookie session={SECRET_COOKIE} "
            f"and query token={SECRET_QUERY}."
        ),
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
CLIENT_OPTIONS: dict[str, Any] = {
    "api_key": SECRET_API_KEY,
    "organization": SECRET_ORG,
    "project": SECRET_PROJECT,
    "default_headers": {"Cookie": f"session={SECRET_COOKIE}"},
    "default_query": {"token": SECRET_QUERY},
}


def _password_protected(private_redis: Callable[..., RedisServer]) -> RedisServer:
    server = private_redis()
    assert server.command("CONFIG", "SET", "requirepass", SECRET_REDIS_PASSWORD).startswith(b"+OK")
    return server


def _url(server: RedisServer, password: str = SECRET_REDIS_PASSWORD) -> str:
    return f"redis://default:{password}@127.0.0.1:{server.port}/0"


async def _all_values(url: str) -> list[bytes]:
    raw = aioredis.Redis.from_url(url)
    try:
        out: list[bytes] = []
        async for key in raw.scan_iter(count=1000):
            kind = await raw.type(key)
            out.append(key)
            if kind == b"string":
                value = await raw.get(key)
                out.append(value if isinstance(value, bytes) else b"")
        return out
    finally:
        await raw.aclose()


def _our_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """promptcache's log lines, formatted, with any traceback."""
    lines = []
    for record in caplog.records:
        if record.name.startswith("promptcache"):
            text = record.getMessage()
            if record.exc_info:
                text += logging.Formatter().formatException(record.exc_info)
            lines.append(text)
    return lines


def _error_text(exc: BaseException) -> str:
    """An exception's message and repr, and those of its whole cause/context chain."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- the production cache ---------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.anyio
async def test_production_cache_never_stores_logs_or_shows_a_secret(
    private_redis: Callable[..., RedisServer], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    """Through an SDK client carrying every planted credential, an echoed 401, a miss, a stream, a refresh,
    a bypass, Redis going away and an invalidation that fails: no Redis value, promptcache log line,
    promptcache error or repr ever contains a credential or the Redis password."""
    caplog.set_level(logging.DEBUG)
    tasks_before = other_tasks()
    server = _password_protected(private_redis)
    url = _url(server)
    cache = PromptCache.from_url(url, CacheConfig(store_timeout=1.0, keep_request=True, breaker_cooldown=60))
    client = wrapped_openai(fake_llm, cache, **CLIENT_OPTIONS)
    shown: list[str] = []
    try:
        fake_llm.fail_next(401, body=ECHOED_ERROR)
        with pytest.raises(openai.AuthenticationError):  # the provider's own error, as it sent it
            await client.chat.completions.create(model="gpt-x", messages=sdk_messages("who am I?"))
        await client.chat.completions.create(model="gpt-x", messages=sdk_messages("hello"))
        stream = await client.chat.completions.create(
            model="gpt-x", messages=sdk_messages("stream it"), stream=True
        )
        _ = [chunk async for chunk in stream]
        for control in ("x-promptcache-refresh", "x-promptcache-bypass"):
            await client.chat.completions.create(
                model="gpt-x", messages=sdk_messages("hello"), extra_headers={control: "1"}
            )
        await cache.drain()
        sent = fake_llm.requests[0]  # the credentials really were on the wire
        assert SECRET_API_KEY in sent.headers["authorization"]
        assert sent.query["token"] == SECRET_QUERY
        assert SECRET_COOKIE in sent.headers["cookie"]

        values = await _all_values(url)
        assert len(values) >= 4  # two entries (body, stream), keys and values
        for value in values:
            assert secrets_in(value) == [], value[:200]
        assert in_use_connections(cache) == 0

        server.kill()
        await client.chat.completions.create(model="gpt-x", messages=sdk_messages("while down"))
        with pytest.raises(StoreError) as failed:
            await cache.invalidate("support-bot")
        shown.append(_error_text(failed.value))
        shown += [
            repr(cache),
            repr(cache.store),
            repr(getattr(cache.store, "client", None)),
            str(cache.stats()),
        ]
    finally:
        await client.close()
        await cache.aclose()

    wrong = PromptCache.from_url(_url(server, "PLANTEDwrongpassword0000"), CacheConfig(store_timeout=1.0))
    try:
        shown.append(repr(wrong))
    finally:
        await wrong.aclose()
    assert await leftover_tasks(tasks_before) == []
    shown += _our_log_lines(caplog)
    assert any("store" in line for line in shown)  # the outage was logged
    planted = [*SECRETS, "PLANTEDwrongpassword0000"]
    leaks = [(secrets_in(text, planted), text[:200]) for text in shown if secrets_in(text, planted)]
    assert leaks == []


@pytest.mark.redis
def test_the_redis_password_never_shows_in_cassette_store_reprs_or_errors(
    private_redis: Callable[..., RedisServer],
) -> None:
    """A Redis cassette store opened with a password names its server without it, and a malformed or
    unsupported store URL is refused without echoing the password."""
    server = _password_protected(private_redis)
    store = RedisCassetteStore(_url(server))
    try:
        assert secrets_in(store.describe("tests/test_x/test_y")) == []
        assert store.names() == []
    finally:
        store.client.close()
    for bad in (
        f"redis+cluster://:{SECRET_REDIS_PASSWORD}@h:1/0",
        f"memcached://:{SECRET_REDIS_PASSWORD}@h:1",
    ):
        with pytest.raises(Exception) as refused:  # noqa: PT011 - whatever it is, it must not leak
            open_cassette_store(bad, server_root())
        assert secrets_in(_error_text(refused.value)) == []


def server_root() -> Path:
    from pathlib import Path  # noqa: PLC0415

    return Path.cwd()


# -- the pytest plugin: every write path ---------------------------------------------------------------

INNER_TEST = """
import os

import openai
import pytest

OPTIONS = {options!r}


@pytest.mark.promptcache(record_errors=True)  # the 401 is expected: record it, echoed secrets and all
def test_calls():
    client = openai.OpenAI(
        base_url={base!r},
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=False),
        **OPTIONS,
    )
    suffix = os.environ.get("PROMPT_SUFFIX", "")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="gpt-x", messages=[{{"role": "user", "content": "who am I?" + suffix}}]
        )
    client.chat.completions.create(
        model="gpt-x", messages=[{{"role": "user", "content": "my key is {key} - summarise" + suffix}}]
    )
    stream = client.chat.completions.create(
        model="gpt-x", messages=[{{"role": "user", "content": "stream it" + suffix}}], stream=True
    )
    assert len(list(stream)) > 1
    if os.environ.get("EXTRA_CALL"):
        client.chat.completions.create(model="gpt-x", messages=[{{"role": "user", "content": "extra"}}])
    client.close()
"""

INNER_CONFTEST = """
import logging

_handler = logging.FileHandler({log!r})
_logger = logging.getLogger("promptcache")
_level = _logger.level


def pytest_configure(config):
    _handler.setLevel(logging.DEBUG)
    _logger.addHandler(_handler)
    _logger.setLevel(logging.DEBUG)


def pytest_unconfigure(config):
    # This run shares the outer test process: leave the logger as it was.
    _logger.removeHandler(_handler)
    _handler.close()
    _logger.setLevel(_level)
"""


class PluginRuns:
    """Runs the inner test file under the plugin and collects everything it wrote or printed."""

    def __init__(self, pytester: pytest.Pytester, server: FakeLLM, store: str) -> None:
        self.pytester = pytester
        self.server = server
        self.store = store
        self.log = pytester.path / "promptcache.log"
        self.outputs: list[str] = []
        pytester.makeconftest(INNER_CONFTEST.format(log=str(self.log)))
        pytester.makepyfile(
            test_inner=INNER_TEST.format(options=CLIENT_OPTIONS, base=server.base_url, key=SECRET_API_KEY)
        )

    def run(self, mode: str, *extra: str, echo_401: bool = True) -> pytest.RunResult:
        if echo_401:
            self.server.fail_next(401, body=ECHOED_ERROR)
        result = self.pytester.runpytest(
            f"--promptcache={mode}",
            f"--promptcache-store={self.store}",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "-W",  # the recorded 401 lost the echoed credentials: warned, not an error here
            "default::promptcache.pytest_plugin._content.CassetteScrubWarning",
            *extra,
        )
        self.outputs.append(result.stdout.str() + result.stderr.str())
        return result

    def written(self) -> list[str]:
        """Every promptcache log line and everything the runs printed."""
        texts = list(self.outputs)
        if self.log.exists():
            texts.append(self.log.read_text())
        return texts


def _leaks(texts: list[str]) -> list[tuple[list[str], str]]:
    return [(secrets_in(text), text[:300]) for text in texts if secrets_in(text)]


def test_plugin_cassettes_never_hold_a_secret_on_any_write_path(
    pytester: pytest.Pytester, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording, re-recording (rewrite), pruning and a replay miss, with every credential planted and
    echoed back in a recorded 401: no cassette file, log line or printed message ever holds one."""
    runs = PluginRuns(pytester, fake_llm, "cassettes")
    cassettes = pytester.path / "cassettes"

    def files() -> list[str]:
        return [p.read_text() for p in sorted(cassettes.rglob("*.yaml"))]

    leaks: dict[str, list[tuple[list[str], str]]] = {}
    monkeypatch.setenv("EXTRA_CALL", "1")
    runs.run("record").assert_outcomes(passed=1)
    recorded = files()
    assert recorded
    assert "status: 401" in recorded[0]  # the echoed error body was recorded, so it had to be scrubbed
    leaks["record"] = _leaks(recorded)

    runs.run("rewrite").assert_outcomes(passed=1)
    leaks["rewrite"] = _leaks(files())

    monkeypatch.delenv("EXTRA_CALL")
    runs.run("replay", "--promptcache-prune", echo_401=False).assert_outcomes(passed=1)
    pruned = files()
    assert "content: extra" not in pruned[0]  # the unused recording was dropped: the file was rewritten
    leaks["prune"] = _leaks(pruned)

    monkeypatch.setenv("PROMPT_SUFFIX", " (changed)")
    runs.run("replay", echo_401=False).assert_outcomes(failed=1)
    assert "no recording for this LLM request" in runs.outputs[-1]
    leaks["replay-miss output and logs"] = _leaks(runs.written())
    assert {step: found for step, found in leaks.items() if found} == {}


@pytest.mark.redis
def test_plugin_redis_cassette_store_never_holds_a_secret(
    pytester: pytest.Pytester,
    fake_llm: FakeLLM,
    private_redis: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With cassettes in a password-protected Redis, recorded and re-recorded values hold no credential,
    and neither a replay miss (which names the store) nor any log line shows the Redis password."""
    server = _password_protected(private_redis)
    url = _url(server)
    runs = PluginRuns(pytester, fake_llm, url)
    runs.run("record").assert_outcomes(passed=1)
    runs.run("rewrite").assert_outcomes(passed=1)
    monkeypatch.setenv("PROMPT_SUFFIX", " (changed)")
    runs.run("replay", echo_401=False).assert_outcomes(failed=1)
    assert "no recording for this LLM request" in runs.outputs[-1]

    store = RedisCassetteStore(url)
    try:
        names = store.names()
        assert names
        values = [store.client.get("promptcache:cassette:" + name) for name in names]
    finally:
        store.client.close()
    texts = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    assert any("status: 401" in t for t in texts)
    assert f"redis://***@127.0.0.1:{server.port}/0" in runs.outputs[-1]  # the miss names the store
    assert {"stored": _leaks(texts), "printed or logged": _leaks(runs.written())} == {
        "stored": [],
        "printed or logged": [],
    }


# -- promptcache export ----------------------------------------------------------------------------------


async def _populate(url: str, server: FakeLLM) -> None:
    """Production traffic with every credential planted; one prompt carries the API key itself."""
    cache = PromptCache.from_url(url, CacheConfig(store_timeout=1.0, keep_request=True))
    client = wrapped_openai(server, cache, **CLIENT_OPTIONS)
    try:
        server.fail_next(401, body=ECHOED_ERROR)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-x", messages=sdk_messages("who am I?"))
        await client.chat.completions.create(model="gpt-x", messages=sdk_messages("hello"))
        await client.chat.completions.create(
            model="gpt-x", messages=sdk_messages(f"my key is {SECRET_API_KEY} - is it valid?")
        )
        await cache.drain()
    finally:
        await client.close()
        await cache.aclose()


@pytest.mark.redis
def test_export_never_writes_or_prints_a_secret(
    private_redis: Callable[..., RedisServer],
    fake_llm: FakeLLM,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``promptcache export`` from a password-protected Redis refuses to write an entry holding an API key
    unless told to scrub it, and no exported file, printed line or error ever holds a credential or the
    Redis password (a wrong password included)."""
    import asyncio  # noqa: PLC0415 - this test is sync: the CLI runs its own event loop

    from promptcache.cli import main  # noqa: PLC0415 - written in parallel with this suite

    server = _password_protected(private_redis)
    url = _url(server)
    asyncio.run(_populate(url, fake_llm))
    refused, scrubbed = tmp_path / "refused.yaml", tmp_path / "scrubbed.yaml"
    codes = [
        main(["export", "--url", url, "--agent", "support-bot", "-o", str(refused)]),
        main(["export", "--url", url, "--agent", "support-bot", "-o", str(scrubbed), "--scrub"]),
        main(
            [
                "export",
                "--url",
                _url(server, "PLANTEDwrongpassword0000"),
                "--agent",
                "support-bot",
                "-o",
                str(refused),
            ]
        ),
    ]
    printed = capsys.readouterr()
    assert codes == [1, 0, 1]  # the key in a prompt: refused; with --scrub: written; bad password: refused
    assert not refused.exists()
    exported = scrubbed.read_text()
    assert "hello" in exported
    planted = [*SECRETS, "PLANTEDwrongpassword0000"]
    assert [secrets_in(t, planted) for t in (exported, printed.out, printed.err)] == [[], [], []]
