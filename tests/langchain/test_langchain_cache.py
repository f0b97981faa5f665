"""``PromptCacheLangChain`` adds what LangChain's caches lack: scope, write gate, JSON, deadlines, stats."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import orjson
import pytest

pytest.importorskip(
    "langchain_core", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.load import dumpd, dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation

from promptcache import CacheConfig, PromptCache
from promptcache.backends.memory import MemoryStore
from promptcache.langchain import PromptCacheLangChain

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

PROMPT = '[{"lc": 1, "type": "constructor", "id": ["HumanMessage"], "kwargs": {"content": "hi"}}]'
LLM = "model=fake temperature=0"


def chat_generation(text: str = "hello", **info: object) -> ChatGeneration:
    message = AIMessage(
        content=text,
        tool_calls=[{"name": "lookup", "args": {"order": 1042}, "id": "call_1"}],
        usage_metadata={"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
        response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "tool_calls"},
    )
    return ChatGeneration(message=message, generation_info=info or None)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def cache(store: MemoryStore) -> PromptCache:
    return PromptCache(store, owns_store=False)


async def test_a_chat_generation_round_trips_through_json_and_a_hit_counts_its_tokens(
    cache: PromptCache, store: MemoryStore
) -> None:
    """The stored value is JSON (no pickle); the hit is the same ChatGeneration, tool calls and usage."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    generation = chat_generation()
    await lc.aupdate(PROMPT, LLM, [generation])

    raw = await store.get(lc.key(PROMPT, LLM).store_key)
    assert raw is not None
    doc = orjson.loads(raw)  # plain JSON: a pickle would not parse
    assert doc["body"]["generations"] == [dumpd(generation)]

    assert await lc.alookup(PROMPT, LLM) == [generation]
    stats = lc.stats()
    assert stats == cache.stats()
    assert (stats.hits, stats.writes) == (1, 1)
    assert (stats.input_tokens_saved, stats.output_tokens_saved) == (11, 7)


async def test_agents_versions_and_tenants_never_share_an_entry(cache: PromptCache) -> None:
    """The scope is part of every key: another agent, version or tenant misses the stored answer."""
    writer = PromptCacheLangChain(cache, agent_id="bot", agent_version="1", tenant="acme")
    await writer.aupdate(PROMPT, LLM, [Generation(text="for acme")])
    assert await PromptCacheLangChain(cache, agent_id="bot", agent_version="1", tenant="acme").alookup(
        PROMPT, LLM
    ) == [Generation(text="for acme")]
    for other in (
        PromptCacheLangChain(cache, agent_id="other", agent_version="1", tenant="acme"),
        PromptCacheLangChain(cache, agent_id="bot", agent_version="2", tenant="acme"),
        PromptCacheLangChain(cache, agent_id="bot", agent_version="1", tenant="globex"),
        PromptCacheLangChain(cache, agent_id="bot", agent_version="1"),
    ):
        assert await other.alookup(PROMPT, LLM) is None, other.scope


async def test_prompts_match_exactly_by_default(cache: PromptCache) -> None:
    """LangChain's caches match prompts byte for byte; so does this one unless told otherwise."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    await lc.aupdate("hello  ", LLM, [Generation(text="x")])
    assert await lc.alookup("hello", LLM) is None
    assert await lc.alookup("hello  ", LLM) == [Generation(text="x")]
    assert await lc.alookup("hello  ", LLM + " temperature=1") is None


@pytest.mark.parametrize(
    "generations",
    [
        pytest.param([], id="empty"),
        pytest.param([Generation(text="", generation_info={"error": "upstream 500"})], id="errored"),
        pytest.param([Generation(text="cut", generation_info={"finish_reason": "length"})], id="length"),
        pytest.param(
            [
                Generation(text="ok"),
                Generation(text="cut", generation_info={"finish_reason": "content_filter"}),
            ],
            id="one-of-two-filtered",
        ),
        pytest.param(
            [ChatGeneration(message=AIMessage(content="", response_metadata={"stop_reason": "max_tokens"}))],
            id="anthropic-max-tokens",
        ),
        pytest.param(
            [ChatGeneration(message=AIMessage(content="", additional_kwargs={"refusal": "I can't."}))],
            id="refusal",
        ),
    ],
)
async def test_an_empty_or_failed_generation_list_is_never_stored(
    cache: PromptCache, generations: list[Generation]
) -> None:
    """The engine's write gate judges the generations: nothing but a success is written."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    await lc.aupdate(PROMPT, LLM, generations)
    assert await lc.alookup(PROMPT, LLM) is None
    stats = cache.stats()
    assert (stats.not_stored, stats.writes) == (1, 0)


async def test_successful_finish_reasons_of_both_providers_are_stored(cache: PromptCache) -> None:
    """OpenAI's ``stop``/``tool_calls`` and Anthropic's ``end_turn`` are successes."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    generations = [
        Generation(text="a", generation_info={"finish_reason": "stop"}),
        chat_generation("b"),
        ChatGeneration(message=AIMessage(content="c", response_metadata={"stop_reason": "end_turn"})),
    ]
    await lc.aupdate(PROMPT, LLM, generations)
    assert await lc.alookup(PROMPT, LLM) == generations


async def test_a_stored_object_outside_the_generation_classes_is_a_miss_not_an_instance(
    cache: PromptCache,
) -> None:
    """An entry naming another LangChain class (a prompt template, a model) is never constructed."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    hostile = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
        "kwargs": {"template": "{x}", "input_variables": ["x"]},
    }
    body = {
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}],
        "generations": [hostile],
    }
    key = lc.key(PROMPT, LLM)
    assert await cache.put_entry(key, None, scope=lc.scope, body=body)
    assert await lc.alookup(PROMPT, LLM) is None


