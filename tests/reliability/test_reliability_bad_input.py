"""Bad input: hostile cassettes, 10 MB prompts, values with no JSON form, and unicode edge cases.

Hostile cassettes are loaded in child processes with an address-space limit, one per file, so a parser
that runs away in time or memory (or crashes) fails only its own case. An audit hook in each child records
unpickling, ``marshal`` and program execution: loading a cassette must never run anything.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from reliability_support import AUDITED, EchoUpstream, Rig, run_traffic

from promptcache._cassette import MAX_CASSETTE_BYTES, dump_cassette
from promptcache._keys import make_key

if TYPE_CHECKING:
    from collections.abc import Callable

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
CHILD_MEMORY = 1024 * 1024 * 1024  # address space of each loading child

CHILD = r"""
import json, resource, sys, time

from promptcache._cassette import load_cassette
from promptcache.exceptions import CassetteFormatError

resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
AUDITED = set(json.loads(sys.argv[2]))
events = []
sys.addaudithook(lambda event, args: events.append(event) if event in AUDITED else None)

started = time.monotonic()
try:
    load_cassette(sys.argv[1])
    outcome, message = "loaded", ""
except CassetteFormatError as exc:
    outcome, message = "CassetteFormatError", str(exc)
except BaseException as exc:
    outcome, message = type(exc).__name__, str(exc)[:500]
elapsed = time.monotonic() - started
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"outcome": outcome, "message": message, "seconds": elapsed, "rss_mb": rss,
                  "events": events}))
