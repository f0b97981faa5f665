"""The canonical cache key (schema v2): text rules, invariance, sensitivity, injection, bad input, stability.

Regenerate the golden file (only together with a SCHEMA_VERSION bump) with::

    .venv/bin/python tests/unit/test_keys.py --regenerate
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from promptcache._canonical import canonical_json, collapse_text, trim_text
from promptcache._fields import FIELD_RULES, Rule
from promptcache._keys import (
    DEFAULT_AGENT_VERSION,
    DEFAULT_NAMESPACE,
    DENY_LIST,
    SCHEMA_VERSION,
    CacheKey,
    Endpoint,
    KeyPolicy,
    agent_prefix,
    chat_request,
    generate_cache_key,
    make_key,
)
from promptcache._route import Route
from promptcache.exceptions import ConfigError, InvalidScopeError, UncacheableRequestError

if TYPE_CHECKING:
    import random

GOLDEN_PATH = Path(__file__).with_name("golden_keys.json")
REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_FAILURE = "digests changed: bump promptcache._keys.SCHEMA_VERSION and regenerate"
HEX64 = re.compile(r"[0-9a-f]{64}")
GLOB_AND_TAG_CHARS = frozenset("*?[]\\{}")

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------------

# ASCII and unicode whitespace (NBSP, em space, ideographic space, VT, FF, LS, NEL) mixed with text.
WHITESPACE = [" ", "\t", "\r", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\x0b", "\x0c", "\u2028", "\x85"]
WORDS = ["a", "b", "def", "x = 1", "\u00e9t\u00e9", "\u4f60\u597d", "\U0001f600", "#", "-"]
ws_texts = st.lists(st.sampled_from(WHITESPACE + WORDS), max_size=30).map("".join) | st.text(max_size=40)

indents = st.sampled_from(["", " ", "  ", "    ", "\t", "\t  ", "\u00a0", "\u3000"])
bodies = st.sampled_from(["a", "b c", "if x:", "return y", "\u00e9", "\U0001f600 ok", "[1, 2]", "k: v"])
trailers = st.sampled_from(["", " ", "  ", " \r", "\r"])  # what trim removes (a trailing tab is data)
indented_lines = st.lists(st.tuples(indents, bodies), min_size=1, max_size=8)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=24,
)
field_names = st.text(min_size=1, max_size=10).filter(lambda k: k not in DENY_LIST)
request_bodies = st.dictionaries(field_names, json_values, max_size=6)

# Ids built from every separator, glob, hash-tag and escape character plus arbitrary unicode.
NASTY = [*":*?[]|{}%~/ \\.-_aAb0", "%3A", "%25", "\u00e9", "\u00a0", "\U0001f600", "\n"]
scope_ids = st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map("".join) | st.text(
    min_size=1, max_size=8
)
id_pairs = st.tuples(scope_ids, scope_ids).filter(lambda pair: pair[0] != pair[1])


# --- helpers -------------------------------------------------------------------------------------


def chat(*contents: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    """A chat-completion body: the first content is the system message, the rest user messages."""
    roles = ["system"] + ["user"] * (len(contents) - 1)
    messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
    return {"model": model, "messages": messages, **extra}


def digest(request: dict[str, Any], **kwargs: Any) -> str:
    kwargs.setdefault("agent_id", "agent")
    return make_key(request, **kwargs).digest


def reorder(value: Any, rnd: random.Random) -> Any:
    """Rebuild every dict at every depth with its keys in a random insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value


