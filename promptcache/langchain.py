"""``PromptCacheLangChain``: LangChain's ``BaseCache`` over a :class:`~promptcache.PromptCache`.

::

    from langchain_core.globals import set_llm_cache
    from promptcache import PromptCache
    from promptcache.langchain import PromptCacheLangChain

    cache = PromptCache.from_url("redis://localhost:6379/0", namespace="my-app")
    set_llm_cache(PromptCacheLangChain(cache, agent_id="support-bot", agent_version="3"))

What LangChain's own caches do not give, this one takes from the ``PromptCache`` underneath: every store
call under its deadline and the circuit breaker (an unreachable Redis is a quick miss, never a hang), the
scope (agent id, version and tenant are part of every key; :meth:`clear` deletes one agent's entries),
entries that are versioned JSON (never pickle), the only-successes gate and :meth:`PromptCache.stats`.

**The key.** LangChain hands a cache ``(prompt, llm_string)``: the serialised input and the model's
parameters. They are keyed as a chat-completions body that no SDK sends (model ``langchain-cache``, the
prompt as one user message, ``langchain_llm_string`` beside it), under the :attr:`KeyPolicy.EXACT` text
policy by default: LangChain's caches match prompts byte for byte, and so does this one, but for what no
model is sent: the usage of the AI messages in a conversation (LangChain marks an answer it took from a
cache as free, ``total_cost: 0``, and that mark must not make the conversation's next turn a miss).

**The entry.** Each ``Generation`` is kept as LangChain's own JSON form (``langchain_core.load.dumpd``),
and read back with ``langchain_core.load.load`` restricted to the generation and message classes
(``allowed_objects``; never environment secrets). That is the form LangChain's own Redis and SQL caches
store, and it round-trips what a chat model returns exactly: a ``ChatGeneration`` with its ``AIMessage``,
tool calls, usage and response metadata (pydantic's ``model_dump`` would lose which classes they were). An
entry that does not load (or names another class) is answered as a miss, with a logged warning, never an
exception.

**What is stored.** The engine's write gate judges the generations as the choices of one chat answer: an
empty list is never stored, nor a list with a generation that errored (``generation_info["error"]``),
was refused (``additional_kwargs["refusal"]``) or stopped for a reason the cache's ``finish_reasons``
refuse (``length``, ``content_filter``, Anthropic's ``max_tokens``...). A generation without a finish
reason counts as ``stop``. Refused lists are counted in ``stats().not_stored``.

**Under the pytest plugin** it steps aside like a wrapped client's cache: while a test records or replays,
lookups miss (counted as bypasses) and nothing is stored, so every call reaches the cassette;
``@pytest.mark.promptcache(production_cache=True)`` keeps it for a test.

Sync methods (:meth:`lookup`, :meth:`update`, :meth:`clear`) run the async ones on promptcache's portal
thread, the same way a wrapped sync SDK client does; the async ones run in the caller's loop.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING, Any, Final

from langchain_core.caches import BaseCache
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from promptcache._cache import PromptCache
from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy
from promptcache._scope import Scope, scope_from_keywords
from promptcache.integrations import _portal
from promptcache.integrations._recording import production_cache_steps_aside

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptcache._keys import CacheKey
    from promptcache._stats import CacheStats

__all__ = ["LLM_STRING_FIELD", "MODEL", "PromptCacheLangChain"]

log = logging.getLogger("promptcache")

MODEL: Final = "langchain-cache"
"""The ``model`` of every LangChain key body: no request of an SDK client can have the same key."""
LLM_STRING_FIELD: Final = "langchain_llm_string"
"""The key body's field holding LangChain's ``llm_string`` (the model and its parameters)."""

_ALLOWED: Final = (
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ChatMessage,
    ToolMessage,
    FunctionMessage,
)


_AI_MESSAGES: Final = frozenset({"AIMessage", "AIMessageChunk"})


class PromptCacheLangChain(BaseCache):
    """A LangChain ``BaseCache`` whose entries live in a :class:`~promptcache.PromptCache`.

    Args:
        cache: The cache (any store: ``memory://``, SQLite, Redis, Redis Cluster). Not closed by this
            object: close it yourself when done.
        scope: Who the answers belong to, as one :class:`~promptcache.Scope`; or the keywords below.
        agent_id: The agent the answers belong to; agents never share entries.
        agent_version: Bump it when the agent's prompts change.
        tenant: Optional tenant; tenants never share entries.
        ttl: Seconds to keep answers; defaults to the cache's ``default_ttl``.
        policy: How prompt text is normalised in the key; ``exact`` (LangChain's own behaviour) by default.
            A given ``scope`` brings its own policy (None there: the cache's).

    Raises:
        TypeError: ``cache`` is not a PromptCache, or both ``scope`` and scope keywords, or neither.
    """

    def __init__(  # noqa: PLR0913 - the documented scope keywords, or one scope
        self,
        cache: PromptCache,
        *,
        scope: Scope | None = None,
        agent_id: str | None = None,
        agent_version: str = DEFAULT_AGENT_VERSION,
        tenant: str | None = None,
        ttl: float | None = None,
        policy: KeyPolicy | str | None = KeyPolicy.EXACT,
    ) -> None:
        if not isinstance(cache, PromptCache):
            raise TypeError(
                f"PromptCacheLangChain needs a promptcache.PromptCache, got {type(cache).__name__}"
            )
        if scope is not None:
            policy = None  # the scope carries its own policy
        self.cache = cache
        self.scope = scope_from_keywords(
            "PromptCacheLangChain", scope, agent_id, agent_version, tenant, ttl, policy
        )

    def __repr__(self) -> str:
        return f"PromptCacheLangChain({self.cache!r}, agent_id={self.scope.agent_id!r})"

    def stats(self) -> CacheStats:
        """The counters of the cache underneath (shared with everything else that uses it)."""
        return self.cache.stats()

    def key(self, prompt: str, llm_string: str) -> CacheKey:
        """The promptcache key of a LangChain ``(prompt, llm_string)`` pair in this cache's scope."""
        return self.cache.key(request_body(prompt, llm_string), scope=self.scope)

    # -- async: the real work ----------------------------------------------------------------------

    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """The cached generations for ``prompt`` and ``llm_string``, or None (also when the store fails).

        None also while the pytest plugin records or replays this call (counted as a bypass), so the
        request reaches the plugin like a wrapped client's does (``production_cache=True`` keeps it).
        """
        if production_cache_steps_aside():
            self.cache.count_bypass(scope=self.scope, request=request_body(prompt, llm_string))
            return None
        entry = await self.cache.get_entry(self.key(prompt, llm_string))
        if entry is None:
            return None
        try:
            return _generations_from(entry.body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("promptcache: a LangChain entry did not load and reads as a miss: %s", exc)
            return None

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Store ``return_val`` if it is a success (see the module's docs); store faults are only counted.

        Raises:
            TypeError: ``return_val`` is not a list of LangChain ``Generation`` objects.
        """
        body = response_body(return_val)
        request = request_body(prompt, llm_string)
        if production_cache_steps_aside():  # a recording or a replayed answer: not the app's to keep
            return
        await self.cache.put_entry(
            self.cache.key(request, scope=self.scope), request, scope=self.scope, body=body
        )

    async def aclear(self, **kwargs: Any) -> None:  # noqa: ANN401 - BaseCache's signature
        """Delete every entry of this agent (all versions and tenants) in the cache's namespace.

        ``agent_version=`` limits it to one version.

        Raises:
            StoreError: The store failed (clearing is never silently skipped).
            TypeError: Another keyword.
        """
        version = kwargs.pop("agent_version", None)
        if kwargs:
            raise TypeError(f"clear() takes only agent_version=, not {', '.join(sorted(kwargs))}=")
        await self.cache.invalidate(self.scope.agent_id, version)

    # -- sync: the same, on promptcache's portal -------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """Sync :meth:`alookup`."""
        return _portal.call(self.alookup, prompt, llm_string)

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Sync :meth:`aupdate`."""
        _portal.call(self.aupdate, prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:  # noqa: ANN401 - BaseCache's signature
        """Sync :meth:`aclear`."""
        _portal.call(lambda: self.aclear(**kwargs))


def request_body(prompt: str, llm_string: str) -> dict[str, Any]:
    """The key body of a LangChain lookup: a chat request no SDK client sends (see the module's docs)."""
    if not isinstance(prompt, str) or not isinstance(llm_string, str):
        raise TypeError(
            "a LangChain cache key is two strings, "
            f"got {type(prompt).__name__} and {type(llm_string).__name__}"
        )
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": _model_visible(prompt)}],
        LLM_STRING_FIELD: llm_string,
    }


_USAGE: Final = "usage_metadata"
"""The field of an AI message in a prompt that no model is sent: what its answer cost."""


def _model_visible(prompt: str) -> str:
    """``prompt`` without the usage of its AI messages (LangChain's serialised message list).

    LangChain zeroes the cost in the usage of an answer it takes from a cache (``total_cost: 0``), so the
    same conversation continued after a hit would otherwise key differently from the run that stored it.
    Any other prompt is returned unchanged.
    """
    if f'"{_USAGE}"' not in prompt:
        return prompt
    try:
        messages = json.loads(prompt)
    except ValueError:
        return prompt
    if not isinstance(messages, list):
        return prompt
    changed = False
    for message in messages:
        if not isinstance(message, dict) or message.get("type") != "constructor":
            continue
        path, kwargs = message.get("id"), message.get("kwargs")
        if not (isinstance(path, list) and path and path[-1] in _AI_MESSAGES and isinstance(kwargs, dict)):
            continue
        changed = kwargs.pop(_USAGE, None) is not None or changed
    return json.dumps(messages) if changed else prompt


def _finish_reason(generation: Generation) -> str:
    info = generation.generation_info or {}
    if info.get("error"):
        return "error"
    meta: dict[str, Any] = {}
    if isinstance(generation, ChatGeneration):
        meta = generation.message.response_metadata or {}
    for source in (info, meta):
        for name in ("finish_reason", "stop_reason"):
            reason = source.get(name)
            if isinstance(reason, str):
                return reason
    return "stop"


def _choice(index: int, generation: Generation) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": generation.text}
    if isinstance(generation, ChatGeneration):
        refusal = generation.message.additional_kwargs.get("refusal")
        if refusal:
            message["refusal"] = refusal
    return {"index": index, "finish_reason": _finish_reason(generation), "message": message}


def _usage(generations: Sequence[Generation]) -> dict[str, int] | None:
    prompt = completion = 0
    for generation in generations:
        if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
            usage = generation.message.usage_metadata
            if usage:
                prompt += usage.get("input_tokens", 0)
                completion += usage.get("output_tokens", 0)
    if not (prompt or completion):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def response_body(generations: Sequence[Generation]) -> dict[str, Any]:
    """The stored body: the generations as LangChain JSON, plus the choices the write gate judges.

    Raises:
        TypeError: ``generations`` is not a sequence of LangChain ``Generation`` objects.
    """
    if isinstance(generations, str | bytes) or not hasattr(generations, "__iter__"):
        raise TypeError(f"a LangChain cache value is a list of Generation, got {type(generations).__name__}")
    items = list(generations)
    for item in items:
        if not isinstance(item, Generation):
            raise TypeError(f"a LangChain cache value is a list of Generation, not of {type(item).__name__}")
    body: dict[str, Any] = {
        "object": "langchain.generations",
        "choices": [_choice(i, g) for i, g in enumerate(items)],
        "generations": [dumpd(g) for g in items],
    }
    usage = _usage(items)
    if usage is not None:
        body["usage"] = usage
    return body


def _generations_from(body: Any) -> list[Generation]:  # noqa: ANN401 - a decoded JSON body
    stored = body["generations"]
    if not isinstance(stored, list):
        raise TypeError(f"stored generations are a {type(stored).__name__}, not a list")
    out: list[Generation] = []
    for doc in stored:
        with warnings.catch_warnings():  # `load` is marked beta; LangChain's own caches use it too
            warnings.filterwarnings("ignore", message=r"The function `load` is in beta")
            generation = load(doc, allowed_objects=_ALLOWED, secrets_from_env=False)
        if not isinstance(generation, Generation):
            raise TypeError(f"a stored generation loaded as {type(generation).__name__}")
        out.append(generation)
    return out
