"""The hot tier's own rules, with a scripted invalidation source (the Redis side is in tests/redis)."""

from __future__ import annotations

import random

import pytest
from helpers import ScriptedPushes as Source

from promptcache import CacheConfig, ConfigError
from promptcache._tier import HotTier


def filled(source: Source, *keys: str, max_bytes: int = 1 << 20) -> HotTier:
    tier = HotTier(source, max_bytes)
    for key in keys:
        ticket = tier.begin(key)
        assert ticket is not None
        tier.offer(key, f"value of {key}".encode(), ticket)
    return tier


def test_a_kept_entry_is_served_until_the_store_says_it_changed() -> None:
    source = Source()
    tier = filled(source, "ns:a", "ns:b")
    assert tier.get("ns:a") == b"value of ns:a"
    source.push("ns:a")
    assert tier.get("ns:a") is None  # the push is applied before the read
    assert tier.get("ns:b") == b"value of ns:b"


def test_a_read_that_raced_a_change_never_fills_the_tier() -> None:
    """The store read began, then the key changed (its push arrived before the read's reply was kept):
    the possibly old bytes are returned to that caller but not kept."""
    source = Source()
    tier = HotTier(source, 1 << 20)
    ticket = tier.begin("ns:a")
    assert ticket is not None
    source.push("ns:a")
    tier.offer("ns:a", b"old", ticket)
    assert tier.get("ns:a") is None
    # The next read, begun after the change, may fill it.
    ticket = tier.begin("ns:a")
    assert ticket is not None
    tier.offer("ns:a", b"new", ticket)
    assert tier.get("ns:a") == b"new"


def test_two_reads_in_flight_and_a_change_between_keep_nothing_of_either() -> None:
    source = Source()
    tier = HotTier(source, 1 << 20)
    first, second = tier.begin("ns:a"), tier.begin("ns:a")
    assert first is not None
    assert second is not None
    tier.discard("ns:a")  # this process writes the key
    tier.offer("ns:a", b"old", first)
    tier.offer("ns:a", b"old", second)
    assert tier.get("ns:a") is None


@pytest.mark.parametrize("how", ["lost", "new session", "flush", "cleared"])
def test_anything_that_may_have_missed_a_push_empties_the_tier(how: str) -> None:
    source = Source()
    tier = filled(source, "ns:a", "ns:b")
    ticket = tier.begin("ns:c")  # a read in flight across the event must not fill the tier either
    assert ticket is not None
    if how == "lost":
        source.session = 0
    elif how == "new session":
        source.session = 2
    elif how == "flush":
        source.flush()
    else:
        tier.clear()  # the breaker opened
    assert tier.get("ns:a") is None
    tier.offer("ns:c", b"old", ticket)
    assert tier.get("ns:c") is None
    assert len(tier) == 0
    assert tier.size == 0


def test_nothing_is_kept_or_served_while_no_subscription_is_live() -> None:
    source = Source()
    source.session = 0
    tier = HotTier(source, 1 << 20)
    assert tier.begin("ns:a") is None
    assert tier.get("ns:a") is None


def test_the_byte_bound_holds_under_ten_thousand_entries_of_mixed_sizes() -> None:
    source = Source()
    bound = 2 * 1024 * 1024
    tier = HotTier(source, bound)
    rng = random.Random(17)
    kept: dict[str, bytes] = {}
    for i in range(10_000):
        key = f"ns:v2:agent:0:~:{i:08d}"
        value = bytes([i % 251]) * rng.choice((10, 300, 1_500, 20_000, 200_000))
        ticket = tier.begin(key)
        assert ticket is not None
        tier.offer(key, value, ticket)
        kept[key] = value
        assert tier.size <= bound
    # What is kept is exactly what was offered for those keys, and the charge adds up.
    present = [k for k in kept if tier.get(k) is not None]
    assert present
    assert all(tier.get(k) == kept[k] for k in present)
    assert tier.size == sum(len(kept[k]) + len(k) for k in present) + 200 * len(present)
    assert tier.evictions == 10_000 - len(present)


def test_least_recently_read_entries_leave_first() -> None:
    source = Source()
    value = b"x" * 1000
    cost = len(value) + len("ns:0") + 200
    tier = HotTier(source, 3 * cost)
    for key in ("ns:0", "ns:1", "ns:2"):
        ticket = tier.begin(key)
        assert ticket is not None
        tier.offer(key, value, ticket)
    assert tier.get("ns:0") == value  # read: now the most recent
    ticket = tier.begin("ns:3")
    assert ticket is not None
    tier.offer("ns:3", value, ticket)
    assert tier.get("ns:1") is None
    assert tier.get("ns:0") == value


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    source = Source()
    tier = HotTier(source, 1000)
    ticket = tier.begin("ns:a")
    assert ticket is not None
    tier.offer("ns:a", b"x" * 2000, ticket)
    assert tier.get("ns:a") is None
    assert tier.size == 0


