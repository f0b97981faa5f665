"""The corpus: OpenAI Responses (body fields, stored responses per organisation, conversations, prompt
templates, background mode, streams, ``.parse()``) and embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from corpus.build import (
    HIT,
    MISS,
    QUESTION,
    RESP_TOOL,
    City,
    Country,
    across,
    differ,
    emb,
    resp,
    resp_helper,
    resp_parse,
    resp_stream,
    twice,
)
from corpus.clients import oa
from corpus.world import SEED_CONVERSATION, SEED_PROMPT

if TYPE_CHECKING:
    from corpus.runner import Pair
    from corpus.world import World

ORG_A: Final = oa(organization="org-a", project="proj-a")
OPT_IN: Final = {"cache_server_state": True}


def _publish(world: World) -> None:
    world.publish_prompt(SEED_PROMPT, "You are terse, polite and answer in French.")


def _parts(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": t} for t in texts]}]


def _user_items(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text}]}]


_MISS_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("model", {"model": "gpt-corpus-a"}, {"model": "gpt-corpus-b"}),
    ("input", {}, {"input": "What is the capital of Spain?"}),
    ("input-items", {"input": _user_items(QUESTION)}, {"input": _user_items("And of Italy?")}),
    (
        "trim/parts-hello-space-world",
        {"input": _parts("Hello ", "world")},
        {"input": _parts("Hello", "world")},
    ),
    ("trim/tsv-trailing-tab", {"input": "a\tb\t\nc\td\nSum it."}, {"input": "a\tb\nc\td\nSum it."}),
    ("instructions", {"instructions": "Answer in English."}, {"instructions": "Answer in French."}),
    ("temperature", {"temperature": 0.1}, {"temperature": 1.2}),
    ("top-p", {}, {"top_p": 0.3}),
    ("max-output-tokens", {"max_output_tokens": 64}, {"max_output_tokens": 512}),
    ("reasoning-effort", {"reasoning": {"effort": "low"}}, {"reasoning": {"effort": "high"}}),
    (
        "reasoning-summary",
        {"reasoning": {"effort": "low"}},
        {"reasoning": {"effort": "low", "summary": "auto"}},
    ),
    ("text-verbosity", {"text": {"verbosity": "low"}}, {"text": {"verbosity": "high"}}),
    ("text-format-json-object", {}, {"text": {"format": {"type": "json_object"}}}),
    ("tools", {}, {"tools": [RESP_TOOL]}),
    ("tool-choice", {"tools": [RESP_TOOL]}, {"tools": [RESP_TOOL], "tool_choice": "required"}),
    ("parallel-tool-calls", {"tools": [RESP_TOOL]}, {"tools": [RESP_TOOL], "parallel_tool_calls": False}),
    (
        "max-tool-calls",
        {"tools": [RESP_TOOL], "max_tool_calls": 1},
        {"tools": [RESP_TOOL], "max_tool_calls": 5},
    ),
    ("truncation", {"truncation": "disabled"}, {"truncation": "auto"}),
    ("include", {}, {"include": ["message.output_text.logprobs"]}),
    ("top-logprobs", {"top_logprobs": 1}, {"top_logprobs": 5}),
    (
        "prompt-version",
        {"prompt": {"id": SEED_PROMPT, "version": "1"}},
        {"prompt": {"id": SEED_PROMPT, "version": "2"}},
    ),
    (
        "prompt-variables",
        {"prompt": {"id": SEED_PROMPT, "version": "1", "variables": {"city": "Paris"}}},
        {"prompt": {"id": SEED_PROMPT, "version": "1", "variables": {"city": "Lyon"}}},
    ),
    ("previous-response-id", {"previous_response_id": "resp_seed"}, {}),
]

_HIT_FIELDS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    (
        "instructions-trailing-spaces",
        {"instructions": "Be brief.  \nUse English. "},
        {"instructions": "Be brief.\nUse English."},
    ),
    ("metadata", {"metadata": {"run": "1"}}, {"metadata": {"run": "2"}}),
    ("user", {"user": "u1"}, {"user": "u2"}),
    ("safety-identifier", {"safety_identifier": "s1"}, {"safety_identifier": "s2"}),
    ("prompt-cache-key", {"prompt_cache_key": "a"}, {"prompt_cache_key": "b"}),
    ("prompt-cache-retention", {}, {"prompt_cache_retention": "24h"}),
    ("prompt-cache-options", {"prompt_cache_options": {"mode": "auto"}}, {}),
    ("service-tier", {"service_tier": "default"}, {"service_tier": "priority"}),
    ("store-default-then-explicit", {}, {"store": True}),
    (
        "trailing-spaces-at-line-ends",
        {"input": "Line one  \nWhat is the capital of France?"},
        {"input": "Line one\nWhat is the capital of France?"},
    ),
    (
        "prompt-pinned-version",
        {"prompt": {"id": SEED_PROMPT, "version": "2"}},
        {"prompt": {"id": SEED_PROMPT, "version": "2"}},
    ),
    (
        "previous-response-id-same",
        {"previous_response_id": "resp_seed"},
        {"previous_response_id": "resp_seed"},
    ),
]

_EMB_MISS: Final[list[tuple[str, dict[str, Any], dict[str, Any]]]] = [
    ("input", {}, {"input": "The capital of Spain"}),
    ("model", {"model": "text-embedding-a"}, {"model": "text-embedding-b"}),
    ("dimensions", {"dimensions": 8}, {"dimensions": 16}),
    ("encoding-format", {"encoding_format": "float"}, {"encoding_format": "base64"}),
    ("string-vs-list", {"input": "Paris"}, {"input": ["Paris"]}),
    ("list-order", {"input": ["Paris", "Lyon"]}, {"input": ["Lyon", "Paris"]}),
    ("token-ids", {"input": [1, 2, 3]}, {"input": [1, 2, 4]}),
    ("trailing-space-in-input", {"input": "Paris "}, {"input": "Paris"}),
    ("line-end-spaces-in-input", {"input": "Paris  \nLyon"}, {"input": "Paris\nLyon"}),
]


def pairs() -> list[Pair]:
    out = [differ(f"responses/{name}", MISS, resp(**a), resp(**b)) for name, a, b in _MISS_FIELDS]
    out += [differ(f"responses/{name}", HIT, resp(**a), resp(**b)) for name, a, b in _HIT_FIELDS]
    out += [
        differ("responses/store-false-then-true", MISS, resp(store=False), resp(store=True)),
        differ("responses/store-true-then-false", MISS, resp(store=True), resp(store=False)),
        twice("responses/identical", HIT, resp(), oa()),
        across("responses/sync-then-async", HIT, resp(), oa(), oa("async")),
        # stored responses belong to an organisation/project
        twice(
            "responses/previous-response-id/same-org", HIT, resp(previous_response_id="resp_seed_a"), ORG_A
        ),
        across(
            "responses/previous-response-id/other-organization",
            MISS,
            resp(previous_response_id="resp_seed_a"),
            ORG_A,
            oa(organization="org-b", project="proj-a"),
        ),
        across(
            "responses/previous-response-id/other-project",
            MISS,
            resp(previous_response_id="resp_seed_a"),
            ORG_A,
            oa(organization="org-a", project="proj-b"),
        ),
        across(
            "responses/previous-response-id/no-organization",
            MISS,
            resp(previous_response_id="resp_seed_a"),
            ORG_A,
            oa(),
        ),
        differ(
            "responses/previous-response-id/other-id",
            MISS,
            resp(previous_response_id="resp_seed_a"),
            resp(previous_response_id="resp_seed_a2"),
            ORG_A,
        ),
        # mutable server-side state bypasses the cache unless the agent opts in
        twice("responses/conversation", MISS, resp(conversation=SEED_CONVERSATION), oa()),
        twice(
            "responses/conversation-object", MISS, resp(conversation={"id": SEED_CONVERSATION}), oa("async")
        ),
        twice(
            "responses/conversation/opt-in", HIT, resp(conversation=SEED_CONVERSATION), oa().but(wrap=OPT_IN)
        ),
        twice("responses/prompt-latest", MISS, resp(prompt={"id": SEED_PROMPT}), oa()),
        twice(
            "responses/prompt-latest/version-published-between",
            MISS,
            resp(prompt={"id": SEED_PROMPT}),
            oa(),
            _publish,
        ),
        twice("responses/prompt-latest/opt-in", HIT, resp(prompt={"id": SEED_PROMPT}), oa().but(wrap=OPT_IN)),
        twice(
            "responses/prompt-pinned/version-published-between",
            HIT,
            resp(prompt={"id": SEED_PROMPT, "version": "2"}),
            oa(),
            _publish,
        ),
        twice("responses/background", MISS, resp(background=True), oa()),
        # Opting in lets a background request be keyed, but its answer is a queued job, not a finished
        # response: the write gate (the same for every request) never stores an unfinished answer.
        twice("responses/background/opt-in", MISS, resp(background=True), oa().but(wrap=OPT_IN)),
        # streams and bodies stand in for each other
        differ("responses/stream-after-plain", HIT, resp(), resp_stream()),
        differ("responses/plain-after-stream", HIT, resp_stream(), resp()),
        twice("responses/stream-twice", HIT, resp_stream(), oa("async")),
        differ("responses/stream-helper-after-plain", HIT, resp(), resp_helper()),
        differ(
            "responses/tool-call-stream-after-plain",
            HIT,
            resp(tools=[RESP_TOOL], input="use_tool: Paris weather"),
            resp_stream(tools=[RESP_TOOL], input="use_tool: Paris weather"),
        ),
        # structured outputs
        twice("responses/parse-twice", HIT, resp_parse(Country), oa()),
        across("responses/parse-async-then-sync", HIT, resp_parse(Country), oa("async"), oa()),
        differ("responses/parse-other-model-class", MISS, resp_parse(Country), resp_parse(City)),
    ]
    out += [differ(f"embeddings/{name}", MISS, emb(**a), emb(**b)) for name, a, b in _EMB_MISS]
    out += [
        twice("embeddings/identical", HIT, emb(), oa()),
        across("embeddings/sync-then-async", HIT, emb(input=["Paris", "Lyon"]), oa(), oa("async")),
        differ("embeddings/user", HIT, emb(user="u1"), emb(user="u2")),
        differ(
            "embeddings/x-request-id-header",
            HIT,
            emb(extra_headers={"x-request-id": "1"}),
            emb(extra_headers={"x-request-id": "2"}),
        ),
        across("embeddings/other-organization", MISS, emb(), ORG_A, oa(organization="org-b")),
    ]
    return out
