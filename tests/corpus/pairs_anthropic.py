"""The corpus: Anthropic messages (body fields, ``anthropic-version``/``anthropic-beta``, beta messages,
``cache_control`` markers, containers, assistant prefill, streams, ``.parse()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from corpus.build import (
    ANTHROPIC_TOOL,
    HIT,
    MISS,
    QUESTION,
    City,
    Country,
    across,
    anthropic_messages,
    beta,
    differ,
    msg,
    msg_helper,
    msg_parse,
    msg_stream,
    twice,
)
from corpus.clients import an
from corpus.world import SEED_CONTAINER

if TYPE_CHECKING:
    from corpus.runner import Pair

EPHEMERAL: Final = {"type": "ephemeral"}
TOOL_ASK: Final = "use_tool: what is the weather in Paris?"
SYSTEM: Final = "You are a helpful geography assistant."


def _blocks(text: str = QUESTION, **marker: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text, **marker}]}]


def _prefill(text: str) -> list[dict[str, Any]]:
    return [*anthropic_messages("Name a large French city."), {"role": "assistant", "content": text}]


def _image(data: str) -> list[dict[str, Any]]:
    source = {"type": "base64", "media_type": "image/png", "data": data}
    return [
        {"role": "user", "content": [{"type": "image", "source": source}, {"type": "text", "text": "What?"}]}
    ]


def _tool_result(result: str) -> list[dict[str, Any]]:
    return [
        *anthropic_messages(TOOL_ASK),
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]},
    ]


_MISS_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("model", {"model": "claude-corpus-a"}, {"model": "claude-corpus-b"}),
    ("max-tokens", {"max_tokens": 100}, {"max_tokens": 200}),
    ("user-text", {}, {"messages": anthropic_messages("What is the capital of Spain?")}),
    ("system", {"system": SYSTEM}, {"system": "You are a pirate."}),
    ("system-added", {}, {"system": SYSTEM}),
    ("stop-sequences", {"stop_sequences": ["\n"]}, {"stop_sequences": ["END"]}),
    ("tools", {}, {"tools": [ANTHROPIC_TOOL]}),
    ("tool-choice", {"tools": [ANTHROPIC_TOOL]}, {"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "any"}}),
    ("thinking", {}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
    (
        "thinking-budget",
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"thinking": {"type": "enabled", "budget_tokens": 4096}},
    ),
    ("output-config-effort", {"output_config": {"effort": "low"}}, {"output_config": {"effort": "high"}}),
    ("temperature-extra-body", {"extra_body": {"temperature": 0.2}}, {"extra_body": {"temperature": 0.9}}),
    ("top-k-extra-body", {}, {"extra_body": {"top_k": 5}}),
    ("prefill-trailing-space", {"messages": _prefill("The city is ")}, {"messages": _prefill("The city is")}),
    ("prefill-text", {"messages": _prefill("The city is")}, {"messages": _prefill("The town is")}),
    ("image", {"messages": _image("aGVsbG8=")}, {"messages": _image("d29ybGQ=")}),
    ("tool-result", {"messages": _tool_result("sunny")}, {"messages": _tool_result("rainy")}),
    (
        "parts-hello-space-world",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}],
                }
            ]
        },
    ),
    (
        "tsv-trailing-tab",
        {"messages": anthropic_messages("a\tb\t\nc\td\nSum it.")},
        {"messages": anthropic_messages("a\tb\nc\td\nSum it.")},
    ),
    ("container-id", {"container": SEED_CONTAINER}, {"container": "container_other"}),
    ("speed", {}, {"speed": "fast"}),
    ("workspace-id", {"workspace_id": "ws-a"}, {"workspace_id": "ws-b"}),
    ("user-profile-id", {"user_profile_id": "profile-a"}, {"user_profile_id": "profile-b"}),
    ("inference-geo", {}, {"inference_geo": "eu"}),
]

_HIT_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("system-crlf-vs-lf", {"system": "Be brief.\r\nUse English."}, {"system": "Be brief.\nUse English."}),
    ("cache-control-on-block", {"messages": _blocks()}, {"messages": _blocks(cache_control=EPHEMERAL)}),
    (
        "cache-control-ttl",
        {"messages": _blocks(cache_control=EPHEMERAL)},
        {"messages": _blocks(cache_control={"type": "ephemeral", "ttl": "1h"})},
    ),
    (
        "cache-control-on-system",
        {"system": [{"type": "text", "text": SYSTEM}]},
        {"system": [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}]},
    ),
    ("cache-control-top-level", {}, {"cache_control": EPHEMERAL}),
    (
        "cache-control-on-tool",
        {"tools": [ANTHROPIC_TOOL]},
        {"tools": [{**ANTHROPIC_TOOL, "cache_control": EPHEMERAL}]},
    ),
    ("metadata-user-id", {"metadata": {"user_id": "u1"}}, {"metadata": {"user_id": "u2"}}),
    ("one-text-block-vs-string", {}, {"messages": _blocks()}),
    ("service-tier", {"service_tier": "auto"}, {"service_tier": "standard_only"}),
    (
        "x-request-id-header",
        {"extra_headers": {"x-request-id": "a"}},
        {"extra_headers": {"x-request-id": "b"}},
    ),
    ("timeout", {"timeout": 10}, {"timeout": 100}),
    (
        "trailing-spaces-at-line-ends",
        {"messages": anthropic_messages("Line one  \nWhat now?")},
        {"messages": anthropic_messages("Line one\nWhat now?")},
    ),
    (
        "crlf-vs-lf",
        {"messages": anthropic_messages("Line one\r\nWhat now?")},
        {"messages": anthropic_messages("Line one\nWhat now?")},
    ),
    (
        "identical-tool-use",
        {"tools": [ANTHROPIC_TOOL], "messages": anthropic_messages(TOOL_ASK)},
        {"tools": [ANTHROPIC_TOOL], "messages": anthropic_messages(TOOL_ASK)},
    ),
]


def pairs() -> list[Pair]:
    out = [differ(f"anthropic/{name}", MISS, msg(**a), msg(**b), an()) for name, a, b in _MISS_FIELDS]
    out += [differ(f"anthropic/{name}", HIT, msg(**a), msg(**b), an()) for name, a, b in _HIT_FIELDS]
    v1, v2 = {"anthropic-version": "2023-06-01"}, {"anthropic-version": "2025-01-01"}
    out += [
        twice("anthropic/identical", HIT, msg(), an()),
        across("anthropic/sync-then-async", HIT, msg(), an(), an("async")),
        across(
            "anthropic/api-key",
            HIT,
            msg(),
            an(api_key="sk-ant-corpus-aaaa"),
            an(api_key="sk-ant-corpus-bbbb"),
        ),
        across("anthropic/max-retries", HIT, msg(), an(max_retries=0), an(max_retries=4)),
        # headers that change the answer
        across(
            "anthropic/anthropic-version-default-headers",
            MISS,
            msg(),
            an(default_headers=v1),
            an(default_headers=v2),
        ),
        differ(
            "anthropic/anthropic-version-extra-headers",
            MISS,
            msg(extra_headers=v1),
            msg(extra_headers=v2),
            an(),
        ),
        differ(
            "anthropic/beta/betas-differ",
            MISS,
            beta(betas=["beta-a-2025-01-01"]),
            beta(betas=["beta-b-2025-01-01"]),
            an(),
        ),
        differ(
            "anthropic/beta/betas-added",
            MISS,
            beta(betas=["beta-a-2025-01-01"]),
            beta(betas=["beta-a-2025-01-01", "beta-b-2025-01-01"]),
            an(),
        ),
        differ(
            "anthropic/beta/messages-then-beta-with-betas",
            MISS,
            msg(),
            beta(betas=["beta-a-2025-01-01"]),
            an(),
        ),
        differ(
            "anthropic/beta/extra-headers",
            MISS,
            msg(),
            msg(extra_headers={"anthropic-beta": "beta-a-2025-01-01"}),
            an(),
        ),
        twice("anthropic/beta/identical", HIT, beta(betas=["beta-a-2025-01-01"]), an("async")),
        # containers hold mutable state
        twice("anthropic/container", MISS, msg(container=SEED_CONTAINER), an()),
        twice("anthropic/container/beta", MISS, beta(container=SEED_CONTAINER), an("async")),
        twice(
            "anthropic/container/opt-in",
            HIT,
            msg(container=SEED_CONTAINER),
            an().but(wrap={"cache_server_state": True}),
        ),
        # streams and bodies stand in for each other
        differ("anthropic/stream-after-plain", HIT, msg(), msg_stream(), an()),
        differ("anthropic/plain-after-stream", HIT, msg_stream(), msg(), an()),
        twice("anthropic/stream-twice", HIT, msg_stream(), an("async")),
        differ("anthropic/stream-helper-after-plain", HIT, msg(), msg_helper(), an()),
        differ(
            "anthropic/tool-use-stream-after-plain",
            HIT,
            msg(tools=[ANTHROPIC_TOOL], messages=anthropic_messages(TOOL_ASK)),
            msg_stream(tools=[ANTHROPIC_TOOL], messages=anthropic_messages(TOOL_ASK)),
            an(),
        ),
        # structured outputs
        twice("anthropic/parse-twice", HIT, msg_parse(Country), an()),
        across("anthropic/parse-sync-then-async", HIT, msg_parse(Country), an(), an("async")),
        differ("anthropic/parse-other-model-class", MISS, msg_parse(Country), msg_parse(City), an()),
    ]
    return out