def test_invalidating_an_agent_here_forgets_its_keys_at_once() -> None:
    source = Source()
    tier = filled(source, "ns:v2:a:0:~:1", "ns:v2:a:0:~:2", "ns:v2:b:0:~:1")
    tier.discard_prefix("ns:v2:a:")
    assert tier.get("ns:v2:a:0:~:1") is None
    assert tier.get("ns:v2:a:0:~:2") is None
    assert tier.get("ns:v2:b:0:~:1") is not None


def test_closing_drops_the_subscription() -> None:
    source = Source()
    tier = filled(source, "ns:a")
    tier.close()
    assert source.closed
    assert len(tier) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64mb"])
def test_a_bad_tier_size_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ConfigError, match="hot_tier_bytes"):
        CacheConfig(hot_tier_bytes=bad)  # type: ignore[arg-type]


def test_memory_and_sqlite_stores_have_no_tier(tmp_path: object) -> None:
    from promptcache import PromptCache  # noqa: PLC0415

    cache = PromptCache.from_url("memory://")
    assert cache._guard.tier is None


def test_a_read_of_a_key_not_kept_polls_once_and_a_change_before_it_keeps_nothing() -> None:
    """The read path of a key the tier does not hold: its lookup and its ticket (``poll=False``) do not
    poll (pushes only drop entries); a change pushed before is applied at the offer, while the key is
    being read, so those bytes are not kept (the safe side); the next read keeps."""
    source = Source()
    tier = filled(source, "ns:other")  # polled: the subscription is live
    polls = source.polls
    source.push("ns:a")
    assert tier.get("ns:a") is None
    ticket = tier.begin("ns:a", poll=False)
    assert ticket is not None
    assert source.polls == polls  # neither the lookup nor the ticket polled
    tier.offer("ns:a", b"old", ticket)
    assert source.polls == polls + 1
    assert tier.get("ns:a") is None
    ticket = tier.begin("ns:a", poll=False)
    assert ticket is not None
    tier.offer("ns:a", b"new", ticket)
    assert tier.get("ns:a") == b"new"


def test_refresh_applies_the_pushes_that_lookups_of_absent_keys_skip() -> None:
    """A lost subscription empties the tier at the next refresh, with no kept key looked up."""
    source = Source()
    tier = filled(source, "ns:a", "ns:b")
    source.session = 0
    assert tier.get("ns:absent") is None
    assert len(tier) == 2  # not applied yet: nothing was served or kept
    assert tier.refresh() is False
    assert len(tier) == 0


def test_a_kept_key_is_looked_up_after_a_poll() -> None:
    """A key the tier holds is served only after the pushes are applied: its lookup polls."""
    source = Source()
    tier = filled(source, "ns:a")
    polls = source.polls
    source.push("ns:a")
    assert tier.get("ns:a") is None
    assert source.polls == polls + 1


def test_a_ticket_without_a_poll_polls_when_the_last_poll_saw_no_subscription() -> None:
    """``poll=False`` skips the poll only while the subscription was live at the last one: a fresh tier
    (never polled), or one whose last poll saw none, asks the store, so it fills once the subscription
    is live and keeps nothing while it is not."""
    source = Source()
    tier = HotTier(source, 1 << 20)
    ticket = tier.begin("ns:a", poll=False)
    assert ticket is not None
    tier.offer("ns:a", b"v", ticket)
    assert tier.get("ns:a") == b"v"
    source.session = 0
    assert tier.get("ns:a") is None  # the lost subscription empties the tier
    assert tier.begin("ns:b", poll=False) is None
    source.session = 2
    assert tier.begin("ns:b", poll=False) is not None


def test_offering_a_value_too_big_to_keep_does_not_poll_and_later_pushes_still_apply() -> None:
    """A value larger than the tier is never kept, so its offer skips the poll; what was pushed meanwhile
    is applied by the next operation (a kept key changed then is dropped)."""
    source = Source()
    tier = filled(source, "ns:a", max_bytes=1000)
    ticket = tier.begin("ns:big")
    assert ticket is not None
    source.push("ns:a")
    polls = source.polls
    tier.offer("ns:big", b"x" * 2000, ticket)
    assert source.polls == polls
    assert tier.get("ns:big") is None
    assert tier.get("ns:a") is None  # the push, applied now


def test_the_change_hook_hears_each_push_and_every_loss_but_not_the_first_subscription() -> None:
    """``on_change`` (the single-flight's: fences close calls in flight to joiners) is told each pushed
    key, and None when anything may have changed unheard: a lost subscription or a flush. The first
    subscription missed nothing a call in flight could have known, so it is not a loss (telling it
    would split the first burst of identical misses into one call each)."""
    source, told = Source(), list[str | None]()
    tier = HotTier(source, 1 << 20)
    tier.on_change = told.append
    assert tier.refresh()
    source.push("ns:fence:v2:a:", "ns:v2:b:0:~:k")
    tier.refresh()
    source.flush()
    tier.refresh()
    source.session = 0  # lost
    assert not tier.refresh()
    source.session = 2  # and back
    assert tier.refresh()
    assert told == ["ns:fence:v2:a:", "ns:v2:b:0:~:k", None, None]