def floatify(value: Any) -> Any:
    """Turn every int (not bool) anywhere in the value into the equal float."""
    if isinstance(value, dict):
        return {k: floatify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [floatify(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# --- text rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", [trim_text, collapse_text], ids=["trim", "collapse"])
@FAST
@given(text=ws_texts)
def test_text_rule_is_idempotent(rule: Any, text: str) -> None:
    """Applying a text rule twice gives the same text as applying it once."""
    once = rule(text)
    assert rule(once) == once


@FAST
@given(text=ws_texts)
def test_collapse_is_the_seed_rule(text: str) -> None:
    """`collapse` is exactly the seed tutorial's `' '.join(s.split())`."""
    assert collapse_text(text) == " ".join(text.split())


def reference_trim(text: str) -> str:
    """The trim rule written without a fast path: per-line rstrip of spaces/CR, outer blank lines cut."""
    lines = [line.rstrip(" \r") for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


@FAST
@given(text=ws_texts)
def test_trim_fast_path_agrees_with_the_rule(text: str) -> None:
    """trim_text's fast path returns what the plain per-line rule returns, for any text."""
    assert trim_text(text) == reference_trim(text)


@FAST
@given(lines=indented_lines, trail=st.lists(trailers, min_size=8, max_size=8), crlf=st.booleans())
def test_trim_never_changes_indentation(lines: list[tuple[str, str]], trail: list[str], crlf: bool) -> None:
    """Under trim, every non-blank line keeps its leading whitespace, in order."""
    sep = "\r\n" if crlf else "\n"
    text = "\n  \n" + sep.join(i + b + t for (i, b), t in zip(lines, trail, strict=False)) + sep + " \n"
    out = trim_text(text)
    before = [leading_ws(line) for line in text.split("\n") if line.strip()]
    after = [leading_ws(line) for line in out.split("\n") if line.strip()]
    assert after == before == [i for i, _ in lines]
    assert out == "\n".join(i + b for i, b in lines)


@FAST
@given(text=ws_texts)
def test_trim_keeps_leading_whitespace_of_every_non_blank_line(text: str) -> None:
    """For arbitrary text, trim keeps the sequence of non-blank lines' leading whitespace."""
    out = trim_text(text)
    assert [leading_ws(x) for x in out.split("\n") if x.strip()] == [
        leading_ws(x) for x in text.split("\n") if x.strip()
    ]


def test_trim_examples() -> None:
    """Trim turns CRLF into LF, cuts trailing blanks and outer blank lines, and keeps the first indent."""
    assert trim_text("\n \n  def f():\r\n\treturn 1  \r\n\n\n") == "  def f():\n\treturn 1"
    assert trim_text("name\tage\t\nbo\t\t \n") == "name\tage\t\nbo\t\t"  # a trailing tab is a TSV field
    assert trim_text("a\n\n\nb") == "a\n\n\nb"  # inner blank lines are content
    assert trim_text("a\u00a0") == "a\u00a0"  # only spaces (and a CRLF's CR) count as trailing blanks
    assert trim_text("   ") == ""


def test_key_policy_values() -> None:
    """KeyPolicy has exactly the three documented policies and TRIM is make_key's default."""
    assert [p.value for p in KeyPolicy] == ["exact", "trim", "collapse"]
    request = chat("sys  ", "hi")
    assert make_key(request, agent_id="a").policy is KeyPolicy.TRIM
    assert make_key(request, agent_id="a", policy="trim") == make_key(request, agent_id="a")


# --- canonical_json ------------------------------------------------------------------------------


def test_canonical_json_form() -> None:
    """canonical_json sorts keys, drops whitespace, writes UTF-8, and writes integral floats as ints."""
    value = {"b": [1.0, 2.5, None, True, -0.0, (1, 2)], "a": "\u00e9\U0001f600", "c": {"z": 0.0, "y": 1}}
    expected = '{"a":"\u00e9\U0001f600","b":[1,2.5,null,true,0,[1,2]],"c":{"y":1,"z":0}}'.encode()
    assert canonical_json(value) == expected


@FAST
@given(value=json_values, rnd=st.randoms(use_true_random=False))
def test_canonical_json_sorted_and_round_trips(value: Any, rnd: random.Random) -> None:
    """canonical_json parses back to an equal value and is independent of dict insertion order."""
    out = canonical_json(value)
    assert json.loads(out) == value
    assert canonical_json(reorder(value, rnd)) == out

    def keys_sorted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [k for k, _ in pairs]
        assert names == sorted(names)
        return dict(pairs)

    json.loads(out, object_pairs_hook=keys_sorted)


# --- invariance: things that must NOT change the digest -----------------------------------------


@FAST
@given(request=request_bodies, rnd=st.randoms(use_true_random=False))
def test_dict_key_order_at_every_depth_is_ignored(request: dict[str, Any], rnd: random.Random) -> None:
    """Shuffling dict keys at every depth gives the same digest."""
    assert digest(reorder(request, rnd)) == digest(request)


@FAST
@given(request=request_bodies)
def test_integral_floats_equal_ints_anywhere(request: dict[str, Any]) -> None:
    """Writing any int as the equal float (1 vs 1.0, 0 vs 0.0) anywhere in the body keeps the digest."""
    assert digest(floatify(request)) == digest(request)


def test_zero_and_zero_point_zero() -> None:
    """temperature 0 and 0.0 (and -0.0) give the same key."""
    assert digest(chat("s", "u", temperature=0)) == digest(chat("s", "u", temperature=0.0))
    assert digest(chat("s", "u", temperature=0)) == digest(chat("s", "u", temperature=-0.0))


@pytest.mark.parametrize(
    ("field", "endpoint"),
    sorted((r.name, e.value) for r in FIELD_RULES if r.rule is Rule.OUT for e in r.endpoints),
)
def test_deny_listed_field_is_ignored(field: str, endpoint: str) -> None:
    """Adding or changing a field left out of an endpoint's key does not change its digest."""
    base = chat("s", "u")
    with_a = {**base, field: "value-a"}
    with_b = {**base, field: {"other": [1, 2]}}
    assert (
        digest(with_a, endpoint=endpoint)
        == digest(base, endpoint=endpoint)
        == digest(with_b, endpoint=endpoint)
    )
    key_a, key_base = (
        make_key(with_a, agent_id="a", endpoint=endpoint),
        make_key(base, agent_id="a", endpoint=endpoint),
    )
    assert key_a.canonical == key_base.canonical


def test_deny_listed_field_is_dropped_before_canonicalisation() -> None:
    """An uncanonicalisable value in a deny-listed field (e.g. an SDK timeout object) does not bypass."""
    request = {**chat("s", "u"), "timeout": object(), "metadata": {"x": float("nan")}, "stream": True}
    assert digest(request) == digest(chat("s", "u"))


def test_deny_list_is_top_level_only() -> None:
    """A deny-listed name nested inside a field (e.g. a tool parameter called `user`) still counts."""
    a = chat("s", "u", response_format={"type": "json_schema", "schema": {"user": 1}})
    b = chat("s", "u", response_format={"type": "json_schema", "schema": {"user": 2}})
    assert digest(a) != digest(b)


@FAST
@given(
    lines=indented_lines,
    trail=st.lists(trailers, min_size=8, max_size=8),
    crlf=st.booleans(),
    head=st.sampled_from(["", "\n", "\n\n", " \n", " \r\n", "  \n \n"]),
    tail=st.sampled_from(["", "\n", "\n\n", "\n  ", "\r\n ", " \n \n "]),
)
def test_trim_whitespace_variants_share_a_digest(
    lines: list[tuple[str, str]], trail: list[str], crlf: bool, head: str, tail: str
) -> None:
    """Under trim, trailing blanks, CRLF and outer blank lines do not change the digest."""
    clean = "\n".join(i + b for i, b in lines)
    sep = "\r\n" if crlf else "\n"
    noisy = head + sep.join(i + b + t for (i, b), t in zip(lines, trail, strict=False)) + tail
    assert digest(chat(noisy, noisy)) == digest(chat(clean, clean))


@FAST
@given(words=st.lists(st.sampled_from(WORDS[:6]), min_size=1, max_size=8), data=st.data())
def test_collapse_whitespace_runs_share_a_digest(words: list[str], data: st.DataObject) -> None:
    """Under collapse, any whitespace runs between, before and after words give the same digest."""
    runs = st.lists(st.sampled_from(WHITESPACE), min_size=1, max_size=3).map("".join)
    noisy = data.draw(runs) + "".join(w + data.draw(runs) for w in words)
    clean = " ".join(" ".join(words).split())
    assert digest(chat(noisy, noisy), policy="collapse") == digest(chat(clean, clean), policy="collapse")


@pytest.mark.parametrize("policy", list(KeyPolicy))
@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_input_is_not_mutated(policy: KeyPolicy, endpoint: Endpoint) -> None:
    """make_key leaves the caller's request exactly as it was, nested parts included."""
    request: dict[str, Any] = {
        "model": "m",
        "system": [{"type": "text", "text": "  sys  \r\n\n"}],
        "instructions": " be brief \n",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": " hi  \n"}]}],
        "messages": [
            {"role": "system", "content": "  s  \r\n"},
            {"role": "user", "content": [{"type": "text", "text": " u \n\n"}, {"type": "image_url"}]},
        ],
        "temperature": 0.0,
        "stream": True,
        "tools": ({"type": "function", "function": {"name": "f"}},),
    }
    before = copy.deepcopy(request)
    make_key(request, agent_id="a", endpoint=endpoint, policy=policy)
    assert request == before
    assert type(request["temperature"]) is float
    assert type(request["tools"]) is tuple


def test_mapping_request_equals_dict() -> None:
    """A read-only Mapping request gets the same key as the equal dict."""
    request = chat("s", "u")
    assert digest(types.MappingProxyType(request)) == digest(request)  # type: ignore[arg-type]


# --- sensitivity: things that MUST change the digest ---------------------------------------------

TOOL_A = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOL_B = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}

FIELD_VALUES: list[tuple[str, Any, Any]] = [
    ("frobnicate", 1, 2),
    ("model", "gpt-4o-mini", "gpt-4o"),
    ("temperature", 0.0, 0.7),
    ("max_tokens", 256, 257),
    ("tools", [TOOL_A], [TOOL_B]),
    ("tool_choice", "auto", "none"),
    ("response_format", {"type": "json_object"}, {"type": "text"}),
    ("seed", 1, 2),
    ("n", 1, 2),
    ("stop", ["\n"], ["END"]),
    ("presence_penalty", 0.0, 0.5),
    ("frequency_penalty", 0.0, 0.5),
    ("logit_bias", {"50256": -100}, {"50256": 100}),
    ("reasoning_effort", "low", "high"),
    ("top_p", 1, 0.9),
    ("parallel_tool_calls", True, False),
]


@pytest.mark.parametrize(("field", "value_a", "value_b"), FIELD_VALUES, ids=[f[0] for f in FIELD_VALUES])
def test_every_other_field_joins_the_key(field: str, value_a: Any, value_b: Any) -> None:
    """Adding a non-deny-listed field, or changing its value, changes the digest."""
    base = chat("s", "u")
    base.pop(field, None)
    keys = {digest(base), digest({**base, field: value_a}), digest({**base, field: value_b})}
    assert len(keys) == 3


@FAST
@given(request=request_bodies, name=field_names, value=json_values)
def test_adding_any_field_changes_the_digest(request: dict[str, Any], name: str, value: Any) -> None:
    """Adding any field not on the deny-list (even one nobody has heard of) changes the digest."""
    assume(name not in request)
    assert digest({**request, name: value}, policy="exact") != digest(request, policy="exact")


@FAST
@given(request=request_bodies.filter(bool), data=st.data())
def test_changing_any_field_changes_the_digest(request: dict[str, Any], data: st.DataObject) -> None:
    """Replacing any field's value by one with a different canonical form changes the digest."""
    name = data.draw(st.sampled_from(sorted(request)))
    value = data.draw(json_values)
    assume(canonical_json(value) != canonical_json(request[name]))
    changed = {**request, name: value}
    assert digest(changed, policy="exact") != digest(request, policy="exact")


def test_bool_is_not_int() -> None:
    """`true` and `1` are different values in a request."""
    assert digest(chat("s", "u", logprobs=True)) != digest(chat("s", "u", logprobs=1))


def test_message_role_matters() -> None:
    """Changing any message's role changes the digest."""
    base = chat("s", "u", "v")
    for i, role in enumerate(["developer", "assistant", "assistant"]):
        changed = copy.deepcopy(base)
        changed["messages"][i]["role"] = role
        assert digest(changed) != digest(base)


def test_message_and_tool_order_matter() -> None:
    """Swapping two messages, or two tools, changes the digest."""
    assert digest(chat("s", "one", "two")) != digest(chat("s", "two", "one"))
    assert digest(chat("s", "u", tools=[TOOL_A, TOOL_B])) != digest(chat("s", "u", tools=[TOOL_B, TOOL_A]))


@pytest.mark.parametrize("policy", ["trim", "exact"])
@FAST
@given(lines=indented_lines.filter(lambda ls: len(ls) >= 2), data=st.data())
def test_indentation_change_changes_the_digest(
    policy: str, lines: list[tuple[str, str]], data: st.DataObject
) -> None:
    """Under trim and exact, re-indenting any line changes the digest."""
    i = data.draw(st.integers(0, len(lines) - 1))
    new_indent = data.draw(indents.filter(lambda ind: ind != lines[i][0]))
    changed = [(new_indent, body) if j == i else (ind, body) for j, (ind, body) in enumerate(lines)]
    before = "\n".join(ind + body for ind, body in lines)
    after = "\n".join(ind + body for ind, body in changed)
    assert digest(chat("s", before), policy=policy) != digest(chat("s", after), policy=policy)


def test_collapse_merges_indentation_but_not_words() -> None:
    """Collapse (opt-in) merges re-indented prompts yet still tells different words apart."""
    assert digest(chat("s", "if x:\n    y"), policy="collapse") == digest(
        chat("s", "if x: y"), policy="collapse"
    )
    assert digest(chat("s", "if x: y"), policy="collapse") != digest(chat("s", "if x: z"), policy="collapse")


def test_exact_distinguishes_whitespace() -> None:
    """Under exact, trailing spaces, CRLF and outer blank lines each change the digest."""
    base = digest(chat("s", "a\nb"), policy="exact")
    for variant in ["a \nb", "a\r\nb", "\na\nb", "a\nb\n"]:
        assert digest(chat("s", variant), policy="exact") != base


def test_trim_keeps_inner_blank_lines_and_unicode_whitespace() -> None:
    """Under trim, inner blank lines and non-ASCII trailing whitespace are content."""
    assert digest(chat("s", "a\n\nb")) != digest(chat("s", "a\nb"))
    assert digest(chat("s", "a\u00a0")) != digest(chat("s", "a"))


def test_text_policy_touches_message_text_only() -> None:
    """A trailing space in a tool description or a model name still changes the digest under trim/collapse."""
    tool_a = {"type": "function", "function": {"name": "f", "description": "Look up."}}
    tool_b = {"type": "function", "function": {"name": "f", "description": "Look up. "}}
    for policy in ["trim", "collapse"]:
        assert digest(chat("s", "u", tools=[tool_a]), policy=policy) != digest(
            chat("s", "u", tools=[tool_b]), policy=policy
        )
        assert digest(chat("s", "u", model="m"), policy=policy) != digest(
            chat("s", "u", model="m "), policy=policy
        )


@pytest.mark.parametrize(
    ("kwargs_a", "kwargs_b"),
    [
        ({"namespace": "app1"}, {"namespace": "app2"}),
        ({"agent_id": "a"}, {"agent_id": "b"}),
        ({"agent_version": "1"}, {"agent_version": "2"}),
        ({"tenant": None}, {"tenant": "acme"}),
        ({"tenant": "acme"}, {"tenant": "globex"}),
        ({"tenant": None}, {"tenant": "~"}),
        ({"endpoint": "chat.completions"}, {"endpoint": "responses"}),
        ({"policy": "trim"}, {"policy": "exact"}),
        ({"policy": "trim"}, {"policy": "collapse"}),
    ],
)
def test_scope_endpoint_and_policy_join_the_key(kwargs_a: dict[str, Any], kwargs_b: dict[str, Any]) -> None:
    """Namespace, agent id, agent version, tenant, endpoint and policy each change digest and store key."""
    request = chat("s", "u")
    a = make_key(request, **{"agent_id": "agent", **kwargs_a})
    b = make_key(request, **{"agent_id": "agent", **kwargs_b})
    assert a.digest != b.digest
    assert a.store_key != b.store_key


def test_every_endpoint_gives_a_different_digest() -> None:
    """One body under each of the four endpoints gives four digests."""
    request = {"model": "m", "input": "hello"}
    assert len({digest(request, endpoint=ep) for ep in Endpoint}) == len(Endpoint)


# --- which fields get the text policy, per endpoint ----------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "clean", "noisy"),
    [
        (
            "anthropic.messages",
            {"model": "c", "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]},
            {"model": "c", "system": "\nBe brief.  \r\n", "messages": [{"role": "user", "content": "hi \n"}]},
        ),
        (
            "anthropic.messages",
            {"system": [{"type": "text", "text": "Be brief."}], "messages": []},
            {"system": [{"type": "text", "text": "Be brief. \n\n"}], "messages": []},
        ),
        (
            "anthropic.messages",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi \r\n"}]}]},
        ),
        (
            "responses",
            {"instructions": "Be brief.", "input": "hi"},
            {"instructions": "Be brief. ", "input": "hi\r\n"},
        ),
        (
            "responses",
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]},
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "\nhi  "}]}]},
        ),
        (
            "responses",
            {"input": [{"role": "user", "content": "hi"}]},
            {"input": [{"role": "user", "content": "hi "}]},
        ),
        (
            "chat.completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi  "}]}]},
        ),
    ],
)
def test_text_policy_applies_to_prompt_text(
    endpoint: str, clean: dict[str, Any], noisy: dict[str, Any]
) -> None:
    """Anthropic system (string or blocks), Responses instructions/input and content parts get the policy."""
    for policy in ["trim", "collapse"]:
        assert digest(noisy, endpoint=endpoint, policy=policy) == digest(
            clean, endpoint=endpoint, policy=policy
        )
    assert digest(noisy, endpoint=endpoint, policy="exact") != digest(
        clean, endpoint=endpoint, policy="exact"
    )


