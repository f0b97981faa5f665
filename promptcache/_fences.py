"""Write fences: an answer is not written over a change made after its upstream call began.

An upstream call takes seconds; meanwhile another caller (in any process) may refresh the same request,
or the agent may be invalidated. Written afterwards, the older call's answer would replace the newer one,
or bring back what the invalidation removed, until its TTL ends. So before an answer of an upstream call
is written, one batched read looks at:

* the entries under both kinds of its key (body and stream): one whose own call began later (its
  ``created_at - latency``) is newer, and stays;
* the fences of its agent and of its agent version: :meth:`PromptCache.invalidate` records when it ran
  (``<namespace>:fence:v<schema>:<agent>:[<version>:]``, outside every entry prefix, kept
  :data:`FENCE_TTL` seconds) before it deletes; an answer whose call began before that is dropped;
* the fence of its key: a refresh (of either kind) records when it began, before its own call, so an
  older call's answer landing while the refresh's call runs is dropped too (``<namespace>:fence:`` and
  the rest of the entry's store key).

A superseded answer is counted (``stats().superseded``), not written. When a newer answer supersedes
it, an entry of the answer's own kind older than the answer goes too (:attr:`Verdict.older`): a refresh
of one kind whose write a newer answer of the other kind superseded would otherwise leave the answer it
refreshed served to its kind's callers.

The check and the write are two store calls, and a busy event loop can hold the write back for many
milliseconds after its check. So the write checks the fences again in the same step
(:class:`~promptcache.backends.FencingStore`: a Lua script on Redis, one statement on SQLite, under the
lock in memory): an invalidation or a refresh recorded meanwhile forbids it. Redis Cluster keeps an
agent's fences in other slots than its entries, so there the fences are read again after the write
(:func:`fenced_since`), and a write that landed after an invalidation's or refresh's delete is taken
back (deleted only while the key still holds exactly what was written): an answer can be read in that
window of one round trip, but never stays stored.
Clocks: both sides use wall-clock time (the cache's clock), so hosts whose clocks differ by more than a
call's duration can miss a fence (never worse than with no fence). When the read fails (a counted store
fault), the answer is not written either: the store is failing, and nothing is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from promptcache._entry import parse_entry
from promptcache._keys import agent_prefix
from promptcache.backends import BatchReadStore
from promptcache.exceptions import EntryError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptcache._keys import CacheKey
    from promptcache.backends import Store

__all__ = [
    "FENCE_TTL",
    "Fence",
    "Verdict",
    "fence_for",
    "fence_key",
    "fence_record",
    "fenced_prefix",
    "fenced_since",
    "refresh_fence",
    "superseded_by",
]

FENCE_TTL: Final = 3600.0  # seconds an invalidation or a refresh fences answers of calls begun before it


@dataclass(frozen=True, slots=True)
class Fence:
    """What an answer's write is checked against: when its call began, and the keys that may hold a
    newer change (both kinds' entries; the agent's, the agent version's and the key's refresh fences)."""

    started: float
    entries: tuple[str, ...]
    fences: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the check before a write found: what makes the answer stale (None: nothing), and, when that
    is a newer answer, the bytes of an entry of the answer's own kind older than the answer (to delete:
    it is older than the newer answer too)."""

    why: str | None = None
    older: bytes | None = None


def fence_key(prefix: str) -> str:
    """Where an invalidation of the entries under ``prefix`` (an :func:`agent_prefix`) records its time."""
    namespace, _, rest = prefix.partition(":")
    return f"{namespace}:fence:{rest}"


def fenced_prefix(key: str) -> str | None:
    """The store-key prefix whose answers the fence under ``key`` forbids (an agent's, an agent
    version's, or one entry's: the inverse of :func:`fence_key`), or None when ``key`` is no fence."""
    namespace, _, rest = key.partition(":")
    return f"{namespace}:{rest[len('fence:') :]}" if rest.startswith("fence:") else None


def refresh_fence(key: CacheKey) -> str:
    """Where a refresh of ``key`` records when it began (beside the entry: the same hash tag): an answer
    of either kind whose call began before it is not written, even while the refresh's own call runs."""
    return fence_key(key.store_key)


def fence_for(key: CacheKey, started: float) -> Fence:
    """The fence of an answer to ``key`` whose upstream call began at ``started`` (wall clock)."""
    agent = agent_prefix(key.namespace, key.agent_id)
    version = agent_prefix(key.namespace, key.agent_id, key.agent_version)
    return Fence(
        started,
        (key.store_key, key.stream_store_key),
        (fence_key(agent), fence_key(version), refresh_fence(key)),
    )


def fence_record(fence: str, now: float) -> tuple[str, bytes, float]:
    """The ``store.set`` arguments that record an invalidation or refresh at ``now`` (wall clock) under
    the fence key ``fence``."""
    return fence, repr(now).encode(), FENCE_TTL


async def superseded_by(store: Store, fence: Fence, own: str) -> Verdict:
    """Whether an answer fenced by ``fence``, to be written under ``own`` (one of ``fence.entries``), is
    stale ("a newer answer", "an invalidation or a refresh") before it is written."""
    values = await _read(store, [*fence.entries, *fence.fences])
    newer, older = False, None
    for name, raw in zip(fence.entries, values, strict=False):
        began = _began(raw)
        if began is not None and began > fence.started:
            newer = True
        elif began is not None and name == own:
            older = raw
    if newer:
        return Verdict("a newer answer", older)
    if _fenced(values[len(fence.entries) :], fence.started):
        return Verdict("an invalidation or a refresh")
    return Verdict()


async def fenced_since(store: Store, fence: Fence) -> bool:
    """After the answer fenced by ``fence`` was written: whether an invalidation or a refresh recorded
    since its call began (landed between the check and the write: the write must be taken back)."""
    return _fenced(await _read(store, fence.fences), fence.started)


def _began(raw: bytes | None) -> float | None:
    """When the upstream call of a stored entry began (None: no entry, or not one we can read)."""
    if raw is None:
        return None
    try:
        entry = parse_entry(raw)
    except EntryError:
        return None
    return entry.created_at - entry.latency


def _fenced(values: Sequence[bytes | None], started: float) -> bool:
    for raw in values:
        try:
            if raw is not None and float(raw) > started:
                return True
        except ValueError:
            continue
    return False


async def _read(store: Store, keys: Sequence[str]) -> list[bytes | None]:
    if isinstance(store, BatchReadStore):
        return await store.get_many(keys)
    # One after the other: a memory store's reads never suspend, so its write still lands before the
    # event loop's next turn (a caller repeating the request at once finds it); gather would take turns.
    return [await store.get(k) for k in keys]
