"""Small builders the corpus is written with: requests as data, pairs from two requests or two clients.

``chat(**fields)`` is a chat completion with the corpus's default body and ``fields`` merged in (likewise
``resp``, ``emb``, ``msg``, ``beta``; ``*_stream`` read every event; ``*_helper`` go through the SDK's
``.stream()`` helper; ``*_parse`` through ``.parse()``). ``differ`` pairs two requests on one client spec;
``across`` sends one request through two client specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pydantic
from corpus.clients import ClientSpec, oa
from corpus.runner import Expect, Pair, Side

if TYPE_CHECKING:
    from collections.abc import Callable

    from corpus.world import World

HIT: Final = Expect.HIT
MISS: Final = Expect.MISS
EITHER: Final = Expect.EITHER

SYSTEM: Final = "You are a helpful geography assistant."
QUESTION: Final = "What is the capital of France?"


def messages(user: Any = QUESTION, system: Any = SYSTEM) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def anthropic_messages(user: Any = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": user}]


WEATHER_FUNCTION: Final[dict[str, Any]] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_TOOL: Final = {"type": "function", "function": WEATHER_FUNCTION}
TIME_TOOL: Final = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RESP_TOOL: Final = {"type": "function", **WEATHER_FUNCTION}
ANTHROPIC_TOOL: Final = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class City(pydantic.BaseModel):
    name: str
    population: int


class Country(pydantic.BaseModel):
    name: str
    capital: str
    cities: list[City]


@dataclass(frozen=True)
class Req:
    """A request as ``call(client)`` plus how its result is read."""

    call: Callable[[Any], Any]
    mode: str = "plain"


def on(client: ClientSpec, req: Req) -> Side:
    return Side(client, req.call, req.mode)


def differ(name: str, expect: Expect, a: Req, b: Req, client: ClientSpec | None = None) -> Pair:
    """Two requests through one kind of client (two client objects, one cache)."""
    spec = client or oa()
    return Pair(name, expect, on(spec, a), on(spec, b))


def across(
    name: str,
    expect: Expect,
    req: Req,
    a: ClientSpec,
    b: ClientSpec,
    between: Callable[[World], None] | None = None,
) -> Pair:
    """One request through two client specs (upstream, options, wrap arguments or sync/async differ)."""
    return Pair(name, expect, on(a, req), on(b, req), between)


def twice(
    name: str, expect: Expect, req: Req, client: ClientSpec, between: Callable[[World], None] | None = None
) -> Pair:
    """The same request twice through the same kind of client."""
    return Pair(name, expect, on(client, req), on(client, req), between)


# --- OpenAI chat completions ---------------------------------------------------------------------


def _chat_body(fields: dict[str, Any]) -> dict[str, Any]:
    return {"model": "gpt-corpus", "messages": messages(), **fields}


def chat(**fields: Any) -> Req:
    body = _chat_body(fields)
    return Req(lambda c: c.chat.completions.create(**body))


def chat_stream(**fields: Any) -> Req:
    body = _chat_body({"stream": True, **fields})
    return Req(lambda c: c.chat.completions.create(**body), "stream")


def chat_helper(**fields: Any) -> Req:
    body = _chat_body(fields)
    return Req(lambda c: c.chat.completions.stream(**body), "manager")


def chat_parse(fmt: type[pydantic.BaseModel], **fields: Any) -> Req:
    body = _chat_body(fields)
    return Req(lambda c: c.chat.completions.parse(response_format=fmt, **body))


# --- OpenAI Responses and embeddings -------------------------------------------------------------


def _resp_body(fields: dict[str, Any]) -> dict[str, Any]:
    return {"model": "gpt-corpus", "input": QUESTION, **fields}


def resp(**fields: Any) -> Req:
    body = _resp_body(fields)
    return Req(lambda c: c.responses.create(**body))


def resp_stream(**fields: Any) -> Req:
    body = _resp_body({"stream": True, **fields})
    return Req(lambda c: c.responses.create(**body), "stream")


def resp_helper(**fields: Any) -> Req:
    body = _resp_body(fields)
    return Req(lambda c: c.responses.stream(**body), "manager")


def resp_parse(fmt: type[pydantic.BaseModel], **fields: Any) -> Req:
    body = _resp_body(fields)
    return Req(lambda c: c.responses.parse(text_format=fmt, **body))


def emb(**fields: Any) -> Req:
    body = {"model": "text-embedding-corpus", "input": "The capital of France", **fields}
    return Req(lambda c: c.embeddings.create(**body))


# --- Anthropic messages ------------------------------------------------------------------------


def _msg_body(fields: dict[str, Any]) -> dict[str, Any]:
    return {"model": "claude-corpus", "max_tokens": 256, "messages": anthropic_messages(), **fields}


def msg(**fields: Any) -> Req:
    body = _msg_body(fields)
    return Req(lambda c: c.messages.create(**body))


def msg_stream(**fields: Any) -> Req:
    body = _msg_body({"stream": True, **fields})
    return Req(lambda c: c.messages.create(**body), "stream")


def msg_helper(**fields: Any) -> Req:
    body = _msg_body(fields)
    return Req(lambda c: c.messages.stream(**body), "manager")


def msg_parse(fmt: type[pydantic.BaseModel], **fields: Any) -> Req:
    body = _msg_body(fields)
    return Req(lambda c: c.messages.parse(output_format=fmt, **body))


def beta(**fields: Any) -> Req:
    body = _msg_body(fields)
    return Req(lambda c: c.beta.messages.create(**body))
