"""The field table: every request field, header and option of the four endpoints, and what the key does.

``docs/KEY_FIELDS.md`` is this module's output (``python -m promptcache._field_table > docs/KEY_FIELDS.md``);
a test checks the committed file against it, and checks each SDK parameter's row against what
:func:`~promptcache.make_key` actually does. :data:`KNOWN_FIELDS` lists the parameters of the SDK releases
in ``uv.lock``; a parameter added by a later release is not in the table but is still safe: every field
the rules do not name joins the key.
"""

from __future__ import annotations

import sys
from typing import Final

from promptcache._endpoints import Endpoint
from promptcache._fields import FIELD_RULES, FieldRule, Rule
from promptcache._route import CREDENTIAL_QUERY, KEY_HEADERS, KNOWN_UPSTREAMS

__all__ = ["KNOWN_FIELDS", "render", "rule_for"]

KNOWN_FIELDS: Final[dict[Endpoint, tuple[str, ...]]] = {
    Endpoint.CHAT_COMPLETIONS: (
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "moderation",
        "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
        "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    ),
    Endpoint.RESPONSES: (
        "access_programs", "background", "background_options", "context_management", "conversation",
        "image", "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata",
        "model", "moderation", "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
        "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier",
        "store", "stream", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs",
        "top_p", "truncation", "user",
    ),
    Endpoint.EMBEDDINGS: ("dimensions", "encoding_format", "input", "model", "user"),
    Endpoint.ANTHROPIC_MESSAGES: (
        "cache_control", "container", "diagnostics", "inference_geo", "max_tokens", "messages", "metadata",
        "model", "output_config", "service_tier", "speed", "stop_sequences", "stream", "system",
        "temperature", "thinking", "tool_choice", "tools", "top_k", "top_p", "user_profile_id",
        "workspace_id",
    ),
}  # fmt: skip
"""Request parameters of openai 3.60 / anthropic 2.17 (the locked releases), by endpoint."""

_TEXT_FIELDS: Final = {"messages", "input", "system", "instructions"}
_DEFAULT = "may change the answer: every field not named by a rule joins the key"


_AS_HEADERS: Final = {
    "workspace_id": "anthropic-workspace-id",
    "user_profile_id": "anthropic-user-profile-id",
}  # SDK parameters sent as headers, not in the body


def rule_for(endpoint: Endpoint, name: str) -> FieldRule:
    """The rule that decides ``name`` on ``endpoint`` (the default: in the key)."""
    if endpoint is Endpoint.ANTHROPIC_MESSAGES and name in _AS_HEADERS:
        why = f"the SDK sends it as the header `{_AS_HEADERS[name]}`, which the route keys (a fingerprint)"
        return FieldRule(name, (endpoint,), Rule.IN, why)
    for rule in FIELD_RULES:
        if endpoint in rule.endpoints and rule.name == name:
            return rule
    if name in _TEXT_FIELDS and endpoint is not Endpoint.EMBEDDINGS:
        return next(r for r in FIELD_RULES if r.name == "messages / input / system / instructions")
    return FieldRule(name, (endpoint,), Rule.IN, _DEFAULT)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """``docs/KEY_FIELDS.md``."""
    out = [
        "# What joins the cache key (key schema v2)",
        "",
        "Generated from `promptcache/_fields.py` and `promptcache/_route.py` by",
        "`python -m promptcache._field_table > docs/KEY_FIELDS.md`; `tests/unit/test_field_table.py` fails",
        "if this file and the code disagree. **In the key**: a different value is a different entry.",
        "**Out of the key**: the field cannot change the answer. **Bypass**: the request refers to mutable",
        "state kept by the provider; it goes upstream uncached (counted as `server_state` in stats) unless",
        "the agent",
        "opts in with `wrap(..., cache_server_state=True)`. A field not listed here (a parameter added by a",
        "later SDK release, or `extra_body`) is in the key.",
        "",
    ]
    for endpoint in Endpoint:
        out += [f"## `{endpoint.value}`", "", "| field | decision | why |", "|---|---|---|"]
        for name in sorted(KNOWN_FIELDS[endpoint]):
            rule = rule_for(endpoint, name)
            out.append(f"| `{name}` | {rule.rule.value} | {_escape(rule.why)} |")
        out.append("")
    known = ", ".join(f"`{url}` = `{name}`" for url, name in KNOWN_UPSTREAMS.items())
    out += [
        "## The route: what besides the body selects the answer (requests through a wrapped SDK client)",
        "",
        "| part | decision | why |",
        "|---|---|---|",
        (
            "| upstream: scheme, host, port, path prefix | in the key | another host or gateway route is"
            f" another model; official APIs by name ({known}); `wrap(..., upstream=...)` names any"
            " upstream, so clients with one alias share entries |"
        ),
        "| method | in the key | only `POST` requests to the four endpoints are cached |",
        "| query string | in the key | `extra_query`, Azure's `api-version` select the answer |",
        (
            f"| query parameters {', '.join(f'`{q}`' for q in sorted(CREDENTIAL_QUERY))} | out of the key |"
            " credentials, not a choice of answer |"
        ),
    ]
    out += [
        f"| header `{h}` | in the key | selects the API version or beta features, or the tenant"
        " (account ids as fingerprints) |"
        for h in KEY_HEADERS
    ]
    out += [
        (
            "| headers named in `wrap(..., key_headers=[...])` | in the key | the agent says they select the"
            " answer |"
        ),
        (
            "| `authorization`, `x-api-key`, `api-key`, `cookie` | out of the key | credentials: an answer"
            " does not depend on which of a team's keys paid for it (use `tenant=` to keep tenants apart) |"
        ),
        (
            "| every other header (`x-request-id`, `user-agent`, `x-stainless-*`, ...) | out of the key |"
            " transport and telemetry |"
        ),
        "| `x-promptcache-*` control headers | out of the key | removed before the request leaves |",
        "| SDK options `timeout`, `max_retries` | out of the key | delivery, never sent as content |",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
