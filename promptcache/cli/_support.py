"""What the ``promptcache`` command does to a store and prints about it, apart from parsing flags.

Listing a namespace's entries, finding one by digest or store key, diffing canonical requests, and the
text shown by ``inspect`` and ``explain``. Nothing here exits, and only :func:`echo` and
:class:`Progress` print; the command modules decide what to show.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import orjson

from promptcache._compact import compact_request, compact_route, is_compact, without_mark
from promptcache._entry import Entry, is_compressed, parse_entry
from promptcache._fields import OUT_OF_KEY
from promptcache._keys import SCHEMA_VERSION, digest_of, namespace_prefix, parse_store_key
from promptcache._route import route_record
from promptcache.backends import BatchReadStore, ListingStore
from promptcache.exceptions import ConfigError, EntryError

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptcache._keys import CacheKey
    from promptcache.backends import Store

__all__ = [
    "Progress",
    "Side",
    "StoredEntry",
    "echo",
    "entry_json",
    "entry_text",
    "explain_text",
    "find_entry",
    "json_diff",
    "list_keys",
    "load_request",
    "namespaces_with_entries",
    "read_entries",
    "read_metrics",
    "warn",
    "why_text",
]


def echo(*lines: str) -> None:
    """Write lines to standard output: what the command prints (the library itself prints nothing)."""
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def warn(*lines: str) -> None:
    """Write ``promptcache: warning:`` lines to standard error (the command goes on)."""
    sys.stderr.write("".join(f"promptcache: warning: {line}\n" for line in lines))
    sys.stderr.flush()


PROGRESS_MIN: Final = 200  # a bar for runs at least this long, and only on a terminal


class Progress:
    """A one-line progress bar on stderr for long runs (hidden unless ``enabled``)."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.label, self.done = total, label, 0
        self.enabled = (total >= PROGRESS_MIN and self.stream.isatty()) if enabled is None else enabled
        self._shown = -1

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        percent = self.done * 100 // max(1, self.total)
        if self.enabled and percent != self._shown:
            self._shown = percent
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()


READ_BATCH: Final = 256


async def list_keys(store: Store, prefix: str) -> list[str]:
    """Live keys under ``prefix``, sorted.

    Raises:
        ConfigError: The store cannot list its keys.
    """
    if not isinstance(store, ListingStore):
        raise ConfigError(f"{store!r} cannot list its keys")
    return sorted(await store.keys(prefix))