@pytest.mark.parametrize("policy", list(KeyPolicy))
@pytest.mark.parametrize("value", ["hello", ["hello", "world"]])
def test_embeddings_input_is_data_not_prompt(policy: KeyPolicy, value: str | list[str]) -> None:
    """Embeddings input never gets the text policy: a trailing space changes the digest under every policy."""
    noisy: str | list[str] = value + " " if isinstance(value, str) else [v + " " for v in value]
    a = {"model": "text-embedding-3-small", "input": value}
    b = {"model": "text-embedding-3-small", "input": noisy}
    assert digest(a, endpoint="embeddings", policy=policy) != digest(b, endpoint="embeddings", policy=policy)


# --- injection: scope ids never reach another id's keys ------------------------------------------


def assert_prefix_safe(prefix: str) -> None:
    assert not (set(prefix) & GLOB_AND_TAG_CHARS), prefix
    assert prefix.endswith(":")


@SLOW
@given(pair=id_pairs)
def test_agent_ids_never_collide_or_glob_match(pair: tuple[str, str]) -> None:
    """Two different agent ids give different digests and prefixes, and neither prefix globs the other."""
    request = chat("s", "u")
    a = make_key(request, agent_id=pair[0])
    b = make_key(request, agent_id=pair[1])
    assert a.digest != b.digest
    assert a.prefix != b.prefix
    for mine, other in [(a, b), (b, a)]:
        assert_prefix_safe(mine.prefix)
        agent_wide = agent_prefix(DEFAULT_NAMESPACE, mine.agent_id)
        assert_prefix_safe(agent_wide)
        assert fnmatch.fnmatchcase(mine.store_key, mine.prefix + "*")
        assert fnmatch.fnmatchcase(mine.store_key, agent_wide + "*")
        assert not fnmatch.fnmatchcase(other.store_key, mine.prefix + "*")
        assert not fnmatch.fnmatchcase(other.store_key, agent_wide + "*")


