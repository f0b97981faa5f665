"""Key schema v2 in the plugin: portable recordings through an alias, v1 cassettes, `promptcache migrate`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from helpers import outputs

from promptcache._cassette import load_cassette, parse_cassette
from promptcache._keys import SCHEMA_VERSION
from promptcache.cli import main

if TYPE_CHECKING:
    import pytest
    from fake_llm import FakeLLM

CHAT_TESTS = """
import llm


def test_chat():
    with llm.openai_client() as client:
        reply = client.chat.completions.create(model="gpt-x", messages=llm.user("Name a colour"))
    llm.note("chat", reply.choices[0].message.content)


def test_conversation():
    with llm.openai_client() as client:
        # extra_body: the oldest supported openai has no conversation= parameter yet
        reply = client.responses.create(model="gpt-x", input="next", extra_body={"conversation": "conv_1"})
    llm.note("conversation", reply.output_text)
"""

CASSETTE = "fixtures/cassettes/test_app/test_chat.yaml"


def as_v1(text: str) -> str:
    """A cassette as promptcache 0.2 wrote it: no key_schema line, no route lines."""
    # A route is a block mapping ("route:" then deeper-indented lines) or one flow line.
    return re.sub(r"^(key_schema: .*|( +)route:.*(\n\2 .*)*)\n", "", text, flags=re.MULTILINE)


def test_an_alias_keeps_recordings_portable_across_hosts(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded on one port, replayed against another: one alias keys both; without it, a clear miss."""
    project.makepyfile(test_app=CHAT_TESTS)
    project.makeini("[pytest]\npromptcache_upstream = fake\n")
    project.runpytest("--promptcache=record", "-k", "test_chat").assert_outcomes(passed=1)
    doc = load_cassette(project.path / CASSETTE)
    assert doc is not None
    assert doc["key_schema"] == SCHEMA_VERSION
    assert doc["recordings"][0]["route"] == {"upstream": "fake"}
    monkeypatch.setenv("PC_LLM_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay", "-k", "test_chat").assert_outcomes(passed=1)
    project.makeini("[pytest]\n")
    result = project.runpytest("--promptcache=replay", "-k", "test_chat")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the route differs*", "*promptcache_upstream*"])


def test_a_v1_cassette_fails_once_with_the_migrate_command_and_migrate_fixes_it(
    project: pytest.Pytester, llm_server: FakeLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying a v1 cassette says how to re-key it; `promptcache migrate` re-keys it to the keys a live
    recording gets, responses byte for byte."""
    project.makepyfile(test_app=CHAT_TESTS)
    project.makeini("[pytest]\npromptcache_upstream = fake\n")
    project.runpytest("--promptcache=record", "-k", "test_chat").assert_outcomes(passed=1)
    path = project.path / CASSETTE
    recorded = path.read_text()
    path.write_text(as_v1(recorded))

    result = project.runpytest("--promptcache=replay", "-k", "test_chat")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*recorded under key schema v1*", "*promptcache migrate*"])
    assert main(["migrate", str(path.parent), "--upstream", "fake"]) == 0
    assert "1 cassette (1 recording) re-keyed to key schema v2" in capsys.readouterr().out
    assert load_cassette(path) == parse_cassette(recorded)  # the keys a live recording gets
    project.runpytest("--promptcache=replay", "-k", "test_chat").assert_outcomes(passed=1)
    assert main(["migrate", str(path), "--check"]) == 0  # already current


def test_server_state_requests_fail_replay_with_the_reason_unless_opted_in(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """A conversation call is neither recorded nor replayed by default; the failure names why and how."""
    project.makepyfile(test_app=CHAT_TESTS)
    project.runpytest("--promptcache=record", "-k", "conversation").assert_outcomes(passed=1)
    assert not (project.path / "fixtures/cassettes/test_app/test_conversation.yaml").exists()
    result = project.runpytest("--promptcache=replay", "-k", "conversation")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mutable server-side state (conversation)*", "*cache_server_state=True*"])
    project.makeini("[pytest]\npromptcache_cache_server_state = true\n")
    project.runpytest("--promptcache=record", "-k", "conversation").assert_outcomes(passed=1)
    project.runpytest("--promptcache=replay", "-k", "conversation").assert_outcomes(passed=1)


APP_CACHE_TESTS = """
import llm
from promptcache import PromptCache
from promptcache.openai import wrap

CACHE = PromptCache.from_url("memory://")  # the app's module-level production cache


def ask():
    with wrap(llm.openai_client(), CACHE, agent_id="app") as client:
        reply = client.chat.completions.create(model="gpt-x", messages=llm.user("Same question"))
    return reply.choices[0].message.content


def test_a():
    llm.note("a", ask())


def test_b():
    llm.note("b", ask())
    llm.note("app_cache", [CACHE.stats().hits, CACHE.stats().bypasses])
"""


def test_a_wrapped_production_cache_steps_aside_for_the_recorder(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code under test's own cache neither hides a call from the cassette (each test records its own)
    nor keeps what a replay answers; a test can keep it with production_cache=True."""
    project.makepyfile(test_app=APP_CACHE_TESTS)
    project.makeini("[pytest]\npromptcache_upstream = fake\n")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=2)
    for name in ("test_a", "test_b"):
        doc = load_cassette(project.path / f"fixtures/cassettes/test_app/{name}.yaml")
        assert doc is not None
        assert len(doc["recordings"]) == 1, name
    assert outputs(project)["app_cache"] == [0, 2]  # both calls bypassed the app cache
    monkeypatch.setenv("PC_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay", "test_app.py::test_b").assert_outcomes(passed=1)
    project.makepyfile(
        test_keep=APP_CACHE_TESTS.replace(
            "def test_", "@__import__('pytest').mark.promptcache(production_cache=True)\ndef test_"
        )
    )
    monkeypatch.delenv("PC_BLOCK_NETWORK")
    monkeypatch.setenv("PC_LLM_URL", llm_server.base_url)
    project.runpytest("--promptcache=auto", "test_keep.py").assert_outcomes(passed=2)
    assert outputs(project)["app_cache"] == [1, 0]  # test_b was answered by the app's cache
