"""What a cassette holds: only what the production cache would store, and no churn when re-recorded."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest
from helpers import outputs

from promptcache._cassette import load_cassette

if TYPE_CHECKING:
    from pathlib import Path

    from fake_llm import FakeLLM

FLAKY_TESTS = """
import llm


def test_it():
    llm.note("answer", llm.chat("Name a river", max_retries=1))
"""


def cassette_path(project: pytest.Pytester, name: str) -> Path:
    return project.path / "fixtures" / "cassettes" / f"{name}.yaml"


@pytest.mark.parametrize("mode", ["auto", "record"])
def test_a_transient_upstream_error_is_neither_recorded_nor_replayed(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """One 500, then the SDK's retry gets a 200: only the 200 is recorded, the summary says what was left
    out, and the replay answers at once, with no retry and no backoff sleep."""
    project.makepyfile(test_flaky=FLAKY_TESTS)
    llm_server.fail_next(500)
    recorded = project.runpytest(f"--promptcache={mode}")
    recorded.assert_outcomes(passed=1)
    assert llm_server.calls == 2
    live = outputs(project)
    doc = load_cassette(cassette_path(project, "test_flaky/test_it"))
    assert doc is not None
    assert [r["status"] for r in doc["recordings"]] == [200]

    llm_server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    monkeypatch.setenv("PC_LOG_SLEEPS", "1")
    replayed = project.runpytest("--promptcache=replay")
    replayed.assert_outcomes(passed=1)
    assert outputs(project) == live
    assert not (project.path / "sleeps.log").exists()
    assert not (project.path / "connects.log").exists()
    assert "not recorded" not in replayed.stdout.str()
    recorded.stdout.fnmatch_lines(["not recorded: 1 upstream error (HTTP 500) in test_flaky.py::test_it"])


EXPECTED_ERROR_TESTS = """
import openai
import pytest

import llm


@pytest.mark.promptcache(record_errors=True)
def test_expects_an_outage():
    with pytest.raises(openai.InternalServerError):
        llm.chat("Name a mountain")


def test_expects_an_outage_unmarked():
    with pytest.raises(openai.InternalServerError):
        llm.chat("Name a lake")
"""


def test_an_error_a_test_asks_for_is_recorded_with_record_errors(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """``record_errors=True`` records the 500 the test expects, and the replay raises it again with the
    server healthy; without the marker the error is not recorded, so the replay has nothing to answer."""
    project.makepyfile(test_outage=EXPECTED_ERROR_TESTS)
    llm_server.fail_next(500, count=2)
    recorded = project.runpytest("--promptcache=auto")
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(
        ["not recorded: 1 upstream error (HTTP 500) in test_outage.py::test_expects_an_outage_unmarked"]
    )
    assert "test_outage.py::test_expects_an_outage " not in recorded.stdout.str()
    doc = load_cassette(cassette_path(project, "test_outage/test_expects_an_outage"))
    assert doc is not None
    assert [r["status"] for r in doc["recordings"]] == [500]
    assert not cassette_path(project, "test_outage/test_expects_an_outage_unmarked").exists()

    replayed = project.runpytest("--promptcache=replay")
    replayed.assert_outcomes(passed=1, failed=1)
    assert llm_server.calls == 2
    replayed.stdout.fnmatch_lines(
        ["*_ test_expects_an_outage_unmarked _*", "promptcache: no recording for this LLM request*"]
    )


def test_an_answer_the_cache_would_not_store_is_not_recorded(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """A cut-off answer (``finish_reason: length``), which production never caches, is not recorded
    either; the summary names the reason."""
    project.makepyfile(test_cut="import llm\n\ndef test_it():\n    llm.chat('Write an essay')\n")
    llm_server.next_finish_reason = "length"
    recorded = project.runpytest("--promptcache=auto")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(
        ["not recorded: 1 answer the cache would not store (finish_reason 'length') in test_cut.py::test_it"]
    )
    assert not cassette_path(project, "test_cut/test_it").exists()


# -- deterministic cassettes ---------------------------------------------------------------------------

STABLE_TESTS = """
import asyncio