@SLOW
@given(pair=id_pairs)
def test_agent_versions_never_collide_or_glob_match(pair: tuple[str, str]) -> None:
    """Two versions of one agent give different digests; neither version prefix matches the other's keys."""
    request = chat("s", "u")
    a = make_key(request, agent_id="agent", agent_version=pair[0])
    b = make_key(request, agent_id="agent", agent_version=pair[1])
    assert a.digest != b.digest
    assert a.prefix == agent_prefix(DEFAULT_NAMESPACE, "agent", pair[0])
    for mine, other in [(a, b), (b, a)]:
        assert_prefix_safe(mine.prefix)
        assert fnmatch.fnmatchcase(mine.store_key, mine.prefix + "*")
        assert not fnmatch.fnmatchcase(other.store_key, mine.prefix + "*")
        # Both versions are still the same agent.
        assert fnmatch.fnmatchcase(other.store_key, agent_prefix(DEFAULT_NAMESPACE, "agent") + "*")


@SLOW
@given(pair=id_pairs)
def test_namespaces_never_collide_or_glob_match(pair: tuple[str, str]) -> None:
    """Two namespaces give different digests; neither namespace's agent prefix matches the other's keys."""
    request = chat("s", "u")
    a = make_key(request, agent_id="agent", namespace=pair[0])
    b = make_key(request, agent_id="agent", namespace=pair[1])
    assert a.digest != b.digest
    for mine, other in [(a, b), (b, a)]:
        assert_prefix_safe(mine.prefix)
        assert not fnmatch.fnmatchcase(other.store_key, mine.prefix + "*")
        assert not fnmatch.fnmatchcase(other.store_key, agent_prefix(mine.namespace, "agent") + "*")


