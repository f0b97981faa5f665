"""A test driver for wrapped SDK clients: one blocking interface over a sync or an async client.

Shared by the OpenAI and Anthropic SDK tests, so each of their tests runs on both kinds of client; the
providers describe what differs between the two SDKs, so a scenario both run is written once.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from fake_llm import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

from promptcache.integrations import _portal

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from fake_llm import FakeLLM

    from promptcache import PromptCache


def sdk_http(sdk: ModuleType) -> Any:
    """The HTTP library (``httpx`` or ``httpx2``) that this release of ``sdk`` builds its clients on.

    Read from the SDK's public ``DefaultHttpxClient``: current releases subclass ``httpx2.Client``, older
    ones ``httpx.Client``. Tests build mock transports and requests with it, so they run on either.
    """
    for base in sdk.DefaultHttpxClient.__mro__:
        top = base.__module__.partition(".")[0]
        if top in {"httpx", "httpx2"}:
            return importlib.import_module(top)
    raise AssertionError(f"{sdk.__name__}.DefaultHttpxClient is built on neither httpx nor httpx2")


def raised_by(action: Callable[[], object]) -> type[BaseException]:
    """The type of the exception ``action`` raises: what the bare SDK does, for a wrapped client to match.

    Tests never write an SDK's or httpx's exception type into an assertion (releases change them); they
    run the same scenario on an unwrapped client and require the wrapped one to raise the same type.
    """
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - any type: the point is to learn which one
        return type(exc)
    raise AssertionError("the bare SDK raised nothing in a scenario meant to fail")


class SdkDriver:
    """One wrapped client, sync or async, behind one blocking interface.

    The async client and its cache live on a private event loop (an ``asyncio.Runner``); the sync client
    runs its cache on promptcache's portal loop, as it does in production.
    """

    def __init__(self, kind: str, cache: PromptCache, client: Any) -> None:
        self.kind = kind
        self.cache = cache
        self._runner = asyncio.Runner() if kind == "async" else None
        self.client: Any = client

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)``, awaited when the client is async."""
        result = fn(self.client)
        if self._runner is None:
            return result

        async def wait() -> Any:
            return await result  # a coroutine, or an awaitable such as AsyncPaginator

        return self._runner.run(wait())

    def events(self, fn: Callable[[Any], Any], limit: int | None = None) -> list[Any]:
        """Open the stream ``fn(client)``, read every event (or the first ``limit``), then close it."""
        if self._runner is None:
            stream = fn(self.client)
            out: list[Any] = []
            try:
                for event in stream:
                    out.append(event)
                    if limit is not None and len(out) >= limit:
                        break
            finally:
                stream.close()
            if limit is not None:
                # Finalise the abandoned byte iterator here, on this thread: collected later it would run
                # on whichever thread the collector happens to run (see the portal-thread test below).
                gc.collect()
            return out

        async def read() -> list[Any]:
            stream = await fn(self.client)
            got: list[Any] = []
            try:
                async for event in stream:
                    got.append(event)
                    if limit is not None and len(got) >= limit:
                        break
            finally:
                await stream.close()
            return got

        return self._runner.run(read())

    def drain(self) -> None:
        """Wait for the cache's background writes (stream entries are written off the response path)."""
        if self._runner is not None:
            self._runner.run(self.cache.drain())
        else:
            _portal.call(self.cache.drain)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.run(self.client.close())
            self._runner.run(self.cache.aclose())
            self._runner.close()
        else:
            self.client.close()
            _portal.call(self.cache.aclose)


# --- the two providers, for the scenarios both SDKs run (tests/unit/test_sdk_common.py) ------------

ALL_CONTROLS = {
    "x-promptcache-bypass": "0",
    "x-promptcache-refresh": "0",
    "x-promptcache-ttl": "60",
    "x-promptcache-agent-id": "other-agent",
    "x-promptcache-agent-version": "9",
    "x-promptcache-tenant": "acme",
}


