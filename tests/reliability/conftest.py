"""Fixtures shared by the reliability suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fake_llm import FakeLLM

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A local OpenAI-/Anthropic-compatible server, stopped afterwards."""
    with FakeLLM() as server:
        yield server
