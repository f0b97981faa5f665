"""The ``promptcache`` command: a thin layer over the public API.

::

    promptcache demo                              the agent workload, without and with the cache
    promptcache stats      [--metrics URL|FILE]...  hits, misses, savings and entries by agent and model
    promptcache inspect    KEY | --agent A        stored entries: canonical request, response, TTL left
    promptcache explain    REQUEST.json [--against KEY]
    promptcache invalidate --agent A [--version V]
    promptcache export     --agent A -o FILE.yaml
    promptcache import     FILE.yaml
    promptcache verify     PATH
    promptcache migrate    PATH [--upstream ALIAS|URL] [--header NAME=VALUE] [--check]

The store is ``--url``, else ``PROMPTCACHE_URL`` (read in :mod:`._store`, through
``_config.url_from_env``, and nowhere else in the library), else the embedded SQLite store at
:data:`DEFAULT_URL`. Bad input (an unreachable store, a malformed file, an unknown agent) prints one line
on stderr and exits 1; usage errors exit 2.

The commands live by group: :mod:`._entries` (stats, inspect, explain, invalidate), :mod:`._cassettes`
(export, import, verify), :mod:`promptcache.demo` (demo); :mod:`._store` opens the store for them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
from typing import TYPE_CHECKING, Final

import redis.exceptions

from promptcache._keys import DEFAULT_AGENT_VERSION, DEFAULT_NAMESPACE
from promptcache.cli._cassettes import cmd_export, cmd_import, cmd_verify
from promptcache.cli._entries import cmd_explain, cmd_inspect, cmd_invalidate, cmd_stats
from promptcache.cli._migrate import add_migrate_parser, add_route_options
from promptcache.cli._store import DEFAULT_TIMEOUT, DEFAULT_URL, CLIError, one_line
from promptcache.exceptions import ConfigError, PromptCacheError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_URL", "build_parser", "main"]

DESCRIPTION: Final = "The promptcache command: a thin layer over the public API."


# -- the parser -----------------------------------------------------------------------------------


def store_options(namespace_default: str) -> argparse.ArgumentParser:
    """The options of every command that opens the store (a parent parser)."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--url", help=f"store URL (default: $PROMPTCACHE_URL, else {DEFAULT_URL})")
    store.add_argument("--namespace", help=f"the cache's namespace (default: {namespace_default})")
    store.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="deadline for the command's store work (default: %(default)s)")  # fmt: skip
    store.add_argument("--debug", action="store_true", help="log debug output and show tracebacks")
    return store


def build_parser() -> argparse.ArgumentParser:
    """The ``promptcache`` argument parser (every subcommand and option)."""
    store = store_options(f"the one a KEY or cassette names, else {DEFAULT_NAMESPACE}")
    plain = store_options(DEFAULT_NAMESPACE)  # for commands that take no KEY or cassette
    parser = argparse.ArgumentParser(prog="promptcache", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The demo is built on the CLI (it prints the stats table and reads stores as ``stats`` does), so the
    # CLI imports it only here: a module-level import each way would make the two packages a cycle.
    from promptcache.demo._cli import add_demo_parser  # noqa: PLC0415 - see above

    add_demo_parser(sub)

    p = sub.add_parser(
        "stats",
        parents=[plain],
        help="hits, misses, savings and entries by agent and model",
        description="hits, misses, savings and entries by agent and model",
    )
    p.add_argument(
        "--metrics",
        metavar="URL|FILE",
        action="append",
        help="Prometheus text from a serving process; repeat it for each worker: the counters are summed",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_stats)

    p = sub.add_parser(
        "inspect",
        parents=[store],
        help="stored entries: canonical request, response, TTL left",
        description="stored entries: canonical request, response, TTL left",
    )
    p.add_argument("key", nargs="?", help="a store key, a 64-hex digest, or its first 6+ characters")
    p.add_argument("--agent", help="every entry of this agent instead")
    p.add_argument("--version", help="only this agent version")
    p.add_argument("--limit", type=int, default=20, help="entries to show at most (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser(
        "explain",
        parents=[store],
        help="the canonical request and key of a request body",
        description="the canonical request and key of a request body",
    )
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
    add_route_options(p)
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser(
        "invalidate",
        parents=[plain],
        help="delete one agent's entries",
        description="delete one agent's entries",
    )
    p.add_argument("--agent", required=True, help="the agent id whose entries go (exit 0 if it has none)")
    p.add_argument("--version", help="only this agent version")
    p.add_argument("--strict", action="store_true", help="exit 1 when nothing was deleted")
    p.set_defaults(handler=cmd_invalidate)

    p = sub.add_parser(
        "export",
        parents=[store],
        help="one agent's entries to a YAML cassette",
        description="one agent's entries to a YAML cassette",
    )
    p.add_argument("--agent", required=True, help="the agent id whose entries are exported")
    p.add_argument("--version", help="only this agent version")
    p.add_argument("-o", "--output", required=True, metavar="FILE.yaml", help="the cassette to write")
    p.add_argument("--scrub", action="store_true", help="replace credentials found in entries")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser(
        "import",
        parents=[store],
        help="a YAML cassette's recordings into the store",
        description="a YAML cassette's recordings into the store",
    )
    p.add_argument("file", metavar="FILE.yaml", help="the cassette to import")
    p.add_argument("--ttl", type=float, default=3600.0,
                   help="seconds to keep recordings that carry no expiry (default: %(default)s)")  # fmt: skip
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "verify",
        parents=[store],
        help="check cassettes: safe YAML, no secrets, no duplicate keys",
        description="check cassettes: safe YAML, no secrets, no duplicate keys",
    )
    p.add_argument("path", metavar="PATH", help="a cassette file or a directory of them")
    p.set_defaults(handler=cmd_verify)

    add_migrate_parser(sub)
    return parser


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
        exit 2 through argparse's ``SystemExit``; 141, silently, when the reader of stdout went away
        (``promptcache inspect ... | head``).

    .. versionadded:: 0.1.0
    """
    args = build_parser().parse_args(argv)
    if "namespace" in vars(args):  # the store commands: remember whether --namespace was given
        args.namespace_given = args.namespace is not None
        if args.namespace is None:
            args.namespace = DEFAULT_NAMESPACE
    if getattr(args, "debug", False):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(levelname)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `promptcache ... | head`: the reader left; end quietly, as Unix tools do
        with contextlib.suppress(OSError, ValueError):  # so the interpreter's final flush cannot fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # (a stdout without a file descriptor has nothing to flush)
            os.close(devnull)
        return 141  # 128 + SIGPIPE, the status a shell reports for such a pipe
    except EXPECTED_ERRORS as exc:
        if getattr(args, "debug", False):
            raise
        message = one_line(exc)
        if isinstance(exc, ConfigError | CLIError | PromptCacheError) or ":" in message:
            sys.stderr.write(f"promptcache: error: {message}\n")
        else:
            sys.stderr.write(f"promptcache: error: {type(exc).__name__}: {message}\n")
        return 1