class Provider:
    """What differs between the OpenAI and the Anthropic SDK in a scenario both of them run."""

    name: str
    sdk: ModuleType
    wrap: Callable[..., Any]
    api_key: str
    cut_finish: str  # the finish reason of an answer cut at the token limit
    done_finish: str  # ... and of a complete one
    drop_after: int  # server events before a cut stream drops: a few events in
    overloaded: int  # the "try again" status this provider's SDK retries
    passthrough_path: str  # a non-cached endpoint, which the fake server answers 404

    def client(self, kind: str, server: FakeLLM) -> Any:
        raise NotImplementedError

    def client_type(self, kind: str) -> type:
        raise NotImplementedError

    def resource(self, client: Any) -> Any:
        """The cached API (``chat.completions`` or ``messages``) of a client."""
        raise NotImplementedError

    def body(self, text: str, **kw: Any) -> dict[str, Any]:
        raise NotImplementedError

    def passthrough(self, **kw: Any) -> Callable[[Any], Any]:
        """A call to the non-cached endpoint at ``passthrough_path``."""
        raise NotImplementedError

    def text(self, reply: Any) -> str | None:
        raise NotImplementedError

    def finish(self, reply: Any) -> str | None:
        raise NotImplementedError

    def output_tokens(self, reply: Any) -> int:
        raise NotImplementedError

    def streamed_text(self, events: list[Any]) -> str:
        raise NotImplementedError

    def stream_finish(self, events: list[Any]) -> str | None:
        raise NotImplementedError

    def create(self, text: str, **kw: Any) -> Callable[[Any], Any]:
        """``fn(client)`` making the cached call for ``text`` (``kw`` overrides or adds body fields)."""
        body = self.body(text, **kw)
        return lambda c: self.resource(c).create(**body)

    def raw(self, kind: str, text: str) -> Callable[[Any], Any]:
        """``fn(client)``: the ``x-promptcache`` header, status and parsed reply of with_raw_response."""

        def sync_raw(c: Any) -> tuple[str, int, Any]:
            raw = self.resource(c).with_raw_response.create(**self.body(text))
            return raw.headers["x-promptcache"], raw.status_code, raw.parse()

        async def async_raw(c: Any) -> tuple[str, int, Any]:
            raw = await self.resource(c).with_raw_response.create(**self.body(text))
            parsed = raw.parse()  # a coroutine in some releases, the model itself in others
            return (
                raw.headers["x-promptcache"],
                raw.status_code,
                await parsed if isawaitable(parsed) else parsed,
            )

        return sync_raw if kind == "sync" else async_raw

    def __repr__(self) -> str:
        return self.name


class OpenAIProvider(Provider):
    name = "openai"
    cut_finish, done_finish = "length", "stop"
    drop_after = 3
    overloaded = 429
    passthrough_path = "/v1/models"

    def __init__(self) -> None:
        import openai  # noqa: PLC0415 - each provider imports only its own SDK

        from promptcache.openai import wrap  # noqa: PLC0415

        self.sdk, self.wrap, self.api_key = openai, wrap, OPENAI_TEST_KEY

    def client(self, kind: str, server: FakeLLM) -> Any:
        options: dict[str, Any] = {"api_key": OPENAI_TEST_KEY, "base_url": server.base_url, "max_retries": 2}
        if kind == "sync":
            return self.sdk.OpenAI(**options, http_client=self.sdk.DefaultHttpxClient(verify=False))
        return self.sdk.AsyncOpenAI(**options, http_client=self.sdk.DefaultAsyncHttpxClient(verify=False))

    def client_type(self, kind: str) -> type:
        return self.sdk.OpenAI if kind == "sync" else self.sdk.AsyncOpenAI  # type: ignore[no-any-return]

    def resource(self, client: Any) -> Any:
        return client.chat.completions

    def body(self, text: str, **kw: Any) -> dict[str, Any]:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
        return {"model": "gpt-test", "messages": messages, **kw}

    def passthrough(self, **kw: Any) -> Callable[[Any], Any]:
        return lambda c: c.models.list(**kw)

    def text(self, reply: Any) -> str | None:
        text = reply.choices[0].message.content
        assert text is None or isinstance(text, str)
        return text

    def finish(self, reply: Any) -> str | None:
        return reply.choices[0].finish_reason  # type: ignore[no-any-return]

    def output_tokens(self, reply: Any) -> int:
        return reply.usage.completion_tokens  # type: ignore[no-any-return]

    def streamed_text(self, events: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in events if c.choices)

    def stream_finish(self, events: list[Any]) -> str | None:
        return events[-1].choices[0].finish_reason  # type: ignore[no-any-return]


