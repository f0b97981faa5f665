"""What a replay miss says: the test, the key, the nearest recorded request, a diff, and the fix."""

from __future__ import annotations

import difflib
import shlex
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._route import route_record

if TYPE_CHECKING:
    from promptcache._keys import CacheKey

__all__ = ["miss_message"]

MAX_DIFF_LINES: Final = 60


def _pretty(value: Any) -> list[str]:  # noqa: ANN401 - JSON
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()


def _nearest(request_lines: list[str], recordings: list[dict[str, Any]], endpoint: str) -> tuple[Any, float]:
    best: tuple[Any, float] = (None, -1.0)
    for rec in recordings:
        lines = _pretty(rec.get("request"))
        matcher = difflib.SequenceMatcher(None, lines, request_lines, autojunk=False)
        if matcher.real_quick_ratio() <= best[1] or matcher.quick_ratio() <= best[1]:
            continue
        score = matcher.ratio() + (0.01 if rec.get("endpoint") == endpoint else 0.0)
        if score > best[1]:
            best = (rec, score)
    return best


def _route_lines(key: CacheKey, nearest: dict[str, Any]) -> list[str]:
    """What differs besides the request: the upstream, query or keyed headers (key schema v2)."""
    mine = route_record(key.route) if key.route is not None else None
    theirs = nearest.get("route")
    if mine == theirs:
        return []
    out = ["  the route differs (upstream, query or answer-selecting headers):"]
    out += [
        f"    recorded:     {orjson.dumps(theirs).decode()}",
        f"    this request: {orjson.dumps(mine).decode()}",
    ]
    if isinstance(theirs, dict) and isinstance(mine, dict) and theirs.get("upstream") != mine.get("upstream"):
        out.append(
            "    to replay against another host, key both by one alias: ini promptcache_upstream = <name> "
            "(or @pytest.mark.promptcache(upstream=...))"
        )
    return out


def _scope(key: CacheKey) -> str:
    tenant = "" if key.tenant is None else f", tenant {key.tenant!r}"
    return f"{key.endpoint.value}, agent {key.agent_id!r}, version {key.agent_version!r}{tenant}"


def miss_message(  # noqa: PLR0913 - every part of the message
    *,
    test_id: str,
    where: str,
    key: CacheKey,
    request: Any,  # noqa: ANN401
    recordings: list[dict[str, Any]],
    times_seen: int,
) -> str:
    """The failure text for a replay miss."""
    lines = [
        "promptcache: no recording for this LLM request (mode: replay, so nothing was sent)",
        f"  test:     {test_id}",
        f"  cassette: {where}",
        f"  key:      {key.digest} ({_scope(key)})",
    ]
    same = [r for r in recordings if r.get("key") == key.digest]
    request_lines = _pretty(request)
    if same:
        lines.append(
            f"  this exact request was recorded {len(same)} time(s); the test made it {times_seen + 1} times"
        )
    elif not recordings:
        lines.append("  the cassette has no recordings (record them with --promptcache=auto)")
    else:
        nearest, score = _nearest(request_lines, recordings, key.endpoint.value)
        lines.append(f"  nearest recorded request: key {nearest.get('key')} ({min(score, 1.0):.0%} similar)")
        diff = list(
            difflib.unified_diff(
                _pretty(nearest.get("request")), request_lines, "recorded", "this request", n=2, lineterm=""
            )
        )
        if len(diff) > MAX_DIFF_LINES:
            diff = [*diff[:MAX_DIFF_LINES], f"... ({len(diff) - MAX_DIFF_LINES} more diff lines)"]
        lines.extend("    " + d for d in diff)
        lines.extend(_route_lines(key, nearest))
    lines.append(f"  to re-record this test: pytest --promptcache=rewrite {shlex.quote(test_id)}")
    return "\n".join(lines)
