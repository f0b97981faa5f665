"""The promptcache pytest plugin: record real LLM responses once, replay them in CI with no network.

Registered through the ``pytest11`` entry point; it does nothing until enabled by ``--promptcache=MODE``,
the ``promptcache_mode`` ini option, or the ``@pytest.mark.promptcache`` marker. Modes: ``replay`` (the
default once enabled: nothing is sent, a miss fails the test), ``auto``, ``record``, ``rewrite``, ``off``.

Precedence for every setting: command line > marker > the ``promptcache_config`` fixture > ini.
Fixtures are synchronous, so the plugin works under pytest-asyncio, anyio or neither.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest

from promptcache._cassette import DEFAULT_SCRUB_FIELDS
from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy
from promptcache._route import check_alias
from promptcache._validate import parse_enum
from promptcache.exceptions import ConfigError
from promptcache.pytest_plugin._content import Note, summary_lines, warn_scrubbed
from promptcache.pytest_plugin._recorder import Mode, Recorder
from promptcache.pytest_plugin._report import misses_report, recordings_totals, summary_line
from promptcache.pytest_plugin._session import Session, placeholder_credentials
from promptcache.pytest_plugin._stores import cassette_name

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ["Recorder"]

_MODES = ", ".join(m.value for m in Mode)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptcache", "promptcache LLM record/replay")
    group.addoption(
        "--promptcache",
        dest="promptcache_mode",
        metavar="MODE",
        default=None,
        help=f"enable record/replay for every test: {_MODES} (ini: promptcache_mode)",
    )
    group.addoption(
        "--promptcache-store",
        dest="promptcache_store",
        metavar="PATH_OR_URL",
        default=None,
        help="cassette folder (default fixtures/cassettes) or redis:// URL (ini: promptcache_store)",
    )
    group.addoption(
        "--promptcache-prune",
        dest="promptcache_prune",
        action="store_true",
        default=None,
        help="drop recordings no passing test used (ini: promptcache_prune)",
    )
    group.addoption(
        "--promptcache-scrub-field",
        dest="promptcache_scrub_fields",
        action="append",
        default=None,
        metavar="NAME",
        help="a JSON field scrubbed from cassettes; repeatable (ini: promptcache_scrub_fields)",
    )
    group.addoption(
        "--promptcache-redis-prefix",
        dest="promptcache_redis_prefix",
        metavar="PREFIX",
        default=None,
        help="key prefix of cassettes in a redis:// store (default promptcache:cassette:<rootdir name>:; "
        "ini: promptcache_redis_prefix)",
    )
    parser.addini("promptcache_mode", f"record/replay mode for every test: {_MODES}", default=None)
    parser.addini("promptcache_store", "cassette folder or redis:// URL", default="fixtures/cassettes")
    parser.addini("promptcache_redis_prefix", "key prefix of cassettes in a redis:// store", default=None)
    parser.addini("promptcache_prune", "drop recordings no passing test used", type="bool", default=False)
    parser.addini("promptcache_scrub_fields", "JSON fields scrubbed from cassettes", type="linelist")
    parser.addini("promptcache_agent_id", "agent id recordings are keyed under", default="default")
    parser.addini("promptcache_policy", "text policy of the key: exact, trim, collapse", default="trim")
    parser.addini(
        "promptcache_cache_server_state",
        "record/replay requests that refer to mutable server-side state (conversation, container, ...)",
        type="bool",
        default=False,
    )
    parser.addini(
        "promptcache_upstream",
        "an alias keying every upstream instead of its URL, so recordings replay against another host",
        default=None,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "promptcache(mode=None, cassette=None, agent_id=None, agent_version=None, upstream=None, "
        "record_errors=False, allow_secrets=()): record/replay this test's LLM calls; `cassette` names a "
        "shared cassette; `upstream` an alias for the upstream URL in keys; `record_errors` records "
        "answers the production cache would not store (errors); `allow_secrets` lists values never scrubbed",
    )
    session = Session(config)
    config.stash[_SESSION] = session
    cli_mode = config.getoption("promptcache_mode")
    if cli_mode is not None:
        session.cli_mode = _mode(cli_mode, "--promptcache")
    # Bad ini values are one usage error at start-up, not an error in every test.
    ini_mode = config.getini("promptcache_mode")
    session.global_mode = session.cli_mode or (_mode(ini_mode, "ini promptcache_mode") if ini_mode else None)
    try:
        policy = parse_enum(KeyPolicy, str(config.getini("promptcache_policy")), "ini promptcache_policy")
        upstream = check_alias(config.getini("promptcache_upstream") or None)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    # Calls made outside any test (the _session cassette) are keyed by the ini settings.
    session.session_settings = {
        "agent_id": str(config.getini("promptcache_agent_id")),
        "policy": policy,
        "upstream": upstream,
        "cache_server_state": _truthy(config.getini("promptcache_cache_server_state")),
        "scrub_fields": _scrub_fields(config, {}),
    }


def pytest_sessionstart(session: pytest.Session) -> None:
    """With a mode set for the run: check the store (one usage error if unusable), intercept from here."""
    state = session.config.stash.get(_SESSION, None)
    if state is not None:
        state.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_SESSION, None)
    if state is not None:
        state.stop()


_SESSION = pytest.StashKey[Session]()
_RECORDER = pytest.StashKey[Recorder]()


def _mode(value: object, where: str) -> Mode:
    try:
        return parse_enum(Mode, str(value), where)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def promptcache_config() -> dict[str, Any]:
    """Override in a conftest to configure record/replay: keys ``mode``, ``agent_id``, ``agent_version``,
    ``scrub_fields``, ``policy``, ``upstream``, ``record_errors``, ``allow_secrets``. Precedence: command
    line > marker > this fixture > ini."""
    return {}


def _scrub_fields(config: pytest.Config, fixture: dict[str, Any]) -> frozenset[str]:
    scrub = set(DEFAULT_SCRUB_FIELDS) | {f.lower() for f in config.getini("promptcache_scrub_fields")}
    scrub |= {f.lower() for f in config.getoption("promptcache_scrub_fields") or []}
    scrub |= {str(f).lower() for f in fixture.get("scrub_fields") or []}
    return frozenset(scrub)


def _settings(request: pytest.FixtureRequest, session: Session) -> dict[str, Any] | None:
    """The effective settings for this test, or None when record/replay is not enabled for it."""
    config = request.config
    marker = request.node.get_closest_marker("promptcache")
    marked: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        marked.setdefault("mode", marker.args[0])
    fixture: dict[str, Any] = request.getfixturevalue("promptcache_config")
    ini_mode = config.getini("promptcache_mode")
    enabled = session.cli_mode is not None or marker is not None or "mode" in fixture or bool(ini_mode)
    if not enabled:
        return None

    def pick(name: str, ini: object) -> object:
        # Precedence, applied here for every setting: marker > fixture > ini (the CLI is handled by callers).
        if marked.get(name) is not None:
            return marked[name]
        if fixture.get(name) is not None:
            return fixture[name]
        return ini

    mode = session.cli_mode or _mode(pick("mode", ini_mode or Mode.REPLAY.value), "promptcache mode")
    return {
        "mode": mode,
        "cassette": _cassette(marked.get("cassette"), request.node.nodeid),
        "agent_id": str(pick("agent_id", config.getini("promptcache_agent_id"))),
        "agent_version": str(pick("agent_version", DEFAULT_AGENT_VERSION)),
        "policy": parse_enum(KeyPolicy, str(pick("policy", config.getini("promptcache_policy"))), "policy"),
        "upstream": check_alias(pick("upstream", config.getini("promptcache_upstream") or None)),
        "cache_server_state": _truthy(
            pick("cache_server_state", config.getini("promptcache_cache_server_state"))
        ),
        "scrub_fields": _scrub_fields(config, fixture),
        "record_errors": bool(pick("record_errors", False)),  # noqa: FBT003 - the ini-level default
        "allow_secrets": frozenset(
            str(v) for source in (fixture, marked) for v in source.get("allow_secrets") or ()
        ),
    }


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _cassette(named: object, nodeid: str) -> str:
    """The marker's cassette name made safe (no absolute paths, no ``..``), or the test's own name."""
    if not named:
        return cassette_name(nodeid)
    safe = cassette_name(str(named).replace("\\", "/").replace("::", "_"))
    return safe.rsplit("/", 1)[0] if safe.endswith("/module") else safe


@pytest.fixture(autouse=True)
def _promptcache_recorder(request: pytest.FixtureRequest) -> Iterator[Recorder | None]:
    session = request.config.stash[_SESSION]
    settings = _settings(request, session)
    if settings is None or settings["mode"] is Mode.OFF:
        with session.test_scope(None):
            yield None
        return
    try:
        store = session.store()
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    recorder = Recorder(test_id=request.node.nodeid, store=store, **settings)
    session.recorders.append(recorder)
    request.node.stash[_RECORDER] = recorder
    with contextlib.ExitStack() as stack:
        if recorder.mode is Mode.REPLAY:
            stack.enter_context(placeholder_credentials())
        stack.enter_context(session.test_scope(recorder))
        yield recorder
    for note in recorder.notes:  # warned here, in the test's own thread, not inside a transport
        if note.kind == "scrubbed":
            warn_scrubbed(note)
    recorder.save()


@pytest.fixture
def promptcache(_promptcache_recorder: Recorder | None) -> Recorder:
    """The active recorder: ``calls``, ``replayed``, ``recorded``, ``missing`` and ``usage`` of this test."""
    if _promptcache_recorder is None:
        pytest.fail("the promptcache fixture needs record/replay enabled (--promptcache, ini or marker)")
    return _promptcache_recorder


def pytest_itemcollected(item: pytest.Item) -> None:
    """Remember every collected test's cassette (deselected ones too): prune judges by them."""
    state = item.config.stash.get(_SESSION, None)
    if state is None:
        return
    marker = item.get_closest_marker("promptcache")
    state.collected(item, _cassette(marker.kwargs.get("cassette") if marker else None, item.nodeid))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = item.config.stash[_SESSION]
    recorder = item.stash.get(_RECORDER, None)
    reported = item.stash.get(_MISSES_REPORTED, 0)
    if report.failed and recorder is not None and len(recorder.miss_messages) > reported:
        # Every miss of the failed test, however the test code wrapped them (a task group's exception
        # group, an error of the code under test). A miss the test expected (pytest.raises) is its own.
        item.stash[_MISSES_REPORTED] = len(recorder.miss_messages)
        exc = call.excinfo.value if call.excinfo else None
        alone = isinstance(exc, pytest.fail.Exception) and len(recorder.miss_messages) - reported == 1
        if not alone:  # a lone miss raised as is already reads as itself
            raised = None if exc is None else f"{type(exc).__name__}: {exc}"
            report.longrepr = misses_report(recorder.miss_messages[reported:], raised)
    if report.failed:
        state.failed.add(item.nodeid)
    elif report.when == "call" and report.passed:
        state.passed.add(item.nodeid)
    return report


