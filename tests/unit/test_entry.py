"""decode_entry: one parse of the stored bytes, every identity and shape check, in each stored form."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from promptcache import Entry, EntryError, make_key
from promptcache._entry import decode_entry, encode_entry

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEY = make_key(REQUEST, namespace="ns", agent_id="a", agent_version="1", tenant="t")
BODY = {"choices": [{"message": {"role": "assistant", "content": "x" * 200}}], "usage": {"prompt_tokens": 3}}


def entry(**changes: object) -> Entry:
    base = Entry(
        digest=KEY.digest,
        scope=("ns", "a", "1", "t"),
        endpoint="chat.completions",
        created_at=100.0,
        expires_at=200.0,
        body=BODY,
        model="m",
        usage={"prompt_tokens": 3},
        latency=0.5,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("form", ["bytes", "compressed", "str"])
def test_every_stored_form_decodes_to_the_same_entry(form: str) -> None:
    """Plain bytes (the fast path), compressed bytes and a str all give the entry that was written, its
    endpoint the stored plain string and its scope the key's."""
    raw = encode_entry(entry(), compress_above=0 if form == "compressed" else None)
    stored: bytes | str = raw.decode() if form == "str" else raw
    got = decode_entry(stored, KEY, 150.0, from_tier=form == "str")
    assert got == entry()
    assert got is not None
    assert type(got.endpoint) is str
    assert got.from_tier is (form == "str")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"digest": "0" * 64}, "another key"),
        ({"scope": ("ns", "b", "1", "t")}, "another scope"),
        ({"scope": ("ns", "a", "1", None)}, "another scope"),
        ({"endpoint": "responses"}, "another endpoint"),
    ],
)
def test_a_value_written_for_another_key_scope_or_endpoint_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(EntryError, match=message):
        decode_entry(encode_entry(entry(**changes)), KEY, 150.0)


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[1, 2]",
        b'{"version": 99}',
        "created_at",
        "chunks",
        "neither",
    ],
)
def test_a_malformed_value_is_an_entry_error(doc: bytes | str) -> None:
    """Not JSON, not an object, another format, a wrong-typed field, neither body nor chunks."""
    if isinstance(doc, str):
        fields = orjson.loads(encode_entry(entry()))
        if doc == "created_at":
            fields["created_at"] = "yesterday"
        elif doc == "chunks":
            fields["chunks"] = {"not": "a list"}
        else:
            del fields["body"]
        doc = orjson.dumps(fields)
    with pytest.raises(EntryError):
        decode_entry(doc, KEY, 150.0)


def test_an_expired_entry_decodes_to_none() -> None:
    raw = encode_entry(entry())
    assert decode_entry(raw, KEY, 200.0) is None
    assert decode_entry(raw, KEY, 199.0) is not None
