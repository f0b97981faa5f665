"""Fixtures shared by the unit tests that talk to the local OpenAI/Anthropic-compatible server."""

from __future__ import annotations

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
