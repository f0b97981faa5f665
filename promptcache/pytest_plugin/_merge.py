"""How one test's recordings join a cassette other tests may share (pure functions, no I/O).

Every recording carries ``tests:``, the sorted ids of the tests that recorded it or replayed it in a run
that wrote the cassette (cassettes written before attribution have none; in a test's own cassette such
a recording counts as that test's). Replay hands a test the n-th recording of a (key, kind) slot for its
n-th identical request, so a test's calls always map to the first n recordings of each slot. The merge
keeps that true:

* ``auto``: a new recording whose slot position is already filled (another xdist worker recorded the
  same request first) is dropped, and the test joins the existing one's ``tests``; recordings it
  replayed gain its id.
* ``record`` / ``rewrite``: the new recording replaces the one at its slot position, keeping that
  one's other tests. In the test's own cassette, ``rewrite`` first drops every recording that is the
  test's alone (``record``: of the requests it made). In a shared cassette nothing else is dropped: a
  recording only this test was known to use may still serve another test, and only a prune run that
  sees every user pass removes it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["cassette_tests", "merge", "tests_of", "with_tests"]


def tests_of(recording: dict[str, Any]) -> list[str] | None:
    """The tests a recording is attributed to, or None for a recording made before attribution."""
    tests = recording.get("tests")
    if isinstance(tests, list):
        return [str(t) for t in tests]
    return None


def with_tests(recording: dict[str, Any], tests: list[str]) -> dict[str, Any]:
    """A copy of ``recording`` attributed to ``tests`` (sorted), the field placed right after ``key``."""
    out: dict[str, Any] = {}
    for name, value in recording.items():
        if name == "tests":
            continue
        out[name] = value
        if name == "key":
            out["tests"] = sorted(set(tests))
    if "tests" not in out:
        out["tests"] = sorted(set(tests))
    return out


def cassette_tests(recordings: list[dict[str, Any]]) -> list[str]:
    """The cassette header's ``tests``: every test named by its recordings, sorted (deterministic)."""
    return sorted({t for r in recordings for t in tests_of(r) or ()})


def merge(  # noqa: PLR0913 - every input of the decision, all keyword-only
    current: list[dict[str, Any]],
    new: list[dict[str, Any]],
    *,
    test: str,
    mode: str,
    own: bool,
    replayed: Counter[str],
    slot_of: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """The cassette's recordings after ``test`` (in ``mode``) saves ``new`` over ``current``.

    Args:
        current: The cassette as it is now (re-read under the store's lock).
        new: What the test recorded, in order.
        test: The test's id.
        mode: ``auto``, ``record`` or ``rewrite``.
        own: The cassette is the test's own (named after it), not a shared one.
        replayed: Per slot, how many recordings the test replayed (they precede its new ones).
        slot_of: The replay slot of a recording (key and kind).
    """
    recs = list(current)
    if own and mode in {"record", "rewrite"}:
        called = {r.get("key") for r in new}

        def dropped(rec: dict[str, Any]) -> bool:
            tests = tests_of(rec)
            mine = tests is None or tests == [test]
            return mine and (mode == "rewrite" or rec.get("key") in called)

        recs = [r for r in recs if not dropped(r)]
    slots: dict[str, list[int]] = {}
    for index, rec in enumerate(recs):
        slots.setdefault(slot_of(rec), []).append(index)

    def join(index: int, source: dict[str, Any]) -> None:
        recs[index] = with_tests(source, [*(tests_of(recs[index]) or []), test])

    if mode == "auto":
        for slot, count in replayed.items():
            for index in slots.get(slot, [])[:count]:
                if test not in (tests_of(recs[index]) or []):
                    join(index, recs[index])
    seen: Counter[str] = Counter()
    for rec in new:
        slot = slot_of(rec)
        position = replayed[slot] + seen[slot]
        seen[slot] += 1
        taken = slots.setdefault(slot, [])
        if position < len(taken):
            join(taken[position], recs[taken[position]] if mode == "auto" else rec)
        else:
            recs.append(with_tests(rec, [test]))
            taken.append(len(recs) - 1)
    return recs
