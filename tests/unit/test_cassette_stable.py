"""The Stabiliser: which re-recorded answers keep the previous recording, and which do not."""

from __future__ import annotations

import copy
from typing import Any

from promptcache.pytest_plugin._stable import Stabiliser


def recording(key: str, text: str, *, answer_id: str, created: int, tool_result: str = "") -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "q"}]
    if tool_result:
        messages.append({"role": "tool", "tool_call_id": tool_result, "content": "42"})
    return {
        "key": key,
        "recorded_at": f"2026-01-01T00:00:{created % 60:02d}Z",
        "status": 200,
        "request": {"messages": messages},
        "response": {
            "id": answer_id,
            "created": created,
            "system_fingerprint": f"fp_{created}",
            "choices": [{"message": {"content": text, "tool_calls": [{"id": f"call_{answer_id}"}]}}],
        },
    }


def test_an_answer_differing_only_in_ids_and_times_keeps_the_old_recording() -> None:
    """New ids, creation time, fingerprint and recorded_at: the old recording is kept as it was."""
    old = recording("k1", "hello", answer_id="chatcmpl-1", created=1)
    out: list[dict[str, Any]] = []
    Stabiliser({"k1:body": [copy.deepcopy(old)]}).add(
        recording("k1", "hello", answer_id="chatcmpl-9", created=2), "k1:body", out
    )
    assert out == [old]


def test_changed_text_status_or_a_new_field_is_recorded_anew() -> None:
    """Anything else that differs (text, status, a field only one of them has) is a new recording."""
    old = recording("k1", "hello", answer_id="chatcmpl-1", created=1)
    changed = [
        recording("k1", "hello!", answer_id="chatcmpl-2", created=2),
        {**recording("k1", "hello", answer_id="chatcmpl-2", created=2), "status": 201},
        {**recording("k1", "hello", answer_id="chatcmpl-2", created=2), "allowed_secrets": ["x"]},
    ]
    for new in changed:
        out: list[dict[str, Any]] = []
        Stabiliser({"k1:body": [old]}).add(new, "k1:body", out)
        assert out == [new]


def test_the_nth_recording_of_a_slot_is_compared_with_the_nth_old_one() -> None:
    """Repeated identical requests are matched by position; one past the old ones is simply new."""
    first = recording("k1", "one", answer_id="a", created=1)
    second = recording("k1", "two", answer_id="b", created=1)
    stabiliser = Stabiliser({"k1:body": [first, second]})
    out: list[dict[str, Any]] = []
    stabiliser.add(recording("k1", "one", answer_id="c", created=5), "k1:body", out)
    stabiliser.add(recording("k1", "two", answer_id="d", created=5), "k1:body", out)
    stabiliser.add(recording("k1", "three", answer_id="e", created=5), "k1:body", out)
    assert out[:2] == [first, second]
    assert out[2]["response"]["id"] == "e"


def test_a_kept_answer_whose_new_id_a_later_request_sends_back_is_swapped_back() -> None:
    """A later request carrying the new tool call id puts the new answer back in place of the old one."""
    old_first = recording("k1", "call a tool", answer_id="x1", created=1)
    new_first = recording("k1", "call a tool", answer_id="x2", created=2)
    follow_up = recording("k2", "done", answer_id="y2", created=2, tool_result="call_x2")
    out: list[dict[str, Any]] = []
    stabiliser = Stabiliser({"k1:body": [old_first]})
    stabiliser.add(new_first, "k1:body", out)
    assert out == [old_first]
    stabiliser.add(follow_up, "k2:body", out)
    assert out == [new_first, follow_up]
