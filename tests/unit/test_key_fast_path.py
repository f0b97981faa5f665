"""The key's fast path gives exactly the bytes and digest of the exact walk, for any request.

``make_key`` takes shortcuts (:func:`promptcache._canonical.trim_text` without its regex, parts left alone
when the rule changes nothing, orjson's bytes kept unless a read-only scan finds a value it writes
differently, the request's bytes hashed in place). Each is checked here against the plain rule it stands
for: the ``_TRIM`` regex, the edits split back into parts, the full canonical walk, and sha256 over the
material built in one buffer.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache._canonical import (
    _FAST_OPTIONS,
    _TRIM,
    COLLAPSE_RULE,
    EXACT_RULE,
    TRIM_RULE,
    TextRule,
    _canon_checked,
    _collapse_edits,
    _dumps,
    _fast_canonical,
    _needs_walk,
    _split_edits,
    _trim_edits,
    _values_need_walk,
    _with_text_policy,
    collapse_text,
    trim_text,
)
from promptcache._fields import key_body
from promptcache._keys import _TEXT_FIELDS, SCHEMA_VERSION, Endpoint, KeyPolicy, make_key
from promptcache.exceptions import UncacheableRequestError

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Texts at the edges of the trim rule: blanks at either end, blank lines, CRLF, lone CR, tabs (data),
# indentation, unicode spaces (never trimmed), spaces before a line end.
EDGE_PIECES = [" ", "  ", "\t", "\r", "\n", "\r\n", " \n", "\t\n", " \r\n", "\n\n", "\u00a0", "\u3000"]
EDGE_PIECES += ["a", "b c", "  x", "\tdef f():", "\u00e9", "\U0001f600", "1. "]
edge_texts = st.lists(st.sampled_from(EDGE_PIECES), max_size=14).map("".join) | st.text(max_size=24)


class Colour(enum.Enum):
    RED = 1.0
    BLUE = "blue"


class Label(str):
    __slots__ = ()


class Count(int):
    pass


# Every scalar the fast path must either write as the exact walk does or hand over to it.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN, inf, -0.0, integral floats, floats beyond 2**53
    | st.sampled_from([1.0, -0.0, 0.5, 1e16, 2.0**53, 1e300, float("nan"), float("inf")])
    | edge_texts
    | st.sampled_from([Colour.RED, Colour.BLUE, uuid.UUID(int=7), Label("x"), Count(3), (1, 2.0)])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)

text_parts = st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, edge_texts)
    | st.just({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
    min_size=1,
    max_size=4,
)
contents = edge_texts | text_parts | st.none()
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": contents},
        optional={"name": st.text(max_size=4), "cache_control": st.just({"type": "ephemeral"})},
    ),
    max_size=6,
)
requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o-mini", "claude"]), "messages": messages},
    optional={
        "temperature": st.sampled_from([0.0, 0.2, 1.0, 1, 2.0]),
        "max_tokens": st.integers(1, 4096),
        "tools": st.lists(
            st.dictionaries(st.sampled_from(["type", "function", "strict"]), values), max_size=3
        ),
        "system": edge_texts | text_parts,
        "instructions": edge_texts,
        "input": edge_texts | messages,
        "response_format": values,
        "stream": st.booleans(),
        "metadata": values,
    },
)


@dataclass(frozen=True, slots=True)
class SplitAlways(TextRule):
    """The rule without the "nothing changes" shortcut: parts always go through the edits."""

    def parts(self, texts: list[str]) -> list[str]:
        if self.edits is None:
            return texts
        joined = "".join(texts)
        return _split_edits(texts, joined, self.edits(joined))


def regex_trim(text: str) -> str:
    return _TRIM.sub("", text)


REFERENCE_RULES = {
    KeyPolicy.EXACT: EXACT_RULE,
    KeyPolicy.TRIM: SplitAlways(regex_trim, _trim_edits),
    KeyPolicy.COLLAPSE: SplitAlways(collapse_text, _collapse_edits),
}


def exact_canonical(request: dict[str, Any], endpoint: Endpoint, policy: KeyPolicy) -> bytes:
    """The request's canonical bytes by the plain rules only: no fast path anywhere."""
    body = key_body(endpoint, dict(request))
    if policy is not KeyPolicy.EXACT and endpoint in _TEXT_FIELDS:
        fields, messages_field = _TEXT_FIELDS[endpoint]
        body = _with_text_policy(body, fields, messages_field, REFERENCE_RULES[policy])
    return _dumps(_canon_checked(body))


