"""The corpus: where a request goes and who sends it (hosts, ports, schemes, gateway prefixes, upstream
aliases, query strings, Azure ``api-version`` and deployments, organisations and projects, agents and
tenants)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from corpus.build import HIT, MISS, across, chat, chat_stream, differ, emb, msg, resp, twice
from corpus.clients import an, az, oa

if TYPE_CHECKING:
    from corpus.runner import Pair

GW_OPENAI: Final = oa().but(prefix="/gw/openai/v1")
GW_GROQ: Final = oa().but(prefix="/gw/groq/v1")
ALT_HOST: Final = oa().but(upstream="alt-host")
ALT_PORT: Final = oa().but(upstream="alt-port")
TLS: Final = oa().but(upstream="tls")


def _alias(name: str) -> dict[str, str]:
    return {"upstream": name}


def _upstreams() -> list[Pair]:
    return [
        across("upstream/other-host", MISS, chat(), oa(), ALT_HOST),
        across("upstream/other-port", MISS, chat(), oa(), ALT_PORT),
        across("upstream/other-scheme", MISS, chat(), oa(), TLS),
        across("upstream/other-host/responses", MISS, resp(), oa(), ALT_HOST),
        across("upstream/other-port/embeddings", MISS, emb(), oa(), ALT_PORT),
        across("upstream/other-scheme/stream", MISS, chat_stream(), oa(), TLS),
        across("upstream/other-host/anthropic", MISS, msg(), an(), an().but(upstream="alt-host")),
        across("upstream/other-port/anthropic", MISS, msg(), an(), an().but(upstream="alt-port")),
        across("upstream/gateway-prefix", MISS, chat(model="llama-3-70b"), GW_OPENAI, GW_GROQ),
        across("upstream/gateway-prefix/responses", MISS, resp(model="llama-3-70b"), GW_OPENAI, GW_GROQ),
        across("upstream/gateway-vs-direct", MISS, chat(), oa(), GW_OPENAI),
        across("upstream/gateway-prefix-other-host", MISS, chat(), GW_GROQ, GW_GROQ.but(upstream="alt-host")),
        across(
            "upstream/same-gateway-prefix", HIT, chat(model="llama-3-70b"), GW_GROQ, GW_GROQ.but(kind="async")
        ),
        across(
            "upstream/same-alias-other-host",
            HIT,
            chat(),
            oa().but(wrap=_alias("openai")),
            ALT_HOST.but(wrap=_alias("openai")),
        ),
        across(
            "upstream/same-alias-other-port",
            HIT,
            emb(),
            oa().but(wrap=_alias("openai")),
            ALT_PORT.but(wrap=_alias("openai")),
        ),
        across(
            "upstream/same-alias-other-scheme",
            HIT,
            resp(),
            oa().but(wrap=_alias("openai")),
            TLS.but(wrap=_alias("openai")),
        ),
        across(
            "upstream/same-alias-gateway-prefixes",
            HIT,
            chat(),
            GW_OPENAI.but(wrap=_alias("gw")),
            GW_GROQ.but(wrap=_alias("gw")),
        ),
        across(
            "upstream/same-alias-anthropic-hosts",
            HIT,
            msg(),
            an().but(wrap=_alias("anthropic")),
            an().but(upstream="alt-host", wrap=_alias("anthropic")),
        ),
        across(
            "upstream/other-alias-same-host",
            MISS,
            chat(),
            oa().but(wrap=_alias("a")),
            oa().but(wrap=_alias("b")),
        ),
    ]


def _queries() -> list[Pair]:
    return [
        differ("query/extra-query-added", MISS, chat(), chat(extra_query={"region": "eu"})),
        differ(
            "query/extra-query-value",
            MISS,
            chat(extra_query={"region": "eu"}),
            chat(extra_query={"region": "us"}),
        ),
        twice("query/extra-query-same", HIT, chat(extra_query={"region": "eu"}), oa()),
        across("query/default-query", MISS, chat(), oa(), oa(default_query={"region": "eu"})),
        differ("query/anthropic-extra-query", MISS, msg(), msg(extra_query={"beta": "true"}), an()),
        differ(
            "query/embeddings-extra-query", MISS, emb(extra_query={"v": "1"}), emb(extra_query={"v": "2"})
        ),
        differ(
            "route/openai-beta-header",
            MISS,
            resp(extra_headers={"OpenAI-Beta": "responses=v1"}),
            resp(extra_headers={"OpenAI-Beta": "responses=v2"}),
        ),
        differ(
            "query/credential-param",
            HIT,
            chat(extra_query={"api-key": "one"}),
            chat(extra_query={"api-key": "two"}),
        ),
        across(
            "route/key-headers",
            MISS,
            chat(),
            oa(default_headers={"x-route": "eu"}).but(wrap={"key_headers": ["x-route"]}),
            oa(default_headers={"x-route": "us"}).but(wrap={"key_headers": ["x-route"]}),
        ),
        across(
            "route/unlisted-header",
            HIT,
            chat(),
            oa(default_headers={"x-route": "eu"}),
            oa(default_headers={"x-route": "us"}),
        ),
        across(
            "azure/api-version",
            MISS,
            chat(model="deploy-a"),
            az(api_version="2024-06-01"),
            az(api_version="2024-10-21"),
        ),
        across(
            "azure/api-version/embeddings",
            MISS,
            emb(model="embed-a"),
            az(api_version="2024-06-01"),
            az(api_version="2024-10-21"),
        ),
        differ("azure/deployment", MISS, chat(model="deploy-a"), chat(model="deploy-b"), az()),
        across(
            "azure/client-deployment",
            MISS,
            chat(model="ignored"),
            az(azure_deployment="deploy-a"),
            az(azure_deployment="deploy-b"),
        ),
        twice("azure/identical", HIT, chat(model="deploy-a"), az()),
        across("azure/sync-then-async", HIT, chat(model="deploy-a"), az(), az("async")),
        across("azure/api-key", HIT, emb(model="embed-a"), az(api_key="key-one"), az(api_key="key-two")),
        across("azure/vs-openai", MISS, chat(model="deploy-a"), oa(), az()),
    ]


def _who() -> list[Pair]:
    return [
        across("org/organization", MISS, chat(), oa(organization="org-a"), oa(organization="org-b")),
        across("org/organization-added", MISS, chat(), oa(), oa(organization="org-a")),
        across("org/project", MISS, chat(), oa(project="proj-a"), oa(project="proj-b")),
        across("org/project-added", MISS, resp(store=False), oa(), oa(project="proj-a")),
        across(
            "org/organization/embeddings",
            MISS,
            emb(),
            oa(organization="org-a"),
            oa(organization="org-b", kind="async"),
        ),
        differ(
            "org/organization-extra-headers",
            MISS,
            chat(),
            chat(extra_headers={"OpenAI-Organization": "org-b"}),
            oa(organization="org-a"),
        ),
        across(
            "org/same-organization-and-project",
            HIT,
            chat(),
            oa(organization="org-a", project="p"),
            oa("async", organization="org-a", project="p"),
        ),
        across(
            "org/same-organization-header-and-option",
            HIT,
            chat(),
            oa(organization="org-a"),
            oa(default_headers={"OpenAI-Organization": "org-a"}),
        ),
        across(
            "agent/agent-id", MISS, chat(), oa().but(wrap={"agent_id": "a"}), oa().but(wrap={"agent_id": "b"})
        ),
        across(
            "agent/agent-version",
            MISS,
            chat(),
            oa().but(wrap={"agent_version": "1"}),
            oa().but(wrap={"agent_version": "2"}),
        ),
        across(
            "agent/tenant",
            MISS,
            chat(),
            oa().but(wrap={"tenant": "acme"}),
            oa().but(wrap={"tenant": "globex"}),
        ),
        across("agent/tenant-added", MISS, msg(), an(), an().but(wrap={"tenant": "acme"})),
        differ(
            "agent/tenant-header",
            MISS,
            chat(extra_headers={"x-promptcache-tenant": "acme"}),
            chat(extra_headers={"x-promptcache-tenant": "globex"}),
        ),
        differ(
            "agent/agent-id-header", MISS, resp(), resp(extra_headers={"x-promptcache-agent-id": "other"})
        ),
        across(
            "agent/same-agent-and-tenant",
            HIT,
            chat(),
            oa().but(wrap={"tenant": "acme"}),
            oa("async").but(wrap={"tenant": "acme"}),
        ),
        across(
            "client/api-key",
            HIT,
            resp(),
            oa(api_key="sk-corpus-1111111111111111111111"),
            oa(api_key="sk-corpus-2222222222222222222222"),
        ),
        across(
            "client/retries-and-timeout",
            HIT,
            emb(),
            oa(max_retries=0, timeout=5.0),
            oa(max_retries=5, timeout=50.0),
        ),
    ]


def pairs() -> list[Pair]:
    return [*_upstreams(), *_queries(), *_who()]