@SLOW
@given(pair=st.tuples(st.none() | scope_ids, st.none() | scope_ids).filter(lambda p: p[0] != p[1]))
def test_tenants_never_collide(pair: tuple[str | None, str | None]) -> None:
    """Two different tenants (or none vs one) give different digests and store keys under one agent prefix."""
    request = chat("s", "u")
    a = make_key(request, agent_id="agent", tenant=pair[0])
    b = make_key(request, agent_id="agent", tenant=pair[1])
    assert a.digest != b.digest
    assert a.store_key != b.store_key
    assert a.prefix == b.prefix
    scope_a, scope_b = a.store_key.rsplit(":{", 1)[0], b.store_key.rsplit(":{", 1)[0]
    assert scope_a != scope_b
    assert not (set(scope_a) & GLOB_AND_TAG_CHARS)


@SLOW
@given(namespace=scope_ids, agent=scope_ids, version=scope_ids, tenant=scope_ids)
def test_store_key_shape(namespace: str, agent: str, version: str, tenant: str) -> None:
    """The store key is prefix, escaped tenant and the digest as a hash tag; ids can add no separator."""
    key = make_key(chat("s", "u"), namespace=namespace, agent_id=agent, agent_version=version, tenant=tenant)
    assert key.prefix.count(":") == 4
    assert key.prefix.startswith(f"v{SCHEMA_VERSION}:", key.prefix.index(":") + 1)
    scope, tag = key.store_key.rsplit(":", 1)
    assert tag == "{" + key.digest + "}"
    assert scope.startswith(key.prefix)
    assert scope.count(":") == 4
    assert not (set(scope) & GLOB_AND_TAG_CHARS)


@SLOW
@given(namespace=scope_ids, agent=scope_ids)
def test_lock_key_is_outside_every_agent_prefix(namespace: str, agent: str) -> None:
    """The lock key shares the entry's hash tag but no agent prefix glob (invalidation) ever matches it."""
    key = make_key(chat("s", "u"), namespace=namespace, agent_id=agent)
    head, tag = key.lock_key.rsplit(":", 1)
    assert tag == "{" + key.digest + "}"
    assert not (set(head) & GLOB_AND_TAG_CHARS)
    assert not fnmatch.fnmatchcase(key.lock_key, agent_prefix(namespace, agent) + "*")
    assert not fnmatch.fnmatchcase(key.lock_key, key.prefix + "*")
    assert key.lock_key.startswith(key.store_key.partition(":")[0] + ":")


@pytest.mark.parametrize(
    ("id_a", "id_b"),
    [("a", "a:b"), ("a*", "ab"), ("a", "a*"), ("a?", "ab"), ("[ab]", "a"), ("a:b", "a%3Ab"), ("a{x}", "a")],
)
def test_classic_injection_pairs(id_a: str, id_b: str) -> None:
    """The classic separator/glob pairs never match each other's keys."""
    a = make_key(chat("s", "u"), agent_id=id_a)
    b = make_key(chat("s", "u"), agent_id=id_b)
    assert not fnmatch.fnmatchcase(b.store_key, a.prefix + "*")
    assert not fnmatch.fnmatchcase(a.store_key, b.prefix + "*")
    assert a.digest != b.digest


BAD_SCOPE_CASES: list[Any] = [
    pytest.param(field, bad)
    for field in ["namespace", "agent_id", "agent_version", "tenant"]
    for bad in ["", 0, b"agent", None, ["a"], "\ud800"]
]


@pytest.mark.parametrize(("field", "bad"), BAD_SCOPE_CASES)
def test_bad_scope_ids_raise(field: str, bad: object) -> None:
    """Empty, non-string and unencodable scope ids raise InvalidScopeError (None is fine only for tenant)."""
    if field == "tenant" and bad is None:
        assert make_key(chat("s", "u"), agent_id="a", tenant=None).tenant is None
        return
    kwargs: dict[str, Any] = {"agent_id": "a", field: bad}
    with pytest.raises(InvalidScopeError):
        make_key(chat("s", "u"), **kwargs)


@pytest.mark.parametrize("bad", ["", 0, None])
def test_agent_prefix_rejects_bad_ids(bad: object) -> None:
    """agent_prefix validates ids the same way make_key does."""
    with pytest.raises(InvalidScopeError):
        agent_prefix("ns", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidScopeError):
        agent_prefix(bad, "agent")  # type: ignore[arg-type]


# --- generate_cache_key --------------------------------------------------------------------------


@FAST
@given(
    system=ws_texts,
    user=ws_texts,
    model=st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku", "m\u00f6del"]),
    temperature=st.sampled_from([0, 0.0, 0.2, 1, 1.0, 2.0]),
    max_tokens=st.integers(1, 100_000),
    agent_id=st.none() | scope_ids,
)
def test_generate_cache_key_equals_make_key(
    system: str, user: str, model: str, temperature: float, max_tokens: int, agent_id: str | None
) -> None:
    """generate_cache_key returns the digest the equivalent full chat request gets from make_key."""
    expected = make_key(
        chat_request(system, user, model, temperature, max_tokens), agent_id=agent_id or "default"
    ).digest
    assert generate_cache_key(system, user, model, temperature, max_tokens, agent_id) == expected


def test_generate_cache_key_seed_signature() -> None:
    """The seed's positional signature works, agent_id defaults to "default", and the policy is trim."""
    positional = generate_cache_key("You are helpful.", "Hi", "gpt-4o-mini", 0.7, 256, "support")
    assert HEX64.fullmatch(positional)
    assert positional == generate_cache_key(
        system_prompt="You are helpful.",
        user_prompt="Hi",
        model="gpt-4o-mini",
        temperature=0.7,
        max_tokens=256,
        agent_id="support",
    )
    assert positional != generate_cache_key("You are helpful.", "Hi", "gpt-4o-mini", 0.7, 256, "sales")
    assert generate_cache_key("s", "u", "m", 0, 1) == generate_cache_key("s", "u", "m", 0.0, 1, "default")
    assert generate_cache_key("s  \n", "u\r\n", "m", 0, 1) == generate_cache_key("s", "u", "m", 0, 1)
    assert generate_cache_key("s", "  u", "m", 0, 1) != generate_cache_key("s", "u", "m", 0, 1)
    assert generate_cache_key("s", "  u", "m", 0, 1, policy="collapse") == generate_cache_key(
        "s", "u", "m", 0, 1, policy="collapse"
    )
    assert generate_cache_key("s", "u", "m", 0, 1, agent_version="2") != generate_cache_key(
        "s", "u", "m", 0, 1
    )