async def test_clear_deletes_this_agents_entries_only(cache: PromptCache) -> None:
    mine = PromptCacheLangChain(cache, agent_id="bot")
    theirs = PromptCacheLangChain(cache, agent_id="other")
    for lc in (mine, theirs):
        await lc.aupdate(PROMPT, LLM, [Generation(text=lc.scope.agent_id)])
    await mine.aclear()
    assert await mine.alookup(PROMPT, LLM) is None
    assert await theirs.alookup(PROMPT, LLM) == [Generation(text="other")]
    with pytest.raises(TypeError, match="agent_version"):
        await mine.aclear(everything=True)


def test_a_value_that_is_not_generations_is_refused_by_name(cache: PromptCache) -> None:
    lc = PromptCacheLangChain(cache, agent_id="bot")
    with pytest.raises(TypeError, match="list of Generation, not of str"):
        lc.update(PROMPT, LLM, ["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"needs a promptcache\.PromptCache"):
        PromptCacheLangChain(object(), agent_id="bot")  # type: ignore[arg-type]


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A redis:// URL whose server accepts connections and never answers (a hung or black-holed Redis)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes handshakes; nobody ever reads or replies
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_a_silent_redis_is_a_counted_miss_and_then_the_breaker_skips_it(silent_redis: str) -> None:
    """Where LangChain's RedisCache hangs, a lookup ends at the store deadline; then the breaker opens."""
    cache = PromptCache.from_url(silent_redis, CacheConfig(store_timeout=0.05, breaker_threshold=2))
    lc = PromptCacheLangChain(cache, agent_id="bot")
    try:
        for _ in range(4):
            assert lc.lookup(PROMPT, LLM) is None
        stats = cache.stats()
    finally:
        cache.close()
    assert stats.misses == 4
    assert stats.store_timeouts == 2
    assert stats.store_skipped == 2
    assert stats.breaker_state == "open"


def test_a_langchain_chat_model_asks_its_model_once_for_a_repeated_prompt(cache: PromptCache) -> None:
    """``cache=`` on a chat model (or ``set_llm_cache``): the second identical invoke is a cache hit."""
    lc = PromptCacheLangChain(cache, agent_id="bot")
    model = FakeListChatModel(responses=["first answer", "second answer"], cache=lc)
    assert model.invoke("Where is my order?").content == "first answer"
    assert model.invoke("Where is my order?").content == "first answer"
    assert model.invoke("Something else").content == "second answer"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 2, 2)


def tool_loop(model: GenericFakeChatModel) -> str:
    """One run of a tool-using chain: the model calls a tool, gets its output back, answers."""
    messages: list[BaseMessage] = [HumanMessage("Where is my order 1042?")]
    call = model.invoke(messages)
    messages += [call, ToolMessage("shipped yesterday", tool_call_id=call.tool_calls[0]["id"])]
    return str(model.invoke(messages).content)


def test_a_tool_loop_run_again_is_answered_by_the_cache_on_every_turn(cache: PromptCache) -> None:
    """LangChain marks a cached answer's usage as free (``total_cost: 0``) before it joins the next turn's
    prompt; that mark is not what the model sees, so the next turn still finds the first run's entry."""
    usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    tool_call = {"name": "lookup_order", "args": {"order_id": "1042"}, "id": "call_1"}
    answers = [
        AIMessage(content="", tool_calls=[tool_call], usage_metadata=usage, id="run-1"),
        AIMessage(content="It shipped yesterday.", usage_metadata=usage, id="run-2"),
        AIMessage(content="a second upstream answer", usage_metadata=usage, id="run-3"),
    ]
    model = GenericFakeChatModel(messages=iter(answers), cache=PromptCacheLangChain(cache, agent_id="bot"))
    assert tool_loop(model) == "It shipped yesterday."
    assert tool_loop(model) == "It shipped yesterday."
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 2)


def test_only_the_usage_of_earlier_answers_is_left_out_of_the_key(cache: PromptCache) -> None:
    """What the model is sent still keys: an earlier answer's text or tool call, and every other message."""
    lc = PromptCacheLangChain(cache, agent_id="bot")

    def prompt(answer: AIMessage) -> str:
        return dumps([HumanMessage("Where is my order?"), answer, HumanMessage("And the other one?")])

    usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    base = AIMessage(content="It shipped.", usage_metadata=usage)
    free = AIMessage(content="It shipped.", usage_metadata={**usage, "total_cost": 0})
    assert lc.key(prompt(base), LLM) == lc.key(prompt(free), LLM)
    other_text = AIMessage(content="It is lost.", usage_metadata=usage)
    other_call = AIMessage(
        content="It shipped.",
        usage_metadata=usage,
        tool_calls=[{"name": "lookup_order", "args": {"order_id": "7"}, "id": "call_1"}],
    )
    keys = {lc.key(prompt(m), LLM).digest for m in (base, other_text, other_call)}
    assert len(keys) == 3
