"""The recorder behind one test: replays recordings by the production cache key, records what is missing.

Interception happens at the SDKs' HTTP transports (``httpx2`` and ``httpx``: ``HTTPTransport`` and
``AsyncHTTPTransport``), so clients built deep inside the code under test are covered without injection.
Only requests to the cached endpoints are intercepted; everything else passes through untouched.

A replay miss fails the test with :func:`pytest.fail`, whose exception derives from ``BaseException``:
the SDKs' retry loops catch ``Exception``, so the miss reaches pytest at once, with no retries and no
backoff sleeps.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from promptcache._cassette import (
    CASSETTE_FORMAT,
    DEFAULT_SCRUB_FIELDS,
    is_stream_recording,
    key_schema_of,
    recorded_events,
    request_secrets,
    scrub,
    scrub_joined,
    scrub_request,
    scrub_values,
)
from promptcache._cassette_checks import ALLOWED_FIELD
from promptcache._convert import compact_stream, shape_stream, wants_usage
from promptcache._gate import stream_summary, usage_of
from promptcache._keys import (
    DEFAULT_AGENT_VERSION,
    DEFAULT_NAMESPACE,
    SCHEMA_VERSION,
    CacheKey,
    KeyPolicy,
    make_key,
)
from promptcache._route import route_record
from promptcache._scope import Scope
from promptcache.exceptions import CassetteFormatError, ServerStateError, UncacheableRequestError
from promptcache.integrations._http import (
    event_stream_response,
    is_event_stream,
    json_response,
    plan_request,
    response,
    tee,
)
from promptcache.pytest_plugin._content import Note, not_recorded
from promptcache.pytest_plugin._merge import cassette_tests, merge, tests_of
from promptcache.pytest_plugin._report import miss_message
from promptcache.pytest_plugin._stable import Stabiliser
from promptcache.pytest_plugin._stores import cassette_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from promptcache.pytest_plugin._stores import CassetteStore

__all__ = ["Mode", "Recorder", "slot_of"]


class Mode(StrEnum):
    """Record/replay modes (validated at the boundary; the error lists these values)."""

    REPLAY = "replay"  # no network; a miss fails the test
    AUTO = "auto"  # replay, record what is missing
    RECORD = "record"  # always call upstream and overwrite the recordings of the requests made
    REWRITE = "rewrite"  # drop the test's recordings, then record
    OFF = "off"


@dataclass
class Recorder:
    """What one test recorded and replayed; exposed to tests as the ``promptcache`` fixture.

    Attributes:
        calls: Intercepted LLM requests.
        replayed: Answered from the cassette.
        recorded: Sent upstream and recorded.
        missing: Replay misses (each failed the test).
        server_state: Requests that refer to mutable server-side state, sent upstream unrecorded (a
            failure in replay mode) because the test did not opt in with ``cache_server_state``.
        usage: Tokens of the replayed answers (what the test did not pay for).
        notes: Answers not recorded (the production write gate refused them) and recorded answers that
            scrubbing changed; reported in the terminal summary.
    """

    test_id: str
    cassette: str
    mode: Mode
    store: CassetteStore
    namespace: str = DEFAULT_NAMESPACE
    agent_id: str = "default"
    agent_version: str = DEFAULT_AGENT_VERSION
    policy: KeyPolicy = KeyPolicy.TRIM
    upstream: str | None = None
    cache_server_state: bool = False
    scrub_fields: frozenset[str] = DEFAULT_SCRUB_FIELDS
    record_errors: bool = False  # record every answer as it came, errors included
    allow_secrets: frozenset[str] = frozenset()  # values kept on purpose: never scrubbed, never refused
    calls: int = 0
    replayed: int = 0
    recorded: int = 0
    missing: int = 0
    server_state: int = 0
    usage: Counter[str] = field(default_factory=Counter)
    replayed_recordings: list[dict[str, Any]] = field(default_factory=list)
    _existing: list[dict[str, Any]] = field(default_factory=list)
    _new: list[dict[str, Any]] = field(default_factory=list)
    _positions: Counter[str] = field(default_factory=Counter)
    notes: list[Note] = field(default_factory=list)
    _stable: Stabiliser | None = None
    # The plugin's lifecycle: the cassette as last written by save(), and every replay miss's message.
    _view: list[dict[str, Any]] | None = None
    miss_messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._old_schema: int | None = None
        if self.mode is not Mode.REWRITE:
            doc = self.store.load(self.cassette)
            self._existing = list(doc["recordings"]) if doc else []
            if doc and key_schema_of(doc) != SCHEMA_VERSION and self._existing:
                self._old_schema = key_schema_of(doc)
        # Recordings by (key, kind), in order: a replayed call is one dict lookup, however big the cassette.
        self._index: dict[str, list[dict[str, Any]]] = {}
        for rec in self._existing:
            self._index.setdefault(_slot(str(rec.get("key")), stream=is_stream_recording(rec)), []).append(
                rec
            )

    # -- decisions (no I/O) -----------------------------------------------------------------------

    def _scope(self) -> Scope:
        return Scope(
            agent_id=self.agent_id,
            agent_version=self.agent_version,
            policy=self.policy,
            upstream=self.upstream,
            cache_server_state=self.cache_server_state,
        )

    def _key(self, request: Any) -> tuple[CacheKey, dict[str, Any]] | None:  # noqa: ANN401
        plan = plan_request(request, self._scope())
        if plan is None:
            return None
        try:
            key = make_key(
                plan.body,
                namespace=self.namespace,
                agent_id=plan.scope.agent_id,
                agent_version=plan.scope.agent_version,
                tenant=plan.scope.tenant,
                endpoint=plan.endpoint,
                policy=self.policy,
                route=plan.route,
                server_state=self.cache_server_state,
            )
        except ServerStateError as exc:
            self.server_state += 1
            if self.mode is Mode.REPLAY:
                self.missing += 1
                pytest.fail(
                    f"promptcache: {self.test_id} sent a request that refers to mutable server-side state "
                    f"({exc.reason}); it is neither recorded nor replayed unless the test opts in with "
                    "@pytest.mark.promptcache(cache_server_state=True) "
                    "(or ini promptcache_cache_server_state)",
                    pytrace=False,
                )
            return None
        except UncacheableRequestError:
            return None
        return key, plan.body

    def _replay(self, key: CacheKey, *, stream: bool, usage: bool = False) -> dict[str, Any] | None:
        """The next recording for ``key`` in order (the n-th identical request gets the n-th answer).

        A streaming request replays only a recorded stream and a plain one only a recorded body (exact
        kinds, unlike the production cache's conversions); the other kind is a miss. A chat stream
        recorded without usage does not answer a request asking for it (``usage``): it is passed over
        for a later recording of the key, or is a miss.
        """
        if self.mode in (Mode.RECORD, Mode.REWRITE):
            return None
        slot = _slot(key.digest, stream=stream)
        matches = self._index.get(slot, ())
        position = self._positions[slot]
        fits = [at for at in range(position, len(matches)) if not stream or _fits(key, matches[at], usage)]
        if not fits:
            if self.mode is Mode.AUTO and position < len(matches):
                # Passed over (the wrong usage shape): what auto records now goes after them, not onto them.
                self._positions[slot] = len(matches)
            return None
        self._positions[slot] = fits[0] + 1
        self.replayed += 1
        recording = matches[fits[0]]
        self.replayed_recordings.append(recording)
        inp, out = usage_of({"usage": recording.get("usage")})
        self.usage.update(input_tokens=inp, output_tokens=out)
        return recording

    def _miss(self, key: CacheKey, *, stream: bool, usage: bool = False) -> None:
        if self.mode is Mode.REPLAY:
            self.missing += 1
            request = scrub(orjson.loads(key.canonical), self.scrub_fields)
            slot = _slot(key.digest, stream=stream)
            message = miss_message(
                test_id=self.test_id,
                where=self.store.describe(self.cassette),
                key=key,
                request=request,
                recordings=self._existing,
                times_seen=self._positions[slot],
            )
            if stream and usage and self._index.get(slot):
                message += (
                    "\n  a stream of this request was recorded without usage, and this request asks for it"
                    " (stream_options.include_usage): re-record it with usage"
                )
            pytest.fail(message, pytrace=False)

    def _record(
        self,
        key: CacheKey,
        status: int,
        body: Any = None,  # noqa: ANN401
        chunks: list[Any] | None = None,
        *,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        canonical = orjson.loads(key.canonical)
        refused = None if self.record_errors else not_recorded(key.endpoint, status, body, chunks, canonical)
        if refused is not None:  # what production would not cache is not recorded either
            self.notes.append(Note(self.test_id, "skipped", refused[0], error=refused[1]))
            return
        source = body if chunks is None else stream_summary(key.endpoint, chunks)
        request, cut = scrub_request(canonical, self.scrub_fields, allowed=self.allow_secrets)
        # Answers are scrubbed only of the credentials this request carried (headers, cookies, query,
        # and what was cut from its body): a provider echoing one gets it cut; other text stays as
        # answered, so the replay returns what the live call did.
        secrets = (secrets | cut) - self.allow_secrets
        recording: dict[str, Any] = {
            "key": key.digest,
            "endpoint": key.endpoint.value,
            "scope": {
                "namespace": key.namespace,
                "agent_id": key.agent_id,
                "agent_version": key.agent_version,
                "tenant": key.tenant,
            },
            "recorded_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": source.get("model") if isinstance(source, dict) else None,
            "usage": source.get("usage") if isinstance(source, dict) else None,
            "status": status,
            "request": request,
        }
        if key.route is not None:  # what besides the request selected the answer (key schema v2)
            recording["route"] = route_record(key.route)
        answer = chunks if chunks is not None else body
        scrubbed = scrub_values(answer, secrets)
        if chunks is not None:
            scrubbed = scrub_joined(scrubbed, secrets)
            compact = compact_stream(key.endpoint, scrubbed)  # the answer readable, not a chunk each
            if compact is None:
                recording["chunks"] = scrubbed
            else:
                recording["stream"] = compact
        else:
            recording["response"] = scrubbed
        if scrubbed != answer:
            self.notes.append(Note(self.test_id, "scrubbed", "a credential the request carried"))
        # Providers echo what they were sent (an org or project id in a 401, a cookie, a query token):
        # the exact values of this request's credentials are cut from everything recorded.
        recording = scrub_values(recording, secrets) if secrets else recording
        if self.allow_secrets:
            text = orjson.dumps(recording).decode()
            kept = sorted(v for v in self.allow_secrets if v in text)
            if kept:
                recording[ALLOWED_FIELD] = kept
        self._stabiliser().add(recording, _slot(key.digest, stream=chunks is not None), self._new)
        self.recorded += 1

    def _stabiliser(self) -> Stabiliser:
        """Re-recording identical content keeps the previous recording byte for byte (``_stable``)."""
        if self._stable is None:
            previous = self._existing
            if self.mode is Mode.REWRITE:
                try:
                    doc = self.store.load(self.cassette)
                except CassetteFormatError:
                    doc = None  # a broken cassette has nothing worth keeping
                previous = list(doc["recordings"]) if doc else []
            by_slot: dict[str, list[dict[str, Any]]] = {}
            for rec in previous:
                by_slot.setdefault(_slot(str(rec.get("key")), stream=is_stream_recording(rec)), []).append(
                    rec
                )
            self._stable = Stabiliser(by_slot)
        return self._stable

    def unused(self) -> list[dict[str, Any]]:
        """Existing recordings this test did not replay (meaningful after a passing replay run)."""
        left = Counter(self._positions)
        out = []
        for rec in self._existing:
            slot = slot_of(rec)
            if left[slot] > 0:
                left[slot] -= 1
            else:
                out.append(rec)
        return out

    def save(self) -> None:
        """Write what this test recorded (and, in auto mode, its use of other tests' recordings).

        How the test's recordings join a cassette other tests may share is :func:`_merge.merge`;
        nothing is pruned here (the session decides that, once it knows every user of a cassette).
        """
        unattributed = self.mode is Mode.AUTO and any(
            self.test_id not in (tests_of(r) or ()) for r in self.replayed_recordings
        )
        if not self._new and self.mode is not Mode.REWRITE and not unattributed:
            return
        new, replayed = list(self._new), Counter(self._positions)
        own = self.cassette == cassette_name(self.test_id)

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            recordings = merge(
                list(current["recordings"]) if current else [],
                new,
                test=self.test_id,
                mode=self.mode.value,
                own=own,
                replayed=replayed,
                slot_of=slot_of,
            )
            self._view = recordings
            if not recordings:
                return None
            return {
                "version": CASSETTE_FORMAT,
                "key_schema": SCHEMA_VERSION,
                "tests": cassette_tests(recordings),
                "recordings": recordings,
            }

        self.store.update(self.cassette, change)

    def report(self) -> dict[str, Any]:
        """What the session needs to judge this test's cassette: plain data (it crosses xdist workers).

        ``consumed``: per slot, how many recordings the test's calls reach (replayed and recorded);
        ``totals``: per slot, the recordings in the cassette as the test last saw it; ``named``: the
        tests that cassette names; ``legacy``: it holds recordings without attribution.
        """
        consumed = Counter(self._positions)
        consumed.update(slot_of(r) for r in self._new)
        view = self._existing if self._view is None else self._view
        return {
            "test": self.test_id,
            "cassette": self.cassette,
            "mode": self.mode.value,
            "consumed": dict(consumed),
            "totals": dict(Counter(slot_of(r) for r in view)),
            "named": cassette_tests(view),
            "legacy": any(tests_of(r) is None for r in view),
        }

    # -- I/O: one async shell; sync transports reach it through integrations._sync ------------------

    async def handle(self, request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:  # noqa: ANN401
        """Answer ``request`` from the cassette, or with ``send(request)`` (the real transport), recording."""
        found = self._key(request)
        if found is None:
            return await send(request)
        if self._old_schema is not None:
            self.missing += 1
            where = self.store.describe(self.cassette)
            pytest.fail(
                f"promptcache: {where} was recorded under key schema v{self._old_schema}; this promptcache "
                f"keys requests with schema v{SCHEMA_VERSION} (the upstream and answer-selecting headers "
                f"joined the key), so none of its recordings can match. Re-key it offline, keeping every "
                f"response byte for byte:\n  promptcache migrate {where} --upstream <alias or URL>\n"
                f"(see `promptcache migrate --help`), or re-record: "
                f"pytest --promptcache=rewrite {self.test_id}",
                pytrace=False,
            )
        key, body = found
        self.calls += 1
        stream = body.get("stream") is True
        usage = wants_usage(key.endpoint, body)
        recording = self._replay(key, stream=stream, usage=usage)
        if recording is not None:
            return _replay_response(request, recording, key, usage=usage)
        self._miss(key, stream=stream, usage=usage)
        upstream = await send(request)
        secrets = request_secrets(request)
        if stream and is_event_stream(upstream):

            async def on_complete(events: list[dict[str, Any]]) -> None:
                self._record(key, 200, chunks=events, secrets=secrets)

            return tee(request, upstream, key.endpoint, on_complete)
        await upstream.aread()
        self._record_response(key, upstream, secrets)
        return upstream

    def _record_response(self, key: CacheKey, response: Any, secrets: frozenset[str]) -> None:  # noqa: ANN401
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = response.text
        self._record(key, response.status_code, body=body, secrets=secrets)


def _slot(digest: str, *, stream: bool) -> str:
    """Replay positions are counted per key and per kind (stream or body)."""
    return f"{digest}:{'stream' if stream else 'body'}"


def slot_of(recording: dict[str, Any]) -> str:
    """The replay slot a recording answers in (its key and kind)."""
    return _slot(str(recording.get("key", "")), stream=is_stream_recording(recording))


def _fits(key: CacheKey, recording: dict[str, Any], usage: bool) -> bool:  # noqa: FBT001
    """Whether a stream recording can answer in the shape asked (with or without chat usage)."""
    events = recorded_events(recording)
    return events is not None and shape_stream(key.endpoint, events, include_usage=usage) is not None


def _replay_response(request: Any, recording: dict[str, Any], key: CacheKey, *, usage: bool) -> Any:  # noqa: ANN401
    status = int(recording.get("status", 200))
    events = recorded_events(recording)
    if events is not None:
        shaped = shape_stream(key.endpoint, events, include_usage=usage)
        return event_stream_response(request, events if shaped is None else shaped, "replay")
    if isinstance(recording.get("response"), str):
        headers = [("x-promptcache", "replay"), ("content-type", "text/plain")]
        return response(request, status, headers, recording["response"].encode())
    return json_response(request, recording.get("response"), "replay", status=status)
