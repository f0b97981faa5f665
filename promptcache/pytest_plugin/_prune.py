"""What a run proves unused, and pruning it: decided once per session, after every test (and worker).

A cassette is *judged* only when every test that could use it ran and passed in this run: the tests
collected with it as their cassette, the tests it names (``tests:`` of its recordings) and the tests that
used it. Then a recording no test's calls reached (the n-th identical request reaches the n-th recording
of its slot) is unused, and ``--promptcache-prune`` removes it. A cassette no collected test uses, in a
module this run collected in full, whose named tests all belong to such modules, belongs to tests that
no longer exist, and is deleted. Everything else is kept, and the summary says why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from promptcache.pytest_plugin._merge import cassette_tests, tests_of
from promptcache.pytest_plugin._recorder import slot_of
from promptcache.pytest_plugin._report import SESSION
from promptcache.pytest_plugin._stores import cassette_name

if TYPE_CHECKING:
    from promptcache.pytest_plugin._stores import CassetteStore

__all__ = ["SESSION_CASSETTE", "Facts", "Outcome", "judge", "module_of"]

SESSION_CASSETTE: Final = SESSION  # calls made outside any test (wider-scoped fixtures, collection)
NOT_SELECTED: Final = "tests not selected in this run"
NOT_PASSED: Final = "tests that did not pass"
UNATTRIBUTED: Final = "recordings without test attribution (run its tests once with --promptcache=auto)"
CHANGED: Final = "written by another run meanwhile"


def module_of(test_id: str) -> str:
    """The cassette folder of a test's module: ``tests/test_a.py::t`` -> ``tests/test_a``."""
    return cassette_name(test_id).rpartition("/")[0]


@dataclass
class Facts:
    """What the run saw, merged over xdist workers (plain data: it crosses processes)."""

    users: dict[str, set[str]] = field(default_factory=dict)  # cassette -> tests collected with it
    modules: set[str] = field(default_factory=set)  # module folders with collected tests
    partial: set[str] = field(default_factory=set)  # ... collected only in part (node ids given)
    reports: list[dict[str, Any]] = field(default_factory=list)  # Recorder.report() + "passed"

    def add(self, part: dict[str, Any]) -> None:
        for name, tests in part.get("users", {}).items():
            self.users.setdefault(name, set()).update(tests)
        self.modules.update(part.get("modules", ()))
        self.partial.update(part.get("partial", ()))
        self.reports.extend(part.get("reports", ()))

    def export(self) -> dict[str, Any]:
        return {
            "users": {k: sorted(v) for k, v in self.users.items()},
            "modules": sorted(self.modules),
            "partial": sorted(self.partial),
            "reports": self.reports,
        }


@dataclass
class Outcome:
    """What the session found and did; the summary prints it."""

    unused: int = 0  # recordings of judged cassettes no test reached
    stale: int = 0  # cassettes of tests that no longer exist
    kept: Counter[str] = field(default_factory=Counter)  # reason -> cassettes not judged
    error: str | None = None


def judge(store: CassetteStore, facts: Facts, *, prune: bool) -> Outcome:
    """Count what this run proves unused; with ``prune``, remove it from ``store``."""
    outcome = Outcome()
    by_cassette: dict[str, list[dict[str, Any]]] = {}
    for report in facts.reports:
        if report["cassette"] != SESSION_CASSETTE:
            by_cassette.setdefault(report["cassette"], []).append(report)
    passed = {r["test"]: bool(r["passed"]) for r in facts.reports}
    for name, reports in sorted(by_cassette.items()):
        _judge_used(store, name, reports, facts, passed, outcome, prune=prune)
    for name in store.names():
        if name not in by_cassette and name not in facts.users and name != SESSION_CASSETTE:
            _judge_stale(store, name, facts, outcome, prune=prune)
    return outcome


def _why_kept(known: set[str], passed: dict[str, bool]) -> str | None:
    if any(t not in passed for t in known):
        return NOT_SELECTED
    if not all(passed[t] for t in known):
        return NOT_PASSED
    return None


def _judge_used(  # noqa: PLR0913 - one cassette's decision, all of it
    store: CassetteStore,
    name: str,
    reports: list[dict[str, Any]],
    facts: Facts,
    passed: dict[str, bool],
    outcome: Outcome,
    *,
    prune: bool,
) -> None:
    known = facts.users.get(name, set()) | {t for r in reports for t in [r["test"], *r["named"]]}
    own = len(known) == 1 and name == cassette_name(next(iter(known)))
    reason = _why_kept(known, passed) or (
        UNATTRIBUTED if not own and any(r["legacy"] for r in reports) else None
    )
    if reason is not None:
        outcome.kept[reason] += 1
        return
    reached: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for report in reports:
        reached |= Counter(report["consumed"])  # | is the per-slot maximum
        totals |= Counter(report["totals"])
    if not any(totals[s] > reached[s] for s in totals):
        return  # the common case: nothing to load again
    doc = store.load(name)
    recordings = list(doc["recordings"]) if doc else []
    if not set(cassette_tests(recordings)) <= known:
        outcome.kept[CHANGED] += 1
        return
    outcome.unused += len(recordings) - len(_reached(recordings, reached))
    if prune:

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if current is None or not set(cassette_tests(current["recordings"])) <= known:
                return current
            kept = _reached(list(current["recordings"]), reached)
            return {**current, "tests": cassette_tests(kept), "recordings": kept} if kept else None

        store.update(name, change)


def _reached(recordings: list[dict[str, Any]], reached: Counter[str]) -> list[dict[str, Any]]:
    """The recordings some test's calls reach: the first ``reached[slot]`` of each slot, in order."""
    left = Counter(reached)
    out = []
    for rec in recordings:
        slot = slot_of(rec)
        if left[slot] > 0:
            left[slot] -= 1
            out.append(rec)
    return out


def _judge_stale(store: CassetteStore, name: str, facts: Facts, outcome: Outcome, *, prune: bool) -> None:
    module = name.rpartition("/")[0]
    if module not in facts.modules:
        return  # its module was not collected: not judged, not worth a line
    if module in facts.partial:
        outcome.kept[NOT_SELECTED] += 1
        return
    doc = store.load(name)
    if doc is None:
        return
    named = {str(doc["test"])} if isinstance(doc.get("test"), str) else set()
    named.update(t for r in doc["recordings"] for t in tests_of(r) or ())
    if any(module_of(t) not in facts.modules or module_of(t) in facts.partial for t in named):
        outcome.kept[NOT_SELECTED] += 1
        return
    outcome.stale += 1
    if prune:
        store.update(name, lambda _current: None)