"""

VALID_REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Summarise our refund policy."}],
}
VALID_RECORDING: dict[str, Any] = {
    # The loader checks that a recording's key is its request's key.
    "key": make_key(VALID_REQUEST, agent_id="default", agent_version="0").digest,
    "endpoint": "chat.completions",
    "scope": {"namespace": "promptcache", "agent_id": "default", "agent_version": "0", "tenant": None},
    "recorded_at": "2026-01-01T00:00:00Z",
    "model": "gpt-4o-mini",
    "usage": {"prompt_tokens": 9, "completion_tokens": 12},
    "status": 200,
    "request": VALID_REQUEST,
    "response": {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Refunds are accepted within 30 days.\nKeep the receipt.\nNo cash.",
                },
                "finish_reason": "stop",
            }
        ],
    },
}
VALID = dump_cassette({"version": 1, "test": "tests/test_x.py::test_x", "recordings": [VALID_RECORDING]})


def _header(response: str) -> str:
    return (
        "version: 1\nrecordings:\n- key: " + "ab" * 32 + "\n  endpoint: chat.completions\n"
        f"  response: {response}\n"
    )


def _hostile(marker: Path) -> dict[str, bytes | None]:
    """File contents by case name; None means "a sparse file just over the size cap"."""
    laughs = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 12))
    return {
        "python-object-apply": _header(f"!!python/object/apply:os.system ['touch {marker}']").encode(),
        "python-object-new": _header(
            "!!python/object/new:subprocess.Popen [['touch', '" + str(marker) + "']]"
        ).encode(),
        "python-name": _header("!!python/name:os.system").encode(),
        "python-module": _header("!!python/module:os").encode(),
        "alias-bomb": ("version: 1\nl0: &l0 [lol]\n" + laughs + "recordings: []\n").encode(),
        "truncated-mid-answer": VALID[: VALID.index("Keep the receipt") + 4].encode(),
        "truncated-after-response-key": VALID[: VALID.index("  response:") + len("  response:\n")].encode(),
        "truncated-mid-quote": VALID[: VALID.index("'2026-01-01") + 5].encode(),
        "not-utf-8": VALID.encode().replace(b"Refunds", b"Refunds \xff\xfe\xc0"),
        "deep-nesting": _header("[" * 100_000).encode(),
        "over-the-size-cap": None,
        "many-nodes": (_header("") + "  - [1]\n" * 190_000).encode(),
        "binary-tag": _header("!!binary AAAAAAAA").encode(),
        "set-tag": _header("!!set {a, b}").encode(),
        "non-string-keys": _header("{1: one, 2: two}").encode(),
    }


HOSTILE = list(_hostile(Path("m")))


@dataclass(frozen=True)
class Loaded:
    path: Path
    outcome: str
    message: str
    seconds: float
    rss_mb: int
    events: list[str]
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Loaded]:
    """Every hostile cassette, loaded by ``load_cassette`` in its own memory-limited child process."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "code-ran"
    child = folder / "child.py"
    child.write_text(CHILD)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    procs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    for name, content in _hostile(marker).items():
        path = folder / f"{name}.yaml"
        if content is None:
            with path.open("wb") as handle:
                handle.truncate(MAX_CASSETTE_BYTES + 1)  # sparse: costs no disk
        else:
            path.write_bytes(content)
        args = [sys.executable, str(child), str(path), json.dumps(sorted(AUDITED)), str(CHILD_MEMORY)]
        procs[name] = (path, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    results: dict[str, Loaded] = {}
    for name, (path, proc) in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        doc: dict[str, Any] = {"outcome": "crashed", "message": "", "seconds": -1.0}
        if out.strip():
            doc = json.loads(out)
        results[name] = Loaded(
            path=path,
            outcome=doc["outcome"],
            message=doc["message"],
            seconds=doc["seconds"],
            rss_mb=doc.get("rss_mb", -1),
            events=doc.get("events", []),
            returncode=proc.returncode,
            stderr=err.decode(errors="replace")[-500:],
        )
    results["_marker"] = Loaded(marker, "", "", 0.0, 0, [], 0, "")
    return results


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_cassette_is_refused_clearly_in_bounded_time_and_memory(
    loaded: dict[str, Loaded], case: str
) -> None:
    """A hostile cassette (python tags, an alias bomb, truncation, non-UTF-8, deep nesting, huge size,
    non-JSON types) raises CassetteFormatError naming the file, within a bounded address space (and the
    loading child's hang guard), and runs nothing; 1.5 MB of tiny nodes is refused the same way or loaded."""
    result = loaded[case]
    detail = f"{result.outcome}: {result.message[:200]} ({result.seconds:.2f} s, {result.rss_mb} MB)"
    detail += result.stderr
    assert result.returncode == 0, detail  # not killed, no crash
    assert result.events == []  # nothing unpickled, marshalled or executed
    assert not loaded["_marker"].path.exists()
    if case == "many-nodes" and result.outcome == "loaded":
        return  # plain data: loading it is fine (how fast is the benchmarks' business)
    assert result.outcome == "CassetteFormatError", detail
    assert str(result.path) in result.message, detail


def test_a_large_but_plain_cassette_loads_in_bounded_time(tmp_path: Path) -> None:
    """A 20 MB cassette of ordinary recorded text (under the size cap) loads, whole."""
    big = dict(VALID_RECORDING, response={"choices": [{"message": {"content": "word " * 4_000_000}}]})
    path = tmp_path / "big.yaml"
    path.write_text(dump_cassette({"version": 1, "test": "t", "recordings": [big]}))
    from promptcache._cassette import load_cassette  # noqa: PLC0415

    doc = load_cassette(path)
    assert doc is not None
    assert len(doc["recordings"][0]["response"]["choices"][0]["message"]["content"]) == 20_000_000


def test_the_plugin_names_a_hostile_cassette_and_runs_nothing(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """In replay mode, a test whose cassette carries a python tag errors with a message naming the file,
    and the tag's command never runs."""
    marker = tmp_path / "code-ran"
    pytester.makepyfile(test_hostile="def test_calls_nothing():\n    assert True\n")
    cassette = pytester.path / "cassettes" / "test_hostile" / "test_calls_nothing.yaml"
    cassette.parent.mkdir(parents=True)
    cassette.write_text(_header(f"!!python/object/apply:os.system ['touch {marker}']"))
    result = pytester.runpytest(
        "--promptcache=replay", "--promptcache-store=cassettes", "-p", "no:cacheprovider", "-p", "no:asyncio"
    )
    result.assert_outcomes(errors=1)
    assert str(cassette) in result.stdout.str()
    assert "CassetteFormatError" in result.stdout.str()
    assert not marker.exists()


# -- big and odd requests, through a real Redis ----------------------------------------------------------


def _ten_mb(tail: str) -> str:
    # Distinct lines (not one repeated character) so nothing downstream can shortcut the size.
    return "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(190_000)) + tail


@pytest.mark.redis
@pytest.mark.anyio
async def test_ten_megabyte_prompts_are_keyed_answered_and_bounded(redis_url: str) -> None:
    """10 MB prompts are keyed, answered, stored when the entry fits and hit afterwards;
    prompts differing only in the last character get different answers; an answer over the entry size
    cap is returned but not stored."""
    rig = Rig.open(redis_url, store_timeout=2.0)
    try:
        first, second = _ten_mb("A"), _ten_mb("B")
        assert len(first.encode()) > 10_000_000
        both = [("tenant-1", first), ("tenant-1", second)]
        # The guard only keeps a runaway (say, quadratic) keying from hanging the suite; it claims no speed.
        await asyncio.wait_for(run_traffic(rig, both, concurrency=2), 120)
        await rig.settle()
        await asyncio.wait_for(run_traffic(rig, both, concurrency=2), 120)
        stats = rig.cache.stats()
        assert (stats.misses, stats.hits) == (2, 2)

        rig.upstream.pad = 2_000_000  # a 2 MB answer, over the default 1 MB entry cap
        await rig.ask("tenant-1", "short question, long answer")
        await rig.settle()
        await rig.ask("tenant-1", "short question, long answer")
        stats = await rig.finish()
        assert stats.oversize == 2
        assert rig.upstream.completed == 4
    finally:
        await rig.close()


class _Weird:
    pass


NO_JSON_FORM: dict[str, Callable[[], Any]] = {
    "nan": lambda: float("nan"),
    "infinity": lambda: float("inf"),
    "set": lambda: {1, 2},
    "bytes": lambda: b"\x00\x01",
    "callable": lambda: print,
    "object": _Weird,
    "class": lambda: _Weird,
    "lone-surrogate": lambda: "\ud800",
    "decimal": lambda: decimal.Decimal("0.1"),
    "datetime": lambda: datetime(2026, 1, 1, tzinfo=UTC),
    "non-string-key": lambda: {1: "one"},
    "deep-nesting": lambda: _nested(100_000),
}


def _nested(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


@pytest.mark.redis
@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(NO_JSON_FORM))
async def test_values_with_no_json_form_bypass_the_cache_and_are_answered(redis_url: str, kind: str) -> None:
    """A request parameter with no canonical JSON form (NaN, a set, bytes, a callable, a lone surrogate,
    deep nesting ...) makes the request a counted bypass: answered from upstream, nothing stored."""
    rig = Rig.open(redis_url, upstream=EchoUpstream(), store_timeout=1.0)
    try:
        for _ in range(2):
            body = await rig.ask("tenant-1", f"odd {kind}", extra={"logit_bias": {"x": NO_JSON_FORM[kind]()}})
            assert body is not None
        stats = await rig.finish()
        assert (stats.bypasses, stats.uncacheable, stats.hits, stats.misses) == (2, 2, 0, 0)
        assert rig.upstream.completed == 2
        assert await _count_keys(redis_url) == 0
    finally:
        await rig.close()


async def _count_keys(url: str) -> int:
    import redis.asyncio as aioredis  # noqa: PLC0415

    raw = aioredis.Redis.from_url(url)
    try:
        return int(await raw.dbsize())
    finally:
        await raw.aclose()


# Pairs that look alike (or identical) to a person but are different requests.
LOOKALIKES = {
    "nfc-vs-nfd": ("caf\u00e9", "cafe\u0301"),
    "zero-width-space": ("refund", "re\u200bfund"),
    "zero-width-joiner": ("\U0001f468\u200d\U0001f4bb", "\U0001f468\U0001f4bb"),
    "rtl-override": ("pay 100", "pay \u202e001"),
    "nul": ("stop", "stop\x00"),
    "bom": ("hello", "\ufeffhello"),
    "nbsp": ("a b", "a\u00a0b"),
}


@pytest.mark.redis
@pytest.mark.anyio
@pytest.mark.parametrize("pair", list(LOOKALIKES))
async def test_unicode_lookalikes_are_distinct_requests_and_tenants(redis_url: str, pair: str) -> None:
    """Look-alike text (NFC/NFD, zero-width characters, an RTL override, NUL, a BOM, NBSP) gives distinct
    keys, as prompts and as tenant ids: each gets its own answer, stored and hit separately."""
    one, two = LOOKALIKES[pair]
    rig = Rig.open(redis_url, store_timeout=1.0)
    try:
        asks = [("tenant", one), ("tenant", two), (one, "same prompt"), (two, "same prompt")]
        await run_traffic(rig, asks, concurrency=4)
        await rig.settle()
        await run_traffic(rig, asks * 2, concurrency=8)
        stats = await rig.finish()
        assert rig.upstream.completed == 4
        assert (stats.misses, stats.hits) == (4, 8)
        assert await _count_keys(redis_url) == 4
    finally:
        await rig.close()
