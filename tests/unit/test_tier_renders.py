"""The hot tier's rendered hits: an SDK hit's bytes made once per kept entry and form, charged to the tier's
byte bound and dropped with the entry (scripted invalidation source; the SDK side is in test_sdk_openai)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from helpers import ScriptedPushes as Source

from promptcache import make_key
from promptcache._entry import Entry, encode_entry, scope_of
from promptcache._tier import HotTier

if TYPE_CHECKING:
    from promptcache._keys import CacheKey

NOW = 1_000.0
BODY = {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "Hello"}}]}


def key_for(text: str) -> CacheKey:
    return make_key({"model": "m", "messages": [{"role": "user", "content": text}]}, agent_id="a")


def raw_entry(key: CacheKey, body: object = BODY, *, expires_at: float = NOW + 60) -> bytes:
    entry = Entry(key.digest, scope_of(key), key.endpoint, NOW - 1, expires_at, body=body)
    return encode_entry(entry, compress_above=None)


def kept(tier: HotTier, key: CacheKey, raw: bytes) -> None:
    ticket = tier.begin(key.store_key)
    assert ticket is not None
    tier.offer(key.store_key, raw, ticket)


class Renders:
    """A render that counts its calls and sends the body as JSON."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, entry: Entry) -> bytes | None:
        self.calls += 1
        return None if entry.body is None else orjson.dumps(entry.body)


def test_a_hit_is_rendered_once_then_served_from_its_bytes() -> None:
    tier, key, render = HotTier(Source(), 1 << 20), key_for("hi"), Renders()
    kept(tier, key, raw_entry(key))
    first = tier.rendered(key, key.store_key, NOW, "body", render)
    second = tier.rendered(key, key.store_key, NOW, "body", render)
    assert first is not None
    assert second is not None
    assert orjson.loads(first[1]) == orjson.loads(second[1]) == BODY
    assert render.calls == 1
    assert second[0].from_tier
    assert second[0].body is None  # the entry that counts the hit holds no answer of its own


def test_each_form_is_rendered_on_its_own() -> None:
    tier, key, render = HotTier(Source(), 1 << 20), key_for("hi"), Renders()
    kept(tier, key, raw_entry(key))
    tier.rendered(key, key.store_key, NOW, "body", render)
    other = tier.rendered(key, key.store_key, NOW, "other", lambda _entry: b"other bytes")
    assert other is not None
    assert other[1] == b"other bytes"


def test_a_pushed_change_drops_the_rendered_bytes_with_the_entry() -> None:
    source = Source()
    tier, key, render = HotTier(source, 1 << 20), key_for("hi"), Renders()
    kept(tier, key, raw_entry(key))
    assert tier.rendered(key, key.store_key, NOW, "body", render) is not None
    source.push(key.store_key)
    assert tier.rendered(key, key.store_key, NOW, "body", render) is None
    assert tier.size == 0
    new_body = {**BODY, "id": "chatcmpl-2"}
    kept(tier, key, raw_entry(key, new_body))
    found = tier.rendered(key, key.store_key, NOW, "body", render)
    assert found is not None
    assert orjson.loads(found[1]) == new_body  # never the bytes rendered from the old entry
    assert render.calls == 2


def test_rendered_bytes_expire_with_their_entry() -> None:
    tier, key, render = HotTier(Source(), 1 << 20), key_for("hi"), Renders()
    kept(tier, key, raw_entry(key, expires_at=NOW + 5))
    assert tier.rendered(key, key.store_key, NOW, "body", render) is not None
    assert tier.rendered(key, key.store_key, NOW + 5, "body", render) is None
    assert len(tier) == 0


def test_a_render_refusing_the_entry_keeps_nothing() -> None:
    tier, key = HotTier(Source(), 1 << 20), key_for("hi")
    raw = raw_entry(key)
    kept(tier, key, raw)
    assert tier.rendered(key, key.store_key, NOW, "stream", lambda _entry: None) is None
    assert tier.size == len(raw) + len(key.store_key) + 200  # the entry alone is charged


def test_rendered_bytes_count_against_the_bound_and_leave_with_their_entry() -> None:
    keys = [key_for(f"question {i}") for i in range(40)]
    raws = [raw_entry(key, {"text": "x" * 900}) for key in keys]
    bound = 12 * (len(raws[0]) + len(keys[0].store_key) + 200)
    tier, render = HotTier(Source(), bound), Renders()
    for key, raw in zip(keys, raws, strict=True):
        kept(tier, key, raw)
        assert tier.rendered(key, key.store_key, NOW, "body", render) is not None
        assert tier.size <= bound
    present = [(k, r) for k, r in zip(keys, raws, strict=True) if tier.get(k.store_key) is not None]
    assert 0 < len(present) < 12  # the renders took room the entries alone would have had
    charged = sum(
        len(r) + len(k.store_key) + 200 + len(orjson.dumps({"text": "x" * 900})) + 200 for k, r in present
    )
    assert tier.size == charged
    tier.clear()
    assert tier.size == 0


def test_a_render_that_does_not_fit_is_served_but_not_kept() -> None:
    key, render = key_for("hi"), Renders()
    raw = raw_entry(key)
    tier = HotTier(Source(), len(raw) + len(key.store_key) + 200 + 10)  # room for the entry only
    kept(tier, key, raw)
    for _ in range(3):
        found = tier.rendered(key, key.store_key, NOW, "body", render)
        assert found is not None
        assert orjson.loads(found[1]) == BODY
    assert render.calls == 3
    assert tier.get(key.store_key) == raw  # the entry itself was not evicted to make room for its bytes
