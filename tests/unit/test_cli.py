"""The ``promptcache`` command on the embedded SQLite store: each command's output, exit code, bad input."""

from __future__ import annotations

import argparse
import asyncio
import copy
import io
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from promptcache import CacheKey, PromptCache, make_key
from promptcache._config import url_from_env
from promptcache._entry import Entry, encode_entry, is_compressed, scope_of
from promptcache._keys import SCHEMA_VERSION, agent_id_of, digest_of, namespace_prefix, store_key_for
from promptcache.cli import build_parser, main
from promptcache.cli._support import Progress, json_diff
from promptcache.metrics import PrometheusHook, render_prometheus

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from helpers import Run

NS = "app"
MODEL = "gpt-4o-mini"


def request_for(prompt: str, model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        "temperature": 0,
    }


def answer(prompt: str, model: str = MODEL, pad: int = 0) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{len(prompt)}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"re: {prompt}" + "x" * pad},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def stream_chunks(text: str) -> list[dict[str, Any]]:
    return [
        {"event": None, "data": {"model": MODEL, "choices": [{"index": 0, "delta": {"content": text}}]}},
        {
            "event": None,
            "data": {"model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        },
        {"event": None, "text": "[DONE]"},
    ]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store URL in the test's own directory."""
    return f"sqlite:///{tmp_path / 'cache.db'}"


def populate(url: str, *, keep_request: bool = True, ttl: float = 3600) -> list[CacheKey]:
    """Store a mix of entries: two agents, two models, a tenant with odd characters, a big (compressed)
    answer and a stream."""

    async def go() -> list[CacheKey]:
        cache = PromptCache.from_url(url, namespace=NS, keep_request=keep_request)
        keys = []
        for agent, version, prompt, model in [
            ("classifier", "1", "a", MODEL),
            ("classifier", "1", "b", MODEL),
            ("classifier", "2", "a", MODEL),
            ("writer", "1", "c", "gpt-4.1"),
        ]:
            await cache.set(
                request_for(prompt, model), answer(prompt, model), agent_id=agent, agent_version=version
            )
            keys.append(cache.key(request_for(prompt, model), agent_id=agent, agent_version=version))
        odd = cache.key(request_for("t"), agent_id="writer", agent_version="1", tenant="acme:{eu}*")
        await cache.put_entry(odd, request_for("t"), body=answer("t", pad=40_000), ttl=ttl)
        streamed = cache.key(request_for("s"), agent_id="writer", agent_version="1")
        await cache.put_entry(streamed, request_for("s"), chunks=stream_chunks("hello"), ttl=ttl)
        await cache.aclose()
        return [*keys, odd, streamed]

    return asyncio.run(go())


def raw_values(url: str) -> dict[str, bytes]:
    """Every stored key and its exact bytes."""

    async def go() -> dict[str, bytes]:
        cache = PromptCache.from_url(url, namespace=NS)
        keys = await cache.store.keys(f"{NS}:")  # type: ignore[attr-defined]
        values = {k: await cache.store.get(k) for k in keys}
        await cache.aclose()
        return {k: v for k, v in values.items() if v is not None}

    return asyncio.run(go())


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("promptcache: error: ")
    return lines[0]


# -- stats ----------------------------------------------------------------------------------------


def test_stats_lists_stored_entries_by_agent_and_model(cli: Run, url: str) -> None:
    """Without a metrics source, ``stats`` shows entries and stored tokens and says where counters live."""
    populate(url)
    code, out, _ = cli("stats", "--url", url, "--namespace", NS)
    assert code == 0
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("classifier", MODEL, "3") in rows
    assert ("writer", "gpt-4.1", "1") in rows
    assert ("writer", MODEL, "2") in rows
    assert "counted inside the processes that serve requests" in out


def test_stats_with_metrics_reports_hits_misses_and_savings(cli: Run, url: str, tmp_path: Path) -> None:
    """With ``--metrics FILE`` the table adds the serving process's hits, misses, hit rate and savings."""
    registry = CollectorRegistry()

    async def serve() -> None:
        cache = PromptCache.from_url(
            url, namespace=NS, hooks=[PrometheusHook(registry, agents=["classifier"])]
        )
        for prompt in ["a", "a", "a", "b"]:
            await cache.get_or_call(request_for(prompt), _call(prompt), agent_id="classifier")
        await cache.aclose()

    asyncio.run(serve())
    metrics = tmp_path / "metrics.prom"
    metrics.write_text(render_prometheus(registry))
    code, out, _ = cli("stats", "--url", url, "--namespace", NS, "--metrics", str(metrics))
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith("classifier"))
    assert row[:7] == ["classifier", MODEL, "2", "30", "2", "2", "50.0%"]
    assert row[7] == "30"
    assert "counters since it started" in out


def _call(prompt: str) -> Callable[[], Any]:
    async def call() -> dict[str, Any]:
        return answer(prompt)

    return call


def test_stats_json_is_machine_readable(cli: Run, url: str) -> None:
    """``stats --json`` prints one JSON document with a row per agent and model."""
    populate(url)
    code, out, _ = cli("stats", "--url", url, "--namespace", NS, "--json")
    assert code == 0
    rows = orjson.loads(out)["rows"]
    assert {(r["agent"], r["model"], r["entries"]) for r in rows} == {
        ("classifier", MODEL, 3),
        ("writer", "gpt-4.1", 1),
        ("writer", MODEL, 2),
    }


def test_stats_on_a_missing_sqlite_store_is_one_line(cli: Run, tmp_path: Path) -> None:
    """A SQLite path that does not exist is reported in one line, exit 1, and no file is created."""
    missing = tmp_path / "nope.db"
    code, _, err = cli("stats", "--url", f"sqlite:///{missing}")
    assert code == 1
    assert "no SQLite store at" in one_error_line(err)
    assert not missing.exists()


def test_the_environment_names_the_store_and_the_flag_wins(
    cli: Run, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROMPTCACHE_URL is used when ``--url`` is absent; ``--url`` overrides it."""
    populate(url)
    monkeypatch.setenv("PROMPTCACHE_URL", url)
    code, out, _ = cli("stats", "--namespace", NS)
    assert code == 0
    assert "classifier" in out
    code, _, err = cli("stats", "--namespace", NS, "--url", f"sqlite:///{tmp_path / 'other.db'}")
    assert code == 1
    assert "other.db" in err


def test_url_from_env_reads_only_its_variable() -> None:
    """The URL helper reads PROMPTCACHE_URL from the given mapping and treats blank as unset."""
    assert url_from_env({"PROMPTCACHE_URL": " redis://h:1/0 "}) == "redis://h:1/0"
    assert url_from_env({"PROMPTCACHE_URL": "  "}) is None
    assert url_from_env({}) is None


# -- inspect --------------------------------------------------------------------------------------


def test_inspect_by_digest_and_by_store_key(cli: Run, url: str) -> None:
    """One entry by digest or store key: scope, TTL left, canonical request and response."""
    keys = populate(url)
    for given in (keys[0].digest, keys[0].store_key):
        code, out, _ = cli("inspect", given, "--url", url, "--namespace", NS)
        assert code == 0
        assert f"key:       {keys[0].store_key}" in out
        assert "agent:     classifier, version 1" in out
        assert "TTL left" in out
        assert '"content": "re: a"' in out
        assert '"content": "Be brief."' in out


def test_inspect_an_agent_shows_its_entries(cli: Run, url: str) -> None:
    """``--agent`` lists that agent's entries (up to ``--limit``), streams included."""
    populate(url)
    code, out, _ = cli("inspect", "--agent", "writer", "--url", url, "--namespace", NS, "--limit", "2")
    assert code == 0
    assert out.count(f"key:       app:v{SCHEMA_VERSION}:writer:") == 2
    assert "... and 1 more entries" in out
    code, out, _ = cli("inspect", "--agent", "writer", "--url", url, "--namespace", NS, "--json")
    entries = orjson.loads(out)
    assert len(entries) == 3
    assert {e["scope"]["tenant"] for e in entries} == {None, "acme:{eu}*"}
    assert any(e["chunks"] for e in entries)


def test_inspect_bad_input_is_one_line(cli: Run, url: str) -> None:
    """An unknown agent names the known ones; a malformed key and a missing argument are errors too."""
    populate(url)
    code, _, err = cli("inspect", "--agent", "nobody", "--url", url, "--namespace", NS)
    assert code == 1
    assert "agents with entries: classifier, writer" in one_error_line(err)
    code, _, err = cli("inspect", "not-a-key", "--url", url, "--namespace", NS)
    assert code == 1
    assert "64-hex digest" in one_error_line(err)
    code, _, err = cli("inspect", "0" * 64, "--url", url, "--namespace", NS)
    assert code == 1
    assert "no live entry" in one_error_line(err)
    code, _, err = cli("inspect", "--url", url)
    assert code == 1
    assert "KEY or --agent" in one_error_line(err)


# -- explain --------------------------------------------------------------------------------------


def test_explain_prints_the_key_and_canonical_request(cli: Run, tmp_path: Path) -> None:
    """The digest printed is make_key's; deny-listed fields are named; text is trimmed under 'trim'."""
    body = {**request_for("  hi  \r\n"), "stream": True, "user": "u-1"}
    path = tmp_path / "req.json"
    path.write_bytes(orjson.dumps(body))
    code, out, _ = cli(
        "explain", str(path), "--agent", "classifier", "--agent-version", "3", "--namespace", NS
    )
    assert code == 0
    key = make_key(body, namespace=NS, agent_id="classifier", agent_version="3")
    assert f"key:        {key.digest}" in out
    assert f"store key:  {key.store_key}" in out
    assert "left out:   stream, user" in out
    assert '"content": "  hi"' in out


def test_explain_against_another_request_lists_what_changed(cli: Run, tmp_path: Path) -> None:
    """``--against OTHER.json`` lists each changed, added and removed path."""
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    mine.write_bytes(orjson.dumps({**request_for("hello"), "seed": 1}))
    theirs.write_bytes(orjson.dumps({**request_for("hello there", model="gpt-4o"), "stop": ["\n"]}))
    code, out, _ = cli("explain", str(mine), "--against", str(theirs))
    assert code == 0
    why = out.split("why the keys differ", 1)[1]
    assert "~ $.messages[1].content: 'hello there' -> 'hello'" in why
    assert "~ $.model: 'gpt-4o' -> 'gpt-4o-mini'" in why
    assert "+ $.seed: 1" in why
    assert '- $.stop: ["\\n"]' in why


def test_explain_against_a_stored_key(cli: Run, url: str, tmp_path: Path) -> None:
    """Against a stored entry: same key when equal, a scope diff when the version differs."""
    keys = populate(url)
    path = tmp_path / "req.json"
    path.write_bytes(orjson.dumps(request_for("a")))
    base = ["explain", str(path), "--url", url, "--namespace", NS, "--agent", "classifier"]
    code, out, _ = cli(*base, "--agent-version", "1", "--against", keys[0].digest)
    assert code == 0
    assert f"same key: both are cached under {keys[0].digest}" in out
    code, out, _ = cli(*base, "--agent-version", "1", "--against", keys[2].store_key)
    assert "~ scope.agent_version: '2' -> '1'" in out


def test_explain_against_an_entry_keeping_the_compact_request(cli: Run, url: str, tmp_path: Path) -> None:
    """By default an entry keeps the compact request: explain still names the field that differs."""
    keys = populate(url, keep_request=False)
    path = tmp_path / "req.json"
    path.write_bytes(orjson.dumps(request_for("b")))
    base = ["explain", str(path), "--url", url, "--agent", "classifier", "--agent-version", "1"]
    code, out, _ = cli(*base, "--against", keys[0].digest)
    assert code == 0
    assert "~ $.messages[1].content: 'sha256:" in out  # [0] is the system message
    changed = [line for line in out.splitlines() if line.strip().startswith(("~", "+", "-"))]
    assert len(changed) == 1  # only the text: model, temperature and the rest compare equal


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "a request body is a JSON object"),
        (None, "No such file"),
    ],
)
def test_explain_bad_request_files(cli: Run, tmp_path: Path, content: bytes | None, message: str) -> None:
    """Malformed, non-object and missing request files each give one line and exit 1."""
    path = tmp_path / "req.json"
    if content is not None:
        path.write_bytes(content)
    code, _, err = cli("explain", str(path))
    assert code == 1
    assert message in one_error_line(err)


