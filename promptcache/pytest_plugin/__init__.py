"""The promptcache pytest plugin: record real LLM responses once, replay them in CI with no network.

Registered through the ``pytest11`` entry point; it does nothing until enabled by ``--promptcache=MODE``,
the ``promptcache_mode`` ini option, or the ``@pytest.mark.promptcache`` marker. Modes: ``replay`` (the
default once enabled: nothing is sent, a miss fails the test), ``auto``, ``record``, ``rewrite``, ``off``.

Precedence for every setting: command line > marker > the ``promptcache_config`` fixture > ini.
Fixtures are synchronous, so the plugin works under pytest-asyncio, anyio or neither.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from promptcache._cassette import DEFAULT_SCRUB_FIELDS
from promptcache._gate import usage_of
from promptcache._keys import DEFAULT_AGENT_VERSION, KeyPolicy
from promptcache._prices import PriceTable
from promptcache._route import check_alias
from promptcache._validate import parse_enum
from promptcache.exceptions import ConfigError
from promptcache.integrations._sync import handle_sync
from promptcache.pytest_plugin._content import Note, summary_lines, warn_scrubbed
from promptcache.pytest_plugin._recorder import Mode, Recorder
from promptcache.pytest_plugin._stores import CassetteStore, cassette_name, open_cassette_store

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
    parser.addini("promptcache_mode", f"record/replay mode for every test: {_MODES}", default=None)
    parser.addini("promptcache_store", "cassette folder or redis:// URL", default="fixtures/cassettes")
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
    session = _Session(config)
    config.stash[_SESSION] = session
    cli_mode = config.getoption("promptcache_mode")
    if cli_mode is not None:
        session.cli_mode = _mode(cli_mode, "--promptcache")
    # Bad ini values are one usage error at start-up, not an error in every test.
    ini_mode = config.getini("promptcache_mode")
    if ini_mode:
        _mode(ini_mode, "ini promptcache_mode")
    try:
        parse_enum(KeyPolicy, str(config.getini("promptcache_policy")), "ini promptcache_policy")
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


@dataclass
class _Session:
    config: pytest.Config
    cli_mode: Mode | None = None
    recorders: list[Recorder] = field(default_factory=list)
    passed: set[str] = field(default_factory=set)
    worker_totals: list[dict[str, float]] = field(default_factory=list)
    worker_notes: list[Note] = field(default_factory=list)
    cassettes_collected: set[str] = field(default_factory=set)
    modules_collected: set[str] = field(default_factory=set)
    _store: CassetteStore | None = None

    def store(self) -> CassetteStore:
        if self._store is None:
            # CLI > ini: the only settings without a marker or fixture form.
            spec = self.config.getoption("promptcache_store") or self.config.getini("promptcache_store")
            self._store = open_cassette_store(str(spec), self.config.rootpath)
        return self._store

    def prune(self) -> bool:
        cli = self.config.getoption("promptcache_prune")
        return bool(cli if cli is not None else self.config.getini("promptcache_prune"))


_SESSION = pytest.StashKey[_Session]()


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


def _settings(request: pytest.FixtureRequest, session: _Session) -> dict[str, Any] | None:
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
    scrub = set(DEFAULT_SCRUB_FIELDS) | {f.lower() for f in config.getini("promptcache_scrub_fields")}
    scrub |= {f.lower() for f in config.getoption("promptcache_scrub_fields") or []}
    scrub |= {str(f).lower() for f in fixture.get("scrub_fields") or []}
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
        "scrub_fields": frozenset(scrub),
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


_TRANSPORT_METHODS = (
    ("HTTPTransport", "handle_request", False),
    ("AsyncHTTPTransport", "handle_async_request", True),
)


@contextlib.contextmanager
def _intercept(recorder: Recorder) -> Iterator[None]:
    """Route the SDK transports of httpx2 and httpx (whichever are installed) through ``recorder``."""
    patched: list[tuple[type, str, Any]] = []
    try:
        for module_name in ("httpx2", "httpx"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for class_name, method, is_async in _TRANSPORT_METHODS:
                cls = getattr(module, class_name)
                original = cls.__dict__[method]
                patched.append((cls, method, original))
                setattr(cls, method, _routed(recorder, original, is_async=is_async))
        yield
    finally:
        for cls, method, original in reversed(patched):
            setattr(cls, method, original)


def _routed(recorder: Recorder, original: Any, *, is_async: bool) -> Any:  # noqa: ANN401
    """``original`` (a transport's send method) answered through ``recorder``; sync via the one adapter."""
    if is_async:

        @functools.wraps(original)
        async def handle_async_request(self: Any, request: Any) -> Any:  # noqa: ANN401
            return await recorder.handle(request, functools.partial(original, self))

        return handle_async_request

    @functools.wraps(original)
    def handle_request(self: Any, request: Any) -> Any:  # noqa: ANN401
        return handle_sync(recorder.handle, request, functools.partial(original, self))

    return handle_request


@pytest.fixture(autouse=True)
def _promptcache_recorder(request: pytest.FixtureRequest) -> Iterator[Recorder | None]:
    session = request.config.stash[_SESSION]
    settings = _settings(request, session)
    if settings is None or settings["mode"] is Mode.OFF:
        yield None
        return
    recorder = Recorder(test_id=request.node.nodeid, store=session.store(), **settings)
    session.recorders.append(recorder)
    with _intercept(recorder):
        yield recorder
    for note in recorder.notes:  # warned here, in the test's own thread, not inside a transport
        if note.kind == "scrubbed":
            warn_scrubbed(note)
    recorder.save(prune=session.prune() and request.node.nodeid in session.passed)


@pytest.fixture
def promptcache(_promptcache_recorder: Recorder | None) -> Recorder:
    """The active recorder: ``calls``, ``replayed``, ``recorded``, ``missing`` and ``usage`` of this test."""
    if _promptcache_recorder is None:
        pytest.fail("the promptcache fixture needs record/replay enabled (--promptcache, ini or marker)")
    return _promptcache_recorder


def pytest_itemcollected(item: pytest.Item) -> None:
    """Remember every collected test's cassette (deselected ones too), to spot cassettes of gone tests."""
    state = item.config.stash.get(_SESSION, None)
    if state is None:
        return
    marker = item.get_closest_marker("promptcache")
    own = cassette_name(item.nodeid)
    state.modules_collected.add(own.rpartition("/")[0])
    state.cassettes_collected.add(_cassette(marker.kwargs.get("cassette") if marker else None, item.nodeid))


def _stale_cassettes(session: _Session) -> list[str]:
    """Cassettes of tests that no longer exist, in modules this run collected (others are not judged)."""
    if not session.recorders or not session.modules_collected:
        return []
    try:
        names = session.store().names()
    except Exception:  # noqa: BLE001 - a report line must not fail the run; the store's error is shown
        return []
    return [
        n
        for n in names
        if n not in session.cassettes_collected and n.rpartition("/")[0] in session.modules_collected
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
    call: pytest.CallInfo[None],  # noqa: ARG001 - part of the hook's signature
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.passed:
        item.config.stash[_SESSION].passed.add(item.nodeid)
    return report


def _totals(session: _Session) -> dict[str, float]:
    recs = session.recorders
    cost = _cost(recs)
    return {
        "tests": len(recs),
        "replayed": sum(r.replayed for r in recs),
        "recorded": sum(r.recorded for r in recs),
        "missing": sum(r.missing for r in recs),
        "tokens": sum(sum(r.usage.values()) for r in recs),
        "cost": cost or 0.0,
        "priced": 0.0 if cost is None else 1.0,
        "unused": sum(len(r.unused()) for r in recs if r.test_id in session.passed and r.mode is Mode.REPLAY),
    }


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, each worker hands its totals to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    state = session.config.stash.get(_SESSION, None)
    if workeroutput is not None and state is not None:
        workeroutput["promptcache"] = _totals(state)
        workeroutput["promptcache_notes"] = [n.as_dict() for r in state.recorders for n in r.notes]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:  # noqa: ANN401, ARG001 - xdist's hook signature
    totals = getattr(node, "workeroutput", {}).get("promptcache")
    state = node.config.stash.get(_SESSION, None)
    if totals and state is not None:
        state.worker_totals.append(totals)
        notes = getattr(node, "workeroutput", {}).get("promptcache_notes") or []
        state.worker_notes.extend(Note(**n) for n in notes)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:  # noqa: ANN401
    session = config.stash.get(_SESSION, None)
    if session is None or (not session.recorders and not session.worker_totals):
        return
    parts = [_totals(session), *session.worker_totals]
    if not sum(p["tests"] for p in parts):
        return

    def total(name: str) -> float:
        return sum(p.get(name, 0) for p in parts)

    replayed, recorded, missing = int(total("replayed")), int(total("recorded")), int(total("missing"))
    tokens, unused = int(total("tokens")), int(total("unused"))
    line = (
        f"promptcache: {replayed} replayed, {recorded} recorded, {missing} missing; "
        f"{tokens} tokens not paid for"
    )
    if total("priced"):
        line += f" (~${total('cost'):.4f})"
    if unused:
        pruned = " (pruned)" if session.prune() else " (--promptcache-prune drops them)"
        line += f"; {unused} unused recordings{pruned}"
    stale = _stale_cassettes(session)
    if stale:
        if session.prune():
            for name in stale:
                session.store().update(name, lambda _current: None)
        pruned = " (pruned)" if session.prune() else " (--promptcache-prune deletes them)"
        line += f"; {len(stale)} cassettes of tests that no longer exist{pruned}"
    terminalreporter.write_sep("-", "promptcache")
    terminalreporter.write_line(line)
    notes = [n for r in session.recorders for n in r.notes] + session.worker_notes
    for extra in summary_lines(notes):
        terminalreporter.write_line(extra)


def _cost(recorders: list[Recorder]) -> float | None:
    """Money the replayed calls would have cost, when the price table knows at least one of their models."""
    table = PriceTable()
    total: float | None = None
    for rec in recorders:
        for recording in rec.replayed_recordings:
            inp, out = usage_of({"usage": recording.get("usage")})
            model = recording.get("model")
            value = table.cost(model if isinstance(model, str) else None, inp, out)
            if value is not None:
                total = (total or 0.0) + value
    return total
