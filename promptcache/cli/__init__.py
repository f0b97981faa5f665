"""The ``promptcache`` command: a thin layer over the public API.

::

    promptcache demo                              the agent workload, without and with the cache
    promptcache stats      [--metrics URL|FILE]   hits, misses, savings and entries by agent and model
    promptcache inspect    KEY | --agent A        stored entries: canonical request, response, TTL left
    promptcache explain    REQUEST.json [--against KEY]
    promptcache invalidate --agent A [--version V]
    promptcache export     --agent A -o FILE.yaml
    promptcache import     FILE.yaml
    promptcache verify     PATH

The store is ``--url``, else ``PROMPTCACHE_URL`` (read here, through ``_config.url_from_env``, and
nowhere else in the library), else the embedded SQLite store at :data:`DEFAULT_URL`. Bad input
(an unreachable store, a malformed file, an unknown agent) prints one line on stderr and exits 1; usage
errors exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import orjson
import redis.exceptions

from promptcache._cache import PromptCache
from promptcache._cassette import parse_cassette, save_cassette, scrub
from promptcache._config import url_from_env
from promptcache._keys import DEFAULT_AGENT_VERSION, agent_id_of, agent_prefix, make_key, namespace_prefix
from promptcache.backends.redis import redact_url
from promptcache.cli import _cassettes as cassettes
from promptcache.cli import _stats as report
from promptcache.cli import _support as support
from promptcache.cli._support import Progress, echo
from promptcache.exceptions import ConfigError, PromptCacheError, SecretLeakError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["DEFAULT_URL", "build_parser", "main"]

T = TypeVar("T")

DEFAULT_URL: Final = "sqlite:///.promptcache/cache.db"
DEFAULT_TIMEOUT: Final = 300.0  # seconds for a command's whole store job (a big export included)
PROBE_TIMEOUT: Final = 5.0  # seconds the first store call may take before the store counts as unreachable


class CLIError(Exception):
    """Bad input the user can fix; printed as one line."""


# -- opening the store ----------------------------------------------------------------------------


def _url(args: argparse.Namespace) -> str:
    return str(args.url or url_from_env() or DEFAULT_URL)


async def _open(args: argparse.Namespace, *, must_exist: bool = True) -> PromptCache:
    """The cache on the chosen store, checked reachable within ``PROBE_TIMEOUT``; else one clear error."""
    url = _url(args)
    path = url.removeprefix("sqlite:///")
    if must_exist and url.startswith("sqlite:///") and not Path(path).is_file():  # noqa: ASYNC240 - see _run
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
        raise CLIError(f"cannot reach the store at {redact_url(url)}: {_line(exc)}") from exc
    return cache


def _run(
    args: argparse.Namespace, work: Callable[[PromptCache], Awaitable[T]], *, must_exist: bool = True
) -> T:
    """Open the store, run ``work`` on it under ``--timeout``, close it.

    The store is used directly here (not through the cache's guarded calls), so the command puts its own
    deadline on the whole job. This is the command's only event loop: a blocking file check inside it
    holds up nothing.
    """

    async def go() -> T:
        cache = await _open(args, must_exist=must_exist)
        try:
            async with asyncio.timeout(args.timeout):
                return await work(cache)
        except TimeoutError as exc:
            raise CLIError(f"the store did not finish within --timeout {args.timeout:g} s") from exc
        finally:
            await cache.aclose()

    return asyncio.run(go())


async def _agent_keys(cache: PromptCache, agent: str, version: str | None) -> list[str]:
    """The agent's live keys; an unknown agent is an error that names the agents that do have entries."""
    namespace = cache.config.namespace
    keys = await support.list_keys(cache.store, agent_prefix(namespace, agent, version))
    if keys:
        return keys
    every = await support.list_keys(cache.store, namespace_prefix(namespace))
    known = sorted({agent_id_of(k) for k in every})
    which = f"agent {agent!r}" + (f" version {version!r}" if version is not None else "")
    hint = f"; agents with entries: {', '.join(known)}" if known else "; the namespace is empty"
    raise CLIError(f"no entries for {which} in namespace {namespace!r}{hint}")


async def _read(cache: PromptCache, keys: list[str], label: str) -> list[support.StoredEntry]:
    bar = Progress(len(keys), label)
    try:
        return await support.read_entries(cache.store, keys, bar.advance)
    finally:
        bar.close()


# -- commands -------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> list[support.StoredEntry]:
        keys = await support.list_keys(cache.store, namespace_prefix(args.namespace))
        return await _read(cache, keys, "reading")

    entries = _run(args, work)
    counted = None if args.metrics is None else report.parse_prometheus(support.read_metrics(args.metrics))
    rows = report.stored_rows(entries)
    if args.json:
        echo(report.stats_json(rows, counted))
        return 0
    unreadable = sum(e.entry is None for e in entries)
    skipped = f" ({unreadable} unreadable values left out)" if unreadable else ""
    echo(
        report.render_stats(rows, counted),
        "",
        f"entries, tokens stored: read now from {redact_url(_url(args))}, namespace {args.namespace!r}"
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
        keys = await _agent_keys(cache, args.agent, args.version)
        return await support.read_entries(cache.store, keys[: args.limit]), max(0, len(keys) - args.limit)

    found, more = _run(args, work)
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
    key = make_key(request, **options)
    echo(support.explain_text(key, request))
    if args.against is None:
        return 0
    if Path(args.against).is_file():
        other = make_key(support.load_request(args.against), **options)
        scope_ids = (other.namespace, other.agent_id, other.agent_version, other.tenant)
        theirs = support.Side(other.digest, orjson.loads(other.canonical), other.endpoint.value, scope_ids)
    else:
        stored = _run(args, lambda cache: support.find_entry(cache.store, args.namespace, args.against))
        entry = stored.entry
        if entry is None:
            raise CLIError(f"the value under {args.against!r} is not a readable entry: {stored.error}")
        if entry.request is None:
            raise CLIError(
                f"the entry under {args.against!r} keeps no request to compare with "
                "(the cache that wrote it ran with keep_request=False)"
            )
        theirs = support.Side(entry.digest, entry.request, entry.endpoint, entry.scope)
    echo("", support.why_text(key, theirs))
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> int:
        await _agent_keys(cache, args.agent, args.version)
        return await cache.invalidate(args.agent, args.version)

    deleted = _run(args, work)
    which = f"agent {args.agent!r}" + (f" version {args.version!r}" if args.version is not None else "")
    echo(f"invalidated {deleted} entries of {which} in namespace {args.namespace!r}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> list[support.StoredEntry]:
        return await _read(cache, await _agent_keys(cache, args.agent, args.version), "export")

    entries = _run(args, work)
    recordings = [cassettes.to_recording(e) for e in entries if e.entry is not None]
    if args.scrub:
        recordings = scrub(recordings)
    try:
        save_cassette(args.output, cassettes.export_doc(recordings, args.namespace, args.agent, args.version))
    except SecretLeakError as exc:
        raise CLIError(
            f"{exc}; pass --scrub to replace credentials (the file then no longer round-trips)"
        ) from exc
    unreadable = len(entries) - len(recordings)
    skipped = f" ({unreadable} unreadable values left out)" if unreadable else ""
    echo(f"exported {len(recordings)} entries of agent {args.agent!r} to {args.output}{skipped}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    doc = parse_cassette(path.read_bytes(), str(path))
    now = time.time()
    # Every recording is checked before the first write: a bad file writes nothing.
    built = [
        cassettes.from_recording(rec, f"{path}: recordings[{i}]", now=now, ttl=args.ttl)
        for i, rec in enumerate(doc["recordings"])
    ]
    writes = [b for b in built if b is not None]

    async def work(cache: PromptCache) -> None:
        bar = Progress(len(writes), "import")
        try:
            for store_key, value, ttl in writes:
                await cache.store.set(store_key, value, ttl)
                bar.advance()
        finally:
            bar.close()

    _run(args, work, must_exist=False)
    expired = len(built) - len(writes)
    skipped = f" ({expired} expired recordings skipped)" if expired else ""
    echo(f"imported {len(writes)} entries from {path} into {redact_url(_url(args))}{skipped}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    root = Path(args.path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
        if not files:
            raise CLIError(f"no cassettes (*.yaml, *.yml) under {root}")
    elif root.is_file():
        files = [root]
    else:
        raise CLIError(f"no such file or directory: {root}")
    recordings, bad = 0, 0
    for file in files:
        count, problems = cassettes.verify_cassette(file.read_bytes(), str(file))
        recordings += count
        bad += bool(problems)
        echo(*problems)
    if bad:
        echo(f"{bad} of {len(files)} cassettes have problems")
        return 1
    echo(f"ok: {len(files)} cassettes, {recordings} recordings: safe YAML, no secrets, no duplicate keys")
    return 0


# -- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``promptcache`` argument parser (every subcommand and option)."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--url", help=f"store URL (default: $PROMPTCACHE_URL, else {DEFAULT_URL})")
    store.add_argument(
        "--namespace", default="promptcache", help="the cache's namespace (default: %(default)s)"
    )
    store.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="deadline for the command's store work (default: %(default)s)")  # fmt: skip
    store.add_argument("--debug", action="store_true", help="log debug output and show tracebacks")
    parser = argparse.ArgumentParser(prog="promptcache", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The demo is built on the CLI (it prints the stats table and reads stores as ``stats`` does), so the
    # CLI imports it only here: a module-level import each way would make the two packages a cycle.
    from promptcache.demo._cli import add_demo_parser  # noqa: PLC0415 - see above

    add_demo_parser(sub)

    p = sub.add_parser("stats", parents=[store], help="hits, misses, savings and entries by agent and model")
    p.add_argument("--metrics", metavar="URL|FILE", help="Prometheus text from the serving process")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_stats)

    p = sub.add_parser(
        "inspect", parents=[store], help="stored entries: canonical request, response, TTL left"
    )
    p.add_argument("key", nargs="?", help="a 64-hex digest or a store key")
    p.add_argument("--agent", help="every entry of this agent instead")
    p.add_argument("--version", help="only this agent version")
    p.add_argument("--limit", type=int, default=20, help="entries to show at most (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("explain", parents=[store], help="the canonical request and key of a request body")
    p.add_argument("request", metavar="REQUEST.json", help="the request body as JSON (- for stdin)")
    p.add_argument("--against", metavar="KEY", help="another REQUEST.json, or a stored entry's key, to diff")
    p.add_argument("--agent", default="default", help="agent id (default: %(default)s)")
    p.add_argument(
        "--agent-version", default=DEFAULT_AGENT_VERSION, help="agent version (default: %(default)s)"
    )
    p.add_argument("--tenant", help="tenant id (default: none)")
    p.add_argument("--endpoint", default="chat.completions", help="chat.completions, responses, embeddings "
                   "or anthropic.messages (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--policy", default="trim", help="text policy: exact, trim or collapse (default: %(default)s)"
    )
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser("invalidate", parents=[store], help="delete one agent's entries")
    p.add_argument("--agent", required=True)
    p.add_argument("--version", help="only this agent version")
    p.set_defaults(handler=cmd_invalidate)

    p = sub.add_parser("export", parents=[store], help="one agent's entries to a YAML cassette")
    p.add_argument("--agent", required=True)
    p.add_argument("--version", help="only this agent version")
    p.add_argument("-o", "--output", required=True, metavar="FILE.yaml")
    p.add_argument("--scrub", action="store_true", help="replace credentials found in entries")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("import", parents=[store], help="a YAML cassette's recordings into the store")
    p.add_argument("file", metavar="FILE.yaml")
    p.add_argument("--ttl", type=float, default=3600.0,
                   help="seconds to keep recordings that carry no expiry (default: %(default)s)")  # fmt: skip
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "verify", parents=[store], help="check cassettes: safe YAML, no secrets, no duplicate keys"
    )
    p.add_argument("path", metavar="PATH", help="a cassette file or a directory of them")
    p.set_defaults(handler=cmd_verify)
    return parser


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


EXPECTED_ERRORS: Final = (
    CLIError,
    PromptCacheError,
    OSError,
    sqlite3.Error,
    redis.exceptions.RedisError,
    ImportError,
    ValueError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``promptcache`` command.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 when it worked, 1 for bad input or a failure (one line on stderr). Usage errors
        exit 2 through argparse's ``SystemExit``.

    .. versionadded:: 0.1.0
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "debug", False):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(levelname)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except EXPECTED_ERRORS as exc:
        if getattr(args, "debug", False):
            raise
        message = _line(exc)
        if isinstance(exc, ConfigError | CLIError | PromptCacheError) or ":" in message:
            sys.stderr.write(f"promptcache: error: {message}\n")
        else:
            sys.stderr.write(f"promptcache: error: {type(exc).__name__}: {message}\n")
        return 1
