"""Fixtures shared by the unit tests that talk to the local OpenAI/Anthropic-compatible server."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest
from fake_llm import FakeLLM

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    """A fresh fake LLM server on loopback; the test fails if the fake itself hit an internal error."""
    with FakeLLM() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture(scope="module")
def collect_abandoned_streams() -> Iterator[None]:
    """Finalise the byte iterators of sync streams closed early while the portal loop still runs.

    Left to the interpreter's exit they would block it (see the process-exit test in test_sdk_openai.py).
    SDK test modules use it for all their tests (``pytestmark``), so it runs once, after the last one.
    """
    yield
    gc.collect()
