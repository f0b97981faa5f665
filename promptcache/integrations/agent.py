"""``CachedAgent``: the seed tutorial's agent API, done right.

Unlike the tutorial, upstream errors are raised (never returned as ``"ERROR: ..."`` text, never cached),
writes are tracked and drained, and the agent's id and version scope its entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptcache._events import declare_agent
from promptcache._keys import DEFAULT_AGENT_VERSION, chat_request
from promptcache._scope import Scope

if TYPE_CHECKING:
    from promptcache._cache import PromptCache

__all__ = ["CachedAgent"]


class CachedAgent:
    """An agent that answers ``think(system, user)`` from the cache, or from the model once.

    Args:
        openai_client: An ``openai.AsyncOpenAI`` client (not wrapped: the agent does its own caching).
        cache: The cache.
        model: Chat model name.
        temperature: Sampling temperature (part of the key).
        max_tokens: Completion limit (part of the key).
        agent_id: This agent's id; entries are scoped to it.
        agent_version: Bump it when this agent's prompts change.

    .. versionadded:: 0.1.0
    """

    def __init__(  # noqa: PLR0913 - the seed tutorial's signature
        self,
        openai_client: Any,  # noqa: ANN401 - openai is an optional extra
        cache: PromptCache,
        model: str = "gpt-4o",
        temperature: float = 0.1,
        max_tokens: int = 1024,
        agent_id: str = "default",
        agent_version: str = DEFAULT_AGENT_VERSION,
    ) -> None:
        self.client = openai_client
        self.cache = cache
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.scope = Scope(agent_id, agent_version)
        declare_agent(agent_id)  # a configured agent: metrics label it by name (promptcache.metrics)
        self.hits = 0
        self.misses = 0
        self.total_calls = 0

    # The seed tutorial's attributes, kept settable; each reads or replaces the agent's one Scope.
    @property
    def agent_id(self) -> str:
        return self.scope.agent_id

    @agent_id.setter
    def agent_id(self, value: str) -> None:
        self.scope = self.scope.replace(agent_id=value)

    @property
    def agent_version(self) -> str:
        return self.scope.agent_version

    @agent_version.setter
    def agent_version(self, value: str) -> None:
        self.scope = self.scope.replace(agent_version=value)

    async def think(self, system_prompt: str, user_prompt: str) -> str:
        """The model's answer to ``user_prompt`` under ``system_prompt``; cached per agent and version.

        Raises:
            openai.APIError: And any other error the SDK raises; nothing is cached then.
        """
        self.total_calls += 1
        request = chat_request(system_prompt, user_prompt, self.model, self.temperature, self.max_tokens)
        called = False

        async def call() -> Any:  # noqa: ANN401
            nonlocal called
            called = True
            completion = await self.client.chat.completions.create(**request)
            return completion.model_dump(mode="json", exclude_unset=True)

        try:
            body = await self.cache.get_or_call(request, call, scope=self.scope)
        except BaseException:
            self.misses += 1  # no answer came from the cache: hits + misses always equals total_calls
            raise
        if called:
            self.misses += 1
        else:
            self.hits += 1
        content = body["choices"][0]["message"].get("content")
        return content if isinstance(content, str) else ""

    def get_cache_stats(self) -> dict[str, float | int]:
        """The seed tutorial's stats dict: ``hit_rate`` (percent), ``hits``, ``misses``, ``total_calls``."""
        if self.total_calls == 0:
            return {"hit_rate": 0, "hits": 0, "misses": 0}
        return {
            "hit_rate": round(self.hits / self.total_calls * 100, 2),
            "hits": self.hits,
            "misses": self.misses,
            "total_calls": self.total_calls,
        }
