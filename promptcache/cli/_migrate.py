"""``promptcache migrate``: re-key committed cassettes to the current key schema, offline.

Cassettes are users' data: they hold their requests, so a schema change must not force a re-recording
against a paid API. A recording keeps its canonical request and scope; what schema v1 did not record (the
upstream and the headers that select the answer) comes from the command's options. Only each recording's
``key:`` line changes (and a ``key_schema:`` line is added), edited in the text, so every response byte,
comment and line of the file stays as it was; the result is parsed again and compared before it replaces
the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
import yaml

from promptcache._cassette import SCRUBBED, key_schema_of, parse_cassette
from promptcache._keys import SCHEMA_VERSION, Endpoint, KeyPolicy, make_key
from promptcache._route import Route, route_of, route_record
from promptcache._validate import parse_enum
from promptcache.cli._store import CLIError
from promptcache.cli._support import echo
from promptcache.exceptions import PromptCacheError

if TYPE_CHECKING:
    import argparse

__all__ = [
    "add_migrate_parser",
    "add_route_options",
    "cli_route",
    "cmd_migrate",
    "default_route",
    "migrate_text",
]

DEFAULT_UPSTREAMS: Final = {
    Endpoint.CHAT_COMPLETIONS: "openai",
    Endpoint.RESPONSES: "openai",
    Endpoint.EMBEDDINGS: "openai",
    Endpoint.ANTHROPIC_MESSAGES: "anthropic",
}
ANTHROPIC_VERSION: Final = "2023-06-01"  # what every anthropic SDK release sends unless told otherwise
_KEY_LINE: Final = re.compile(
    r"^(?P<head>\s*(?:-\s+)?key:\s+)(?P<q>['\"]?)(?P<digest>[0-9a-f]{64})(?P=q)\s*$", re.MULTILINE
)
_VERSION_LINE: Final = re.compile(r"^version:[^\n]*\n", re.MULTILINE)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CLIError(f"{option} takes NAME=VALUE, got {item!r}")
        out[name.strip().lower() if option == "--header" else name.strip()] = value.strip()
    return out


def cli_route(upstream: str | None, headers: list[str] | None, query: list[str] | None) -> Route | None:
    """The route ``--upstream``/``--header``/``--query`` describe (``explain``), or None when none is given.

    Raises:
        CLIError: A NAME=VALUE option is malformed, or headers/query come without an upstream.
    """
    if upstream is None:
        if headers or query:
            raise CLIError("--header and --query describe a route: give its --upstream too")
        return None
    header_pairs = _pairs(headers, "--header")
    scheme, sep, rest = upstream.partition("://")
    host, _, prefix = rest.partition("/")
    return route_of(
        method="POST",
        scheme=scheme if sep else "",
        host=host if sep else "",
        port=None,
        prefix="/" + prefix if prefix else "",
        query=_pairs(query, "--query").items(),
        headers=header_pairs.items(),
        alias=None if sep else upstream,
        extra_headers=header_pairs,
    )


def default_route(endpoint: Endpoint, args: argparse.Namespace) -> Route:
    """The route a v1 recording of ``endpoint`` is re-keyed with: the options, else the SDK defaults.

    Built by the same normalisation a live request gets, so a re-keyed recording has the live key.
    """
    headers = list(args.header or [])
    if endpoint is Endpoint.ANTHROPIC_MESSAGES and "anthropic-version" not in _pairs(headers, "--header"):
        headers.append(f"anthropic-version={ANTHROPIC_VERSION}")
    route = cli_route(args.upstream or DEFAULT_UPSTREAMS[endpoint], headers, args.query)
    assert route is not None  # an upstream was given  # noqa: S101 - for the type checker
    return route


def _new_key(
    rec: dict[str, Any], index: int, args: argparse.Namespace, policy: KeyPolicy
) -> tuple[str, Route]:
    request = rec.get("request")
    if not isinstance(request, dict) or SCRUBBED in orjson.dumps(request).decode():
        raise CLIError(
            f"recordings[{index}]: its request was not kept whole (scrubbed), so its key cannot be rebuilt; "
            "re-record this test"
        )
    scope: dict[str, Any] = rec["scope"] if isinstance(rec.get("scope"), dict) else {}
    try:
        endpoint = parse_enum(Endpoint, str(rec.get("endpoint")), "endpoint")
        route = default_route(endpoint, args)
        key = make_key(
            request,
            namespace=scope.get("namespace", "promptcache"),
            agent_id=scope.get("agent_id", "default"),
            agent_version=str(scope.get("agent_version", "0")),
            tenant=scope.get("tenant"),
            endpoint=endpoint,
            policy=policy,
            route=route,
            server_state=True,  # re-keyed as recorded; replay still asks the test to opt in
        )
    except PromptCacheError as exc:
        raise CLIError(f"recordings[{index}]: {exc}") from None
    return key.digest, route


def migrate_text(text: str, where: str, args: argparse.Namespace) -> tuple[str, int] | None:
    """The cassette ``text`` re-keyed to the current schema and its recording count; None when current.

    Raises:
        CLIError: A recording cannot be re-keyed, or the edited text would not hold the same recordings.
    """
    doc = parse_cassette(text, where)
    if key_schema_of(doc) == SCHEMA_VERSION:
        return None
    policy = parse_enum(KeyPolicy, args.policy, "--policy")
    mapping: dict[str, tuple[str, dict[str, Any]]] = {}
    for index, rec in enumerate(doc["recordings"]):
        if "route" in rec:  # only v2 writes routes: a hand-edited file, not one to guess about
            raise CLIError(f"{where}: recordings[{index}] has a route but no key_schema; re-record it")
        try:
            digest, route = _new_key(rec, index, args, policy)
        except CLIError as exc:
            raise CLIError(f"{where}: {exc}") from None
        new = (digest, route_record(route))
        if mapping.setdefault(rec["key"], new) != new:
            raise CLIError(f"{where}: recordings[{index}]: one v1 key holds two different requests")

    def rekey(m: re.Match[str]) -> str:
        if m["digest"] not in mapping:
            return m[0]
        digest, route = mapping[m["digest"]]
        indent = " " * m["head"].index("key")  # the recording's other fields line up with `key`
        flow = yaml.safe_dump(route, default_flow_style=True, width=1 << 20, sort_keys=False).strip()
        return f"{m['head']}{m['q']}{digest}{m['q']}\n{indent}route: {flow}"

    edited, count = _KEY_LINE.subn(rekey, text)
    edited, found = _VERSION_LINE.subn(lambda m: f"{m[0]}key_schema: {SCHEMA_VERSION}\n", edited, count=1)
    after = parse_cassette(edited, where) if found else None
    if after is None or count < len(doc["recordings"]) or not _same_but_keys(doc, after, mapping):
        raise CLIError(f"{where}: the file's layout is not one this command can edit safely; re-record it")
    return edited, len(doc["recordings"])


def _same_but_keys(
    before: dict[str, Any], after: dict[str, Any], mapping: dict[str, tuple[str, dict[str, Any]]]
) -> bool:
    old = [{**r, "key": mapping[r["key"]][0], "route": mapping[r["key"]][1]} for r in before["recordings"]]
    rest_before = {k: v for k, v in before.items() if k not in {"recordings", "key_schema"}}
    rest_after = {k: v for k, v in after.items() if k not in {"recordings", "key_schema"}}
    return old == after["recordings"] and rest_before == rest_after and key_schema_of(after) == SCHEMA_VERSION


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)  # noqa: PTH101 - keep the file's own permissions
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_migrate(args: argparse.Namespace) -> int:
    root = Path(args.path)
    if not root.exists():
        raise CLIError(f"{root}: no such file or directory")
    files = [root] if root.is_file() else sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")])
    migrated = current = recordings = 0
    failed: list[str] = []
    for path in files:
        try:
            result = migrate_text(path.read_text(encoding="utf-8"), str(path), args)
        except (CLIError, PromptCacheError) as exc:
            failed.append(str(exc))
            continue
        if result is None:
            current += 1
            continue
        text, count = result
        if not args.check:
            _write(path, text)
        migrated += 1
        recordings += count
        echo(f"{'would re-key' if args.check else 're-keyed'} {path}: {count} recording{'s' * (count != 1)}")
    echo(*failed)
    verb = "need re-keying" if args.check else "re-keyed"
    echo(
        f"{migrated} cassette{'s' * (migrated != 1)} ({recordings} recording{'s' * (recordings != 1)}) "
        f"{verb} to key schema v{SCHEMA_VERSION}; {current} already current; {len(failed)} failed"
    )
    if failed or (args.check and migrated):
        return 1
    return 0


def add_migrate_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Register ``promptcache migrate``."""
    p = sub.add_parser(
        "migrate",
        help=f"re-key cassettes recorded under an older key schema to v{SCHEMA_VERSION}, offline",
        description=(
            "Re-key recordings made under an older key schema, keeping every response byte for byte. "
            "Schema v1 did not record the upstream or the headers that select the answer: give them here "
            "as the tests send them (defaults: upstream 'openai' for OpenAI endpoints and 'anthropic' with "
            f"anthropic-version {ANTHROPIC_VERSION} for Anthropic messages). If the tests replay against "
            "another host, give the alias they set (ini promptcache_upstream or the marker's upstream=)."
        ),
    )
    p.add_argument("path", metavar="PATH", help="a cassette file or a directory of them")
    p.add_argument("--upstream", metavar="ALIAS|URL", help="the upstream the recordings were made against")
    p.add_argument("--header", action="append", metavar="NAME=VALUE", help="a keyed header sent (repeatable)")
    p.add_argument(
        "--query", action="append", metavar="NAME=VALUE", help="a query parameter sent (repeatable)"
    )
    p.add_argument("--policy", default="trim", help="the text policy the tests use (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only report; exit 1 if anything needs re-keying")
    p.set_defaults(handler=cmd_migrate)


def add_route_options(p: argparse.ArgumentParser) -> None:
    """``explain``'s route options: the route of the request, and of the ``--against`` request file."""
    p.add_argument(
        "--upstream", metavar="ALIAS|URL", help="key with a route: the client's upstream (or alias)"
    )
    p.add_argument("--header", action="append", metavar="NAME=VALUE", help="a header the request sends")
    p.add_argument("--query", action="append", metavar="NAME=VALUE", help="a query parameter it sends")
    p.add_argument("--server-state", action="store_true", help="the agent caches server-state requests")
    p.add_argument("--against-upstream", metavar="ALIAS|URL", help="the --against file's upstream")
    p.add_argument("--against-header", action="append", metavar="NAME=VALUE", help="its headers")
    p.add_argument("--against-query", action="append", metavar="NAME=VALUE", help="its query parameters")
