"""Fixtures for the plugin tests: a fake LLM on loopback and a pytester project wired to it.

The inner project gets ``llm.py`` (real OpenAI/Anthropic SDK clients pointed at the fake through the
``PC_LLM_URL`` / ``PC_ANTHROPIC_URL`` environment variables, and ``note()`` to log outputs to
``outputs.jsonl``) and a ``conftest.py`` whose guards are switched on by environment variables:

* ``PC_BLOCK_NETWORK=1``: every ``socket.connect`` (sync and asyncio) is logged to ``connects.log`` and
  refused, except to the ports listed in ``PC_ALLOW_PORTS`` (a Redis store);
* ``PC_LOG_SLEEPS=1``: ``time.sleep``, ``asyncio.sleep`` and ``anyio.sleep`` (the SDKs' retry backoff)
  are logged to ``sleeps.log``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import openai
import pytest
from fake_llm import FakeLLM, anthropic_clients, openai_clients

if TYPE_CHECKING:
    from collections.abc import Iterator

    import anthropic

INNER_CONFTEST = """
import asyncio
import os
import socket
import time
from pathlib import Path

import anyio
import pytest

HERE = Path(__file__).parent


def _log(name, line):
    with (HERE / name).open("a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


@pytest.fixture(autouse=True)
def _network_guard(monkeypatch):
    if not os.environ.get("PC_BLOCK_NETWORK"):
        return
    allowed = {int(p) for p in os.environ.get("PC_ALLOW_PORTS", "").split(",") if p}
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def blocked(address):
        port = address[1] if isinstance(address, tuple) and len(address) >= 2 else None
        if port in allowed:
            return False
        _log("connects.log", repr(address))
        return True

    def connect(self, address):
        if blocked(address):
            raise ConnectionRefusedError(f"network blocked by the test: {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if blocked(address):
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(autouse=True)
def _sleep_log(monkeypatch):
    if not os.environ.get("PC_LOG_SLEEPS"):
        return
    real_sleep, real_asleep, real_anyio_sleep = time.sleep, asyncio.sleep, anyio.sleep

    def sleep(seconds):
        _log("sleeps.log", f"time.sleep {seconds}")
        real_sleep(seconds)

    async def asleep(seconds, *args, **kwargs):
        _log("sleeps.log", f"asyncio.sleep {seconds}")
        return await real_asleep(seconds, *args, **kwargs)

    async def anyio_sleep(seconds):
        _log("sleeps.log", f"anyio.sleep {seconds}")
        await real_anyio_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(asyncio, "sleep", asleep)
    monkeypatch.setattr(anyio, "sleep", anyio_sleep)
"""

INNER_LLM = '''
"""SDK clients pointed at the fake LLM, and an output log the outer test reads."""
import json
import os
from pathlib import Path

import anthropic
import openai

OPENAI_KEY = "sk-test-0000000000000000000000"
ANTHROPIC_KEY = "sk-ant-test-0000"
OUT = Path(__file__).with_name("outputs.jsonl")


def note(name, value):
    with OUT.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps([name, value]) + "\\n")


def openai_client(**kw):
    kw.setdefault("api_key", OPENAI_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", openai.DefaultHttpxClient(verify=False))
    return openai.OpenAI(base_url=os.environ["PC_LLM_URL"], **kw)


def async_openai_client(**kw):
    kw.setdefault("api_key", OPENAI_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", openai.DefaultAsyncHttpxClient(verify=False))
    return openai.AsyncOpenAI(base_url=os.environ["PC_LLM_URL"], **kw)


def anthropic_client(**kw):
    kw.setdefault("api_key", ANTHROPIC_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", anthropic.DefaultHttpxClient(verify=False))
    return anthropic.Anthropic(base_url=os.environ["PC_ANTHROPIC_URL"], **kw)


def async_anthropic_client(**kw):
    kw.setdefault("api_key", ANTHROPIC_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", anthropic.DefaultAsyncHttpxClient(verify=False))
    return anthropic.AsyncAnthropic(base_url=os.environ["PC_ANTHROPIC_URL"], **kw)


def user(prompt):
    return [{"role": "user", "content": prompt}]


def chat(prompt, model="gpt-x", **kw):
    with openai_client(**kw) as client:
        reply = client.chat.completions.create(model=model, messages=user(prompt))
    return reply.choices[0].message.content


async def achat(prompt, model="gpt-x", **kw):
    async with async_openai_client(**kw) as client:
        reply = await client.chat.completions.create(model=model, messages=user(prompt))
    return reply.choices[0].message.content


def chat_stream(prompt, **kw):
    with openai_client(**kw) as client:
        stream = client.chat.completions.create(model="gpt-x", messages=user(prompt), stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
'''


async def _async_calls(aoai: openai.AsyncOpenAI, aclaude: anthropic.AsyncAnthropic) -> None:
    async with aoai, aclaude:
        await aoai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        stream = await aoai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        _ = [chunk async for chunk in stream]
        await aclaude.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        async with aclaude.messages.stream(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            _ = [text async for text in events.text_stream]


@pytest.fixture(scope="session")
def _warm_sdks() -> None:
    """Make every module the SDKs import lazily (httpcore2, h11, anyio backends, streaming helpers) load
    in this process before any in-process pytester run: pytester drops the modules a run imported, and a
    re-import would split exception classes (an httpcore2 error no longer maps to APIConnectionError)."""
    with FakeLLM() as server:
        oai, aoai = openai_clients(server)
        claude, aclaude = anthropic_clients(server)
        with oai, claude:
            oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            _ = list(
                oai.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
            )
            oai.responses.create(model="m", input="hi")
            oai.embeddings.create(model="m", input="hi")
            with pytest.raises(openai.NotFoundError):
                oai.models.list()
            claude.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            with claude.messages.stream(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            ) as events:
                _ = list(events.text_stream)
        asyncio.run(_async_calls(aoai, aclaude))


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    """A started FakeLLM whose URLs the inner project reads from the environment; stopped at teardown."""
    with FakeLLM() as server:
        monkeypatch.setenv("PC_LLM_URL", server.base_url)
        monkeypatch.setenv("PC_ANTHROPIC_URL", server.anthropic_base_url)
        yield server
    assert server.errors == []


@pytest.fixture
def project(
    pytester: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, _warm_sdks: None
) -> pytest.Pytester:
    """A pytester project with ``llm.py`` and the guard conftest, talking to ``llm_server``."""
    for name in ("PC_BLOCK_NETWORK", "PC_ALLOW_PORTS", "PC_LOG_SLEEPS", "PYTEST_XDIST_AUTO_NUM_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    # Hypothesis' terminal summary costs ~1 s per in-process run; the cache folder is noise; the inner
    # projects' tests are sync (pytest-asyncio, there for tests/loops, would only warn about its ini).
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:cacheprovider -p no:asyncio")
    # Edits between runs must never be hidden by a stale .pyc of the same size and second.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(llm=INNER_LLM)
    return pytester