def test_generate_cache_key_rejects_empty_agent_id() -> None:
    """An empty agent id is an error, not a silent fall-back to "default"."""
    with pytest.raises(InvalidScopeError):
        generate_cache_key("s", "u", "m", 0, 1, "")


# --- bad input -----------------------------------------------------------------------------------


class PydanticLikeModel:
    """A class object standing in for a pydantic model class passed as response_format."""

    model_fields: dict[str, Any] = {}  # noqa: RUF012 - mimics the pydantic attribute


BAD_VALUES: list[Any] = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(bytearray(b"x"), id="bytearray"),
    pytest.param({"a", "b"}, id="set"),
    pytest.param(frozenset(), id="frozenset"),
    pytest.param(lambda: None, id="callable"),
    pytest.param(print, id="builtin"),
    pytest.param(int, id="class-int"),
    pytest.param(PydanticLikeModel, id="class-pydantic-like"),
    pytest.param(object(), id="object"),
    pytest.param({1: "x"}, id="int-dict-key"),
    pytest.param({("a",): "x"}, id="tuple-dict-key"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param(2**64, id="int-2**64"),
    pytest.param(-(2**63) - 1, id="int-below-int64"),
    pytest.param(10**40, id="int-10**40"),
]

BAD_PATHS: list[Any] = [pytest.param(p.values[0], id=p.id) for p in BAD_VALUES]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_uncanonicalisable_values_raise_uncacheable(bad: Any) -> None:
    """A value with no canonical JSON form anywhere in the request raises UncacheableRequestError."""
    request = {"model": "m", "messages": [{"role": "user", "content": bad}]}
    with pytest.raises(UncacheableRequestError):
        make_key(request, agent_id="a")
    with pytest.raises(UncacheableRequestError):
        canonical_json({"deep": [[{"x": bad}]]})
    with pytest.raises(TypeError):  # callers catching the builtin still catch it
        make_key({"tools": [{"parameters": bad}]}, agent_id="a")


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_uncacheable_error_names_the_path(bad: Any) -> None:
    """The error's path and message name where the bad value sits, e.g. $.messages[0].content."""
    request = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": bad}],
    }
    with pytest.raises(UncacheableRequestError) as info:
        make_key(request, agent_id="a")
    assert info.value.path == "$.messages[1].content"
    assert "$.messages[1].content" in str(info.value)


def test_error_path_in_nested_tools() -> None:
    """A bad value deep in a tool schema is reported with its full path."""
    tools = [TOOL_A, {"type": "function", "function": {"name": "g", "parameters": {"default": float("nan")}}}]
    with pytest.raises(UncacheableRequestError) as info:
        make_key(chat("s", "u", tools=tools), agent_id="a")
    assert info.value.path == "$.tools[1].function.parameters.default"


def test_int64_bounds_are_accepted() -> None:
    """Integers inside orjson's range (int64 minimum to uint64 maximum) are cacheable and distinct."""
    assert digest(chat("s", "u", seed=2**64 - 1)) != digest(chat("s", "u", seed=2**63))
    assert HEX64.fullmatch(digest(chat("s", "u", seed=-(2**63))))


@pytest.mark.parametrize("bad_request", [[("model", "m")], "model", None, 42])
def test_non_mapping_request_raises_uncacheable(bad_request: Any) -> None:
    """A request that is not a mapping is uncacheable, not a crash."""
    with pytest.raises(UncacheableRequestError):
        make_key(bad_request, agent_id="a")


@pytest.mark.parametrize("endpoint", ["chat.completions", "anthropic.messages", "responses"])
def test_unhashable_part_type_does_not_crash(endpoint: str) -> None:
    """A content part whose `type` is a list or dict gives a key (or a bypass), never a bare TypeError."""
    part = {"type": ["text"], "text": "x"}
    request = {
        "system": [part],
        "messages": [{"role": "user", "content": [part]}],
        "input": [{"content": [part]}],
    }
    try:
        key = make_key(request, agent_id="a", endpoint=endpoint, policy="trim")
    except UncacheableRequestError:
        return
    assert HEX64.fullmatch(key.digest)


def test_ten_megabyte_prompt() -> None:
    """A 10 MB prompt gets a normal 64-hex digest and a store key of the same length as a tiny prompt's."""
    big_text = ("lorem ipsum dolor sit amet  \n" * 400_000)[: 10 * 1024 * 1024]
    big = make_key(chat("s", big_text), agent_id="a")
    small = make_key(chat("s", "x"), agent_id="a")
    assert HEX64.fullmatch(big.digest)
    assert len(big.store_key) == len(small.store_key)
    assert big.digest != small.digest