_MISSES_REPORTED = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Save the session cassette; under pytest-xdist, each worker hands its counts and what it saw to the
    controller, which judges the cassettes (or the only process does) before the summary."""
    state = session.config.stash.get(_SESSION, None)
    if state is None:
        return
    part = state.finish()
    part["totals"] = recordings_totals(state.all_recorders())
    part["notes"] = [n.as_dict() for r in state.all_recorders() for n in r.notes]
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["promptcache"] = part
        return
    state.conclude()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:  # noqa: ANN401, ARG001 - xdist's hook signature
    part = getattr(node, "workeroutput", {}).get("promptcache")
    state = node.config.stash.get(_SESSION, None)
    if part and state is not None:
        state.worker_totals.append(part["totals"])
        state.worker_notes.extend(Note(**n) for n in part.get("notes") or [])
        state.facts.add(part)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:  # noqa: ANN401
    session = config.stash.get(_SESSION, None)
    if session is None:
        return
    parts = [recordings_totals(session.all_recorders()), *session.worker_totals]
    if not sum(p["tests"] + p["replayed"] + p["recorded"] + p["missing"] for p in parts):
        return
    terminalreporter.write_sep("-", "promptcache")
    terminalreporter.write_line(summary_line(parts, session.outcome, prune=session.prune()))
    notes = [n for r in session.all_recorders() for n in r.notes] + session.worker_notes
    for extra in summary_lines(notes):
        terminalreporter.write_line(extra)
