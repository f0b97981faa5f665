"""The ``promptcache`` command against a real redis-server: every command, Redis <-> cassette round trips."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
import yaml

from promptcache import PromptCache
from promptcache._keys import SCHEMA_VERSION
from promptcache.cli._migrate import cli_route

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from helpers import Run
    from redis_server import RedisServer

pytestmark = pytest.mark.redis


NS = "svc"
MODEL = "gpt-4o"
DEMO_NS = "promptcache-demo"


def request_for(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0}


def answer(prompt: str, pad: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-r",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"re: {prompt}{'.' * pad}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def populate(url: str) -> None:
    """Two agents in one namespace, one answer big enough to be stored compressed, one with a tenant."""

    async def go() -> None:
        cache = PromptCache.from_url(url, namespace=NS, keep_request=True)
        for agent, prompt in [("triage", "a"), ("triage", "b"), ("billing", "c")]:
            assert await cache.set(request_for(prompt), answer(prompt), agent_id=agent, agent_version="1")
        assert await cache.set(
            request_for("big"), answer("big", pad=50_000), agent_id="triage", agent_version="2"
        )
        assert await cache.set(
            request_for("t"), answer("t"), agent_id="billing", agent_version="1", tenant="eu/1"
        )
        await cache.aclose()

    asyncio.run(go())


def raw(url: str, pattern: str = f"{NS}:v{SCHEMA_VERSION}:*") -> dict[bytes, bytes]:
    """Every matching key and its exact bytes, read with a plain redis client."""
    client = redis.Redis.from_url(url)
    try:
        found: dict[bytes, bytes] = {}
        for key in client.scan_iter(match=pattern):
            value = client.get(key)
            assert isinstance(value, bytes)
            found[key] = value
        return found
    finally:
        client.close()


def test_demo_on_redis_then_stats_from_its_metrics(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """The demo runs on Redis; ``stats`` reads entries from Redis and counters from the metrics file."""
    metrics = tmp_path / "demo.prom"
    code, out, _ = cli(
        "demo", "--calls", "60", "--scale", "1000", "--url", redis_url, "--metrics-out", str(metrics)
    )
    assert code == 0
    counters = re.search(r"(\d+) requests = (\d+) hits .* \+ (\d+) misses", out)
    assert counters is not None
    hits, misses = int(counters[2]), int(counters[3])
    code, out, _ = cli("stats", "--url", redis_url, "--namespace", DEMO_NS, "--metrics", str(metrics))
    assert code == 0
    total = next(line.split() for line in out.splitlines() if line.startswith("total"))
    # Each miss stores one entry, unless its write missed the store's deadline on a loaded machine
    # (fail-open: counted, the answer still served): stats shows exactly what the store holds.
    stored = len(raw(redis_url, f"{DEMO_NS}:v{SCHEMA_VERSION}:*"))
    assert 0 < stored <= misses
    assert total[1] == str(stored)
    assert (total[3], total[4]) == (str(hits), str(misses))
    code, out, _ = cli("demo", "--calls", "60", "--scale", "1000", "--url", redis_url)
    assert f"(cleared {stored} entries of earlier demo runs first)" in out


def test_inspect_explain_and_invalidate_on_redis(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """inspect finds entries by digest and agent, explain diffs a stored key, invalidate deletes one agent."""
    populate(url=redis_url)
    code, out, _ = cli("inspect", "--agent", "billing", "--url", redis_url, "--namespace", NS, "--json")
    assert code == 0
    entries = orjson.loads(out)
    assert {e["scope"]["tenant"] for e in entries} == {None, "eu/1"}
    digest = next(e["digest"] for e in entries if e["scope"]["tenant"] is None)
    code, out, _ = cli("inspect", digest, "--url", redis_url, "--namespace", NS)
    assert code == 0
    assert "re: c" in out
    request = tmp_path / "req.json"
    request.write_bytes(orjson.dumps(request_for("d")))
    args = ["--url", redis_url, "--namespace", NS, "--agent", "billing", "--agent-version", "1"]
    code, out, _ = cli("explain", str(request), *args, "--against", digest)
    assert code == 0
    assert "~ $.messages[0].content: 'c' -> 'd'" in out
    code, out, _ = cli("invalidate", "--agent", "triage", "--url", redis_url, "--namespace", NS)
    assert (code, out.strip()) == (0, "invalidated 3 entries of agent 'triage' in namespace 'svc'")
    assert all(b":billing:" in k for k in raw(redis_url))
    code, out, err = cli("invalidate", "--agent", "triage", "--url", redis_url, "--namespace", NS)
    assert (code, out.strip()) == (0, "invalidated 0 entries of agent 'triage' in namespace 'svc'")
    assert "warning: no entries for agent 'triage'" in err
    assert "agents with entries: billing" in err
    code, out, _ = cli("invalidate", "--agent", "triage", "--url", redis_url, "--namespace", NS, "--strict")
    assert code == 1
    assert "invalidated 0 entries" in out


def test_every_key_form_finds_its_entry_with_the_keys_namespace(
    cli: Run, redis_url: str, tmp_path: Path
) -> None:
    """A full store key (namespace taken from it), a digest and a 12-character prefix (as printed) all
    work with no --namespace; a --namespace that contradicts the key is an error, not ignored."""
    populate(url=redis_url)
    store_key = next(k.decode() for k in raw(redis_url) if b":billing:1:~:" in k)
    digest = store_key.rpartition("{")[2].rstrip("}")
    for given in (store_key, digest, digest[:12], digest[:12] + "..."):
        code, out, err = cli("inspect", given, "--url", redis_url)
        assert (code, err) == (0, "")
        assert f"key:       {store_key}" in out
    code, _, err = cli("inspect", store_key, "--url", redis_url, "--namespace", "other")
    assert code == 1
    assert "--namespace 'other' contradicts the key" in err
    assert "namespace 'svc'" in err
    code, _, _ = cli("inspect", store_key, "--url", redis_url, "--namespace", NS)
    assert code == 0
    request = tmp_path / "req.json"
    request.write_bytes(orjson.dumps(request_for("d")))
    args = ["--url", redis_url, "--agent", "billing", "--agent-version", "1"]
    code, out, _ = cli("explain", str(request), *args, "--against", store_key)
    assert code == 0
    assert f"store key:  {NS}:v{SCHEMA_VERSION}:billing:1:~:" in out  # the key's namespace, not the default
    assert "~ $.messages[0].content: 'c' -> 'd'" in out
    code, _, err = cli("explain", str(request), *args, "--against", store_key, "--namespace", "x")
    assert (code, "contradicts the key" in err) == (1, True)
    old = store_key.replace(f":v{SCHEMA_VERSION}:", ":v1:")
    code, _, err = cli("inspect", old, "--url", redis_url)
    assert code == 1
    assert "schema v1" in err


def test_an_ambiguous_digest_prefix_is_refused(cli: Run, redis_url: str) -> None:
    """A prefix matching two entries names them and asks for more characters."""

    async def go() -> list[str]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        digests: dict[str, str] = {}
        i = 0
        while True:  # two keys whose digests share a first hex character (found within ~17 tries)
            key = cache.key(request_for(f"p{i}"), agent_id="amb")
            if key.digest[:1] in digests:
                break
            digests[key.digest[:1]] = f"p{i}"
            i += 1
        first = digests[key.digest[:1]]
        for prompt in (first, f"p{i}"):
            assert await cache.set(request_for(prompt), answer(prompt), agent_id="amb")
        await cache.aclose()
        return [cache.key(request_for(p), agent_id="amb").digest for p in (first, f"p{i}")]

    a, b = asyncio.run(go())
    common = 0
    while a[common] == b[common]:
        common += 1
    if common >= 6:
        code, _, err = cli("inspect", a[:common], "--url", redis_url, "--namespace", NS)
        assert code == 1
        assert "matches 2 entries" in err
    code, _, err = cli("inspect", a[:5], "--url", redis_url, "--namespace", NS)
    assert (code, "at least 6" in err) == (1, True)
    code, out, _ = cli("inspect", a[: max(common + 1, 6)], "--url", redis_url, "--namespace", NS)
    assert (code, a in out) == (0, True)


def test_stats_on_an_empty_namespace_names_the_ones_with_entries(cli: Run, redis_url: str) -> None:
    populate(url=redis_url)
    code, _, err = cli("stats", "--url", redis_url, "--namespace", "nothing-here")
    assert code == 0
    assert "namespace 'nothing-here' has no entries" in err
    assert f"namespaces with entries: {NS}" in err


def test_invalidate_in_the_wrong_namespace_names_the_ones_with_entries(cli: Run, redis_url: str) -> None:
    """A deploy script that forgot --namespace invalidates nothing (exit 0, as documented), and the warning
    points at the namespace the agent's entries are really in, as `stats` does; it used to say only
    "the namespace is empty"."""
    populate(url=redis_url)
    code, out, err = cli("invalidate", "--url", redis_url, "--agent", "triage")
    assert (code, out.strip()) == (0, "invalidated 0 entries of agent 'triage' in namespace 'promptcache'")
    assert f"namespaces with entries: {NS}" in err
    assert len(raw(redis_url)) == 5  # nothing deleted


def test_import_with_a_contradicting_namespace_is_refused(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """``import --namespace other`` of a cassette recorded in ``svc`` writes nothing and says why."""
    populate(url=redis_url)
    cassette = tmp_path / "billing.yaml"
    code, _, _ = cli(
        "export", "--agent", "billing", "-o", str(cassette), "--url", redis_url, "--namespace", NS
    )
    assert code == 0
    before = raw(redis_url, "*")
    code, _, err = cli("import", str(cassette), "--url", redis_url, "--namespace", "other")
    assert code == 1
    assert "--namespace 'other' contradicts the cassette" in err
    assert raw(redis_url, "*") == before
    code, _, _ = cli("import", str(cassette), "--url", redis_url)  # the cassette's own namespace
    assert code == 0


def test_redis_to_cassette_to_redis_is_byte_exact(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """Export from Redis, flush, import: the same keys hold the same bytes; a second export is identical."""
    populate(url=redis_url)
    before = raw(redis_url)
    assert any(v.startswith(b"PCZ1") for v in before.values())  # the big answer is stored compressed
    first, second = tmp_path / "triage.yaml", tmp_path / "again.yaml"
    for agent in ("triage", "billing"):
        code, _, _ = cli(
            "export",
            "--agent",
            agent,
            "-o",
            str(tmp_path / f"{agent}.yaml"),
            "--url",
            redis_url,
            "--namespace",
            NS,
        )
        assert code == 0
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    for agent in ("triage", "billing"):
        code, out, _ = cli("import", str(tmp_path / f"{agent}.yaml"), "--url", redis_url, "--namespace", NS)
        assert code == 0, out
    assert raw(redis_url) == before
    cli("export", "--agent", "triage", "-o", str(second), "--url", redis_url, "--namespace", NS)
    assert first.read_bytes() == second.read_bytes()
    code, out, _ = cli("verify", str(tmp_path))
    assert code == 0
    assert out.startswith("ok: 3 cassettes")


def test_redis_cassette_imports_into_sqlite_and_back(cli: Run, redis_url: str, tmp_path: Path) -> None:
    """A cassette exported from Redis imports into the SQLite store with the same bytes, and back again."""
    populate(url=redis_url)
    sqlite_url = f"sqlite:///{tmp_path / 'cache.db'}"
    path, back = tmp_path / "billing.yaml", tmp_path / "back.yaml"
    cli("export", "--agent", "billing", "-o", str(path), "--url", redis_url, "--namespace", NS)
    cli("import", str(path), "--url", sqlite_url, "--namespace", NS)
    cli("export", "--agent", "billing", "-o", str(back), "--url", sqlite_url, "--namespace", NS)
    assert path.read_bytes() == back.read_bytes()
    assert len(yaml.safe_load(back.read_text())["recordings"]) == 2


def test_an_unreachable_redis_is_one_line(
    cli: Run, private_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Every store command against a Redis that went away prints one line and exits 1."""
    server = private_redis()
    url = server.url
    server.stop()
    cassette = tmp_path / "c.yaml"
    cassette.write_text("version: 1\nrecordings: []\n")
    for argv in (
        ["stats"],
        ["inspect", "--agent", "a"],
        ["invalidate", "--agent", "a"],
        ["export", "--agent", "a", "-o", str(tmp_path / "x.yaml")],
        ["import", str(cassette)],
    ):
        code, out, err = cli(*argv, "--url", url)
        assert code == 1, argv
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"promptcache: error: cannot reach the store at {url}")