@pytest.mark.parametrize("depth", [300, 5_000, 100_000])
@pytest.mark.parametrize("build", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_deep_nesting_is_uncacheable_not_a_crash(depth: int, build: Any) -> None:
    """Pathologically deep nesting raises UncacheableRequestError instead of crashing."""
    with pytest.raises(UncacheableRequestError):
        make_key({"model": "m", "response_format": build(depth)}, agent_id="a")
    with pytest.raises(UncacheableRequestError):
        canonical_json(build(depth))


@pytest.mark.parametrize(("arg", "enum"), [("policy", KeyPolicy), ("endpoint", Endpoint)])
def test_invalid_policy_or_endpoint_raises_config_error(arg: str, enum: Any) -> None:
    """An unknown policy or endpoint raises ConfigError (a ValueError) listing every valid value."""
    kwargs: dict[str, Any] = {"agent_id": "a", arg: "nope"}
    with pytest.raises(ConfigError) as info:
        make_key(chat("s", "u"), **kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert arg in message
    assert "nope" in message
    for member in enum:
        assert repr(member.value) in message
    with pytest.raises(ConfigError):
        generate_cache_key("s", "u", "m", 0, 1, policy="nope")


# --- the CacheKey object -------------------------------------------------------------------------


def test_cache_key_is_frozen() -> None:
    """Assigning to a CacheKey field raises."""
    key = make_key(chat("s", "u"), agent_id="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.digest = "0" * 64  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.store_key = "x"  # type: ignore[misc]


def test_cache_key_fields() -> None:
    """A CacheKey records its scope, endpoint, policy, schema and the canonical request bytes."""
    request = {**chat("  s  ", "u"), "stream": True, "temperature": 1.0}
    key = make_key(request, agent_id="bot", tenant="acme", endpoint="chat.completions", policy="trim")
    assert isinstance(key, CacheKey)
    assert (key.namespace, key.agent_id, key.agent_version, key.tenant) == (
        DEFAULT_NAMESPACE,
        "bot",
        DEFAULT_AGENT_VERSION,
        "acme",
    )
    assert key.endpoint is Endpoint.CHAT_COMPLETIONS
    assert key.policy is KeyPolicy.TRIM
    assert key.schema == SCHEMA_VERSION
    assert key.prefix == f"{DEFAULT_NAMESPACE}:v{SCHEMA_VERSION}:bot:{DEFAULT_AGENT_VERSION}:"
    assert key.store_key == f"{key.prefix}acme:{{{key.digest}}}"
    assert json.loads(key.canonical) == {
        "messages": [{"content": "  s", "role": "system"}, {"content": "u", "role": "user"}],
        "model": "gpt-4o-mini",
        "temperature": 1,
    }
    assert key.canonical == canonical_json(json.loads(key.canonical))


def test_no_tenant_store_key_marker() -> None:
    """No tenant is written as `~`, which no escaped tenant id can equal."""
    none = make_key(chat("s", "u"), agent_id="a")
    tilde = make_key(chat("s", "u"), agent_id="a", tenant="~")
    assert none.store_key == f"{none.prefix}~:{{{none.digest}}}"
    assert tilde.store_key.startswith(f"{tilde.prefix}%7E:")


# --- stability: golden digests, recomputed in fresh processes -----------------------------------

TOOLS_FULL = [
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "description": "Find a customer's orders.",
            "parameters": {
                "type": "object",
                "properties": {
                    "customer_id": {"type": "string"},
                    "limit": {"type": "integer", "maximum": 50},
                },
                "required": ["customer_id"],
            },
        },
    },
    TOOL_B,
]

GOLDEN_CASES: list[dict[str, Any]] = [
    {
        "name": "chat-trim-basic",
        "request": chat("You are helpful.", "What is 2+2?", temperature=0.0, max_tokens=256),
        "scope": {"agent_id": "default"},
        "endpoint": "chat.completions",
        "policy": "trim",
    },
    {
        "name": "chat-exact-whitespace",
        "request": chat("You are helpful.  \r\n", "\n  indented\n", temperature=0.7, max_tokens=64),
        "scope": {"agent_id": "support", "agent_version": "3"},
        "endpoint": "chat.completions",
        "policy": "exact",
    },
    {
        "name": "chat-collapse",
        "request": chat("  You   are\thelpful. ", "a\n\n  b", temperature=1, top_p=0.5),
        "scope": {"agent_id": "seed-compatible"},
        "endpoint": "chat.completions",
        "policy": "collapse",
    },
    {
        "name": "chat-all-fields-tenant",
        "request": chat(
            "Route orders.",
            "Where is order 17?",
            tools=TOOLS_FULL,
            tool_choice={"type": "function", "function": {"name": "search_orders"}},
            response_format={"type": "json_object"},
            seed=42,
            n=2,
            stop=["\n\n", "END"],
            presence_penalty=0.1,
            frequency_penalty=-0.2,
            logit_bias={"1734": -100},
            reasoning_effort="medium",
            frobnicate={"nested": [1, 2.5, None, True]},
            stream=True,
            user="u-123",
            metadata={"trace": "abc"},
        ),
        "scope": {"namespace": "shop", "agent_id": "router", "agent_version": "2024-06", "tenant": "acme"},
        "endpoint": "chat.completions",
        "policy": "trim",
    },
    {
        "name": "chat-unicode-scope",
        "request": chat(
            "\u0422\u044b \u043f\u043e\u043c\u043e\u0449\u043d\u0438\u043a.",
            "\u4f60\u597d \U0001f600 e\u0301 \u05e9\u05dc\u05d5\u05dd\u00a0",
            model="gpt-4o",
        ),
        "scope": {
            "namespace": "my app",
            "agent_id": "\u0430\u0433\u0435\u043d\u0442:1*",
            "agent_version": "v{2}",
            "tenant": "t/\u00e9",
        },
        "endpoint": "chat.completions",
        "policy": "trim",
    },
    {
        "name": "chat-content-parts",
        "request": {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this image.  \n"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    ],
                }
            ],
        },
        "scope": {"agent_id": "vision"},
        "endpoint": "chat.completions",
        "policy": "trim",
    },
    {
        "name": "responses-string-input",
        "request": {
            "model": "o4-mini",
            "instructions": "Answer in one word. \n",
            "input": "Capital of France?\r\n",
            "reasoning": {"effort": "low"},
        },
        "scope": {"agent_id": "geo"},
        "endpoint": "responses",
        "policy": "trim",
    },
    {
        "name": "responses-list-input-collapse",
        "request": {
            "model": "gpt-4.1",
            "input": [
                {"role": "developer", "content": "Be   terse."},
                {"role": "user", "content": [{"type": "input_text", "text": " list\n three  colours "}]},
            ],
            "max_output_tokens": 50,
        },
        "scope": {"agent_id": "colours", "tenant": "globex"},
        "endpoint": "responses",
        "policy": "collapse",
    },
    {
        "name": "embeddings-string",
        "request": {"model": "text-embedding-3-small", "input": "hello world  "},
        "scope": {"agent_id": "embedder"},
        "endpoint": "embeddings",
        "policy": "trim",
    },
    {
        "name": "embeddings-list-exact",
        "request": {
            "model": "text-embedding-3-large",
            "input": ["a", "\u00e9t\u00e9", "\U0001f600"],
            "dimensions": 256,
            "encoding_format": "float",
        },
        "scope": {"namespace": "search", "agent_id": "indexer"},
        "endpoint": "embeddings",
        "policy": "exact",
    },
    {
        "name": "anthropic-system-string",
        "request": {
            "model": "claude-3-5-haiku-latest",
            "system": "You are Claude.\n\n",
            "messages": [{"role": "user", "content": "Hi  "}],
            "max_tokens": 1024,
            "temperature": 0,
        },
        "scope": {"agent_id": "claude", "tenant": "initech"},
        "endpoint": "anthropic.messages",
        "policy": "trim",
    },
    {
        "name": "anthropic-system-blocks-exact",
        "request": {
            "model": "claude-sonnet-4-0",
            "system": [{"type": "text", "text": "Cite sources. ", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "\u00bfQu\u00e9 hora es?"}]},
                {"role": "assistant", "content": "Son las 3."},
                {"role": "user", "content": "Gracias"},
            ],
            "tools": [{"name": "clock", "input_schema": {"type": "object", "properties": {}}}],
            "max_tokens": 200,
        },
        "scope": {"agent_id": "es-bot", "agent_version": "7"},
        "endpoint": "anthropic.messages",
        "policy": "exact",
    },
    {
        "name": "v2-chat-openai-route-org",
        "request": {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Hello "}],
            "service_tier": "flex",
        },
        "scope": {"agent_id": "router"},
        "endpoint": "chat.completions",
        "policy": "trim",
        "route": {"upstream": "openai", "headers": [["openai-organization", "org-a"]]},
    },
    {
        "name": "v2-responses-gateway-query-store-false",
        "request": {"model": "llama", "input": "hi", "store": False},
        "scope": {"agent_id": "gw"},
        "endpoint": "responses",
        "policy": "trim",
        "route": {"upstream": "https://gw.example:443/gw/groq/v1", "query": [["api-version", "2025-01-01"]]},
    },
    {
        "name": "v2-anthropic-beta-cache-control-prefill",
        "request": {
            "model": "claude-sonnet-4-0",
            "cache_control": {"type": "ephemeral"},
            "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}],
                },
                {"role": "assistant", "content": "Sure, "},
            ],
            "max_tokens": 64,
        },
        "scope": {"agent_id": "prefill"},
        "endpoint": "anthropic.messages",
        "policy": "trim",
        "route": {
            "upstream": "anthropic",
            "headers": [["anthropic-beta", "a-2025,b-2025"], ["anthropic-version", "2023-06-01"]],
        },
    },
    {
        "name": "v2-chat-tsv-trailing-tab",
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "name\tage\t\nbo\t\t  \n"}]},
        "scope": {"agent_id": "tsv"},
        "endpoint": "chat.completions",
        "policy": "trim",
    },
]

