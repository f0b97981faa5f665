"""What the plugin says: a replay miss (the test, the key, the nearest recorded request, a diff, and the
fix), and the session's summary line."""

from __future__ import annotations

import difflib
import shlex
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._cassette import recorded_events
from promptcache._gate import stream_summary, usage_of
from promptcache._keys import Endpoint
from promptcache._prices import PriceTable
from promptcache._route import route_record

if TYPE_CHECKING:
    from promptcache._keys import CacheKey
    from promptcache.pytest_plugin._prune import Outcome
    from promptcache.pytest_plugin._recorder import Recorder

__all__ = ["SESSION", "miss_message", "misses_report", "recordings_totals", "summary_line"]

MAX_DIFF_LINES: Final = 60
SESSION: Final = "_session"  # the test id and cassette of calls made outside any test
_ENDPOINTS: Final = frozenset(e.value for e in Endpoint)


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
    if test_id == SESSION:
        lines.append("  made outside any test (a module- or session-scoped fixture, or at import);")
        lines.append("  to record it: pytest --promptcache=auto")
    else:
        lines.append(f"  to re-record this test: pytest --promptcache=rewrite {shlex.quote(test_id)}")
    return "\n".join(lines)


def misses_report(messages: list[str], raised: str | None) -> str:
    """A test's failure text listing every replay miss, and what the test raised (when it was not the
    miss itself: an exception group, or an error the code under test wrapped it in)."""
    head = "" if len(messages) == 1 else f"promptcache: {len(messages)} replay misses in this test\n\n"
    text = head + "\n\n".join(messages)
    if raised:
        text += f"\n\n(the test raised {raised})"
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _money(cost: float) -> str:
    """Money not spent, to the cent: nothing for zero, ``<$0.01`` below a cent."""
    if cost <= 0:
        return ""
    return " (<$0.01)" if cost < 0.01 else f" (~${cost:,.2f})"


def recordings_totals(recorders: list[Recorder]) -> dict[str, float]:
    """This process's counts, as plain numbers (xdist workers send them to the controller)."""
    table = PriceTable()
    tokens, cost, priced = 0, 0.0, False
    for rec in recorders:
        for recording in rec.replayed_recordings:
            summary: Any = recording
            events = None if isinstance(recording.get("usage"), dict) else recorded_events(recording)
            if events is not None:
                # A stream recorded without its usage summary: the usage is in its events.
                endpoint = (
                    Endpoint(recording["endpoint"]) if recording.get("endpoint") in _ENDPOINTS else None
                )
                summary = stream_summary(endpoint, events) if endpoint else {}
            inp, out = usage_of({"usage": summary.get("usage")})
            tokens += inp + out
            model = summary.get("model")
            value = table.cost(model if isinstance(model, str) else None, inp, out)
            if value is not None:
                cost, priced = cost + value, True
    return {
        "tests": sum(r.test_id != SESSION for r in recorders),
        "replayed": sum(r.replayed for r in recorders),
        "recorded": sum(r.recorded for r in recorders),
        "missing": sum(r.missing for r in recorders),
        "tokens": tokens,
        "cost": cost,
        "priced": 1.0 if priced else 0.0,
    }


def summary_line(parts: list[dict[str, float]], outcome: Outcome | None, *, prune: bool) -> str:
    """The session's one-line report: calls, tokens and money not paid for, and what was judged."""

    def total(name: str) -> int:
        return int(sum(p.get(name, 0) for p in parts))

    line = (
        f"promptcache: {total('replayed')} replayed, {total('recorded')} recorded, "
        f"{total('missing')} missing; {total('tokens')} tokens not paid for"
    )
    if sum(p.get("priced", 0) for p in parts):
        line += _money(sum(p.get("cost", 0.0) for p in parts))
    if outcome is None:
        return line
    if outcome.unused:
        action = "pruned" if prune else f"--promptcache-prune drops {'it' if outcome.unused == 1 else 'them'}"
        line += f"; {_plural(outcome.unused, 'unused recording')} ({action})"
    if outcome.stale:
        action = (
            "pruned" if prune else f"--promptcache-prune deletes {'it' if outcome.stale == 1 else 'them'}"
        )
        noun = "cassette of a test" if outcome.stale == 1 else "cassettes of tests"
        line += f"; {outcome.stale} {noun} that no longer exist{'s' if outcome.stale == 1 else ''} ({action})"
    if prune and outcome.kept:
        reasons = outcome.kept.most_common()
        why = reasons[0][0] if len(reasons) == 1 else ", ".join(f"{r} ({n})" for r, n in reasons)
        line += f"; kept {_plural(outcome.kept.total(), 'cassette')}: {why}"
    if outcome.error:
        line += f"; unused recordings not judged ({outcome.error})"
    return line
