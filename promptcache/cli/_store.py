"""The store a command works on: which one (``--url``), opening it, and running the command's work on it.

The store is ``--url``, else ``PROMPTCACHE_URL`` (read here, through ``_config.url_from_env``, and nowhere
else in the library), else the embedded SQLite store at :data:`DEFAULT_URL`. Every failure a user can fix
is a :class:`CLIError`, printed by :func:`promptcache.cli.main` as one line.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import redis.exceptions

from promptcache._cache import PromptCache
from promptcache._config import url_from_env
from promptcache._keys import SCHEMA_VERSION, agent_id_of, agent_prefix, namespace_prefix, parse_store_key
from promptcache._stores import redact_url
from promptcache.cli import _support as support
from promptcache.cli._support import Progress

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "PROBE_TIMEOUT",
    "CLIError",
    "agent_keys",
    "known_agents",
    "namespace_from_key",
    "one_line",
    "open_cache",
    "read_all",
    "run_on_store",
    "store_url",
]

T = TypeVar("T")

DEFAULT_URL: Final = "sqlite:///.promptcache/cache.db"
DEFAULT_TIMEOUT: Final = 300.0  # seconds for a command's whole store job (a big export included)
PROBE_TIMEOUT: Final = 5.0  # seconds the first store call may take before the store counts as unreachable


class CLIError(Exception):
    """Bad input the user can fix; printed as one line."""


# -- opening the store ----------------------------------------------------------------------------


def store_url(args: argparse.Namespace) -> str:
    """``--url``, else ``PROMPTCACHE_URL``, else :data:`DEFAULT_URL`."""
    return str(args.url or url_from_env() or DEFAULT_URL)


async def open_cache(args: argparse.Namespace, *, must_exist: bool = True) -> PromptCache:
    """The cache on the chosen store, checked reachable within ``PROBE_TIMEOUT``; else one clear error."""
    url = store_url(args)
    path = url.removeprefix("sqlite:///")
    if must_exist and url.startswith("sqlite:///") and not Path(path).is_file():  # noqa: ASYNC240 - see run_on_store
        raise CLIError(f"no SQLite store at {path} (give --url or set PROMPTCACHE_URL)")
    cache = PromptCache.from_url(url, namespace=args.namespace)
    wait = min(PROBE_TIMEOUT, args.timeout)
    try:
        async with asyncio.timeout(wait):
            await cache.store.get(namespace_prefix(args.namespace) + "probe")
    except TimeoutError as exc:
        await cache.aclose()
        raise CLIError(f"cannot reach the store at {redact_url(url)}: no answer within {wait:g} s") from exc
    except (OSError, sqlite3.Error, redis.exceptions.RedisError) as exc:
        await cache.aclose()
        raise CLIError(f"cannot reach the store at {redact_url(url)}: {one_line(exc)}") from exc
    return cache


def run_on_store(
    args: argparse.Namespace, work: Callable[[PromptCache], Awaitable[T]], *, must_exist: bool = True
) -> T:
    """Open the store, run ``work`` on it under ``--timeout``, close it.

    The store is used directly here (not through the cache's guarded calls), so the command puts its own
    deadline on the whole job. This is the command's only event loop: a blocking file check inside it
    holds up nothing.
    """

    async def go() -> T:
        cache = await open_cache(args, must_exist=must_exist)
        try:
            async with asyncio.timeout(args.timeout):
                return await work(cache)
        except TimeoutError as exc:
            raise CLIError(f"the store did not finish within --timeout {args.timeout:g} s") from exc
        finally:
            await cache.aclose()

    return asyncio.run(go())


def namespace_from_key(args: argparse.Namespace, key: str) -> None:
    """Take ``args.namespace`` from a store key (a digest carries none); a contradicting ``--namespace``
    or a key of another schema is an error.
    """
    parsed = parse_store_key(key)
    if parsed is None:
        return
    namespace, schema, _ = parsed
    if schema != SCHEMA_VERSION:
        raise CLIError(
            f"{key!r} is a key of schema v{schema}; this version stores v{SCHEMA_VERSION} keys"
            " (give its digest to find the entry re-keyed, or re-record it)"
        )
    if getattr(args, "namespace_given", False) and args.namespace != namespace:
        raise CLIError(
            f"--namespace {args.namespace!r} contradicts the key {key!r}, which is in namespace"
            f" {namespace!r} (leave --namespace out: a store key names its namespace)"
        )
    args.namespace = namespace


async def known_agents(cache: PromptCache) -> str:
    """A hint naming the agents that have entries in the namespace, else the namespaces that have some."""
    every = await support.list_keys(cache.store, namespace_prefix(cache.config.namespace))
    known = sorted({agent_id_of(k) for k in every})
    if known:
        return f"agents with entries: {', '.join(known)}"
    others = await support.namespaces_with_entries(cache.store)
    return (
        f"the namespace is empty; namespaces with entries: {', '.join(others)}"
        if others
        else "the store holds no entries"
    )


async def agent_keys(cache: PromptCache, agent: str, version: str | None) -> list[str]:
    """The agent's live keys; an unknown agent is an error that names the agents that do have entries."""
    namespace = cache.config.namespace
    keys = await support.list_keys(cache.store, agent_prefix(namespace, agent, version))
    if keys:
        return keys
    which = f"agent {agent!r}" + (f" version {version!r}" if version is not None else "")
    raise CLIError(f"no entries for {which} in namespace {namespace!r}; {await known_agents(cache)}")


async def read_all(cache: PromptCache, keys: list[str], label: str) -> list[support.StoredEntry]:
    """The entries under ``keys``, with a progress bar on a terminal."""
    bar = Progress(len(keys), label)
    try:
        return await support.read_entries(cache.store, keys, bar.advance)
    finally:
        bar.close()


def one_line(exc: BaseException) -> str:
    """An error's message on one line of at most 400 characters, as the command prints it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."
