"""Issue #13: a module-level cache in a pytest-asyncio suite, where every test runs on a new event loop.

The inner project is what a user writes: a cache created at import time, async tests that each ask the
same prompt, pytest-asyncio's default function-scoped loops, warnings as errors. It runs in a subprocess
so its plugin set and loops are its own.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

INNER_TEST = """
import pytest

from promptcache import PromptCache

CACHE = PromptCache.from_url({url!r}, store_timeout=2.0)  # module level, made before any loop exists
CALLS = []


async def upstream():
    CALLS.append(1)
    return {{
        "id": "c", "object": "chat.completion", "model": "m",
        "choices": [{{"index": 0, "finish_reason": "stop",
                      "message": {{"role": "assistant", "content": "answer"}}}}],
    }}


REQUEST = {{"model": "m", "messages": [{{"role": "user", "content": "the same question"}}]}}


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(5))
async def test_ask(n):
    body = await CACHE.get_or_call(REQUEST, upstream, agent_id="suite")
    assert body["choices"][0]["message"]["content"] == "answer"
    await CACHE.drain()  # what this test wrote is in the store before its loop closes


def test_zz_totals():
    stats = CACHE.stats()
    assert len(CALLS) == 1, (CALLS, stats)
    assert (stats.hits, stats.misses) == (4, 1), stats
    assert (stats.store_errors, stats.store_timeouts, stats.store_skipped) == (0, 0, 0), stats
"""


def _kinds() -> list[Any]:
    return [
        pytest.param("redis", marks=pytest.mark.redis, id="redis"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("memory", id="memory"),
    ]


@pytest.mark.parametrize("kind", _kinds())
def test_module_level_cache_under_pytest_asyncio_loops(
    kind: str, pytester: pytest.Pytester, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Five async tests on five loops share one module-level cache: one miss, four hits, no store error,
    no warning (a leaked connection or an un-finalised loop value would be an error here)."""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'cache.db'}"
    else:
        url = "memory://"
    pytester.makeini(
        textwrap.dedent(
            """
            [pytest]
            asyncio_mode = strict
            asyncio_default_fixture_loop_scope = function
            filterwarnings = error
            """
        )
    )
    pytester.makepyfile(test_suite=INNER_TEST.format(url=url))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:promptcache", "-q")
    result.assert_outcomes(passed=6)