def test_explain_bad_scope_is_one_line(cli: Run, tmp_path: Path) -> None:
    """An unknown endpoint or an empty agent id is reported, not raised."""
    path = tmp_path / "req.json"
    path.write_bytes(orjson.dumps(request_for("a")))
    code, _, err = cli("explain", str(path), "--endpoint", "completions")
    assert code == 1
    assert "endpoint must be one of" in one_error_line(err)
    code, _, err = cli("explain", str(path), "--agent", "")
    assert code == 1
    assert "agent_id must not be empty" in one_error_line(err)


# -- invalidate -----------------------------------------------------------------------------------


def test_invalidate_one_agent_or_one_version(cli: Run, url: str) -> None:
    """Invalidation deletes only the named agent (and version); other agents keep their entries."""
    populate(url)
    code, out, _ = cli(
        "invalidate", "--agent", "classifier", "--version", "2", "--url", url, "--namespace", NS
    )
    assert (code, out.strip()) == (
        0,
        "invalidated 1 entry of agent 'classifier' version '2' in namespace 'app'",
    )
    code, out, _ = cli("invalidate", "--agent", "classifier", "--url", url, "--namespace", NS)
    assert "invalidated 2 entries" in out
    # What is left: the other agent's entries, and the two invalidations' write fences (_fences.py)
    left = raw_values(url)
    assert all(":writer:" in k for k in left if ":fence:" not in k)
    assert sorted(k for k in left if ":fence:" in k) == [
        f"{NS}:fence:v2:classifier:",
        f"{NS}:fence:v2:classifier:2:",
    ]
    code, out, err = cli("invalidate", "--agent", "classifier", "--url", url, "--namespace", NS)
    assert (code, out.strip()) == (0, "invalidated 0 entries of agent 'classifier' in namespace 'app'")
    assert "warning: no entries for agent 'classifier'" in err
    assert "agents with entries: writer" in err
    code, _, err = cli("invalidate", "--agent", "classifier", "--url", url, "--namespace", NS, "--strict")
    assert code == 1