import llm


def test_calls():
    llm.note("chat", llm.chat("Name a colour"))
    llm.note("chat again", llm.chat("Name a colour"))
    with llm.openai_client() as client:
        llm.note("responses", client.responses.create(model="gpt-x", input="Name a fruit").output_text)
        client.embeddings.create(model="emb", input="Name a tree")
    with llm.anthropic_client() as claude:
        reply = claude.messages.create(model="claude-x", max_tokens=32, messages=llm.user("Name a bird"))
    llm.note("messages", reply.content[0].text)
"""


def test_re_recording_identical_answers_leaves_the_cassette_byte_identical(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Answers that differ only in ids (``chatcmpl-``, ``resp_``, ``msg_``), creation times and the
    recording time leave the file byte for byte as it was, in ``record`` and in ``rewrite``; an answer
    whose text changed does change it."""
    project.makepyfile(test_stable=STABLE_TESTS)
    path = cassette_path(project, "test_stable/test_calls")
    llm_server.numbered = False
    llm_server.clock = lambda: 1_700_000_000.0
    project.runpytest("--promptcache=record").assert_outcomes(passed=1)
    first = path.read_bytes()
    assert b"chatcmpl-1" in first
    assert b"1700000000" in first

    for mode, created in (("record", 1_800_000_000.0), ("rewrite", 1_900_000_000.0)):
        llm_server.clock = functools.partial(float, created)
        project.runpytest(f"--promptcache={mode}").assert_outcomes(passed=1)
        assert path.read_bytes() == first, mode
    assert llm_server.calls == 15  # each run really called upstream, with new ids and times

    llm_server.numbered = True
    project.runpytest("--promptcache=record").assert_outcomes(passed=1)
    changed = path.read_text(encoding="utf-8")
    assert "answer #16 to: Name a colour" in changed


TOOL_CHAIN_TESTS = """
import json

import llm

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_tool_round_trip():
    with llm.openai_client() as client:
        messages = llm.user("use_tool: find the capital")
        first = client.chat.completions.create(model="gpt-x", messages=messages, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "Paris"})
        second = client.chat.completions.create(model="gpt-x", messages=messages, tools=TOOLS)
    llm.note("final", second.choices[0].message.content)
"""


def test_an_answer_whose_id_a_later_request_sends_back_is_not_swapped_for_the_old_one(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool call id the next request sends back ties the two recordings together: re-recording keeps
    the new pair (the old answer would send the old id, which the new second recording was not keyed
    by), so the replay still finds every request."""
    project.makepyfile(test_chain=TOOL_CHAIN_TESTS)
    llm_server.numbered = False
    project.runpytest("--promptcache=record").assert_outcomes(passed=1)
    project.runpytest("--promptcache=record").assert_outcomes(passed=1)
    live = outputs(project)
    doc = load_cassette(cassette_path(project, "test_chain/test_tool_round_trip"))
    assert doc is not None
    first_answers = [
        rec["response"]["choices"][0]["message"]["tool_calls"][0]["id"]
        for rec in doc["recordings"]
        if len(rec["request"]["messages"]) == 1
    ]
    assert first_answers == ["call_3"]  # the second run's answer, whose id its second request sent back

    llm_server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert outputs(project)["final"] == live["final"]


def test_what_was_not_recorded_is_summarised_under_xdist(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """With ``pytest -n 2`` the controller's summary lists what the workers left out."""
    project.makepyfile(test_flaky=FLAKY_TESTS)
    llm_server.fail_next(503)
    result = project.runpytest_subprocess("-n", "2", "--promptcache=auto")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["not recorded: 1 upstream error (HTTP 503) in test_flaky.py::test_it"])
