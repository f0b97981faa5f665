"""``export``, ``import`` and ``verify``: stored entries to YAML recordings and back (byte-exact), and checks.

An exported recording carries every field of the stored envelope (timestamps, latency, compression), so
``import`` rebuilds the very bytes ``export`` read. Recordings written by the pytest plugin import too: they
get their creation time from ``recorded_at`` and a fresh TTL. Store keys are rebuilt from a recording's
scope with the key module's own prefix rule, so an imported entry lands where production looks it up.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptcache._cassette import (
    CASSETTE_FORMAT,
    inspect_cassette,
    key_schema_of,
    old_schema_message,
    parse_cassette,
    recorded_events,
    save_cassette,
    scrub,
)
from promptcache._cassette_checks import scope_of
from promptcache._config import DEFAULT_COMPRESS_ABOVE
from promptcache._entry import Entry, encode_entry
from promptcache._keys import SCHEMA_VERSION, STREAM_SUFFIX, Endpoint, store_key_for
from promptcache._stores import redact_url
from promptcache._validate import parse_enum
from promptcache.cli._store import CLIError, agent_keys, read_all, run_on_store, store_url
from promptcache.cli._support import Progress, echo
from promptcache.exceptions import (
    CassetteFormatError,
    EntryError,
    PromptCacheError,
    SecretLeakError,
)

if TYPE_CHECKING:
    import argparse

    from promptcache._cache import PromptCache
    from promptcache.cli._support import StoredEntry

__all__ = [
    "cmd_export",
    "cmd_import",
    "cmd_verify",
    "export_doc",
    "from_recording",
    "to_recording",
    "verify_cassette",
]


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_recording(stored: StoredEntry) -> dict[str, Any]:
    """A cassette recording holding every field of the stored envelope, so import rebuilds its bytes."""
    entry = stored.entry
    if entry is None:
        raise EntryError(f"{stored.store_key}: {stored.error}")
    names = ("namespace", "agent_id", "agent_version", "tenant")
    rec: dict[str, Any] = {
        "key": entry.digest,
        "endpoint": entry.endpoint,
        "scope": dict(zip(names, entry.scope, strict=True)),
        "recorded_at": _iso(entry.created_at),
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
        "model": entry.model,
        "usage": entry.usage,
        "latency": entry.latency,
        "compressed": stored.compressed,
    }  # fmt: skip
    if entry.request is not None:
        rec["request"] = entry.request
    if entry.route is not None:
        rec["route"] = entry.route
    if entry.chunks is not None:
        rec["chunks"] = entry.chunks
    else:
        rec["response"] = entry.body
    return rec


def export_doc(
    recordings: list[dict[str, Any]], namespace: str, agent_id: str, version: str | None
) -> dict[str, Any]:
    """A cassette document of exported entries (``parse_cassette`` reads it like any other)."""
    return {
        "version": CASSETTE_FORMAT,
        "key_schema": SCHEMA_VERSION,
        "exported": {"namespace": namespace, "agent_id": agent_id, "agent_version": version},
        "recordings": recordings,
    }


def _created_at(rec: dict[str, Any], now: float) -> float:
    value = rec.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    stamp = rec.get("recorded_at")
    if isinstance(stamp, str):
        try:
            return dt.datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return now


def from_recording(
    rec: dict[str, Any], where: str, *, now: float, ttl: float
) -> tuple[str, bytes, float] | None:
    """``(store_key, value, ttl)`` to write for a recording, or None when it has already expired.

    Recordings from ``export`` carry their timestamps and compression; test recordings get ``ttl`` from now.

    Raises:
        CassetteFormatError: The recording cannot become an entry; the message says where and why.
    """
    scope = scope_of(rec, where)
    digest = rec["key"]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CassetteFormatError(f"{where}: key {digest!r} is not a 64-hex digest")
    try:
        endpoint = parse_enum(Endpoint, rec["endpoint"], "endpoint")
        store_key = store_key_for(*scope, digest)
        chunks = recorded_events(rec)
        if chunks is not None:
            store_key += STREAM_SUFFIX  # a stream lives beside the body of its key
    except PromptCacheError as exc:
        raise CassetteFormatError(f"{where}: {exc}") from None
    expires = rec.get("expires_at")
    expires_at = (
        float(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) else now + ttl
    )
    if expires_at <= now:
        return None
    usage, model, latency = rec.get("usage"), rec.get("model"), rec.get("latency")
    entry = Entry(
        digest=digest,
        scope=scope,
        endpoint=endpoint.value,
        created_at=_created_at(rec, now),
        expires_at=expires_at,
        body=None if chunks is not None else rec.get("response"),
        chunks=chunks,
        model=model if isinstance(model, str) else None,
        usage=usage if isinstance(usage, dict) else None,
        latency=float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool) else 0.0,
        request=rec.get("request"),
        route=rec.get("route") if isinstance(rec.get("route"), dict) else None,
    )
    compressed = rec.get("compressed")
    threshold = DEFAULT_COMPRESS_ABOVE if compressed is None else (0 if compressed else None)
    try:
        return store_key, encode_entry(entry, compress_above=threshold), expires_at - now
    except TypeError as exc:
        raise CassetteFormatError(f"{where}: the response is not JSON ({exc})") from None


def verify_cassette(text: bytes, where: str) -> tuple[int, list[str]]:
    """``(recordings, problems)`` for one cassette file, by the loader replay uses (``inspect_cassette``):
    safe-loader parse and shape, duplicate YAML keys, secrets, keys that do not match their requests."""
    try:
        doc, problems = inspect_cassette(text, where)
    except CassetteFormatError as exc:
        return 0, [str(exc)]
    if doc["recordings"] and key_schema_of(doc) != SCHEMA_VERSION:
        problems.append(f"{where}: {old_schema_message(doc)}")
    return len(doc["recordings"]), problems


# -- the commands ---------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    async def work(cache: PromptCache) -> list[StoredEntry]:
        return await read_all(cache, await agent_keys(cache, args.agent, args.version), "export")

    entries = run_on_store(args, work)
    recordings = [to_recording(e) for e in entries if e.entry is not None]
    if args.scrub:
        recordings = scrub(recordings)
    try:
        save_cassette(args.output, export_doc(recordings, args.namespace, args.agent, args.version))
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
    if doc["recordings"] and key_schema_of(doc) != SCHEMA_VERSION:  # keys never found: say so instead
        raise CLIError(f"{path}: {old_schema_message(doc)}")
    now = time.time()
    # Every recording is checked before the first write: a bad file writes nothing.
    built = [
        from_recording(rec, f"{path}: recordings[{i}]", now=now, ttl=args.ttl)
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

    run_on_store(args, work, must_exist=False)
    expired = len(built) - len(writes)
    skipped = f" ({expired} expired recordings skipped)" if expired else ""
    echo(f"imported {len(writes)} entries from {path} into {redact_url(store_url(args))}{skipped}")
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
        count, problems = verify_cassette(file.read_bytes(), str(file))
        recordings += count
        bad += bool(problems)
        echo(*problems)
    if bad:
        echo(f"{bad} of {len(files)} cassettes have problems")
        return 1
    echo(f"ok: {len(files)} cassettes, {recordings} recordings: safe YAML, no secrets, no duplicate keys")
    return 0
