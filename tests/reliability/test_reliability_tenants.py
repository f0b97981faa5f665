"""Tenants: the same request from two tenants is two entries, and no id reaches another tenant's keys.

Ids are chosen to attack the key layout: Redis glob characters (``*``, ``?``, ``[x]``, ``\\``), the
separator (``:``), the Redis Cluster hash-tag braces, the "no tenant" marker (``~``), the escape character
itself (``%``, and the escaped form of ``*``), whitespace, NUL and look-alike unicode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from helpers import other_tasks
from reliability_support import (
    AGENT,
    Rig,
    finish_sdk,
    run_traffic,
    sdk_answer_is_for,
    sdk_messages,
    traffic,
    wrapped_openai,
)

from promptcache import CacheConfig, PromptCache, make_key
from promptcache._entry import parse_entry
from promptcache.backends.redis import glob_escape

if TYPE_CHECKING:
    from fake_llm import FakeLLM

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

HOSTILE_IDS = [
    "*",
    "**",
    "a*",
    "?",
    "[x]",
    "\\*",
    "a:b",
    "*:*",
    "{x}",
    "}",
    "~",
    "%",
    "%2A",
    "x y",
    "\x00",
    "caf\u00e9",
    "cafe\u0301",
    "a",
    "b",
]


async def test_same_request_from_two_tenants_is_two_entries(redis_url: str) -> None:
    """Thirty prompts asked concurrently by tenants A and B, three times each, give sixty entries, each
    written for its own tenant; B never receives A's answer (nor A B's)."""
    rig = Rig.open(redis_url, store_timeout=1.0)
    try:
        asks = traffic(2, 30, 3)
        await run_traffic(rig, asks, concurrency=16)
        await rig.settle()
        keys = await rig.store_keys("promptcache:*")
        scopes: dict[str | None, int] = {}
        assert rig.raw is not None
        for key in keys:
            value = await rig.raw.get(key)
            assert isinstance(value, bytes)
            tenant = parse_entry(value).scope[3]
            scopes[tenant] = scopes.get(tenant, 0) + 1
            assert key.decode().split(":")[4] == tenant  # the key's tenant segment is its entry's tenant
        assert scopes == {"tenant-0": 30, "tenant-1": 30}
        stats = await rig.finish()
        assert rig.upstream.completed == 60
        assert stats.hits == 120
    finally:
        await rig.close()


async def test_same_request_from_two_tenants_through_the_sdk(redis_url: str, fake_llm: FakeLLM) -> None:
    """Through the SDK, the x-promptcache-tenant header separates tenants: A's and B's identical requests
    make two upstream calls, and each tenant's repeat gets its own first answer back."""
    tasks_before = other_tasks()
    cache = PromptCache.from_url(redis_url, CacheConfig(store_timeout=1.0))
    client = wrapped_openai(fake_llm, cache)
    try:
        answers: dict[str, list[str | None]] = {"A": [], "B": []}
        for _ in range(3):
            for tenant in ("A", "B"):
                reply = await client.chat.completions.create(
                    model="gpt-x",
                    messages=sdk_messages("what is my plan?"),
                    extra_headers={"x-promptcache-tenant": tenant},
                )
                answers[tenant].append(reply.choices[0].message.content)
                await cache.drain()
        assert fake_llm.calls == 2
        assert answers["A"] == ["answer #1 to: what is my plan?"] * 3
        assert answers["B"] == ["answer #2 to: what is my plan?"] * 3
        assert all(sdk_answer_is_for(a, "what is my plan?") for a in answers["A"] + answers["B"])
        assert "x-promptcache-tenant" not in fake_llm.last_request.headers  # never sent upstream
        stats = await finish_sdk(cache, client, tasks_before)
        assert (stats.requests, stats.misses, stats.hits) == (6, 2, 4)
    finally:
        await client.close()
        await cache.aclose()


def _tenant_prefix(store_key: str) -> str:
    """The part of a store key that belongs to one tenant: everything before the digest."""
    return store_key.rpartition("{")[0]


async def test_hostile_tenant_ids_never_reach_another_tenants_keys(redis_url: str) -> None:
    """Tenant ids made of glob, separator, hash-tag, escape and marker characters each get their own keys:
    no two share a key, and a literal prefix scan of one tenant's keys matches that tenant's only."""
    rig = Rig.open(redis_url, store_timeout=1.0)
    tenants: list[str | None] = [*HOSTILE_IDS, None]
    try:
        asks = [(tenant, f"q{i}") for tenant in tenants for i in range(3)]
        await run_traffic(rig, asks, concurrency=16)
        await rig.settle()
        await run_traffic(rig, asks, concurrency=16)  # all hits, each on its own tenant's entry
        own: dict[str | None, set[bytes]] = {
            t: {rig.key_of(t, f"q{i}").store_key.encode() for i in range(3)} for t in tenants
        }
        everything = set().union(*own.values())
        assert len(everything) == 3 * len(tenants)
        assert set(await rig.store_keys("promptcache:*")) == everything
        for tenant in tenants:
            prefix = _tenant_prefix(rig.key_of(tenant, "q0").store_key)
            assert set(await rig.store_keys(glob_escape(prefix) + "*")) == own[tenant], tenant
        stats = await rig.finish()
        assert (stats.misses, stats.hits) == (len(asks), len(asks))
    finally:
        await rig.close()


async def test_invalidating_star_deletes_only_stars_entries(redis_url: str) -> None:
    """With agents named by hostile ids, each serving three tenants (``*`` among them), invalidating agent
    ``*`` deletes exactly its own entries, for every tenant, and every other agent's entries still hit."""
    rig = Rig.open(redis_url, store_timeout=1.0)
    agents = ["*", "**", "a*", "\\*", "%2A", "[*]", "*:*", "x"]
    tenants: list[str | None] = ["*", "t", None]
    try:
        for agent in agents:
            await run_traffic(rig, [(t, "q") for t in tenants], concurrency=3, agent_id=agent)
        await rig.settle()
        deleted = await rig.cache.invalidate("*")
        assert deleted == len(tenants)
        survivors: list[Any] = []
        for agent in agents:
            for tenant in tenants:
                hits = rig.cache.stats().hits
                await rig.ask(tenant, "q", agent_id=agent)
                survivors.append((agent, tenant, rig.cache.stats().hits - hits))
        assert [s for s in survivors if s[2] != (0 if s[0] == "*" else 1)] == []
        await rig.finish()
    finally:
        await rig.close()


def test_hostile_ids_are_refused_or_escaped_never_raw_in_keys() -> None:
    """No hostile id appears raw in a store key: every key is made only of safe characters, percent
    escapes, the separators and the digest's braces."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-%:~{}")
    for tenant in HOSTILE_IDS:
        key = make_key({"model": "m", "messages": []}, agent_id=AGENT, tenant=tenant)
        head, _, digest = key.store_key.rpartition("{")
        assert set(head) <= allowed - {"{", "}"}, (tenant, key.store_key)
        assert digest == key.digest + "}"
