"""Scrubbing keeps secrets out of cassettes without changing answers: a replay returns what the live call
did, and when it cannot (a credential the provider echoed), the test is told at record time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from helpers import outputs

from promptcache._cassette import find_secret, scrub, scrub_request
from promptcache.cli._cassettes import verify_cassette

if TYPE_CHECKING:
    from fake_llm import FakeLLM

OPENAI_LIKE = "sk-proj-" + "Q7r8" * 6
SCRUB_WARNING = "promptcache.pytest_plugin._content.CassetteScrubWarning"
PROSE = [
    "Explain our risk-management-framework",
    "a market for bearer securities",
    "Bearer bonds-and-securities desk",
    "Bearer 2024-annual-report",
    "the sk-learn-style pipeline and the task-sk-1 ticket",
    "ask-me-anything about disk-encryption-keys",
]


@pytest.mark.parametrize("text", PROSE)
def test_prose_is_neither_flagged_nor_scrubbed(text: str) -> None:
    """Words that merely contain ``sk-`` or follow "bearer" are not credentials."""
    assert find_secret(text) is None
    assert scrub({"content": text}) == {"content": text}


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-" + "A1b2" * 6,
        "sk-" + "Zq81" * 12,
        "sk-ant-api03-" + "C3d4" * 6,
        "Bearer eyJhbGciOi.payload.sig",
        "Bearer " + "tok9Xy" * 4,
        "AKIA" + "ABCDEFGH12345678",
        "ghp_" + "a" * 36,
    ],
)
def test_key_shaped_values_inside_text_are_still_found(secret: str) -> None:
    """Anchored patterns still find a key at a word start, inside quotes, after ``=`` or a colon."""
    for text in (secret, f"my key={secret}.", f'"{secret}"', f"key:{secret} ok"):
        assert find_secret(text) is not None, text
        assert secret not in scrub(text), text


PROSE_TESTS = f"""
import llm


def test_prose():
    llm.note("answer", llm.chat({" and ".join(PROSE)!r}))
"""


def test_prose_in_prompts_and_answers_is_recorded_and_replayed_as_answered(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt about risk-management and bearer securities, echoed in the answer, is stored as sent and
    answered, and the replay returns the very answer the live call did."""
    project.makepyfile(test_words=PROSE_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    live = outputs(project)
    text = (project.path / "fixtures/cassettes/test_words/test_prose.yaml").read_text(encoding="utf-8")
    assert "<scrubbed>" not in text
    assert "risk-management-framework" in text

    llm_server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert outputs(project) == live


DOC_KEY = "sk-proj-EXAMPLEa1b2c3d4e5f6g7h8"


def _answer_with(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-doc",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }


DOC_KEY_TESTS = """
import pytest

import llm


{marker}
def test_docs():
    llm.note("answer", llm.chat("Which key goes in the docs?"))
"""


def test_a_key_shaped_answer_the_request_did_not_carry_is_refused_not_silently_changed(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """An answer holding a key-shaped value that no credential of the request explains is not rewritten
    (the replay would differ); writing it is refused at record time, naming the file and the way to keep
    a deliberate value."""
    project.makepyfile(test_doc=DOC_KEY_TESTS.format(marker=""))
    llm_server.fail_next(200, body=_answer_with(f"Put {DOC_KEY} in the example."))
    result = project.runpytest("--promptcache=auto")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*SecretLeakError: refusing to write *test_docs.yaml*allow_secrets*"])
    assert not (project.path / "fixtures/cassettes/test_doc/test_docs.yaml").exists()


def test_allow_secrets_keeps_a_deliberate_value_and_verify_accepts_it(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allow_secrets`` on the marker keeps the value in the recorded answer (the replay returns it as
    answered), and ``promptcache verify`` accepts the file, since the cassette lists the value."""
    marker = f"@pytest.mark.promptcache(allow_secrets=[{DOC_KEY!r}])"
    project.makepyfile(test_doc=DOC_KEY_TESTS.format(marker=marker))
    llm_server.fail_next(200, body=_answer_with(f"Put {DOC_KEY} in the example."))
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    live = outputs(project)
    assert live == {"answer": f"Put {DOC_KEY} in the example."}
    path = project.path / "fixtures/cassettes/test_doc/test_docs.yaml"
    assert verify_cassette(path.read_bytes(), str(path)) == (1, [])

    llm_server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert outputs(project) == live


ECHO_KEY_TESTS = """
import llm


def test_echo():
    llm.note("answer", llm.chat(f"repeat after me: {llm.OPENAI_KEY}"))
"""


def test_an_answer_changed_by_scrubbing_is_warned_about_and_summarised(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """The provider echoes the API key the request carried: it is cut from the recorded answer, and the
    record run warns and lists the test in the terminal summary (the replay will differ there)."""
    project.makepyfile(test_echo=ECHO_KEY_TESTS)
    result = project.runpytest("--promptcache=auto", "-W", f"default::{SCRUB_WARNING}")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*CassetteScrubWarning: promptcache: the recorded answer of test_echo.py::test_echo differs*",
            "scrubbed (replay differs from the live call): 1 answer * in test_echo.py::test_echo",
        ]
    )
    text = (project.path / "fixtures/cassettes/test_echo/test_echo.yaml").read_text(encoding="utf-8")
    assert "sk-test-0000" not in text
    assert llm_server.calls == 1


def test_values_cut_from_a_request_are_the_ones_cut_from_its_answer() -> None:
    """What pattern and field scrubbing cut from a request (a key in a prompt, a bearer token with and
    without its scheme, a named field) is what the answer is scrubbed of; prose is not among them."""
    token = "tok9Xy" * 4
    request = {
        "messages": [{"content": f"use {OPENAI_LIKE} with Bearer {token} for our risk-management plan"}],
        "api_key": "plain-looking-value-1",
    }
    scrubbed, cut = scrub_request(request)
    assert cut == {OPENAI_LIKE, f"Bearer {token}", token, "plain-looking-value-1"}
    assert scrubbed["messages"][0]["content"] == "use <scrubbed> with <scrubbed> for our risk-management plan"


def test_a_tool_schema_declaring_a_password_parameter_is_kept_and_scrubbed_within() -> None:
    """A field named like a credential whose value is an object (a tool's JSON schema with a ``password``
    or ``token`` parameter) is no secret: recording crashed on it (unhashable dict, after the upstream
    call was paid for). Its contents are still scrubbed; a named value or list is still replaced."""
    schema = {"type": "object", "properties": {"password": {"type": "string", "description": "the pass"}}}
    tools = [{"type": "function", "function": {"name": "login", "parameters": schema}}]
    request = {"model": "m", "tools": tools, "token": ["sk-proj-" + "a" * 40], "password": "hunter22"}
    out = scrub(request)
    assert out["tools"] == tools
    assert (out["token"], out["password"]) == ("<scrubbed>", "<scrubbed>")