GOLDEN_CHANGES = (
    "Schema v2 (from v1): the material gains the route (upstream alias or scheme://host:port/prefix, method, "
    "query string minus credentials, the headers anthropic-version, anthropic-beta, openai-organization and "
    "openai-project), null for keys made without one; store keys start <namespace>:v2:. Field rules per "
    "endpoint: Anthropic cache_control is left out and a one-text-block content list keys like its string; "
    "service_tier and prompt_cache_retention are left out; Responses store=false is keyed (omitted == true); "
    "requests referring to server-side state raise ServerStateError. Text policy trim keeps trailing tabs, "
    "applies to the joined text of a message's parts, and keeps a final assistant prefill exactly. Every v1 "
    "digest changed."
)


def _golden_route(case: dict[str, Any]) -> Route | None:
    spec = case.get("route")
    if spec is None:
        return None
    return Route(
        upstream=spec["upstream"],
        query=tuple((k, v) for k, v in spec.get("query", ())),
        headers=tuple((k, v) for k, v in spec.get("headers", ())),
    )


_RECOMPUTE = """
import json, sys
from promptcache._keys import make_key
from promptcache._route import Route
data = json.loads(open(sys.argv[1], encoding="utf-8").read())
out = {}
for case in data["cases"]:
    spec = case.get("route")
    route = None if spec is None else Route(
        upstream=spec["upstream"],
        query=tuple(tuple(p) for p in spec.get("query", ())),
        headers=tuple(tuple(p) for p in spec.get("headers", ())),
    )
    key = make_key(
        case["request"], endpoint=case["endpoint"], policy=case["policy"], route=route, **case["scope"]
    )
    out[case["name"]] = [key.digest, key.store_key]
print(json.dumps(out))
"""


def compute_golden() -> dict[str, Any]:
    """The golden file's content, computed in this process from GOLDEN_CASES."""
    cases = []
    for case in GOLDEN_CASES:
        # Round-trip through JSON first so the recorded request is exactly what the test will read back.
        request = json.loads(json.dumps(case["request"], ensure_ascii=False))
        route = _golden_route(case)
        key = make_key(
            request, endpoint=case["endpoint"], policy=case["policy"], route=route, **case["scope"]
        )
        cases.append({**case, "request": request, "digest": key.digest, "store_key": key.store_key})
    return {
        "schema_version": SCHEMA_VERSION,
        "note": "Written by `python tests/unit/test_keys.py --regenerate`, only together with a schema bump.",
        "changes": GOLDEN_CHANGES,
        "cases": cases,
    }


def regenerate_golden_file() -> None:
    GOLDEN_PATH.write_text(
        json.dumps(compute_golden(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


def load_golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
    return data


def test_golden_schema_version() -> None:
    """The golden file was generated under the current SCHEMA_VERSION."""
    assert load_golden()["schema_version"] == SCHEMA_VERSION, GOLDEN_FAILURE


def test_golden_file_covers_every_endpoint_and_policy() -> None:
    """The golden cases span all endpoints and policies and match the cases defined in this module."""
    cases = load_golden()["cases"]
    assert {c["endpoint"] for c in cases} == {e.value for e in Endpoint}
    assert {c["policy"] for c in cases} == {p.value for p in KeyPolicy}
    assert [c["name"] for c in cases] == [c["name"] for c in GOLDEN_CASES]


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_golden_digests_are_stable_across_processes(hash_seed: str) -> None:
    """Digests and store keys recomputed in a fresh process (any PYTHONHASHSEED) equal the golden file."""
    expected = {c["name"]: [c["digest"], c["store_key"]] for c in load_golden()["cases"]}
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _RECOMPUTE, str(GOLDEN_PATH)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    actual = json.loads(proc.stdout)
    changed = sorted(name for name in expected if actual.get(name) != expected[name])
    assert not changed, f"{GOLDEN_FAILURE} (changed cases: {changed})"


def test_golden_digests_in_process() -> None:
    """This process computes the golden digests too (same rules, different hash seed)."""
    expected = {c["name"]: c["digest"] for c in load_golden()["cases"]}
    actual = {c["name"]: c["digest"] for c in compute_golden()["cases"]}
    assert actual == expected, GOLDEN_FAILURE


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate_golden_file()
        sys.stdout.write(f"wrote {GOLDEN_PATH}\n")
    else:
        sys.stderr.write("usage: python tests/unit/test_keys.py --regenerate\n")
        sys.exit(2)
