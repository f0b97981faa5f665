"""Fixtures of the issue #13 suite: a fake LLM server, and the store URL of each kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from loops_support import store_url

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of the parametrised ``kind``: the session Redis (flushed), a SQLite file, or memory."""
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    return store_url(kind, redis_url, tmp_path)