async def namespaces_with_entries(store: Store) -> list[str]:
    """The namespaces that hold entries of this key schema, sorted (a hint when one is empty)."""
    found = {
        parsed[0]
        for k in await list_keys(store, "")
        if (parsed := parse_store_key(k)) is not None and parsed[1] == SCHEMA_VERSION
    }
    return sorted(found)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored value: its key, its bytes, and the entry they hold (or why they hold none)."""

    store_key: str
    raw: bytes
    entry: Entry | None
    error: str | None = None

    @property
    def compressed(self) -> bool:
        return is_compressed(self.raw)


def _parsed(store_key: str, raw: bytes) -> StoredEntry:
    try:
        return StoredEntry(store_key, raw, parse_entry(raw))
    except EntryError as exc:
        return StoredEntry(store_key, raw, None, str(exc))


async def read_entries(
    store: Store, keys: list[str], progress: Callable[[int], None] | None = None
) -> list[StoredEntry]:
    """The values under ``keys`` (those that expired meanwhile are left out), parsed, in key order."""
    out: list[StoredEntry] = []
    for start in range(0, len(keys), READ_BATCH):
        batch = keys[start : start + READ_BATCH]
        if isinstance(store, BatchReadStore):  # fewer round trips than one per key
            values = await store.get_many(batch)
        else:
            values = list(await asyncio.gather(*(store.get(k) for k in batch)))
        out.extend(_parsed(k, bytes(v)) for k, v in zip(batch, values, strict=True) if v is not None)
        if progress is not None:
            progress(len(batch))
    return out


def _is_entry_key(key: str) -> bool:
    parsed = parse_store_key(key)
    return parsed is not None and parsed[1] == SCHEMA_VERSION


MIN_DIGEST_PREFIX: Final = 6  # hex characters a digest prefix needs (the miss message prints 12)


def _digest_part(key: str) -> str | None:
    """``key`` as a digest or digest prefix (``...`` as printed is allowed), or None when it is not one."""
    text = key.strip().removesuffix("...").removesuffix("\u2026")
    ok = MIN_DIGEST_PREFIX <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)
    return text if ok else None


async def find_entry(store: Store, namespace: str | None, key: str) -> StoredEntry:
    """The entry under a store key, a 64-hex digest, or an unambiguous digest prefix in ``namespace``
    (None: in every namespace of the store).

    A store key is looked up as it is (the caller has taken its namespace from it, see
    ``cli._store.namespace_from_key``).

    Raises:
        ConfigError: ``key`` is none of these, the prefix matches several entries, or nothing live is
            stored under it.
    """
    prefix = "" if namespace is None else namespace_prefix(namespace)
    where = "the store" if namespace is None else f"namespace {namespace!r}"
    parsed = parse_store_key(key)
    digest = _digest_part(key)
    if parsed is not None:
        candidates = [key]
    elif digest is not None:
        candidates = [
            k for k in await list_keys(store, prefix) if digest_of(k).startswith(digest) and _is_entry_key(k)
        ]
        digests = sorted({digest_of(k) for k in candidates})  # a body and its stream share a digest
        if len(digests) > 1:
            shown = ", ".join(d[:16] for d in digests[:5])
            raise ConfigError(
                f"digest prefix {digest!r} matches {len(digests)} entries in {where}"
                f" ({shown}{', ...' if len(digests) > 5 else ''}): give more characters"
            )
    else:
        raise ConfigError(
            f"{key!r} is not a key: give a store key (<namespace>:v{SCHEMA_VERSION}:...), a 64-hex digest,"
            " or at least"
            f" {MIN_DIGEST_PREFIX} of its first hex characters"
        )
    found = await read_entries(store, candidates)
    if not found:
        raise ConfigError(f"no live entry under {key!r} in {where}")
    return found[0]


# -- diffs ----------------------------------------------------------------------------------------


def _short(value: object, width: int = 70) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def json_diff(a: object, b: object, path: str = "$") -> list[str]:
    """Where two JSON values differ, one line per changed, added (``+``) or removed (``-``) path."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            where = f"{path}.{k}"
            if k not in b:
                out.append(f"- {where}: {_short(a[k])}")
            elif k not in a:
                out.append(f"+ {where}: {_short(b[k])}")
            else:
                out.extend(json_diff(a[k], b[k], where))
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            where = f"{path}[{i}]"
            if i >= len(b):
                out.append(f"- {where}: {_short(a[i])}")
            elif i >= len(a):
                out.append(f"+ {where}: {_short(b[i])}")
            else:
                out.extend(json_diff(a[i], b[i], where))
    elif a != b or type(a) is not type(b):
        out.append(f"~ {path}: {_short(a)} -> {_short(b)}")
    return out


# -- what inspect and explain show ----------------------------------------------------------------


def _pretty(value: object, indent: str = "  ") -> str:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return "\n".join(indent + line for line in text.splitlines())


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_json(stored: StoredEntry, now: float) -> dict[str, Any]:
    """One entry as a JSON-able dict, for ``inspect --json``."""
    entry = stored.entry
    if entry is None:
        return {"store_key": stored.store_key, "error": stored.error}
    namespace, agent_id, agent_version, tenant = entry.scope
    return {
        "store_key": stored.store_key,
        "digest": entry.digest,
        "scope": {
            "namespace": namespace,
            "agent_id": agent_id,
            "agent_version": agent_version,
            "tenant": tenant,
        },
        "endpoint": entry.endpoint,
        "model": entry.model,
        "usage": entry.usage,
        "created_at": _iso(entry.created_at),
        "ttl_left": round(max(0.0, entry.expires_at - now), 3),
        "latency": entry.latency,
        "request": entry.request,
        "response": entry.body if entry.chunks is None else None,
        "chunks": entry.chunks,
    }


def entry_text(stored: StoredEntry, now: float) -> str:
    """One entry as ``inspect`` prints it: scope, model, usage, TTL left, canonical request, response."""
    entry: Entry | None = stored.entry
    if entry is None:
        return f"key:       {stored.store_key}\nunreadable: {stored.error}"
    _, agent_id, agent_version, tenant = entry.scope
    usage = entry.usage or {}
    inp = usage.get("prompt_tokens", usage.get("input_tokens", "?"))
    out = usage.get("completion_tokens", usage.get("output_tokens", "?"))
    lines = [
        f"key:       {stored.store_key}",
        f"agent:     {agent_id}, version {agent_version}, tenant {tenant or 'none'}",
        f"endpoint:  {entry.endpoint}, model {entry.model or 'unknown'}, usage {inp} in / {out} out",
        (
            f"created:   {_iso(entry.created_at)}, TTL left {max(0.0, entry.expires_at - now):.0f} s,"
            f" upstream latency {entry.latency:.3f} s"
        ),
        *_request_lines(entry.request),
    ]
    if entry.chunks is not None:
        lines += [f"response: a stream of {len(entry.chunks)} events:", _pretty(entry.chunks)]
    else:
        lines += ["response:", _pretty(entry.body)]
    return "\n".join(lines)


