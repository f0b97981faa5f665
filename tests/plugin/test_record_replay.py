"""Record real SDK calls against a loopback fake LLM, then replay them with the server gone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import redis
from helpers import outputs

from promptcache._cassette import load_cassette, parse_cassette
from promptcache.pytest_plugin._stores import REDIS_PREFIX, default_redis_prefix

if TYPE_CHECKING:
    from fake_llm import FakeLLM

OPENAI_TESTS = """
import asyncio

import app
import llm


def test_chat_sync():
    llm.note("chat_sync", llm.chat("Name a colour"))


def test_chat_async():
    llm.note("chat_async", asyncio.run(llm.achat("Name a fruit")))


def test_stream_sync():
    llm.note("stream_sync", llm.chat_stream("Count to three"))


def test_stream_async():
    async def main():
        async with llm.async_openai_client() as client:
            stream = await client.chat.completions.create(
                model="gpt-x",
                messages=llm.user("Count to four"),
                stream=True,
                stream_options={"include_usage": True},
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    llm.note("stream_async", asyncio.run(main()))


def test_responses_and_embeddings():
    with llm.openai_client() as client:
        text = client.responses.create(model="gpt-x", input="Say hi").output_text
        vector = client.embeddings.create(model="emb-x", input="hello").data[0].embedding
    llm.note("responses", text)
    llm.note("embedding", vector)


def test_client_built_by_code_under_test():
    llm.note("app", app.triage("the printer is on fire"))
"""

APP = """
import openai


def triage(ticket):
    client = openai.OpenAI()  # configured from OPENAI_BASE_URL / OPENAI_API_KEY, as in production
    try:
        reply = client.chat.completions.create(
            model="gpt-x",
            messages=[
                {"role": "system", "content": "Classify the support ticket."},
                {"role": "user", "content": ticket},
            ],
        )
    finally:
        client.close()
    return reply.choices[0].message.content
"""

ANTHROPIC_TESTS = """
import asyncio

import llm


def test_messages_sync():
    with llm.anthropic_client() as client:
        reply = client.messages.create(model="claude-x", max_tokens=64, messages=llm.user("Name a planet"))
    llm.note("sync", reply.content[0].text)


def test_messages_async():
    async def main():
        async with llm.async_anthropic_client() as client:
            reply = await client.messages.create(
                model="claude-x", max_tokens=64, messages=llm.user("Name a moon")
            )
        return reply.content[0].text

    llm.note("async", asyncio.run(main()))


def test_messages_stream_sync():
    with llm.anthropic_client() as client:
        with client.messages.stream(model="claude-x", max_tokens=64, messages=llm.user("Name a star")) as s:
            llm.note("stream_sync", "".join(s.text_stream))


def test_messages_stream_async():
    async def main():
        async with llm.async_anthropic_client() as client:
            async with client.messages.stream(
                model="claude-x", max_tokens=64, messages=llm.user("Name a comet")
            ) as s:
                return "".join([t async for t in s.text_stream])

    llm.note("stream_async", asyncio.run(main()))
"""


def cassette(pytester: pytest.Pytester, name: str) -> dict[str, Any]:
    doc = load_cassette(pytester.path / "fixtures" / "cassettes" / f"{name}.yaml")
    assert doc is not None, f"no cassette {name}"
    return doc


def chat_answers(doc: dict[str, Any]) -> list[str]:
    return [r["response"]["choices"][0]["message"]["content"] for r in doc["recordings"]]


def go_offline(server: FakeLLM, monkeypatch: pytest.MonkeyPatch, *allow_ports: int) -> None:
    """Stop the fake LLM and make the inner project refuse (and log) every other connection."""
    server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    monkeypatch.setenv("PC_ALLOW_PORTS", ",".join(map(str, allow_ports)))


def summary(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if re.match(r"promptcache: \d+ replayed", line)]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_openai_sync_async_stream_and_inner_clients_replay_with_server_stopped_and_no_socket(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI chat (sync, async, streamed), responses, embeddings and a client built by the code under
    test are recorded, then replayed identically with the server stopped and no socket connect at all."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000000000000")
    project.makepyfile(app=APP, test_openai=OPENAI_TESTS)

    recorded = project.runpytest("--promptcache=auto")
    recorded.assert_outcomes(passed=6)
    assert llm_server.calls == 7
    assert summary(recorded).startswith("promptcache: 0 replayed, 7 recorded, 0 missing;")
    live = outputs(project)
    assert live["chat_sync"] == "answer #1 to: Name a colour"
    assert live["stream_sync"].endswith("to: Count to three")
    names = sorted(p.stem for p in (project.path / "fixtures/cassettes/test_openai").glob("*.yaml"))
    assert names == sorted(
        f"test_{n}"
        for n in (
            "chat_sync",
            "chat_async",
            "stream_sync",
            "stream_async",
            "responses_and_embeddings",
            "client_built_by_code_under_test",
        )
    )
    streamed = cassette(project, "test_openai/test_stream_async")["recordings"][0]["stream"]
    assert streamed["response"]["choices"][0]["message"]["content"] == live["stream_async"]

    go_offline(llm_server, monkeypatch)
    replayed = project.runpytest("--promptcache=replay")
    replayed.assert_outcomes(passed=6)
    assert outputs(project) == live
    assert not (project.path / "connects.log").exists()
    assert summary(replayed).startswith("promptcache: 7 replayed, 0 recorded, 0 missing;")


def test_anthropic_sync_async_and_streams_replay_with_server_stopped_and_no_socket(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic messages (sync, async, streamed both ways) replay exactly what was recorded, offline."""
    project.makepyfile(test_claude=ANTHROPIC_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=4)
    assert llm_server.calls == 4
    live = outputs(project)
    assert live["stream_async"].endswith("to: Name a comet")
    assert cassette(project, "test_claude/test_messages_sync")["recordings"][0]["endpoint"] == (
        "anthropic.messages"
    )

    go_offline(llm_server, monkeypatch)
    replayed = project.runpytest("--promptcache=replay")
    replayed.assert_outcomes(passed=4)
    assert outputs(project) == live
    assert not (project.path / "connects.log").exists()


EDITED_TESTS = """
import asyncio

import llm

PROMPT = "Summarise the quarterly report"


def test_sync():
    llm.chat(PROMPT, max_retries=5)


def test_async():
    asyncio.run(llm.achat(PROMPT, max_retries=5))


def test_anthropic_sync():
    with llm.anthropic_client(max_retries=5) as client:
        client.messages.create(model="claude-x", max_tokens=64, messages=llm.user(PROMPT))


def test_anthropic_async():
    async def main():
        async with llm.async_anthropic_client(max_retries=5) as client:
            await client.messages.create(model="claude-x", max_tokens=64, messages=llm.user(PROMPT))

    asyncio.run(main())
"""


def test_edited_prompt_fails_with_diff_and_rerecord_command_without_retries(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One changed word fails sync and async OpenAI and Anthropic tests with the diff and the re-record
    command at the first attempt: nothing reaches the server, and the SDKs (max_retries=5, Anthropic's
    retry loop catching ``Exception``) neither retry nor sleep."""
    project.makepyfile(test_edit=EDITED_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=4)
    assert llm_server.calls == 4

    project.makepyfile(test_edit=EDITED_TESTS.replace("quarterly", "annual"))
    monkeypatch.setenv("PC_LOG_SLEEPS", "1")
    # Under CI=true pytest prints whole failure messages again in its short summary; the counts below
    # are of the failure sections, so the inner run is told it is not on CI.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    result = project.runpytest("--promptcache=replay")

    result.assert_outcomes(failed=4)
    assert llm_server.calls == 4
    assert not (project.path / "sleeps.log").exists()
    out = result.stdout.str()
    for test in ("test_sync", "test_async", "test_anthropic_sync", "test_anthropic_async"):
        assert f"to re-record this test: pytest --promptcache=rewrite test_edit.py::{test}" in out
    assert out.count('-      "content": "Summarise the quarterly report",') == 4
    assert out.count('+      "content": "Summarise the annual report",') == 4
    assert "APIConnectionError" not in out
    # Each test made exactly one attempt: a retry would have counted another miss.
    assert summary(result).startswith("promptcache: 0 replayed, 0 recorded, 4 missing;")


REPEATED_TESTS = """
import llm


def test_roll():
    llm.note("rolls", [llm.chat("Roll a die") for _ in range(3)])
"""


def test_same_request_repeated_is_recorded_and_replayed_in_order(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request made three times gets the three recorded answers in order; a fourth is a miss."""
    project.makepyfile(test_repeat=REPEATED_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    rolls = [f"answer #{n} to: Roll a die" for n in (1, 2, 3)]
    assert outputs(project) == {"rolls": rolls}
    assert chat_answers(cassette(project, "test_repeat/test_roll")) == rolls

    go_offline(llm_server, monkeypatch)
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert outputs(project) == {"rolls": rolls}

    project.makepyfile(test_repeat=REPEATED_TESTS.replace("range(3)", "range(4)"))
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*this exact request was recorded 3 time(s); the test made it 4 times*"])
    assert not (project.path / "connects.log").exists()


COUNTING_TESTS = """
import llm


def test_counts(promptcache):
    llm.chat("Name a colour")
    llm.chat("Name a shape")
    llm.note("counts", [promptcache.calls, promptcache.replayed, promptcache.recorded,
                        promptcache.missing, dict(promptcache.usage)])
"""


def test_fixture_counters_and_session_summary_report_calls_and_tokens(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``promptcache`` fixture and the summary line count replayed, recorded and missing calls and
    the tokens of replayed answers (3 prompt + 6 answer words per call here)."""
    project.makepyfile(test_count=COUNTING_TESTS)
    first = project.runpytest("--promptcache=auto")
    first.assert_outcomes(passed=1)
    assert outputs(project) == {"counts": [2, 0, 2, 0, {}]}
    assert summary(first).startswith("promptcache: 0 replayed, 2 recorded, 0 missing; 0 tokens not paid for")

    project.makepyfile(test_count=COUNTING_TESTS.replace("Name a shape", "Name a size"))
    second = project.runpytest("--promptcache=auto")
    second.assert_outcomes(passed=1)
    assert outputs(project) == {"counts": [2, 1, 1, 0, {"input_tokens": 3, "output_tokens": 6}]}
    assert summary(second).startswith("promptcache: 1 replayed, 1 recorded, 0 missing; 9 tokens not paid for")
    assert llm_server.calls == 3

    go_offline(llm_server, monkeypatch)
    third = project.runpytest("--promptcache=replay")
    third.assert_outcomes(passed=1)
    assert outputs(project) == {"counts": [2, 2, 0, 0, {"input_tokens": 6, "output_tokens": 12}]}
    assert summary(third).startswith("promptcache: 2 replayed, 0 recorded, 0 missing; 18 tokens not paid for")


def test_summary_line_prices_the_replayed_tokens_of_known_models(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Replaying a call to a priced model (gpt-4o: $2.50 in / $10 out per million) adds the money not
    spent to the summary: 3 prompt + 6 answer tokens here, about $0.0001."""
    project.makepyfile(
        test_priced="import llm\n\ndef test_it():\n    llm.chat('Name a colour', model='gpt-4o')\n"
    )
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(passed=1)
    assert summary(result) == "promptcache: 1 replayed, 0 recorded, 0 missing; 9 tokens not paid for (<$0.01)"
    assert llm_server.calls == 1


STREAM_SWITCH = {
    "non-stream recording, stream request": ("llm.chat", "llm.chat_stream"),
    "stream recording, non-stream request": ("llm.chat_stream", "llm.chat"),
}


@pytest.mark.parametrize("case", list(STREAM_SWITCH))
def test_stream_and_non_stream_recordings_are_not_interchangeable(
    project: pytest.Pytester, llm_server: FakeLLM, case: str
) -> None:
    """When the code switches between ``stream=True`` and a plain call (same key: ``stream`` is not part
    of it), replay reports a miss instead of handing the SDK a body of the other kind (which yields an
    empty stream or a ``str`` reply)."""
    recorded_with, replayed_with = STREAM_SWITCH[case]
    source = "import llm\n\ndef test_it():\n    llm.note('answer', {}('Stream or not'))\n"
    project.makepyfile(test_switch=source.format(recorded_with))
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    outputs(project)

    project.makepyfile(test_switch=source.format(replayed_with))
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*promptcache: no recording for this LLM request*"])
    assert outputs(project) == {}
    assert llm_server.calls == 1


PRUNE_TESTS = """
import llm


def test_two():
    llm.chat("alpha prompt")
    llm.chat("beta prompt")


def test_gone():
    llm.chat("gamma prompt")
"""


def test_unused_recordings_are_reported_and_pruned(project: pytest.Pytester, llm_server: FakeLLM) -> None:
    """Recordings a passing replay did not use are counted in the summary; ``--promptcache-prune``
    drops them (and a cassette left empty), keeping what was used."""
    project.makepyfile(test_prune=PRUNE_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=2)
    gone = project.path / "fixtures/cassettes/test_prune/test_gone.yaml"
    assert gone.exists()

    project.makepyfile(
        test_prune=PRUNE_TESTS.replace('    llm.chat("beta prompt")\n', "").replace(
            '    llm.chat("gamma prompt")', "    pass"
        )
    )
    reported = project.runpytest("--promptcache=replay")
    reported.assert_outcomes(passed=2)
    assert summary(reported).endswith("; 2 unused recordings (--promptcache-prune drops them)")
    assert len(cassette(project, "test_prune/test_two")["recordings"]) == 2
    assert gone.exists()

    pruned = project.runpytest("--promptcache=replay", "--promptcache-prune")
    pruned.assert_outcomes(passed=2)
    assert summary(pruned).endswith("; 2 unused recordings (pruned)")
    kept = cassette(project, "test_prune/test_two")["recordings"]
    assert [r["request"]["messages"][0]["content"] for r in kept] == ["alpha prompt"]
    assert not gone.exists()

    clean = project.runpytest("--promptcache=replay")
    clean.assert_outcomes(passed=2)
    assert "unused" not in summary(clean)
    assert llm_server.calls == 3


PASSTHROUGH_TESTS = """
import openai
import pytest

import llm


def test_list_models(promptcache):
    with llm.openai_client() as client, pytest.raises(openai.NotFoundError):
        client.models.list()
    assert promptcache.calls == 0
"""


def test_requests_to_other_endpoints_pass_through_untouched(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """In replay mode a request that is not an LLM call (GET /models) still reaches the network."""
    project.makepyfile(test_pass=PASSTHROUGH_TESTS)
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert [r.path for r in llm_server.requests] == ["/v1/models"]
    assert not (project.path / "fixtures").exists()


GUARD_TESTS = """
import asyncio
import time

import anyio
import openai
import pytest

import llm


def test_guards_see_connects_and_sleeps():
    time.sleep(0)
    anyio.run(anyio.sleep, 0)
    with pytest.raises(openai.APIConnectionError):
        llm.chat("is anyone there?")
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(llm.achat("is anyone there, async?"))
"""


def test_network_and_sleep_guards_of_the_inner_project_detect_what_they_claim_to(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inner guards this module relies on log (and refuse) real sync and async SDK connects, and log
    the sleeps."""
    project.makepyfile(test_guard=GUARD_TESTS)
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    monkeypatch.setenv("PC_LOG_SLEEPS", "1")
    project.runpytest().assert_outcomes(passed=1)
    connects = (project.path / "connects.log").read_text().splitlines()
    assert connects == [repr(("127.0.0.1", llm_server.port))] * 2
    assert (project.path / "sleeps.log").read_text().splitlines() == ["time.sleep 0", "anyio.sleep 0"]
    assert llm_server.calls == 0


XDIST_TESTS = """
import pytest

import llm


@pytest.mark.parametrize("i", range(3))
def test_own(i):
    llm.note(f"{__name__}-own-{i}", llm.chat(f"{__name__} own question {i}"))


@pytest.mark.promptcache(cassette="shared/common")
@pytest.mark.parametrize("i", range(2))
def test_shared(i):
    llm.note(f"{__name__}-shared-{i}", llm.chat(f"{__name__} shared question {i}"))
"""


def test_parallel_workers_record_consistent_cassettes(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``pytest -n 2`` every per-test cassette holds its one recording, the cassette shared by four
    tests on both workers holds all four, no temp file is left, and the result replays offline."""
    project.makepyfile(test_x1=XDIST_TESTS, test_x2=XDIST_TESTS)
    recorded = project.runpytest_subprocess("-n", "2", "--promptcache=auto")
    recorded.assert_outcomes(passed=10)
    assert llm_server.calls == 10
    live = outputs(project)
    assert len(live) == 10

    root = project.path / "fixtures/cassettes"
    for module in ("test_x1", "test_x2"):
        for i in range(3):
            doc = cassette(project, f"{module}/test_own[{i}]")
            assert [r["request"]["messages"][0]["content"] for r in doc["recordings"]] == [
                f"{module} own question {i}"
            ]
    shared = cassette(project, "shared/common")["recordings"]
    prompts = sorted(r["request"]["messages"][0]["content"] for r in shared)
    assert prompts == sorted(f"test_x{f} shared question {i}" for f in (1, 2) for i in range(2))
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]

    go_offline(llm_server, monkeypatch)
    project.runpytest_subprocess("-n", "2", "--promptcache=replay").assert_outcomes(passed=10)
    assert outputs(project) == live
    assert not (project.path / "connects.log").exists()


def test_summary_line_is_shown_under_xdist(project: pytest.Pytester) -> None:
    """With ``pytest -n 2`` the session still ends with the promptcache summary of all workers' calls."""
    project.makepyfile(
        test_pair="import llm\n\ndef test_a():\n    llm.chat('a')\n\ndef test_b():\n    llm.chat('b')\n"
    )
    result = project.runpytest_subprocess("-n", "2", "--promptcache=auto")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["promptcache: 0 replayed, 2 recorded, 0 missing;*"])


REDIS_TESTS = """
import llm


def test_chat():
    llm.note("chat", llm.chat("Describe the sea"))
"""


@pytest.mark.redis
def test_redis_store_records_and_replays_like_yaml(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """With ``--promptcache-store=redis://`` the cassette lands in Redis with the same key and format as
    the YAML file, replays offline (only Redis is reachable), and a miss names the Redis key."""
    project.makepyfile(test_redis=REDIS_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    from_yaml = cassette(project, "test_redis/test_chat")["recordings"][0]

    store = f"--promptcache-store={redis_url}"
    project.runpytest("--promptcache=auto", store).assert_outcomes(passed=1)
    live = outputs(project)
    client = redis.Redis.from_url(redis_url)
    prefix = default_redis_prefix(project.path)
    assert prefix == f"{REDIS_PREFIX}{project.path.name}:"
    raw = client.get(prefix + "test_redis/test_chat")
    assert isinstance(raw, bytes)
    from_redis = parse_cassette(raw)["recordings"][0]
    for field in ("key", "endpoint", "scope", "request"):
        assert from_redis[field] == from_yaml[field]
    assert from_redis["response"]["choices"][0]["message"]["content"] == live["chat"]

    go_offline(llm_server, monkeypatch, urlsplit(redis_url).port or 6379)
    project.runpytest("--promptcache=replay", store).assert_outcomes(passed=1)
    assert outputs(project) == live
    assert not (project.path / "connects.log").exists()

    project.makepyfile(test_redis=REDIS_TESTS.replace("the sea", "the ocean"))
    missed = project.runpytest("--promptcache=replay", store)
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines([f"*cassette: *key {prefix}test_redis/test_chat*"])
    assert re.search(r'\+\s+"content": "Describe the ocean"', missed.stdout.str())
    assert not (project.path / "connects.log").exists()


def test_cassette_paths_are_relative_to_the_rootdir(project: pytest.Pytester) -> None:
    """Recording from a subdirectory still writes under ``<rootdir>/fixtures/cassettes``."""
    project.makeini("[pytest]\n")
    sub = project.mkpydir("pkg")
    (sub / "test_in_pkg.py").write_text("import llm\n\ndef test_it():\n    llm.chat('nested')\n")
    project.runpytest("--promptcache=auto", str(Path("pkg") / "test_in_pkg.py")).assert_outcomes(passed=1)
    assert (project.path / "fixtures/cassettes/pkg/test_in_pkg/test_it.yaml").exists()


def test_cassettes_of_removed_tests_are_reported_and_pruned(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """A cassette whose test no longer exists (in a module this run collected) is reported, deleted by
    ``--promptcache-prune``, and cassettes of modules the run did not collect are never judged."""
    project.makepyfile(test_prune=PRUNE_TESTS, test_other='import llm\n\ndef test_x():\n    llm.chat("x")\n')
    project.runpytest("--promptcache=auto").assert_outcomes(passed=3)
    gone = project.path / "fixtures/cassettes/test_prune/test_gone.yaml"
    other = project.path / "fixtures/cassettes/test_other/test_x.yaml"
    assert gone.exists()
    assert other.exists()

    project.makepyfile(test_prune=PRUNE_TESTS.split("def test_gone", maxsplit=1)[0])
    reported = project.runpytest("--promptcache=replay", "test_prune.py")
    reported.assert_outcomes(passed=1)
    assert summary(reported).endswith(
        "; 1 cassette of a test that no longer exists (--promptcache-prune deletes it)"
    )
    assert gone.exists()

    pruned = project.runpytest("--promptcache=replay", "--promptcache-prune", "test_prune.py")
    pruned.assert_outcomes(passed=1)
    assert summary(pruned).endswith("; 1 cassette of a test that no longer exists (pruned)")
    assert not gone.exists()
    assert other.exists()  # its module was not collected, so it was not judged
    assert llm_server.calls == 4  # the recording run only
