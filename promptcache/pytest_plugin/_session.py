"""The plugin's session: store, interception, placeholder credentials, and what the run saw.

Interception: with a mode set for the whole run (``--promptcache`` or the ``promptcache_mode`` ini key),
the SDK transports are patched once, from configuration to the end of the session, so an LLM call from
a fixture of any scope, or made at import, is replayed (or fails as a miss) like one from a test. A call
while a test's recorder is active goes to that test; any other call (a module- or session-scoped
fixture, collection) goes to the session cassette, ``_session``. Without a global mode (a marker or the
``promptcache_config`` fixture enables single tests) the transports are patched around each such test.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pytest

from promptcache.exceptions import ConfigError
from promptcache.integrations._recording import recording
from promptcache.integrations._sync import handle_sync
from promptcache.pytest_plugin._prune import SESSION_CASSETTE, Facts, Outcome, judge, module_of
from promptcache.pytest_plugin._recorder import Mode, Recorder
from promptcache.pytest_plugin._stores import CassetteStore, open_cassette_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from promptcache.pytest_plugin._content import Note

__all__ = ["PLACEHOLDER_CREDENTIALS", "Session", "intercept", "placeholder_credentials"]

# Replay sends nothing, but the SDKs refuse to build a client without a key. These stand in when the
# environment has none (never a real credential shape, so no scrubbing rule ever sees one).
PLACEHOLDER_CREDENTIALS: Final = {
    "OPENAI_API_KEY": "promptcache-replay-placeholder",
    "ANTHROPIC_API_KEY": "promptcache-replay-placeholder",
}


@contextlib.contextmanager
def placeholder_credentials() -> Iterator[None]:
    """Set the placeholder for each SDK key variable that is unset; remove exactly those afterwards."""
    added = [name for name in PLACEHOLDER_CREDENTIALS if name not in os.environ]
    for name in added:
        os.environ[name] = PLACEHOLDER_CREDENTIALS[name]
    try:
        yield
    finally:
        for name in added:
            if os.environ.get(name) == PLACEHOLDER_CREDENTIALS[name]:
                del os.environ[name]


_TRANSPORT_METHODS = (
    ("HTTPTransport", "handle_request", False),
    ("AsyncHTTPTransport", "handle_async_request", True),
)


@contextlib.contextmanager
def intercept(route: Callable[[], Recorder | None]) -> Iterator[None]:
    """Route the SDK transports of httpx2 and httpx (whichever are installed) through ``route()``'s
    recorder at each request; None sends the request untouched. Meanwhile a client wrapped by
    promptcache sends every request on (its production cache neither answers nor stores)."""
    stack = contextlib.ExitStack()
    patched: list[tuple[type, str, Any]] = []
    try:
        # Wrapped clients' own caches step aside for a recorder, unless its test keeps them.
        stack.enter_context(recording(lambda: _steps_aside(route())))
        for module_name in ("httpx2", "httpx"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for class_name, method, is_async in _TRANSPORT_METHODS:
                cls = getattr(module, class_name)
                original = cls.__dict__[method]
                patched.append((cls, method, original))
                setattr(cls, method, _routed(route, original, is_async=is_async))
        yield
    finally:
        for cls, method, original in reversed(patched):
            setattr(cls, method, original)
        stack.close()


def _steps_aside(recorder: Recorder | None) -> bool:
    return recorder is not None and not recorder.production_cache


async def _answer(recorder: Recorder, request: Any, send: Any) -> Any:  # noqa: ANN401
    try:
        return await recorder.handle(request, send)
    except pytest.fail.Exception as exc:
        # Kept on the recorder: the test's report lists every miss, whatever the test code (a task
        # group, an SDK wrapper, a broad except) did with the exception.
        recorder.miss_messages.append(str(exc.msg))
        raise


def _routed(route: Callable[[], Recorder | None], original: Any, *, is_async: bool) -> Any:  # noqa: ANN401
    """``original`` (a transport's send method) answered through the routed recorder."""
    if is_async:

        @functools.wraps(original)
        async def handle_async_request(self: Any, request: Any) -> Any:  # noqa: ANN401
            recorder = route()
            if recorder is None:
                return await original(self, request)
            return await _answer(recorder, request, functools.partial(original, self))

        return handle_async_request

    @functools.wraps(original)
    def handle_request(self: Any, request: Any) -> Any:  # noqa: ANN401
        recorder = route()
        if recorder is None:
            return original(self, request)
        return handle_sync(functools.partial(_answer, recorder), request, functools.partial(original, self))

    return handle_request


@dataclass
class Session:
    """One pytest run's plugin state (one per process: the controller and each xdist worker)."""

    config: pytest.Config
    cli_mode: Mode | None = None
    global_mode: Mode | None = None  # set on the command line or in ini: interception for the session
    recorders: list[Recorder] = field(default_factory=list)
    passed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    worker_totals: list[dict[str, float]] = field(default_factory=list)
    worker_notes: list[Note] = field(default_factory=list)  # what workers left out or scrubbed
    facts: Facts = field(default_factory=Facts)
    narrowed: set[Path] = field(default_factory=set)  # files named with ::test on the command line
    outcome: Outcome | None = None
    in_test: bool = False
    active: Recorder | None = None
    session_recorder: Recorder | None = None
    session_settings: dict[str, Any] = field(default_factory=dict)
    _store: CassetteStore | None = None
    _store_error: str | None = None
    _exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def store(self) -> CassetteStore:
        """The cassette store, opened once; ConfigError (with the same message each time) if unusable."""
        if self._store_error is not None:
            raise ConfigError(self._store_error)
        if self._store is None:
            # CLI > ini: the only settings without a marker or fixture form.
            spec = self.config.getoption("promptcache_store") or self.config.getini("promptcache_store")
            prefix = self.config.getoption("promptcache_redis_prefix") or self.config.getini(
                "promptcache_redis_prefix"
            )
            try:
                store = open_cassette_store(str(spec), self.config.rootpath, str(prefix) if prefix else None)
                store.check()
            except ConfigError as exc:
                self._store_error = str(exc)
                raise
            self._store = store
        return self._store

    def prune(self) -> bool:
        cli = self.config.getoption("promptcache_prune")
        return bool(cli if cli is not None else self.config.getini("promptcache_prune"))

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Patch the transports for the whole session when a mode is set globally; replay also gets
        placeholder credentials. Raises UsageError when the store cannot be used."""
        for arg in self.config.args:
            if "::" in arg:
                self.narrowed.add((self.config.invocation_params.dir / arg.split("::", 1)[0]).resolve())
        if self.global_mode is None or self.global_mode is Mode.OFF:
            return
        try:
            self.store()
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        if self.global_mode is Mode.REPLAY:
            self._exits.enter_context(placeholder_credentials())
        self._exits.enter_context(intercept(self._route))

    def stop(self) -> None:
        self._exits.close()

    def _route(self) -> Recorder | None:
        if self.in_test:
            return self.active
        if self.session_recorder is None:
            mode = self.global_mode or Mode.REPLAY
            # Rewrite would drop what fixtures of tests not run this time recorded: record replaces
            # only the recordings of the requests made.
            self.session_recorder = Recorder(
                test_id=SESSION_CASSETTE,
                cassette=SESSION_CASSETTE,
                mode=Mode.RECORD if mode is Mode.REWRITE else mode,
                store=self.store(),
                **self.session_settings,
            )
        return self.session_recorder

    @contextlib.contextmanager
    def test_scope(self, recorder: Recorder | None) -> Iterator[None]:
        """While a test runs, its calls go to ``recorder`` (None: sent untouched)."""
        if self.global_mode is None or self.global_mode is Mode.OFF:
            if recorder is None:
                yield
                return
            with intercept(lambda: recorder):
                yield
            return
        self.in_test, self.active = True, recorder
        try:
            yield
        finally:
            self.in_test, self.active = False, None

    def collected(self, item: pytest.Item, cassette: str) -> None:
        """Remember a collected test (deselected ones too) and its cassette."""
        self.facts.users.setdefault(cassette, set()).add(item.nodeid)
        module = module_of(item.nodeid)
        self.facts.modules.add(module)
        if item.path.resolve() in self.narrowed:
            self.facts.partial.add(module)

    def finish(self) -> dict[str, Any]:
        """Save the session cassette; this process's facts and reports, for the controller."""
        if self.session_recorder is not None:
            self.session_recorder.save()
        reports = []
        for rec in self.recorders:
            report = rec.report()
            report["passed"] = rec.test_id in self.passed and rec.test_id not in self.failed
            reports.append(report)
        self.facts.reports.extend(reports)
        return self.facts.export()

    def conclude(self) -> None:
        """Judge the cassettes (controller, or the only process); a store error becomes a report line."""
        if not self.facts.reports:
            return
        try:
            self.outcome = judge(self.store(), self.facts, prune=self.prune())
        except Exception as exc:  # noqa: BLE001 - the summary must not fail the run; it names the error
            self.outcome = Outcome(error=f"{type(exc).__name__}: {exc}")

    def all_recorders(self) -> list[Recorder]:
        return [*self.recorders, *([self.session_recorder] if self.session_recorder else [])]
