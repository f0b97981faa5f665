"""Write fences on a real redis-server (see tests/unit/test_fences.py; the cluster's in tests/cluster).

Two caches, each with its own connections, single-flight and hot tier, stand for two processes. A's miss
is in flight when B refreshes the same request or invalidates the agent; A's older answer must not land,
nor be served from A's tier.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from helpers import fence_invalidate, fence_join_race, fence_race, fence_refresh

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache import PromptCache


@pytest.mark.parametrize(("change", "expected"), [(fence_refresh, "new"), (fence_invalidate, None)])
def test_an_older_answer_never_lands_after_a_change_on_redis(
    redis_url: str, change: Callable[[PromptCache], Awaitable[object]], expected: str | None
) -> None:
    assert asyncio.run(fence_race(redis_url, change)) == [expected] * 3


@pytest.mark.parametrize(("change", "expected"), [(fence_refresh, "new"), (fence_invalidate, "later")])
def test_a_caller_after_another_process_changed_the_answer_does_not_join_an_older_call(
    redis_url: str, change: Callable[[PromptCache], Awaitable[object]], expected: str
) -> None:
    """Once Redis has pushed B's invalidation or refresh to A's hot tier, a caller in A does not share
    A's call begun before it (a user trial found such joins were every late read left): it reads B's
    refreshed answer, or makes its own call. The older call's caller still gets its answer."""
    assert asyncio.run(fence_join_race(redis_url, change)) == ("old", expected)
