"""Agents with a tool and a structured output type, run twice: the second identical run is free.

An agent with an output type asks the Responses API for JSON (``text.format`` of type ``json_schema``) on
every turn, also on the turns where the model answers with a tool call instead of text. Those turns must
be cached like any other, or every later run pays for them again (and, since providers give each tool
call a new id, for every turn after them too).

The upstream is scripted (an httpx mock transport): a call of the agent's first tool, then, once the
request carries the tool's output, the JSON answer. Each upstream call gets a new call id, as real
providers do.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest

pytest.importorskip(
    "pydantic_ai", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
pytest.importorskip(
    "agents", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
from agents import Agent as AgentsSdkAgent
from agents import OpenAIResponsesModel, RunConfig, Runner, function_tool
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIResponsesModel as PydanticAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from sdk_driver import sdk_http

from promptcache import PromptCache
from promptcache import openai as pc_openai

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

HTTP = sdk_http(openai)
QUESTION = "Where is my order 1042?"


class OrderStatus(BaseModel):
    order_id: str
    status: str


def lookup_order(order_id: str) -> str:
    """Look up an order's shipping status by its id."""
    return f"order {order_id}: shipped yesterday"


class ScriptedResponses:
    """A Responses API upstream: a tool call first, the JSON answer once a tool's output came back."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:  # an httpx(2) Request and Response
        body = json.loads(request.content)
        self.requests.append(body)
        n = len(self.requests)
        items = body["input"] if isinstance(body["input"], list) else []
        if items and items[-1].get("type") == "function_call_output":
            text = json.dumps({"order_id": "1042", "status": "shipped"})
            content = [{"type": "output_text", "text": text, "annotations": []}]
            output: list[dict[str, Any]] = [
                {"type": "message", "id": f"msg_{n}", "status": "completed", "role": "assistant"}
                | {"content": content}
            ]
        else:
            arguments = json.dumps({"order_id": "1042"})
            name = body["tools"][0]["name"]
            output = [
                {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": name}
                | {"arguments": arguments, "status": "completed"}
            ]
        usage = {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        answer = {"id": f"resp_{n}", "object": "response", "created_at": 1_800_000_000 + n}
        answer |= {"status": "completed", "model": body["model"], "output": output, "usage": usage}
        answer |= {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
        return HTTP.Response(200, json=answer)


@pytest.fixture
def upstream() -> ScriptedResponses:
    return ScriptedResponses()


@pytest.fixture
async def cache() -> AsyncIterator[PromptCache]:
    async with PromptCache.from_url("memory://") as opened:
        yield opened


@pytest.fixture
async def client(upstream: ScriptedResponses, cache: PromptCache) -> AsyncIterator[openai.AsyncOpenAI]:
    """An AsyncOpenAI on the scripted upstream, wrapped by ``cache``."""
    bare = openai.AsyncOpenAI(
        api_key="not-a-real-key",
        base_url="http://upstream.test/v1",
        http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(upstream)),
    )
    yield pc_openai.wrap(bare, cache, agent_id="structured")
    await bare.close()


async def test_openai_agents_sdk_output_type_with_a_tool_second_run_is_free(
    upstream: ScriptedResponses, cache: PromptCache, client: openai.AsyncOpenAI
) -> None:
    agent = AgentsSdkAgent(
        name="support",
        instructions="Answer in one sentence.",
        model=OpenAIResponsesModel("gpt-4o-mini", openai_client=client),
        tools=[function_tool(lookup_order)],
        output_type=OrderStatus,
    )
    config = RunConfig(tracing_disabled=True)
    first = await Runner.run(agent, QUESTION, run_config=config)
    assert first.final_output == OrderStatus(order_id="1042", status="shipped")
    assert len(upstream.requests) == 2  # the tool call, then the answer
    await cache.drain()
    again = await Runner.run(agent, QUESTION, run_config=config)
    assert again.final_output == first.final_output
    assert len(upstream.requests) == 2


async def test_pydantic_ai_native_output_with_a_tool_second_run_is_free(
    upstream: ScriptedResponses, cache: PromptCache, client: openai.AsyncOpenAI
) -> None:
    agent = Agent(
        PydanticAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client)),
        tools=[lookup_order],
        output_type=NativeOutput(OrderStatus),
    )
    first = await agent.run(QUESTION)
    assert first.output == OrderStatus(order_id="1042", status="shipped")
    assert len(upstream.requests) == 2
    await cache.drain()
    again = await agent.run(QUESTION)
    assert again.output == first.output
    assert len(upstream.requests) == 2