def test_the_default_entry_keeps_no_prompt_text_yet_explain_names_each_difference(
    cli: Run, redis_url: str, tmp_path: Path
) -> None:
    """keep_request=False (the default) stores hashes of texts, not texts: nothing of the prompt or of a
    keyed header's value is in Redis, and ``explain --against`` still names the field, route included."""
    # Words, not digits: a timestamp or a hex digest in the entry may contain any run of digits.
    private = "my card number is quokka-zebra"
    request = {**request_for(private), "temperature": 0.5}
    route = cli_route("https://api.example.test/v1", ["openai-organization=org-private"], None)

    async def go() -> str:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        key = cache.key(request, agent_id="triage", route=route)
        assert await cache.put_entry(key, request, body=answer("x"), ttl=60)
        await cache.aclose()
        return key.store_key

    store_key = asyncio.run(go())
    stored = b"".join(raw(redis_url).values())
    assert b"quokka" not in stored
    assert b"card number" not in stored
    assert b"org-private" not in stored
    assert b'"temperature":0.5' in stored  # non-message fields are kept as they are
    mine = {**request_for(private), "temperature": 0.7}
    path = tmp_path / "mine.json"
    path.write_bytes(orjson.dumps(mine))
    args = ["--url", redis_url, "--agent", "triage", "--upstream", "https://api.example.test/v1"]
    code, out, _ = cli(
        "explain", str(path), *args, "--header", "openai-organization=org-other", "--against", store_key
    )
    assert code == 0
    assert "~ $.temperature: 0.5 -> 0.7" in out
    assert "~ route.headers.openai-organization: 'sha256:" in out
    assert "messages" not in "".join(line for line in out.splitlines() if line.strip().startswith("~"))
    code, out, _ = cli("inspect", store_key, "--url", redis_url)
    assert code == 0
    assert "request (compact: texts hashed" in out
    assert "quokka" not in out