class AnthropicProvider(Provider):
    name = "anthropic"
    cut_finish, done_finish = "max_tokens", "end_turn"
    drop_after = 4
    overloaded = 529
    passthrough_path = "/v1/messages/count_tokens"

    def __init__(self) -> None:
        import anthropic  # noqa: PLC0415 - each provider imports only its own SDK

        from promptcache.anthropic import wrap  # noqa: PLC0415

        self.sdk, self.wrap, self.api_key = anthropic, wrap, ANTHROPIC_TEST_KEY

    def client(self, kind: str, server: FakeLLM) -> Any:
        options: dict[str, Any] = {
            "api_key": ANTHROPIC_TEST_KEY,
            "base_url": server.anthropic_base_url,
            "max_retries": 2,
        }
        if kind == "sync":
            return self.sdk.Anthropic(**options, http_client=self.sdk.DefaultHttpxClient(verify=False))
        return self.sdk.AsyncAnthropic(**options, http_client=self.sdk.DefaultAsyncHttpxClient(verify=False))

    def client_type(self, kind: str) -> type:
        return self.sdk.Anthropic if kind == "sync" else self.sdk.AsyncAnthropic  # type: ignore[no-any-return]

    def resource(self, client: Any) -> Any:
        return client.messages

    def body(self, text: str, **kw: Any) -> dict[str, Any]:
        return {
            "model": "claude-test",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
            **kw,
        }

    def passthrough(self, **kw: Any) -> Callable[[Any], Any]:
        messages = [{"role": "user", "content": "count"}]
        return lambda c: c.messages.count_tokens(model="claude-test", messages=messages, **kw)

    def text(self, reply: Any) -> str | None:
        block = reply.content[0]
        assert block.type == "text"
        return block.text  # type: ignore[no-any-return]

    def finish(self, reply: Any) -> str | None:
        return reply.stop_reason  # type: ignore[no-any-return]

    def output_tokens(self, reply: Any) -> int:
        return reply.usage.output_tokens  # type: ignore[no-any-return]

    def streamed_text(self, events: list[Any]) -> str:
        return "".join(
            e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )

    def stream_finish(self, events: list[Any]) -> str | None:
        return events[-2].delta.stop_reason  # type: ignore[no-any-return]  # message_delta, then message_stop


class ProviderDriver(SdkDriver):
    """A provider's client, sync or async, wrapped with a cache (memory by default) unless not wrapped."""

    def __init__(
        self,
        provider: Provider,
        kind: str,
        server: FakeLLM,
        cache: PromptCache | None = None,
        *,
        wrapped: bool = True,
        **wrap_kw: Any,
    ) -> None:
        from promptcache import PromptCache  # noqa: PLC0415 - a runtime import only here

        cache = cache if cache is not None else PromptCache.from_url("memory://")
        raw = provider.client(kind, server)
        client = provider.wrap(raw, cache, **{"agent_id": "tests", **wrap_kw}) if wrapped else raw
        super().__init__(kind, cache, client)
        self.provider = provider


def bare_raises(
    drv: ProviderDriver, server: FakeLLM, action: Callable[[Any], Any], *, stream: bool = False
) -> type[BaseException]:
    """What the unwrapped SDK of ``drv``'s provider and kind raises for ``action`` against ``server``."""
    bare = ProviderDriver(drv.provider, drv.kind, server, wrapped=False)
    try:
        return raised_by(lambda: bare.events(action) if stream else bare.run(action))
    finally:
        bare.close()
