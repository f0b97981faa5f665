"""Counters behind :meth:`PromptCache.stats`, and the frozen snapshot it returns."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Final

from promptcache._events import Result
from promptcache._gate import tokens_of, usage_of
from promptcache.exceptions import ServerStateError

if TYPE_CHECKING:
    from promptcache._entry import Entry
    from promptcache._events import Emitter
    from promptcache._keys import CacheKey

__all__ = ["RETRYING", "CacheStats", "Counters"]

RETRYING: Final[ContextVar[bool]] = ContextVar("promptcache_retrying", default=False)
"""True while an SDK client's retry of a failed attempt is answered (set by the SDK transport): the call
was counted as a request by its first attempt, so the retry's lookup, hit, miss or bypass is not counted
again, nor told to the hooks. What it does upstream (calls, errors, writes) is counted as ever."""


@dataclass(slots=True)
class Counters:
    """Mutable counters owned by one cache; only the cache's event loop touches them."""

    requests: int = 0
    hits: int = 0
    tier_hits: int = 0
    converted: int = 0
    misses: int = 0
    bypasses: int = 0
    coalesced: int = 0
    upstream_calls: int = 0
    upstream_errors: int = 0
    uncacheable: int = 0
    server_state: int = 0
    not_stored: int = 0
    oversize: int = 0
    writes: int = 0
    writes_dropped: int = 0
    superseded: int = 0
    store_errors: int = 0
    store_timeouts: int = 0
    store_skipped: int = 0
    corrupt_entries: int = 0
    lock_waits: int = 0
    lock_timeouts: int = 0
    breaker_opened: int = 0
    breaker_closed: int = 0
    input_tokens_saved: int = 0
    output_tokens_saved: int = 0
    latency_saved: float = 0.0

    def request(self) -> None:
        """Count one request that has a key (not an SDK's retry: :data:`RETRYING`)."""
        if not RETRYING.get():
            self.requests += 1

    def miss(
        self, key: CacheKey, events: Emitter, *, reason: str | None = None, tokens: tuple[int, int] = (0, 0)
    ) -> None:
        """Count a caller not answered from the cache (and the hooks' miss event)."""
        if RETRYING.get():
            return
        self.misses += 1
        if events.hooks:
            events.request(Result.MISS, key, reason=reason, tokens=tokens)

    def hit(self, entry: Entry, key: CacheKey, events: Emitter) -> None:
        """Count a caller answered by the stored ``entry`` (what it saved, and the hooks' hit event)."""
        if RETRYING.get():
            return
        self.hits += 1
        self.converted += entry.converted
        if entry.from_tier:
            self.tier_hits += 1
        inp, out = tokens_of(entry.usage)
        self.input_tokens_saved += inp
        self.output_tokens_saved += out
        self.latency_saved += entry.latency
        if events.hooks:
            tier = entry.from_tier
            events.request(Result.HIT, key, tokens=(inp, out), latency_saved=entry.latency, tier=tier)

    def shared(self, key: CacheKey, events: Emitter, body: Any, *, coalesced: bool) -> None:  # noqa: ANN401
        """Count a caller answered by an upstream call it did not make: another caller's in flight
        (``coalesced``), or another process's, found stored after waiting on its lock."""
        if RETRYING.get():
            return
        self.hits += 1
        self.coalesced += coalesced
        inp, out = usage_of(body)
        self.input_tokens_saved += inp
        self.output_tokens_saved += out
        if events.hooks:
            events.request(Result.HIT, key, tokens=(inp, out), coalesced=coalesced)

    def bypass(self, *, uncacheable: bool, reason: Exception | None) -> str | None:
        """Count one bypass; returns the reason its event carries (None: an SDK's retry, not counted)."""
        if RETRYING.get():
            return None
        self.requests += 1
        self.bypasses += 1
        if isinstance(reason, ServerStateError):
            self.server_state += 1
            return f"server-state: {reason.reason}"
        if uncacheable:
            self.uncacheable += 1
            return "uncacheable"
        return "requested"

    def snapshot(self, breaker_state: str) -> CacheStats:
        return CacheStats(**asdict(self), breaker_state=breaker_state)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What one cache has done since it was created.

    ``hits + misses + bypasses == requests`` always. ``server_state`` bypasses are requests that refer to
    mutable provider state (not cached unless the scope opts in); ``uncacheable`` ones have no canonical
    JSON form. ``coalesced`` hits are callers that shared another caller's in-flight upstream call.
    ``upstream_calls`` are the upstream calls that succeeded and ``upstream_errors`` those that raised or
    answered an error (streamed or not), so ``upstream_calls`` equals ``misses`` except for callers whose
    call failed or that gave up waiting on another process's lock. ``converted`` hits were answered from
    the other kind of stored answer (a stream synthesised from a body, or a body assembled from a stream).
    ``tier_hits`` are the hits served from the in-process hot tier, with no store round trip. An SDK's
    retry of a failed attempt is part of the call its first attempt counted: it adds no request, hit, miss
    or bypass (:data:`RETRYING`), though its upstream calls and errors count.

    .. versionadded:: 0.1.0
    """

    requests: int
    hits: int
    tier_hits: int
    converted: int
    misses: int
    bypasses: int
    coalesced: int
    upstream_calls: int
    upstream_errors: int
    uncacheable: int
    server_state: int
    not_stored: int
    oversize: int
    writes: int
    writes_dropped: int
    superseded: int
    store_errors: int
    store_timeouts: int
    store_skipped: int
    corrupt_entries: int
    lock_waits: int
    lock_timeouts: int
    breaker_opened: int
    breaker_closed: int
    input_tokens_saved: int
    output_tokens_saved: int
    latency_saved: float
    breaker_state: str

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (hits + misses), 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def tokens_saved(self) -> int:
        return self.input_tokens_saved + self.output_tokens_saved

    def as_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hit_rate"] = self.hit_rate
        out["tokens_saved"] = self.tokens_saved
        return out