def test_a_digest_naming_a_body_and_its_stream_is_one_entry(cli: Run, redis_url: str) -> None:
    """A body and a stream of one request share a digest (two store keys): its prefix is not ambiguous,
    and the stream's own store key is accepted too."""
    chunks = [
        {"event": None, "data": {"model": MODEL, "choices": [{"index": 0, "delta": {"content": "hi"}}]}},
        {
            "event": None,
            "data": {"model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        },
        {"event": None, "text": "[DONE]"},
    ]

    async def go() -> tuple[str, str]:
        cache = PromptCache.from_url(redis_url, namespace=NS)
        key = cache.key(request_for("both"), agent_id="triage")
        assert await cache.put_entry(key, request_for("both"), body=answer("both"), ttl=60)
        assert await cache.put_entry(key, request_for("both"), chunks=chunks, ttl=60)
        await cache.aclose()
        return key.digest, key.stream_store_key

    digest, stream_key = asyncio.run(go())
    assert len(raw(redis_url)) == 2
    code, out, err = cli("inspect", digest[:12], "--url", redis_url)
    assert (code, err) == (0, "")
    assert "re: both" in out
    code, out, err = cli("inspect", stream_key, "--url", redis_url)
    assert (code, err) == (0, "")
    assert "a stream of 3 events" in out
