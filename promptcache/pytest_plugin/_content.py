"""What a recording holds: the production write gate, and what the test is told about what was left out.

A cassette stores only what the production cache would store (``promptcache._gate``): an HTTP 200 with a
JSON answer that the gate accepts, or a stream that completed and that the gate accepts. A transient 500
the SDK retried past is not recorded, so the replay does not repeat it (nor the SDK's backoff sleep)
forever. A test that wants an error on purpose says so: ``@pytest.mark.promptcache(record_errors=True)``
records every answer as it came.

Whatever is left out, and every recorded answer that scrubbing changed (a credential the request carried
and the provider echoed), becomes a :class:`Note`: a warning for the test and a line of the session's
terminal summary.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from promptcache._gate import refusal_reason, stream_refusal

if TYPE_CHECKING:
    from promptcache._keys import Endpoint

__all__ = ["CassetteScrubWarning", "Note", "not_recorded", "summary_lines"]


class CassetteScrubWarning(UserWarning):
    """A recorded answer differs from the live one: scrubbing cut a credential the provider echoed."""


@dataclass(frozen=True)
class Note:
    """Something the terminal summary reports about one test's recordings.

    Attributes:
        test_id: The test.
        kind: ``"skipped"`` (not recorded) or ``"scrubbed"`` (recorded, with a credential cut out).
        what: The reason, e.g. ``"HTTP 500"`` or ``"finish_reason 'length'"``.
        error: For ``skipped``: an upstream error (else an answer the gate refused).
    """

    test_id: str
    kind: str
    what: str
    error: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_recorded(
    endpoint: Endpoint,
    status: int,
    body: object,
    chunks: list[dict[str, Any]] | None,
    request: dict[str, Any],
) -> tuple[str, bool] | None:
    """``(why, is_error)`` when production would not cache this answer, else None."""
    if chunks is not None:
        reason = stream_refusal(endpoint, chunks, request)
        return None if reason is None else (reason, False)
    if status != 200:
        return f"HTTP {status}", True
    reason = refusal_reason(endpoint, body, request)
    return None if reason is None else (reason, False)


def warn_scrubbed(note: Note) -> None:
    """The record-time warning for an answer that scrubbing changed."""
    warnings.warn(
        f"promptcache: the recorded answer of {note.test_id} differs from the live one: {note.what} "
        "was cut from it (replay returns '<scrubbed>' there); if the value is not a secret, keep it with "
        "@pytest.mark.promptcache(allow_secrets=[...])",
        CassetteScrubWarning,
        stacklevel=2,
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary_lines(notes: list[Note]) -> list[str]:
    """The terminal summary's lines for ``notes``, one per test and kind, in first-seen order."""
    groups: dict[tuple[str, str], list[Note]] = {}
    for note in notes:
        groups.setdefault((note.kind, note.test_id), []).append(note)
    lines = []
    for (kind, test_id), group in groups.items():
        parts = []
        if kind == "skipped":
            errors = Counter(n.what for n in group if n.error)
            refused = Counter(n.what for n in group if not n.error)
            parts += [f"{_count(n, 'upstream error', 'upstream errors')} ({w})" for w, n in errors.items()]
            parts += [
                f"{_count(n, 'answer', 'answers')} the cache would not store ({w})"
                for w, n in refused.items()
            ]
            lines.append(f"not recorded: {', '.join(parts)} in {test_id}")
        else:
            cut = Counter(n.what for n in group)
            parts += [f"{_count(n, 'answer', 'answers')} ({w})" for w, n in cut.items()]
            lines.append(f"scrubbed (replay differs from the live call): {', '.join(parts)} in {test_id}")
    if any(n.kind == "skipped" for n in notes):
        lines.append(
            "  (a test that expects such answers records them: @pytest.mark.promptcache(record_errors=True))"
        )
    return lines