def one_buffer_digest(canonical: bytes, endpoint: Endpoint, policy: KeyPolicy, agent_id: str) -> str:
    """sha256 over the schema tag and the material built in one buffer, as DESIGN.md describes it."""
    head = _dumps({"endpoint": endpoint.value, "policy": policy.value})[:-1]
    scope = _dumps(["promptcache", agent_id, "0", None])
    material = b'%s,"request":%s,"route":null,"scope":%s}' % (head, canonical, scope)
    return hashlib.sha256(b"promptcache-key-v%d\n%s" % (SCHEMA_VERSION, material)).hexdigest()


@MANY
@given(text=edge_texts)
def test_trim_text_is_the_regex(text: str) -> None:
    """trim_text returns exactly what the ``_TRIM`` regex that defines the rule returns."""
    assert trim_text(text) == regex_trim(text)


@MANY
@given(parts=st.lists(edge_texts, min_size=1, max_size=5))
def test_parts_shortcut_is_the_split_edits(parts: list[str]) -> None:
    """Skipping the split when the rule changes nothing gives the parts the split would give."""
    for rule, reference in [(TRIM_RULE, REFERENCE_RULES[KeyPolicy.TRIM])]:
        assert rule.parts(parts) == reference.parts(parts)
    assert COLLAPSE_RULE.parts(parts) == REFERENCE_RULES[KeyPolicy.COLLAPSE].parts(parts)


@MANY
@given(value=st.dictionaries(st.text(max_size=5), values, max_size=5))
def test_fast_canonical_bytes_are_the_walks(value: dict[str, Any]) -> None:
    """Whenever orjson's bytes are kept, they are the exact walk's bytes (NaN, inf, integral floats,
    enums, subclasses and tuples included); a value with no canonical form is never given one. Both
    scans (the C-level one CPython uses and the per-value one of other interpreters) are held to it."""
    fast = _fast_canonical(value)
    try:
        exact = _dumps(_canon_checked(value))
    except UncacheableRequestError:
        assert fast is None
        return
    assert fast is None or fast == exact
    try:
        plain = orjson.dumps(value, option=_FAST_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return
    for scan in (_needs_walk, _values_need_walk):
        if not scan(value):
            assert plain == exact, scan.__name__


@MANY
@given(
    request=requests,
    endpoint=st.sampled_from(list(Endpoint)),
    policy=st.sampled_from(list(KeyPolicy)),
)
def test_make_key_gives_the_exact_walks_bytes_and_digest(
    request: dict[str, Any], endpoint: Endpoint, policy: KeyPolicy
) -> None:
    """For generated requests (edge texts, parts, prefills, floats, cache markers, every endpoint and
    policy), make_key's canonical bytes and digest are those of the plain rules."""
    try:
        exact = exact_canonical(request, endpoint, policy)
    except UncacheableRequestError:
        with pytest.raises(UncacheableRequestError):
            make_key(request, agent_id="a", endpoint=endpoint, policy=policy, server_state=True)
        return
    key = make_key(request, agent_id="a", endpoint=endpoint, policy=policy, server_state=True)
    assert key.canonical == exact
    assert key.digest == one_buffer_digest(exact, endpoint, policy, "a")


def test_a_prefill_and_edge_texts_in_the_benchmark_shape() -> None:
    """A long conversation whose texts need each kind of trim (and a prefill that must keep its blank)
    gives the plain rules' bytes; the fast path really ran (no float or odd type sent it to the walk)."""
    texts = ["\n\n  indented\n", "ends with space ", "mid  \nline\r\nend", "\ttab first", "x" * 5000 + " \n"]
    history = [{"role": "user" if i % 2 else "assistant", "content": t} for i, t in enumerate(texts * 8)]
    history.append({"role": "assistant", "content": "Sure: "})
    request = {"model": "m", "messages": history, "temperature": 0.2, "tools": [{"type": "function"}]}
    body = _with_text_policy(key_body(Endpoint.CHAT_COMPLETIONS, request), (), "messages", TRIM_RULE)
    assert _fast_canonical(body) is not None
    key = make_key(request, agent_id="a")
    assert key.canonical == exact_canonical(request, Endpoint.CHAT_COMPLETIONS, KeyPolicy.TRIM)
    assert key.canonical.endswith(
        b'"content":"Sure: ","role":"assistant"}],"model":"m","temperature":0.2,'
        b'"tools":[{"type":"function"}]}'
    )
