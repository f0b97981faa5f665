"""The commands on a store's entries: ``stats``, ``inspect``, ``explain`` and ``invalidate``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from promptcache._keys import agent_prefix, counters_key, make_key, namespace_prefix, parse_store_key
from promptcache._prices import PriceTable
from promptcache._route import route_record
from promptcache._stores import redact_url
from promptcache.backends import CountingStore
from promptcache.cli import _support as support
from promptcache.cli._migrate import cli_route
from promptcache.cli._stats import (
    counted_in_store,
    parse_prometheus,
    render_stats,
    stats_json,
    stored_rows,
    sum_counters,
)
from promptcache.cli._store import (
    CLIError,
    agent_keys,
    known_agents,
    namespace_from_key,
    read_all,
    run_on_store,
    store_url,
)
from promptcache.cli._support import echo, warn
from promptcache.exceptions import ServerStateError

if TYPE_CHECKING:
    import argparse

    from promptcache._cache import PromptCache

__all__ = ["cmd_explain", "cmd_inspect", "cmd_invalidate", "cmd_stats"]

# Multiprocess mode serves one breaker series per worker, labelled with its pid: how many workers are summed.
_PID = re.compile(r'promptcache_breaker_state\{[^}]*pid="([^"]+)"')


def find_stored(args: argparse.Namespace, key: str) -> support.StoredEntry:
    """The entry a KEY names, in any form; its namespace becomes ``args.namespace``.

    A store key names its namespace. A digest or prefix is looked for in ``--namespace`` when given, else
    in every namespace of the store; either way the command then works in the entry's namespace.
    """
    namespace_from_key(args, key)
    where = args.namespace if getattr(args, "namespace_given", False) or parse_store_key(key) else None
    stored = run_on_store(args, lambda cache: support.find_entry(cache.store, where, key))
    if stored.entry is not None:
        args.namespace = stored.entry.scope[0]
    return stored


def cmd_stats(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> tuple[list[support.StoredEntry], list[str], dict[str, int]]:
        keys = await support.list_keys(cache.store, namespace_prefix(args.namespace))
        others = [] if keys else await support.namespaces_with_entries(cache.store)
        store = cache.store
        counts = (
            await store.read_counts(counters_key(args.namespace)) if isinstance(store, CountingStore) else {}
        )
        return await read_all(cache, keys, "reading"), others, counts

    entries, others, counts = run_on_store(args, work)
    sources: list[str] = args.metrics or []
    texts = [support.read_metrics(s) for s in sources]
    counted = sum_counters(parse_prometheus(t) for t in texts) if texts else None
    if counted is None and counts:
        counted = counted_in_store(counts, PriceTable())
    if not entries:
        where = f"namespaces with entries: {', '.join(others)}" if others else "the store holds no entries"
        warn(f"namespace {args.namespace!r} has no entries; {where}")
    rows = stored_rows(entries)
    if args.json:
        echo(stats_json(rows, counted))
        return 0
    unreadable = sum(e.entry is None for e in entries)
    skipped = f" ({unreadable} unreadable values left out)" if unreadable else ""
    echo(
        render_stats(rows, counted),
        "",
        f"entries, tokens stored: read now from {redact_url(store_url(args))}, namespace {args.namespace!r}"
        + skipped,
    )
    workers = len(set(_PID.findall(texts[0]))) if len(texts) == 1 else 0
    if workers > 1:
        echo(
            f"hits, misses, saved:   the sum of {workers} worker processes' counters (multiprocess mode),"
            f" from {sources[0]}"
        )
    elif len(sources) == 1:
        echo(f"hits, misses, saved:   that process's counters since it started, from {sources[0]}")
    elif sources:
        echo(
            f"hits, misses, saved:   the sum of {len(sources)} processes' counters since each started, from:"
        )
        echo(*(f"                       {source}" for source in sources))
    elif counted is not None:
        echo("hits, misses, saved:   every process's counters, kept in the store (count_in_store=True)")
    else:
        echo(
            "hits, misses, saved:   not shown: they are counted inside the processes that serve requests;",
            "                       run them with count_in_store=True, or pass --metrics URL|FILE once per",
            "                       worker (see promptcache.metrics)",
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if (args.key is None) == (args.agent is None):
        raise CLIError("inspect takes a KEY or --agent AGENT (one of them)")

    if args.key is not None:
        found = [find_stored(args, args.key)]
        more = 0
    else:

        async def work(cache: PromptCache) -> tuple[list[support.StoredEntry], int]:
            keys = await agent_keys(cache, args.agent, args.version)
            entries = await support.read_entries(cache.store, keys[: args.limit])
            return entries, max(0, len(keys) - args.limit)

        found, more = run_on_store(args, work)
    now = time.time()
    if args.json:
        echo(orjson.dumps([support.entry_json(s, now) for s in found], option=orjson.OPT_INDENT_2).decode())
    else:
        echo("\n\n".join(support.entry_text(s, now) for s in found))
    if more:
        echo(f"\n... and {more} more entries (raise --limit to see them)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    request = support.load_request(args.request)
    stored = None
    if args.against is not None and not Path(args.against).is_file():
        stored = find_stored(args, args.against)  # first: a stored key names the namespace to explain in
    scope = {"agent_id": args.agent, "agent_version": args.agent_version, "tenant": args.tenant}
    options = {"namespace": args.namespace, "endpoint": args.endpoint, "policy": args.policy, **scope}
    route = cli_route(args.upstream, args.header, args.query)
    bypass = None
    try:
        key = make_key(request, **options, route=route, server_state=args.server_state)
    except ServerStateError as exc:  # say so, and show the key an opted-in agent would use
        bypass = exc.reason
        key = make_key(request, **options, route=route, server_state=True)
    echo(support.explain_text(key, request, bypass=bypass))
    if args.against is None:
        return 0
    if Path(args.against).is_file():
        their_route = cli_route(
            args.against_upstream or args.upstream,
            args.against_header if args.against_header is not None else args.header,
            args.against_query if args.against_query is not None else args.query,
        )
        other = make_key(support.load_request(args.against), **options, route=their_route, server_state=True)
        scope_ids = (other.namespace, other.agent_id, other.agent_version, other.tenant)
        theirs = support.Side(
            other.digest,
            orjson.loads(other.canonical),
            other.endpoint.value,
            scope_ids,
            None if their_route is None else route_record(their_route),
        )
    else:
        assert stored is not None  # noqa: S101 - read above, before the key was made
        entry = stored.entry
        if entry is None:
            raise CLIError(f"the value under {args.against!r} is not a readable entry: {stored.error}")
        if entry.request is None:
            raise CLIError(
                f"the entry under {args.against!r} keeps no request to compare with "
                "(it was written before entries kept a compact request by default; re-record it)"
            )
        theirs = support.Side(entry.digest, entry.request, entry.endpoint, entry.scope, entry.route)
    echo("", support.why_text(key, theirs))
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> tuple[int, str | None]:
        keys = await support.list_keys(cache.store, agent_prefix(args.namespace, args.agent, args.version))
        hint = None if keys else await known_agents(cache)
        return await cache.invalidate(args.agent, args.version), hint

    deleted, hint = run_on_store(args, work)
    which = f"agent {args.agent!r}" + (f" version {args.version!r}" if args.version is not None else "")
    if hint is not None:
        warn(f"no entries for {which} in namespace {args.namespace!r}; {hint}")
    noun = "entry" if deleted == 1 else "entries"
    echo(f"invalidated {deleted} {noun} of {which} in namespace {args.namespace!r}")
    return 1 if args.strict and deleted == 0 else 0
