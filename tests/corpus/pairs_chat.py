"""The corpus: OpenAI chat completions (body fields, streams, ``.parse()``, the text policy's edges)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from corpus.build import (
    EITHER,
    HIT,
    MISS,
    QUESTION,
    SYSTEM,
    TIME_TOOL,
    WEATHER_FUNCTION,
    WEATHER_TOOL,
    City,
    Country,
    across,
    chat,
    chat_helper,
    chat_parse,
    chat_stream,
    differ,
    messages,
    twice,
)
from corpus.clients import oa

if TYPE_CHECKING:
    from corpus.runner import Pair

USAGE: Final = {"stream_options": {"include_usage": True}}
TOOL_ASK: Final = "use_tool: what is the weather in Paris?"


def _schema(name: str, props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# Body fields that change the answer: (name, fields of A, fields of B).
_MISS_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("model", {"model": "gpt-corpus-a"}, {"model": "gpt-corpus-b"}),
    ("user-text", {}, {"messages": messages("What is the capital of Spain?")}),
    ("system-text", {}, {"messages": messages(system="You are a pirate.")}),
    ("system-vs-developer-role", {}, {"messages": [{"role": "developer", "content": SYSTEM}, messages()[1]]}),
    ("temperature", {"temperature": 0.2}, {"temperature": 0.9}),
    ("temperature-omitted-vs-0", {}, {"temperature": 0}),
    ("top-p", {"top_p": 0.5}, {"top_p": 1}),
    ("max-tokens", {"max_tokens": 100}, {"max_tokens": 200}),
    ("max-tokens-vs-max-completion-tokens", {"max_tokens": 100}, {"max_completion_tokens": 100}),
    ("max-completion-tokens", {"max_completion_tokens": 50}, {"max_completion_tokens": 500}),
    ("seed", {"seed": 1}, {"seed": 2}),
    ("n", {"n": 1}, {"n": 2}),
    ("stop", {"stop": ["\n"]}, {"stop": ["END"]}),
    ("presence-penalty", {"presence_penalty": 0}, {"presence_penalty": 0.5}),
    ("frequency-penalty", {"frequency_penalty": 0.1}, {"frequency_penalty": 0.2}),
    ("logit-bias", {}, {"logit_bias": {"50256": -100}}),
    ("logprobs", {}, {"logprobs": True}),
    ("top-logprobs", {"logprobs": True, "top_logprobs": 2}, {"logprobs": True, "top_logprobs": 5}),
    ("tools-added", {"tools": [WEATHER_TOOL]}, {"tools": [WEATHER_TOOL, TIME_TOOL]}),
    ("tools-order", {"tools": [WEATHER_TOOL, TIME_TOOL]}, {"tools": [TIME_TOOL, WEATHER_TOOL]}),
    (
        "tool-description",
        {"tools": [WEATHER_TOOL]},
        {"tools": [{"type": "function", "function": {**WEATHER_FUNCTION, "description": "Rain?"}}]},
    ),
    (
        "tool-choice-auto-vs-required",
        {"tools": [WEATHER_TOOL]},
        {"tools": [WEATHER_TOOL], "tool_choice": "required"},
    ),
    (
        "tool-choice-none",
        {"tools": [WEATHER_TOOL], "tool_choice": "none"},
        {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
    ),
    (
        "parallel-tool-calls",
        {"tools": [WEATHER_TOOL]},
        {"tools": [WEATHER_TOOL], "parallel_tool_calls": False},
    ),
    ("response-format-json-object", {}, {"response_format": {"type": "json_object"}}),
    (
        "response-format-schemas",
        {"response_format": _schema("capital", {"city": {"type": "string"}})},
        {"response_format": _schema("capital", {"city": {"type": "string"}, "country": {"type": "string"}})},
    ),
    ("reasoning-effort", {"reasoning_effort": "low"}, {"reasoning_effort": "high"}),
    ("verbosity", {"verbosity": "low"}, {"verbosity": "high"}),
    (
        "modalities-audio",
        {"modalities": ["text"]},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    ),
    (
        "audio-voice",
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {"modalities": ["text", "audio"], "audio": {"voice": "echo", "format": "wav"}},
    ),
    (
        "web-search-options",
        {"web_search_options": {}},
        {"web_search_options": {"search_context_size": "high"}},
    ),
    (
        "prediction",
        {"prediction": {"type": "content", "content": "Paris"}},
        {"prediction": {"type": "content", "content": "Lyon"}},
    ),
    (
        "message-order",
        {"messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]},
        {"messages": [{"role": "user", "content": "second"}, {"role": "user", "content": "first"}]},
    ),
    (
        "earlier-turn-added",
        {},
        {
            "messages": [
                *messages()[:1],
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                messages()[1],
            ]
        },
    ),
    (
        "message-name",
        {"messages": [{"role": "user", "content": QUESTION, "name": "alice"}]},
        {"messages": [{"role": "user", "content": QUESTION, "name": "bob"}]},
    ),
    (
        "image-url",
        {
            "messages": messages(
                [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ]
            )
        },
        {
            "messages": messages(
                [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
                ]
            )
        },
    ),
    (
        "image-detail",
        {
            "messages": messages(
                [{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]
            )
        },
        {
            "messages": messages(
                [{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}}]
            )
        },
    ),
    ("unknown-extra-body-field", {"extra_body": {"top_k": 5}}, {"extra_body": {"top_k": 50}}),
    (
        "tool-result",
        {"messages": [*messages(TOOL_ASK), {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
        {"messages": [*messages(TOOL_ASK), {"role": "tool", "tool_call_id": "call_1", "content": "rainy"}]},
    ),
]

# Fields the lead decided never change the answer, and other requests that must be served from A.
_HIT_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("user", {"user": "user-1"}, {"user": "user-2"}),
    ("metadata", {"metadata": {"run": "a"}}, {"metadata": {"run": "b", "team": "x"}}),
    ("safety-identifier", {"safety_identifier": "hash-1"}, {"safety_identifier": "hash-2"}),
    ("prompt-cache-key", {"prompt_cache_key": "k1"}, {"prompt_cache_key": "k2"}),
    ("prompt-cache-retention", {"prompt_cache_retention": "in_memory"}, {"prompt_cache_retention": "24h"}),
    ("service-tier", {"service_tier": "auto"}, {"service_tier": "flex"}),
    ("service-tier-omitted", {}, {"service_tier": "default"}),
    ("prompt-cache-options", {}, {"prompt_cache_options": {"mode": "auto"}}),
    ("store", {"store": False}, {"store": True}),
    (
        "x-request-id-header",
        {"extra_headers": {"x-request-id": "r1"}},
        {"extra_headers": {"x-request-id": "r2"}},
    ),
    ("custom-header", {}, {"extra_headers": {"x-trace-id": "abc"}}),
    ("timeout", {"timeout": 30}, {"timeout": 90}),
    (
        "trailing-spaces-at-line-ends",
        {"messages": messages("Line one   \nLine two \nWhat now?")},
        {"messages": messages("Line one\nLine two\nWhat now?")},
    ),
    (
        "crlf-vs-lf",
        {"messages": messages("Line one\r\nLine two\r\nWhat now?")},
        {"messages": messages("Line one\nLine two\nWhat now?")},
    ),
    (
        "trailing-spaces-in-system",
        {"messages": messages(system=SYSTEM + "  \nBe brief.  ")},
        {"messages": messages(system=SYSTEM + "\nBe brief.")},
    ),
    (
        "identical-tools",
        {"tools": [WEATHER_TOOL], "messages": messages(TOOL_ASK)},
        {"tools": [WEATHER_TOOL], "messages": messages(TOOL_ASK)},
    ),
    (
        "identical-json-schema",
        {"response_format": _schema("c", {"city": {"type": "string"}})},
        {"response_format": _schema("c", {"city": {"type": "string"}})},
    ),
]

# The default text policy (trim) must not merge these.
_POLICY_MISS: Final[list[tuple[str, Any, Any]]] = [
    (
        "parts-hello-space-world",
        [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}],
        [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}],
    ),
    (
        "tsv-trailing-tab",
        "name\tcity\t\nAda\tParis\t\nSum the rows.",
        "name\tcity\nAda\tParis\nSum the rows.",
    ),
    ("indentation", "def f():\n    return 1\nExplain.", "def f():\n  return 1\nExplain."),
    ("inner-double-space", "Paris  or Lyon?", "Paris or Lyon?"),
    ("leading-space", "  Paris?", "Paris?"),
]


def _prefix(text: str) -> dict[str, Any]:
    continuation = {"role": "assistant", "content": text, "prefix": True}
    return {"messages": [*messages("Write a function adding two numbers."), continuation]}


def pairs() -> list[Pair]:
    out = [differ(f"chat/{name}", MISS, chat(**a), chat(**b)) for name, a, b in _MISS_FIELDS]
    out += [differ(f"chat/{name}", HIT, chat(**a), chat(**b)) for name, a, b in _HIT_FIELDS]
    out += [
        differ(f"chat/trim/{name}", MISS, chat(messages=messages(a)), chat(messages=messages(b)))
        for name, a, b in _POLICY_MISS
    ]
    final_turn = [*messages(), {"role": "assistant", "content": "The capital is "}]
    out += [
        differ(
            "chat/trim/final-assistant-prefill-trailing-space",
            MISS,
            chat(messages=final_turn),
            chat(messages=[*final_turn[:2], {"role": "assistant", "content": "The capital is"}]),
        ),
        differ(
            "chat/trim/blank-lines-at-both-ends",
            HIT,
            chat(messages=messages("\n\nWhat is the capital of France?\n\n")),
            chat(),
        ),
        differ(
            "chat/trim/prefix-continuation-trailing-space",
            MISS,
            chat(**_prefix("def add(a, b): ")),
            chat(**_prefix("def add(a, b):")),
        ),
        differ(
            "chat/policy-collapse/double-space",
            HIT,
            chat(messages=messages("Paris  or Lyon?")),
            chat(messages=messages("Paris or Lyon?")),
            oa().but(wrap={"policy": "collapse"}),
        ),
        differ(
            "chat/policy-exact/trailing-space",
            MISS,
            chat(messages=messages("Paris? ")),
            chat(messages=messages("Paris?")),
            oa().but(wrap={"policy": "exact"}),
        ),
        twice("chat/identical/sync", HIT, chat(), oa()),
        twice("chat/identical/async", HIT, chat(), oa("async")),
        across("chat/sync-then-async", HIT, chat(), oa(), oa("async")),
        across("chat/async-then-sync", HIT, chat(), oa("async"), oa()),
        across("chat/max-retries", HIT, chat(), oa(max_retries=0), oa(max_retries=3)),
        across("chat/client-timeout", HIT, chat(), oa(timeout=20.0), oa(timeout=120.0)),
        across(
            "chat/api-key",
            HIT,
            chat(),
            oa(api_key="sk-corpus-aaaaaaaaaaaaaaaaaaaaaaaa"),
            oa(api_key="sk-corpus-bbbbbbbbbbbbbbbbbbbbbbbb"),
        ),
        across(
            "chat/default-header-not-listed",
            HIT,
            chat(),
            oa(default_headers={"x-team": "a"}),
            oa(default_headers={"x-team": "b"}),
        ),
        # streams and bodies stand in for each other; usage must be there iff asked for
        differ("chat/stream-after-plain", HIT, chat(), chat_stream()),
        differ("chat/stream-with-usage-after-plain", HIT, chat(), chat_stream(**USAGE)),
        differ("chat/plain-after-stream-with-usage", HIT, chat_stream(**USAGE), chat()),
        differ("chat/plain-after-stream-without-usage", EITHER, chat_stream(), chat()),
        twice("chat/stream-twice", HIT, chat_stream(), oa()),
        twice("chat/stream-with-usage-twice", HIT, chat_stream(**USAGE), oa("async")),
        differ("chat/stream-without-then-with-usage", EITHER, chat_stream(), chat_stream(**USAGE)),
        differ("chat/stream-with-then-without-usage", EITHER, chat_stream(**USAGE), chat_stream()),
        across("chat/stream-sync-then-async", HIT, chat_stream(), oa(), oa("async")),
        differ(
            "chat/tool-call-stream-after-plain",
            HIT,
            chat(tools=[WEATHER_TOOL], messages=messages(TOOL_ASK)),
            chat_stream(tools=[WEATHER_TOOL], messages=messages(TOOL_ASK)),
        ),
        differ(
            "chat/tool-call-plain-after-stream",
            HIT,
            chat_stream(tools=[WEATHER_TOOL], messages=messages(TOOL_ASK), **USAGE),
            chat(tools=[WEATHER_TOOL], messages=messages(TOOL_ASK)),
        ),
        differ("chat/stream-helper-after-plain", HIT, chat(), chat_helper()),
        twice("chat/stream-helper-twice", HIT, chat_helper(), oa("async")),
        # structured outputs
        twice("chat/parse-twice", HIT, chat_parse(Country), oa()),
        across("chat/parse-sync-then-async", HIT, chat_parse(Country), oa(), oa("async")),
        differ("chat/parse-other-model-class", MISS, chat_parse(Country), chat_parse(City)),
        differ(
            "chat/parse-other-prompt",
            MISS,
            chat_parse(City),
            chat_parse(City, messages=messages("Largest city of Spain?")),
        ),
    ]
    return out
