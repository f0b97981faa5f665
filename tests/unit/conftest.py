"""Fixtures shared by the unit tests that talk to the local OpenAI/Anthropic-compatible server."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def collect_abandoned_streams() -> Iterator[None]:
    """Finalise the byte iterators of sync streams closed early while the portal loop still runs.

    Left to the interpreter's exit they would block it (see the process-exit test in test_sdk_openai.py).
    SDK test modules use it for all their tests (``pytestmark``), so it runs once, after the last one.
    """
    yield
    gc.collect()
