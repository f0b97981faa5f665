"""Re-recording identical content leaves a cassette byte-identical.

Providers give every answer a fresh id (``chatcmpl-...``, ``msg_...``, ``resp_...``, tool call ids), a
creation time and a backend fingerprint, and the recorder stamps ``recorded_at``. None of that is content,
but all of it would change the file on every re-record, so a reviewer sees noise instead of the answers
that really changed. Nothing is normalised (a replay returns exactly what was once answered); instead,
when a new recording equals the one it replaces except for those fields, the old one is kept as it was.

One exception keeps replays consistent: when a later request of the same test carries an id from an
answer (a tool call id sent back, a Responses ``previous_response_id``), the recording that answered it
is not swapped for the old one, since the later request was recorded with the new id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = ["VOLATILE_FIELDS", "Stabiliser"]

VOLATILE_FIELDS: Final = frozenset(
    {
        "id",  # chatcmpl-..., msg_..., resp_..., call_..., toolu_..., fc_...
        "call_id",
        "item_id",
        "response_id",
        "created",
        "created_at",
        "completed_at",
        "system_fingerprint",
    }
)
"""Fields of an answer (at any depth) whose values are not content; ``recorded_at`` at the top."""
_ID_FIELDS: Final = frozenset({"id", "call_id", "item_id", "response_id"})
_EXACT: Final = frozenset({"key", "scope", "request"})  # compared as they are


def _normalised(value: Any) -> Any:  # noqa: ANN401 - JSON
    if isinstance(value, dict):
        return {k: None if k in VOLATILE_FIELDS else _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _content(recording: dict[str, Any]) -> bytes:
    # recorded_at is volatile; tests (which tests used the recording) is attribution, kept by the merge.
    body = {
        k: v if k in _EXACT else _normalised(v)
        for k, v in recording.items()
        if k not in {"recorded_at", "tests"}
    }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _ids(value: Any, out: set[str]) -> None:  # noqa: ANN401 - JSON
    if isinstance(value, dict):
        for k, v in value.items():
            if k in _ID_FIELDS and isinstance(v, str) and v:
                out.add(v)
            else:
                _ids(v, out)
    elif isinstance(value, list):
        for v in value:
            _ids(v, out)


def _strings(value: Any, out: set[str]) -> None:  # noqa: ANN401 - JSON
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


@dataclass
class Stabiliser:
    """Keeps previous recordings where new ones only differ in volatile fields.

    ``previous``: the cassette's recordings before this test ran, each with its replay slot (key and
    kind); the n-th new recording of a slot is compared with the n-th previous one.
    """

    previous: dict[str, list[dict[str, Any]]]
    _taken: Counter[str] = field(default_factory=Counter)
    _kept_ids: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)

    def add(self, recording: dict[str, Any], slot: str, out: list[dict[str, Any]]) -> None:
        """Append ``recording`` to ``out``, or the previous recording it equals but for volatile fields."""
        # A request that sends back an id from a kept answer: that answer must be the new one after all.
        sent: set[str] = set()
        _strings(recording.get("request"), sent)
        for value in sent & self._kept_ids.keys():
            for index, fresh in self._kept_ids.pop(value):
                out[index] = fresh
        position = self._taken[slot]
        self._taken[slot] += 1
        candidates = self.previous.get(slot, [])
        old = candidates[position] if position < len(candidates) else None
        if (
            old is None
            or old.keys() - {"tests"} != recording.keys() - {"tests"}
            or _content(old) != _content(recording)
        ):
            out.append(recording)
            return
        out.append({k: old.get(k, recording[k]) for k in recording})  # ``tests`` is the merge's to set
        ids: set[str] = set()
        _ids({k: v for k, v in recording.items() if k not in _EXACT}, ids)
        for value in ids:
            self._kept_ids.setdefault(value, []).append((len(out) - 1, recording))
