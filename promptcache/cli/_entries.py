"""The commands on a store's entries: ``stats``, ``inspect``, ``explain`` and ``invalidate``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from promptcache._keys import make_key, namespace_prefix
from promptcache._route import route_record
from promptcache._stores import redact_url
from promptcache.cli import _support as support
from promptcache.cli._migrate import cli_route
from promptcache.cli._stats import parse_prometheus, render_stats, stats_json, stored_rows
from promptcache.cli._store import CLIError, agent_keys, read_all, run_on_store, store_url
from promptcache.cli._support import echo
from promptcache.exceptions import ServerStateError

if TYPE_CHECKING:
    import argparse

    from promptcache._cache import PromptCache

__all__ = ["cmd_explain", "cmd_inspect", "cmd_invalidate", "cmd_stats"]


def cmd_stats(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> list[support.StoredEntry]:
        keys = await support.list_keys(cache.store, namespace_prefix(args.namespace))
        return await read_all(cache, keys, "reading")

    entries = run_on_store(args, work)
    counted = None if args.metrics is None else parse_prometheus(support.read_metrics(args.metrics))
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
    if counted is None:
        echo(
            "hits, misses, saved:   not shown: they are counted inside the process that serves requests;",
            "                       pass --metrics URL|FILE (see promptcache.metrics.start_exporter)",
        )
    else:
        echo(f"hits, misses, saved:   that process's counters since it started, from {args.metrics}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if (args.key is None) == (args.agent is None):
        raise CLIError("inspect takes a KEY or --agent AGENT (one of them)")

    async def work(cache: PromptCache) -> tuple[list[support.StoredEntry], int]:
        if args.key is not None:
            return [await support.find_entry(cache.store, args.namespace, args.key)], 0
        keys = await agent_keys(cache, args.agent, args.version)
        return await support.read_entries(cache.store, keys[: args.limit]), max(0, len(keys) - args.limit)

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
        stored = run_on_store(
            args, lambda cache: support.find_entry(cache.store, args.namespace, args.against)
        )
        entry = stored.entry
        if entry is None:
            raise CLIError(f"the value under {args.against!r} is not a readable entry: {stored.error}")
        if entry.request is None:
            raise CLIError(
                f"the entry under {args.against!r} keeps no request to compare with "
                "(the cache that wrote it ran with keep_request=False)"
            )
        theirs = support.Side(entry.digest, entry.request, entry.endpoint, entry.scope, entry.route)
    echo("", support.why_text(key, theirs))
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> int:
        await agent_keys(cache, args.agent, args.version)
        return await cache.invalidate(args.agent, args.version)

    deleted = run_on_store(args, work)
    which = f"agent {args.agent!r}" + (f" version {args.version!r}" if args.version is not None else "")
    echo(f"invalidated {deleted} entries of {which} in namespace {args.namespace!r}")
    return 0
