"""LangChain's own standard cache suites (``langchain-tests``) judge ``PromptCacheLangChain``.

Each suite runs unchanged (the suites' ``test_no_overrides_DO_NOT_OVERRIDE`` checks that) against the three
stores users run: ``memory://``, a SQLite file and a real Redis server (the ``redis`` param needs the
session's redis-server; it is skipped without the binary locally and fails under ``CI=true``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

pytest.importorskip(
    "langchain_core", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
pytest.importorskip(
    "langchain_tests", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from promptcache import PromptCache
from promptcache.langchain import PromptCacheLangChain

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

STORES = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each kind."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'langchain.db'}"
    url: str = request.getfixturevalue("redis_url")  # flushed for each test
    return url


class TestSyncStandardCache(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, store_url: str) -> Iterator[PromptCacheLangChain]:
        prompt_cache = PromptCache.from_url(store_url, namespace="langchain-tests")
        yield PromptCacheLangChain(prompt_cache, agent_id="standard-suite")
        prompt_cache.close()


@pytest.mark.anyio
class TestAsyncStandardCache(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, store_url: str) -> AsyncIterator[PromptCacheLangChain]:
        prompt_cache = PromptCache.from_url(store_url, namespace="langchain-tests")
        yield PromptCacheLangChain(prompt_cache, agent_id="standard-suite")
        await prompt_cache.aclose()