def _request_lines(request: Any) -> list[str]:  # noqa: ANN401 - JSON
    if request is None:
        return ["request:   not kept (written before entries kept a compact request by default)"]
    if is_compact(request):
        return [
            "request (compact: texts hashed; keep_request=True keeps them):",
            _pretty(without_mark(request)),
        ]
    return ["request (canonical):", _pretty(request)]


def load_request(path: str) -> dict[str, Any]:
    """A request body from a JSON file (``-`` for stdin).

    Raises:
        ConfigError: Not JSON, or not a JSON object.
        OSError: The file cannot be read.
    """
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: a request body is a JSON object, got {type(value).__name__}")
    return value


def read_metrics(source: str) -> str:
    """Prometheus text from an ``http(s)://`` URL (a ``/metrics`` endpoint) or a file."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=5) as response:  # noqa: S310 - the scheme is checked above
            data: bytes = response.read()
        return data.decode("utf-8")
    return Path(source).read_text(encoding="utf-8")


def explain_text(key: CacheKey, request: dict[str, Any], *, bypass: str | None = None) -> str:
    """What ``explain`` prints: the key, its scope and route, what was left out, and the canonical request."""
    left_out = sorted(k for k in request if k in OUT_OF_KEY[key.endpoint])
    lines = [
        f"key:        {key.digest}",
        f"store key:  {key.store_key}",
        (
            f"scope:      namespace {key.namespace!r}, agent {key.agent_id!r}, version {key.agent_version!r},"
            f" tenant {key.tenant or 'none'}"
        ),
        f"endpoint:   {key.endpoint.value}, text policy {key.policy.value}",
    ]
    if key.route is None:
        lines.append("route:      none (a key made by get_or_call/set; wrapped SDK clients key their route)")
    else:
        lines.append("route:      " + "; ".join(key.route.describe()))
    if left_out:
        lines.append(f"left out:   {', '.join(left_out)} (they cannot change the answer; docs/KEY_FIELDS.md)")
    if bypass is not None:
        lines.append(
            f"bypass:     refers to mutable server-side state ({bypass}): not cached unless the agent "
            "opts in (cache_server_state=True); the key below is the opted-in one"
        )
    lines.append(
        f"canonical request (hashed with the scope, endpoint, policy and route; key schema v{key.schema}):"
    )
    lines.append(_pretty(orjson.loads(key.canonical)))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Side:
    """The other side of an ``explain --against`` comparison."""

    digest: str
    request: Any
    endpoint: str
    scope: tuple[str, str, str, str | None]
    route: Any = None  # the cassette form (``route_record``), or None


def why_text(key: CacheKey, theirs: Side) -> str:
    """Why ``key`` and ``theirs`` differ: scope, endpoint, then each changed path of the canonical request."""
    if key.digest == theirs.digest:
        return f"same key: both are cached under {key.digest}"
    lines = [f"why the keys differ (theirs {theirs.digest[:12]}... -> this {key.digest[:12]}...):"]
    mine = (key.namespace, key.agent_id, key.agent_version, key.tenant)
    for name, a, b in zip(
        ("namespace", "agent_id", "agent_version", "tenant"), theirs.scope, mine, strict=True
    ):
        if a != b:
            lines.append(f"  ~ scope.{name}: {a!r} -> {b!r}")
    if theirs.endpoint != key.endpoint.value:
        lines.append(f"  ~ endpoint: {theirs.endpoint!r} -> {key.endpoint.value!r}")
    mine_route = None if key.route is None else route_record(key.route)
    mine_request = orjson.loads(key.canonical)
    theirs_request = theirs.request
    if is_compact(theirs_request):  # the stored form hashes texts: compare this request in that form
        mine_request = without_mark(compact_request(mine_request))
        theirs_request = without_mark(theirs_request)
        mine_route = None if mine_route is None else compact_route(mine_route)
    if mine_route != theirs.route:
        lines.extend("  " + d for d in json_diff(theirs.route, mine_route, "route"))
    lines.extend("  " + d for d in json_diff(theirs_request, mine_request))
    if len(lines) == 1:
        lines.append(
            "  scope, endpoint, route and canonical request are equal:"
            f" the text policy differs (this one: {key.policy.value})"
        )
    else:
        lines.append("  (~ changed, + only in this request, - only in theirs)")
    return "\n".join(lines)
