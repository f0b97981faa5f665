"""One loader for replay and ``promptcache verify``: what verify rejects, replay refuses with the same
message, naming the file, instead of replaying it into confusing misses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptcache.cli._cassettes import verify_cassette

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

ONE_CALL = """
import llm


def test_chat():
    llm.chat("Name a colour")
"""


def _recorded(project: pytest.Pytester) -> Path:
    project.makepyfile(test_one=ONE_CALL)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    return project.path / "fixtures/cassettes/test_one/test_chat.yaml"


def _replay_refuses_with_verifys_message(project: pytest.Pytester, path: Path) -> list[str]:
    """Replay errors the test with each of verify's problems for the file; returns them."""
    _, problems = verify_cassette(path.read_bytes(), str(path))
    assert problems, "verify accepts the edited cassette"
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    for problem in problems:
        assert problem.startswith(f"{path}: ")
        assert problem in out
    assert "no recording for this LLM request" not in out
    return problems


def test_a_key_that_does_not_match_its_request_is_refused_on_replay(
    project: pytest.Pytester,
) -> None:
    """The test's prompt and the cassette's request were both edited (the key was not): replay errors
    with verify's "does not match its request" naming the file, instead of a miss whose diff shows two
    identical requests."""
    path = _recorded(project)
    text = path.read_text(encoding="utf-8")
    assert text.count("content: Name a colour") == 1  # the request's message (the answer says "to: ...")
    path.write_text(text.replace("content: Name a colour", "content: Name a color"), encoding="utf-8")
    project.makepyfile(test_one=ONE_CALL.replace("Name a colour", "Name a color"))
    problems = _replay_refuses_with_verifys_message(project, path)
    assert any("does not match its request" in p for p in problems)


def test_a_duplicate_yaml_key_is_refused_on_replay(project: pytest.Pytester) -> None:
    """A mapping key written twice (YAML keeps the last, silently) errors the replay with verify's
    "duplicate key" message and line, naming the file."""
    path = _recorded(project)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("  status: 200\n", "  status: 200\n  status: 200\n", 1), encoding="utf-8")
    problems = _replay_refuses_with_verifys_message(project, path)
    assert any("duplicate key 'status'" in p for p in problems)


def test_verify_and_replay_accept_what_the_plugin_records(project: pytest.Pytester) -> None:
    """A freshly recorded cassette passes verify and replays (the checks do not refuse good files)."""
    path = _recorded(project)
    assert verify_cassette(path.read_bytes(), str(path)) == (1, [])
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
