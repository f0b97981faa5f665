"""Fixtures for the example tests: where the examples' LLM lives, in replay and when recording.

Replay (the default): ``llm_base_url`` is a loopback address nothing listens on (port 9, "discard"), and
every socket connection fails the test, so a passing run proves the answers came from the cassettes.

Recording (``--promptcache=auto``, ``=record`` or ``=rewrite`` on the command line, or
``PROMPTCACHE_EXAMPLES_RECORD=1``): each test gets a fresh ``FakeLLM`` (``tests/fake_llm.py``, the project's
local OpenAI-compatible server), so its calls are numbered from 1 and the recorded answers do not depend on
which tests ran before. Example cassettes are therefore never recorded from a real model.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fake_llm import FakeLLM

if TYPE_CHECKING:
    from collections.abc import Iterator

# `examples/` is not installed: put the repository root on sys.path so `examples.support_agent` imports.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECORD_ENV = "PROMPTCACHE_EXAMPLES_RECORD"
RECORDING_MODES = frozenset({"auto", "record", "rewrite"})
REPLAY_BASE_URL = "http://127.0.0.1:9/v1"  # valid, and nothing answers there: replay never sends
REPLAY_ANTHROPIC_URL = "http://127.0.0.1:9"  # the Anthropic SDK adds /v1 itself


@pytest.fixture(scope="session")
def recording(pytestconfig: pytest.Config) -> bool:
    """True when this run records cassettes against a local FakeLLM instead of replaying them.

    Either ``PROMPTCACHE_EXAMPLES_RECORD=1``, or a recording mode on the command line (which beats the
    tests' ``replay`` marker), so the re-record command a replay miss prints works as it is.
    """
    cli_mode = str(pytestconfig.getoption("promptcache_mode", default=None) or "").strip().lower()
    return os.environ.get(RECORD_ENV, "") not in {"", "0"} or cli_mode in RECORDING_MODES


@pytest.fixture
def llm_base_url(recording: bool) -> Iterator[str]:
    """The OpenAI-compatible API root the example agent is pointed at."""
    if not recording:
        yield REPLAY_BASE_URL
        return
    with FakeLLM() as server:
        yield server.base_url
    assert server.errors == []


@dataclass(frozen=True, slots=True)
class LLMUrls:
    """The API roots of one upstream for both SDKs: OpenAI's (with ``/v1``) and Anthropic's (without)."""

    openai: str
    anthropic: str


@pytest.fixture
def llm_urls(recording: bool) -> Iterator[LLMUrls]:
    """Where the framework recipes' OpenAI and Anthropic clients point: one FakeLLM when recording."""
    if not recording:
        yield LLMUrls(REPLAY_BASE_URL, REPLAY_ANTHROPIC_URL)
        return
    with FakeLLM() as server:
        yield LLMUrls(server.base_url, server.anthropic_base_url)
    assert server.errors == []


@pytest.fixture(autouse=True)
def _no_network_in_replay(recording: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In replay, refuse every socket connection and fail the test if one was attempted."""
    if recording:
        yield
        return
    attempts: list[object] = []

    def connect(_sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"example tests replay from cassettes; no network: {address!r}")

    def connect_ex(_sock: socket.socket, address: object) -> int:
        attempts.append(address)
        return errno.ECONNREFUSED

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
    assert attempts == [], f"replayed example tests must not touch the network: {attempts}"