# -- export / import ------------------------------------------------------------------------------


def test_export_import_round_trips_byte_exact(cli: Run, url: str, tmp_path: Path) -> None:
    """Export, import elsewhere, export again: identical stored bytes (compressed ones too) and files."""
    populate(url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    first, second = tmp_path / "writer.yaml", tmp_path / "again.yaml"
    code, out, _ = cli("export", "--agent", "writer", "-o", str(first), "--url", url, "--namespace", NS)
    assert (code, out.strip()) == (0, f"exported 3 entries of agent 'writer' to {first}")
    code, out, _ = cli("import", str(first), "--url", other, "--namespace", NS)
    assert code == 0
    assert out.startswith("imported 3 entries")
    original = {k: v for k, v in raw_values(url).items() if ":writer:" in k}
    assert raw_values(other) == original
    assert any(v.startswith(b"PCZ1") for v in original.values())  # the big answer was compressed
    cli("export", "--agent", "writer", "-o", str(second), "--url", other, "--namespace", NS)
    assert first.read_bytes() == second.read_bytes()


def test_imported_entries_are_cache_hits(cli: Run, url: str, tmp_path: Path) -> None:
    """After import, a cache on the new store answers the original request without calling upstream."""
    populate(url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    path = tmp_path / "c.yaml"
    cli("export", "--agent", "classifier", "-o", str(path), "--url", url, "--namespace", NS)
    cli("import", str(path), "--url", other, "--namespace", NS)

    async def lookup() -> Any:
        cache = PromptCache.from_url(other, namespace=NS)
        found = await cache.get(request_for("b"), agent_id="classifier", agent_version="1")
        await cache.aclose()
        return found

    assert asyncio.run(lookup()) == answer("b")


def test_import_of_a_test_cassette_uses_the_given_ttl(cli: Run, url: str, tmp_path: Path) -> None:
    """A recording from the pytest plugin (no timestamps) imports with ``--ttl`` from now."""
    key = make_key(request_for("q"), namespace=NS, agent_id="bot")
    doc = {
        "version": 1,
        "key_schema": SCHEMA_VERSION,
        "test": "tests/test_x.py::test_y",
        "recordings": [
            {
                "key": key.digest,
                "endpoint": "chat.completions",
                "scope": dict(
                    zip(("namespace", "agent_id", "agent_version", "tenant"), scope_of(key), strict=True)
                ),
                "recorded_at": "2026-11-01T10:00:00Z",
                "model": MODEL,
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                "status": 200,
                "request": orjson.loads(key.canonical),
                "response": answer("q"),
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, _ = cli("import", str(path), "--url", url, "--namespace", NS, "--ttl", "120")
    assert code == 0
    code, out, _ = cli("inspect", key.digest, "--url", url, "--namespace", NS, "--json")
    entry = orjson.loads(out)[0]
    assert entry["created_at"] == "2026-11-01T10:00:00Z"
    assert 0 < entry["ttl_left"] <= 120


def test_import_skips_expired_recordings(cli: Run, url: str, tmp_path: Path) -> None:
    """An exported recording whose expiry has passed is skipped, and the output says so."""
    populate(url)
    path = tmp_path / "c.yaml"
    cli("export", "--agent", "classifier", "-o", str(path), "--url", url, "--namespace", NS)
    doc = yaml.safe_load(path.read_text())
    doc["recordings"][0]["expires_at"] = 1.0
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, _ = cli("import", str(path), "--url", f"sqlite:///{tmp_path / 'o.db'}", "--namespace", NS)
    assert code == 0
    assert "imported 2 entries" in out
    assert "(1 expired recordings skipped)" in out


def test_a_bad_cassette_imports_nothing(cli: Run, tmp_path: Path) -> None:
    """One malformed recording fails the whole import with one line, before anything is written."""
    target = tmp_path / "t.db"
    good = {
        "key": "a" * 64,
        "endpoint": "chat.completions",
        "scope": {"namespace": NS, "agent_id": "bot", "agent_version": "1", "tenant": None},
        "response": answer("x"),
    }
    bad = {
        **copy.deepcopy(good),
        "key": "b" * 64,
        "scope": {"namespace": NS, "agent_id": "", "agent_version": "1"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "key_schema": SCHEMA_VERSION, "recordings": [good, bad]}))
    code, _, err = cli("import", str(path), "--url", f"sqlite:///{target}")
    assert code == 1
    assert "recordings[1]" in one_error_line(err)
    assert not target.exists()
    path.write_text("version: 1\nrecordings: [{key: 1}]\n")
    code, _, err = cli("import", str(path), "--url", f"sqlite:///{target}")
    assert code == 1
    assert "has no string 'key'" in one_error_line(err)


def test_export_refuses_secrets_unless_scrubbing(cli: Run, url: str, tmp_path: Path) -> None:
    """An entry holding a credential is not exported as is; ``--scrub`` replaces it."""
    secret = "sk-proj-" + "A1b2C3d4" * 4

    async def store_secret() -> None:
        cache = PromptCache.from_url(url, namespace=NS, keep_request=True)
        await cache.set(request_for(f"my key is {secret}"), answer("ok"), agent_id="leaky")
        await cache.aclose()

    asyncio.run(store_secret())
    path = tmp_path / "leaky.yaml"
    code, _, err = cli("export", "--agent", "leaky", "-o", str(path), "--url", url, "--namespace", NS)
    assert code == 1
    assert "--scrub" in one_error_line(err)
    assert not path.exists()
    code, _, _ = cli(
        "export", "--agent", "leaky", "-o", str(path), "--url", url, "--namespace", NS, "--scrub"
    )
    assert code == 0
    assert secret not in path.read_text()


def test_export_of_an_unknown_agent_is_one_line(cli: Run, url: str, tmp_path: Path) -> None:
    """Exporting an agent with no entries fails with one line naming the known agents."""
    populate(url)
    code, _, err = cli(
        "export", "--agent", "ghost", "-o", str(tmp_path / "g.yaml"), "--url", url, "--namespace", NS
    )
    assert code == 1
    assert "agents with entries: classifier, writer" in one_error_line(err)


# -- verify ---------------------------------------------------------------------------------------


def _exported(cli: Run, url: str, path: Path) -> Path:
    populate(url)
    cli("export", "--agent", "classifier", "-o", str(path), "--url", url, "--namespace", NS)
    return path


def test_verify_accepts_good_cassettes(cli: Run, url: str, tmp_path: Path) -> None:
    """A directory of valid cassettes passes with a summary line and exit 0."""
    _exported(cli, url, tmp_path / "cassettes" / "a.yaml")
    code, out, _ = cli("verify", str(tmp_path / "cassettes"))
    assert (code, out.strip()) == (
        0,
        "ok: 1 cassettes, 3 recordings: safe YAML, no secrets, no duplicate keys",
    )


def test_verify_reports_each_problem(cli: Run, url: str, tmp_path: Path) -> None:
    """Duplicate YAML keys, credentials, hand-edited requests and aliases are each reported; exit 1."""
    good = _exported(cli, url, tmp_path / "good.yaml").read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dupe.yaml").write_text(good.replace("  model: gpt-4o-mini\n", "  model: a\n  model: b\n", 1))
    (bad / "secret.yaml").write_text(good.replace("Be brief.", "Be brief. sk-ant-api03-abcdefghijkl", 1))
    (bad / "edited.yaml").write_text(
        good.replace("content: 're: a'", "content: 're: a'", 1).replace("- content: a", "- content: z", 1)
    )
    (bad / "alias.yaml").write_text("version: 1\nrecordings: &r []\nagain: *r\n")
    code, out, _ = cli("verify", str(bad))
    assert code == 1
    assert "dupe.yaml: $.recordings[0]: duplicate key 'model'" in out
    assert "secret.yaml: holds a credential" in out
    assert re.search(r"edited\.yaml: recordings\[\d\]: key", out), out
    assert "does not match its request" in out
    assert "alias.yaml: YAML anchors/aliases are not allowed" in out
    assert out.strip().endswith("4 of 4 cassettes have problems")


def test_verify_allows_repeats_in_test_cassettes_only(cli: Run, url: str, tmp_path: Path) -> None:
    """A repeated recording key is the n-th answer in a test cassette but a problem in an export."""
    doc = yaml.safe_load(_exported(cli, url, tmp_path / "e.yaml").read_text())
    doc["recordings"].append(copy.deepcopy(doc["recordings"][0]))
    doc["end"] = len(doc["recordings"])  # a consistent edit: only the repeat is left to report
    exported = tmp_path / "twice.yaml"
    exported.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, _ = cli("verify", str(exported))
    assert code == 1
    assert "appears twice in an exported cassette" in out
    del doc["exported"]
    doc["test"] = "tests/test_a.py::test_b"
    exported.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, _, _ = cli("verify", str(exported))
    assert code == 0


def test_verify_bad_paths_are_one_line(cli: Run, tmp_path: Path) -> None:
    """A missing path or a directory without cassettes is one line and exit 1."""
    code, _, err = cli("verify", str(tmp_path / "missing"))
    assert code == 1
    assert "no such file or directory" in one_error_line(err)
    code, _, err = cli("verify", str(tmp_path))
    assert code == 1
    assert "no cassettes" in one_error_line(err)


# -- the command itself ---------------------------------------------------------------------------


def test_unreachable_and_unknown_stores_are_one_line(cli: Run) -> None:
    """A refused Redis connection and an unknown URL scheme each give one line and exit 1."""
    code, _, err = cli("stats", "--url", "redis://127.0.0.1:1/0")
    assert code == 1
    assert "cannot reach the store at redis://127.0.0.1:1/0" in one_error_line(err)
    code, _, err = cli("stats", "--url", "gopher://x")
    assert code == 1
    assert "unknown store URL scheme" in one_error_line(err)


def test_a_store_that_never_answers_is_one_line(cli: Run) -> None:
    """A server that accepts the connection but never replies is reported once the probe deadline passes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        code, _, err = cli("stats", "--url", url, "--timeout", "0.2")
    assert code == 1
    assert (
        one_error_line(err) == f"promptcache: error: cannot reach the store at {url}: no answer within 0.2 s"
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No subcommand, or a missing required flag, is argparse's usage error (exit 2)."""
    for argv in ([], ["invalidate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage: promptcache" in capsys.readouterr().err


def test_module_entry_point_exits_with_the_code(tmp_path: Path) -> None:
    """``python -m promptcache.cli`` exits with main()'s code and prints errors on stderr only."""
    out = subprocess.run(
        [sys.executable, "-m", "promptcache.cli", "stats", "--url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("promptcache: error: no SQLite store at")


def test_progress_bar_draws_only_when_enabled() -> None:
    """The bar writes carriage-return updates and a final newline when enabled, nothing otherwise."""
    shown, hidden = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (hidden, False)):
        bar = Progress(4, "export", stream=stream, enabled=enabled)
        for _ in range(4):
            bar.advance()
        bar.close()
    assert shown.getvalue().count("\r") == 4
    assert shown.getvalue().endswith("4/4\n")
    assert hidden.getvalue() == ""
    assert not Progress(10_000, "x", stream=io.StringIO()).enabled  # not a terminal


@pytest.mark.parametrize(
    ("agent", "version", "tenant"),
    [("bot", "0", None), ("a:b*c", "1.2", "t{x}"), ("ünï", "v 2", "%~"), ("x", "y", "~")],
)
def test_store_keys_rebuilt_from_a_scope_match_make_key(agent: str, version: str, tenant: str | None) -> None:
    """The store key rebuilt from a recording's scope and digest is exactly make_key's."""
    key = make_key(request_for("q"), namespace="n s", agent_id=agent, agent_version=version, tenant=tenant)
    assert store_key_for(*scope_of(key), key.digest) == key.store_key


@pytest.mark.parametrize(
    ("agent", "version", "tenant"),
    [("bot", "0", None), ("a:b*c", "1.2", "t{x}"), ("ünï", "v 2", "%~"), ("x", "y", "~")],
)
def test_store_keys_are_read_back_by_the_key_module(agent: str, version: str, tenant: str | None) -> None:
    """The namespace prefix, agent id and digest the CLI reads from a store key are make_key's own."""
    key = make_key(request_for("q"), namespace="n s", agent_id=agent, agent_version=version, tenant=tenant)
    assert key.store_key.startswith(namespace_prefix("n s"))
    assert key.prefix.startswith(namespace_prefix("n s"))
    assert agent_id_of(key.store_key) == agent
    assert digest_of(key.store_key) == key.digest
    assert not key.lock_key.startswith(namespace_prefix("n s"))  # listing a namespace never finds locks


def test_compressed_entries_are_told_apart_by_the_entry_module() -> None:
    """``is_compressed`` is true exactly for values encode_entry compressed."""
    key = make_key(request_for("q"), agent_id="bot")
    entry = Entry(
        digest=key.digest, scope=scope_of(key), endpoint=key.endpoint.value, created_at=0.0,
        expires_at=1.0, body={"choices": []},
    )  # fmt: skip
    assert is_compressed(encode_entry(entry, compress_above=0))
    assert not is_compressed(encode_entry(entry, compress_above=None))


def test_json_diff_names_every_changed_path() -> None:
    """Changed, added and removed paths are each one line."""
    old = {"a": 1, "b": [1, 2, 3], "c": {"d": "x"}}
    new = {"a": 2, "b": [1, 2], "c": {"d": "x", "e": None}}
    assert json_diff(old, new) == ["~ $.a: 1 -> 2", "- $.b[2]: 3", "+ $.c.e: null"]


def test_a_body_and_a_stream_of_one_key_export_verify_and_import(cli: Run, url: str, tmp_path: Path) -> None:
    """Both kinds of answer to one request are exported, pass verify (not a repeated key) and import back
    under their own store keys, byte for byte."""

    async def store_both() -> CacheKey:
        cache = PromptCache.from_url(url, namespace=NS)
        key = cache.key(request_for("both"), agent_id="kinds")
        await cache.put_entry(key, request_for("both"), body=answer("both"))
        await cache.put_entry(key, request_for("both"), chunks=stream_chunks("both"))
        await cache.aclose()
        return key

    key = asyncio.run(store_both())
    assert set(raw_values(url)) == {key.store_key, key.stream_store_key}
    exported = tmp_path / "kinds.yaml"
    code, out, _ = cli("export", "--agent", "kinds", "-o", str(exported), "--url", url, "--namespace", NS)
    assert (code, out.strip()) == (0, f"exported 2 entries of agent 'kinds' to {exported}")
    code, out, _ = cli("verify", str(exported))
    assert (code, out.splitlines()[-1].startswith("ok: 1 cassettes, 2 recordings")) == (0, True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert cli("import", str(exported), "--url", other, "--namespace", NS)[0] == 0
    assert raw_values(other) == raw_values(url)


def test_every_subcommand_help_says_what_it_does_and_every_option_means() -> None:
    """`promptcache COMMAND --help` opens with what the command does, and no option is left unexplained
    (invalidate's --agent had no help, and stats/invalidate were told about a KEY they do not take)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert command.description, f"{name} --help has no description"
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        if name in {"stats", "invalidate"}:
            namespace = next(a for a in command._actions if "--namespace" in a.option_strings)
            assert "KEY" not in (namespace.help or ""), f"{name} --namespace help speaks of a KEY"


def test_output_cut_short_by_a_closed_pipe_is_not_an_error() -> None:
    """`promptcache inspect --agent A | head -1` ends quietly with the shell's SIGPIPE status, as other
    Unix tools do; it used to print "promptcache: error: BrokenPipeError" and exit 1."""
    code = "import sys; from promptcache.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "explain", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(orjson.dumps(request_for("hi")).decode(), timeout=60)
    assert (proc.returncode, err) == (141, "")
