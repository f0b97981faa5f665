"""Key schema v2, pure parts: the route, the field rules per endpoint, server-state bypass, text edges."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache._canonical import COLLAPSE_RULE, TRIM_RULE, collapse_text, trim_text
from promptcache._fields import FIELD_RULES, Rule, server_state_reason
from promptcache._keys import SCHEMA_VERSION, Endpoint, make_key
from promptcache._route import (
    KEY_HEADERS,
    Route,
    check_alias,
    check_header_names,
    route_from_record,
    route_of,
    route_record,
)
from promptcache.exceptions import ConfigError, ServerStateError, UncacheableRequestError

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def digest(request: dict[str, Any], endpoint: str = "chat.completions", **kw: Any) -> str:
    return make_key(request, agent_id="a", endpoint=endpoint, **kw).digest


def route(**kw: Any) -> Route:
    parts: dict[str, Any] = {
        "method": "POST",
        "scheme": "https",
        "host": "api.example.com",
        "port": None,
        "prefix": "/v1",
        "query": [],
        "headers": [],
    }
    parts.update(kw)
    return route_of(**parts)


# --- the route ------------------------------------------------------------------------------------


def test_schema_is_v2_and_store_keys_say_so() -> None:
    """Schema v2 keys live under <namespace>:v2:, so v1 entries are never found (no wrong hit)."""
    assert SCHEMA_VERSION == 2
    assert make_key(CHAT, agent_id="a").store_key.startswith("promptcache:v2:a:0:~:{")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"host": "api.example.com"}, {"host": "other.example.com"}),
        ({"scheme": "https"}, {"scheme": "http"}),
        ({"port": 8443}, {"port": 9443}),
        ({"prefix": "/gw/openai/v1"}, {"prefix": "/gw/groq/v1"}),
        ({"query": [("api-version", "2024-10-21")]}, {"query": [("api-version", "2025-01-01")]}),
        ({"headers": [("OpenAI-Organization", "org-a")]}, {"headers": [("OpenAI-Organization", "org-b")]}),
        ({"headers": [("OpenAI-Project", "p1")]}, {"headers": []}),
        (
            {"headers": [("anthropic-version", "2023-06-01")]},
            {"headers": [("anthropic-version", "2023-01-01")]},
        ),
        ({"headers": []}, {"headers": [("anthropic-beta", "files-api-2025-04-14")]}),
    ],
)
def test_every_part_of_the_route_changes_the_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Another host, scheme, port, path prefix, query or answer-selecting header is another key."""
    assert digest(CHAT, route=route(**a)) != digest(CHAT, route=route(**b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"port": None}, {"port": 443}),  # the default port, said or not
        ({"host": "API.Example.com"}, {"host": "api.example.com"}),
        ({"prefix": "/v1/"}, {"prefix": "/v1"}),
        ({"query": [("a", "1"), ("b", "2")]}, {"query": [("b", "2"), ("a", "1")]}),
        ({"query": [("api-key", "secret-1")]}, {"query": [("api-key", "secret-2")]}),  # a credential
        ({"headers": [("authorization", "Bearer a")]}, {"headers": [("authorization", "Bearer b")]}),
        ({"headers": [("x-api-key", "a")]}, {"headers": []}),
        ({"headers": [("x-request-id", "1")]}, {"headers": [("x-request-id", "2")]}),  # not listed
        ({"headers": [("anthropic-beta", "b,a")]}, {"headers": [("anthropic-beta", "a, b, a")]}),
        (
            {"headers": [("Anthropic-Beta", "a"), ("anthropic-beta", "b")]},
            {"headers": [("anthropic-beta", "b,a")]},
        ),
    ],
)
def test_route_normalisation_keeps_the_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Spelling the same route differently, or differing only in credentials, keeps the key."""
    assert route(**a) == route(**b)


def test_official_upstreams_have_names_and_an_alias_replaces_any_url() -> None:
    """api.openai.com/v1 keys as 'openai'; a user alias makes two upstreams one."""
    assert route(host="api.openai.com").upstream == "openai"
    assert route(host="api.anthropic.com").upstream == "anthropic"
    assert route(host="gw.local", port=8080, scheme="http").upstream == "http://gw.local:8080/v1"
    assert route(host="a.example", alias="shared") == route(host="b.example", alias="shared")


def test_account_ids_are_keyed_as_fingerprints() -> None:
    """Organisation and project ids tell keys apart without being stored or shown."""
    a = route(headers=[("OpenAI-Organization", "org-secretive"), ("OpenAI-Project", "proj-x")])
    values = dict(a.headers)
    assert all(v.startswith("sha256:") for v in values.values())
    assert "org-secretive" not in repr(route_record(a))
    assert "proj-x" not in repr(a)
    assert a != route(headers=[("OpenAI-Organization", "org-other"), ("OpenAI-Project", "proj-x")])


def test_extra_key_headers_join_the_key() -> None:
    """Headers an agent names (wrap(key_headers=...)) join the key; other headers never do."""
    a = route(headers=[("X-Route", "eu")], extra_headers=("x-route",))
    b = route(headers=[("X-Route", "us")], extra_headers=("x-route",))
    assert a != b
    assert route(headers=[("X-Route", "eu")]) == route(headers=[("X-Route", "us")])
    assert set(KEY_HEADERS) == {
        "anthropic-version",
        "anthropic-beta",
        "anthropic-workspace-id",  # the SDK's workspace_id=
        "anthropic-user-profile-id",  # the SDK's user_profile_id=
        "openai-beta",
        "openai-organization",
        "openai-project",
    }


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("x-route", "not the string"),
        (["bad header"], "not an HTTP header name"),
        (["Authorization"], "credential"),
    ],
)
def test_bad_key_headers_are_refused(names: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_header_names(names)


@pytest.mark.parametrize("alias", ["", " openai", "two words", 3])
def test_bad_aliases_are_refused(alias: object) -> None:
    with pytest.raises(ConfigError, match="upstream alias"):
        check_alias(alias)


def test_route_record_round_trips() -> None:
    """The cassette form of a route reads back to the same route (repeated query names included)."""
    for r in [
        route(),
        route(query=[("a", "1"), ("a", "2")], headers=[("openai-project", "p")]),
        route(alias="x", query=[("v", "1")]),
    ]:
        assert route_from_record(route_record(r)) == r
    with pytest.raises(ConfigError, match="upstream"):
        route_from_record({"headers": {}})


def test_a_key_without_a_route_differs_from_one_with() -> None:
    """get_or_call keys (no route) and wrapped-client keys (a route) are different keys."""
    assert digest(CHAT) != digest(CHAT, route=route())
    assert make_key(CHAT, agent_id="a", route=route()).route == route()


# --- field rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("responses", {"model": "m", "input": "hi", "conversation": "conv_1"}),
        ("responses", {"model": "m", "input": "hi", "conversation": {"id": "conv_1"}}),
        ("responses", {"model": "m", "prompt": {"id": "pmpt_1"}}),
        ("responses", {"model": "m", "prompt": {"id": "pmpt_1", "version": None}}),
        ("responses", {"model": "m", "input": "hi", "background": True}),
        ("anthropic.messages", {**CHAT, "container": "container_1"}),
    ],
)
def test_server_state_requests_are_not_keyed_unless_opted_in(endpoint: str, body: dict[str, Any]) -> None:
    """A request referring to mutable provider state raises ServerStateError (a bypass), naming the field."""
    with pytest.raises(ServerStateError) as info:
        make_key(body, agent_id="a", endpoint=endpoint)
    assert isinstance(info.value, UncacheableRequestError)
    assert info.value.reason == server_state_reason(Endpoint(endpoint), body)
    assert make_key(body, agent_id="a", endpoint=endpoint, server_state=True).digest


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("responses", {"model": "m", "prompt": {"id": "pmpt_1", "version": "3"}}),
        ("responses", {"model": "m", "input": "hi", "background": False, "conversation": None}),
        ("responses", {"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
        ("chat.completions", {**CHAT, "container": "c"}),  # not a chat parameter: just part of the key
    ],
)
def test_versioned_or_immutable_references_are_keyed(endpoint: str, body: dict[str, Any]) -> None:
    assert server_state_reason(Endpoint(endpoint), body) is None
    make_key(body, agent_id="a", endpoint=endpoint)


def test_responses_store_false_is_its_own_key_and_true_is_the_default() -> None:
    """store=false answers cannot be continued with previous_response_id: never served to store=true."""
    base = {"model": "m", "input": "hi"}
    assert digest({**base, "store": True}, "responses") == digest(base, "responses")
    assert digest({**base, "store": False}, "responses") != digest(base, "responses")
    assert digest({**CHAT, "store": True}) == digest({**CHAT, "store": False}) == digest(CHAT)


@pytest.mark.parametrize("field", ["service_tier", "prompt_cache_retention", "prompt_cache_key"])
@pytest.mark.parametrize("endpoint", ["chat.completions", "responses", "anthropic.messages"])
def test_tier_and_provider_cache_hints_stay_out(field: str, endpoint: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    assert digest({**body, field: "flex"}, endpoint) == digest(body, endpoint)


def test_anthropic_cache_control_never_changes_the_key() -> None:
    """cache_control on blocks, on the system prompt, on tools and at top level keys like no marker."""
    eph = {"type": "ephemeral"}
    plain = {
        "model": "c",
        "system": "Be terse.",
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
    }
    marked = {
        **plain,
        "cache_control": eph,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": eph}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": eph}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b", "cache_control": eph},
                ],
            }
        ],
    }
    assert digest(marked, "anthropic.messages") == digest(plain, "anthropic.messages")
    one_block = {**plain, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    as_string = {**plain, "messages": [{"role": "user", "content": "hi"}]}
    assert digest(one_block, "anthropic.messages") == digest(as_string, "anthropic.messages")
    assert digest({**plain, "system": "Be kind."}, "anthropic.messages") != digest(
        plain, "anthropic.messages"
    )


def test_every_rule_row_names_a_reason() -> None:
    assert all(r.why and r.endpoints for r in FIELD_RULES)
    assert {r.rule for r in FIELD_RULES} <= set(Rule)


# --- text edges -----------------------------------------------------------------------------------


def parts_body(*texts: str) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": t} for t in texts]}],
    }


def test_parts_are_trimmed_as_the_text_they_make_together() -> None:
    """'Hello ' + 'world' is 'Hello world'; 'Hello' + 'world' is 'Helloworld': two keys."""
    assert digest(parts_body("Hello ", "world")) != digest(parts_body("Hello", "world"))
    assert digest(parts_body("Hello  \n", "world")) == digest(parts_body("Hello\n", "world"))
    assert digest(parts_body("Hello ", "world  ")) == digest(parts_body("Hello ", "world"))


def test_a_final_assistant_prefill_is_kept_exactly() -> None:
    """The model continues a prefill from its last character: its trailing space is part of the prompt."""

    def prefill(text: str) -> dict[str, Any]:
        return {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Write a list."},
                {"role": "assistant", "content": text},
            ],
        }

    assert digest(prefill("1. ")) != digest(prefill("1."))
    assert digest(prefill("1. "), "anthropic.messages") != digest(prefill("1."), "anthropic.messages")
    # An earlier assistant turn is ordinary history, trimmed as usual.
    earlier = {
        "model": "m",
        "messages": [{"role": "assistant", "content": "ok "}, {"role": "user", "content": "go"}],
    }
    earlier_clean = {
        "model": "m",
        "messages": [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "go"}],
    }
    assert digest(earlier) == digest(earlier_clean)


def test_a_trailing_tab_is_data() -> None:
    """A TSV row's empty last field is a trailing tab: trim keeps it."""
    row = {"model": "m", "messages": [{"role": "user", "content": "name\tage\t\nbo\t\t"}]}
    assert digest(row) != digest({"model": "m", "messages": [{"role": "user", "content": "name\tage\nbo"}]})


texts = st.lists(
    st.sampled_from(["a", "b c", " ", "  ", "\t", "\n", "\r\n", "\r", "x\n ", "\u3000"]), max_size=8
).map("".join)


@given(parts=st.lists(texts, min_size=1, max_size=5))
def test_trim_of_parts_joins_to_trim_of_the_joined_text(parts: list[str]) -> None:
    """Applying the rule to parts gives, joined, exactly the rule applied to their joined text."""
    assert "".join(TRIM_RULE.parts(parts)) == trim_text("".join(parts))
    assert "".join(COLLAPSE_RULE.parts(parts)) == collapse_text("".join(parts))
    assert len(TRIM_RULE.parts(parts)) == len(parts)


@given(text=texts)
def test_parts_rule_on_one_part_is_the_rule(text: str) -> None:
    assert TRIM_RULE.parts([text]) == [trim_text(text)]
    assert COLLAPSE_RULE.parts([text]) == [collapse_text(text)]
