"""Which SDK client a side of a pair uses, as data, and how it is built (and wrapped) against the server.

A :class:`ClientSpec` names the SDK (``openai``, ``azure`` or ``anthropic``), sync or async, the upstream
listener and path prefix, the SDK constructor's options and ``wrap()``'s keyword arguments. The builders
``oa()``, ``az()`` and ``an()`` make the common ones; ``spec.but(...)`` derives a variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from corpus.server import CorpusServer

    from promptcache import PromptCache

OPENAI_KEY: Final = "sk-corpus-0000000000000000000000"
ANTHROPIC_KEY: Final = "sk-ant-corpus-0000"
AGENT: Final = "corpus"


@dataclass(frozen=True)
class ClientSpec:
    sdk: str = "openai"  # "openai", "azure" or "anthropic"
    kind: str = "sync"  # "sync" or "async"
    upstream: str = "main"  # a CorpusServer listener
    prefix: str = "/v1"  # the path prefix of the base URL (Anthropic's SDK adds /v1 itself)
    options: dict[str, Any] = field(default_factory=dict)  # SDK constructor keywords
    wrap: dict[str, Any] = field(default_factory=dict)  # wrap() keywords besides the cache

    def but(self, **changes: Any) -> ClientSpec:
        """A copy with fields replaced; ``options``/``wrap`` given here are merged into the current ones."""
        for name in ("options", "wrap"):
            if name in changes:
                changes[name] = {**getattr(self, name), **changes[name]}
        return replace(self, **changes)

    def label(self) -> str:
        return f"{self.sdk}/{self.kind}@{self.upstream}{self.prefix}"


def oa(kind: str = "sync", **options: Any) -> ClientSpec:
    return ClientSpec("openai", kind, options=options)


def az(kind: str = "sync", **options: Any) -> ClientSpec:
    return ClientSpec("azure", kind, prefix="", options={"api_version": "2024-10-21", **options})


def an(kind: str = "sync", **options: Any) -> ClientSpec:
    return ClientSpec("anthropic", kind, prefix="", options=options)


def build(spec: ClientSpec, server: CorpusServer) -> Any:
    """The (unwrapped) SDK client ``spec`` describes, pointed at ``server``."""
    import anthropic  # noqa: PLC0415 - SDKs are imported when a corpus runs, not at collection
    import openai  # noqa: PLC0415

    sync = spec.kind == "sync"
    origin = server.origin(spec.upstream)
    options: dict[str, Any] = {"max_retries": 0, **spec.options}
    if spec.sdk == "anthropic":
        sdk: Any = anthropic
        cls: Any = anthropic.Anthropic if sync else anthropic.AsyncAnthropic
        options = {"api_key": ANTHROPIC_KEY, "base_url": origin + spec.prefix, **options}
    elif spec.sdk == "azure":
        sdk = openai
        cls = openai.AzureOpenAI if sync else openai.AsyncAzureOpenAI
        options = {"api_key": OPENAI_KEY, "azure_endpoint": origin + spec.prefix, **options}
    else:
        sdk = openai
        cls = openai.OpenAI if sync else openai.AsyncOpenAI
        options = {"api_key": OPENAI_KEY, "base_url": origin + spec.prefix, **options}
    http = sdk.DefaultHttpxClient(verify=False) if sync else sdk.DefaultAsyncHttpxClient(verify=False)
    return cls(**options, http_client=http)


def wrap_client(spec: ClientSpec, client: Any, cache: PromptCache) -> None:
    """``wrap(client, cache, agent_id="corpus", **spec.wrap)``; raises what ``wrap()`` raises.

    A ``wrap()`` that does not know an option (``upstream=``, ``cache_server_state=``) raises TypeError:
    the pair cannot run, and is reported as such.
    """
    if spec.sdk == "anthropic":
        from promptcache.anthropic import wrap  # noqa: PLC0415
    else:
        from promptcache.openai import wrap  # noqa: PLC0415
    wrap(client, cache, **{"agent_id": AGENT, **spec.wrap})
