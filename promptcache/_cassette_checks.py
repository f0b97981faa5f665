"""What a loaded cassette must also pass, for replay, ``import`` and ``promptcache verify`` alike.

A cassette can be well-formed YAML of the right shape and still be wrong in ways the replay would only
show as confusing misses: a mapping key written twice (YAML silently keeps the last one), a recording
whose ``key`` does not match its ``request`` (a hand edit), a credential, a recording key repeated in an
exported cassette. :func:`cassette_problems` lists each one in one sentence that names the file; the
loader (``_cassette.parse_cassette``) refuses a cassette with any, and ``verify`` prints them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._keys import SCHEMA_VERSION, KeyPolicy, make_key
from promptcache._route import route_from_record
from promptcache._secrets import SCRUBBED, find_secret
from promptcache.exceptions import CassetteFormatError, ConfigError, PromptCacheError

if TYPE_CHECKING:
    import yaml

__all__ = [
    "ALLOWED_FIELD",
    "allowed_secrets",
    "cassette_problems",
    "duplicate_keys",
    "key_schema_of",
    "old_schema_message",
    "scope_of",
]

ALLOWED_FIELD: Final = "allowed_secrets"
"""A recording's list of values kept on purpose (a test's ``allow_secrets``): not credentials."""


def key_schema_of(doc: dict[str, Any]) -> int:
    """The key schema a cassette's recordings were keyed with (files written before v2 say nothing: 1)."""
    schema = doc.get("key_schema", 1)
    return schema if type(schema) is int else 0


def old_schema_message(doc: dict[str, Any]) -> str:
    """What to say about a cassette keyed under an older key schema: how to re-key it."""
    return (
        f"recorded under key schema v{key_schema_of(doc)}, not v{SCHEMA_VERSION}: re-key it offline with "
        "`promptcache migrate PATH --upstream <alias or URL>` (responses are kept byte for byte)"
    )


def allowed_secrets(doc: dict[str, Any]) -> frozenset[str]:
    """The values a cassette document keeps on purpose, from its recordings' ``allowed_secrets``."""
    found: set[str] = set()
    for rec in doc.get("recordings") or []:
        values = rec.get(ALLOWED_FIELD) if isinstance(rec, dict) else None
        if isinstance(values, list):
            found.update(v for v in values if isinstance(v, str) and v)
    return frozenset(found)


def duplicate_keys(root: yaml.Node) -> list[str]:
    """``"$.path: duplicate key 'name' (line n)"`` for every mapping key written twice under ``root``."""
    import yaml  # noqa: PLC0415 - only node classes; the caller has already imported it

    out: list[str] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            children = []
            for key_node, value_node in node.value:
                name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if name in seen:
                    out.append(f"{path}: duplicate key {name!r} (line {key_node.start_mark.line + 1})")
                seen.add(name)
                children.append((value_node, f"{path}.{name}"))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(node.value)]))
    return out


def scope_of(rec: dict[str, Any], where: str) -> tuple[str, str, str, str | None]:
    """A recording's ``(namespace, agent_id, agent_version, tenant)``.

    Raises:
        CassetteFormatError: No scope mapping, or ids that are not strings.
    """
    scope = rec.get("scope")
    if not isinstance(scope, dict):
        raise CassetteFormatError(f"{where}: no 'scope' mapping")
    ids = [scope.get(name) for name in ("namespace", "agent_id", "agent_version")]
    tenant = scope.get("tenant")
    if not all(isinstance(i, str) and i for i in ids) or not (tenant is None or isinstance(tenant, str)):
        raise CassetteFormatError(f"{where}: scope needs string namespace, agent_id and agent_version")
    return (str(ids[0]), str(ids[1]), str(ids[2]), tenant)


def _key_matches_request(
    rec: dict[str, Any], scope: tuple[str, str, str, str | None], memo: dict[bytes, bool]
) -> bool:
    request = rec.get("request")
    if not isinstance(request, dict):
        return True  # nothing to check against
    raw = orjson.dumps(request)
    if SCRUBBED.encode() in raw:
        return True  # scrubbed text cannot reproduce the key
    memo_key = orjson.dumps([raw.decode(), rec["endpoint"], rec["key"], rec.get("route"), *scope])
    found = memo.get(memo_key)
    if found is None:
        namespace, agent_id, agent_version, tenant = scope
        try:
            route = None if rec.get("route") is None else route_from_record(rec["route"])
        except ConfigError:
            return False
        # The canonical request is a fixed point of the policy that made it: try each, default first.
        found = any(
            make_key(
                request,
                namespace=namespace,
                agent_id=agent_id,
                agent_version=agent_version,
                tenant=tenant,
                endpoint=rec["endpoint"],
                policy=policy,
                route=route,
                server_state=True,
            ).digest
            == rec["key"]
            for policy in (KeyPolicy.TRIM, KeyPolicy.EXACT, KeyPolicy.COLLAPSE)
        )
        memo[memo_key] = found
    return found


def cassette_problems(doc: dict[str, Any], text: str, where: str, duplicates: list[str]) -> list[str]:
    """Every problem of a parsed cassette document, one sentence each, starting with ``where``.

    A repeated recording key is a problem in an exported cassette; in a test cassette it is the n-th
    answer to the n-th identical request, which is how the pytest plugin records. Keys of a cassette
    written under an older key schema are not checked (they cannot match today's keys): ``verify``
    reports the schema, the plugin says how to re-key it, and ``promptcache migrate`` loads it.
    """
    problems = [f"{where}: {d}" for d in duplicates]
    leaked = find_secret(text, allowed_secrets(doc))
    if leaked is not None:
        problems.append(f"{where}: holds a credential ({leaked})")
    if key_schema_of(doc) != SCHEMA_VERSION:
        return problems
    seen: set[tuple[object, ...]] = set()
    memo: dict[bytes, bool] = {}
    for i, rec in enumerate(doc["recordings"]):
        here = f"{where}: recordings[{i}]"
        try:
            scope = scope_of(rec, here)
            if not _key_matches_request(rec, scope, memo):
                problems.append(
                    f"{here}: key {rec['key'][:12]}... does not match its request (edited by hand? "
                    "undo the edit, or delete the recording and record it again)"
                )
        except (CassetteFormatError, PromptCacheError) as exc:
            problems.append(str(exc) if str(exc).startswith(where) else f"{here}: {exc}")
            continue
        ident = (*scope, rec["key"], "stream" in rec or "chunks" in rec)  # a body and a stream may share it
        if "exported" in doc and ident in seen:
            problems.append(f"{here}: key {rec['key'][:12]}... appears twice in an exported cassette")
        seen.add(ident)
    return problems
