"""How record/replay is switched on and configured: flag, ini, marker, fixture, their precedence, modes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from helpers import outputs

from promptcache._cassette import load_cassette

if TYPE_CHECKING:
    from pathlib import Path

    from fake_llm import FakeLLM

VALID_MODES = "'replay', 'auto', 'record', 'rewrite', 'off'"

ONE_CALL = """
import llm


def test_chat():
    llm.note("answer", llm.chat("Name a river"))
"""


def recordings(path: Path) -> list[dict[str, Any]]:
    doc = load_cassette(path)
    assert doc is not None, f"no cassette at {path}"
    return list(doc["recordings"])


def prompts(path: Path) -> list[str]:
    return [r["request"]["messages"][0]["content"] for r in recordings(path)]


def answers(path: Path) -> list[str]:
    return [r["response"]["choices"][0]["message"]["content"] for r in recordings(path)]


# --- switching it on ----------------------------------------------------------------------------------


DISABLED_TESTS = """
import llm


def test_plain():
    llm.chat("Name a river")


def test_wants_fixture(promptcache):
    pass
"""


def test_without_flag_ini_or_marker_nothing_is_intercepted(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Not enabled, calls go upstream, nothing is written, and the ``promptcache`` fixture explains why."""
    project.makepyfile(test_off=DISABLED_TESTS)
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the promptcache fixture needs record/replay enabled*"])
    assert llm_server.calls == 1
    assert not (project.path / "fixtures").exists()
    assert not any(line.startswith("promptcache: ") for line in result.outlines)


@pytest.mark.parametrize("route", ["flag", "ini", "marker"])
def test_enabled_by_flag_ini_or_marker(project: pytest.Pytester, llm_server: FakeLLM, route: str) -> None:
    """Each of ``--promptcache``, ini ``promptcache_mode`` and the marker enables recording (auto: the
    second run replays); the marker enables only the test it marks."""
    args: list[str] = []
    source = ONE_CALL + "\n\ndef test_unmarked():\n    llm.chat('Name a lake')\n"
    if route == "flag":
        args = ["--promptcache=auto"]
    elif route == "ini":
        project.makeini("[pytest]\npromptcache_mode = auto\n")
    else:
        source = source.replace("def test_chat", "@pytest.mark.promptcache('auto')\ndef test_chat")
        source = "import pytest\n" + source
    project.makepyfile(test_route=source)

    project.runpytest(*args).assert_outcomes(passed=2)
    project.runpytest(*args).assert_outcomes(passed=2)
    cassettes = project.path / "fixtures/cassettes/test_route"
    assert answers(cassettes / "test_chat.yaml") == ["answer #1 to: Name a river"]
    if route == "marker":
        assert not (cassettes / "test_unmarked.yaml").exists()
        assert llm_server.calls == 3  # the river once, the unmarked lake on both runs
    else:
        assert (cassettes / "test_unmarked.yaml").exists()
        assert llm_server.calls == 2


MARKED_SHARED = """
import pytest

import llm


@pytest.mark.promptcache("auto", cassette="shared/triage", agent_id="triage-bot", agent_version="2.1")
def test_first():
    llm.chat("Ticket one")


@pytest.mark.promptcache(mode="auto", cassette="shared/triage", agent_id="triage-bot", agent_version="2.1")
def test_second():
    llm.chat("Ticket two")
"""


def test_marker_names_the_cassette_and_the_agent(project: pytest.Pytester, llm_server: FakeLLM) -> None:
    """``@pytest.mark.promptcache(mode, cassette=, agent_id=, agent_version=)`` records two tests into
    one named cassette under that agent scope, and both replay from it."""
    project.makepyfile(test_marked=MARKED_SHARED)
    project.runpytest().assert_outcomes(passed=2)
    path = project.path / "fixtures/cassettes/shared/triage.yaml"
    recs = recordings(path)
    assert sorted(r["request"]["messages"][0]["content"] for r in recs) == ["Ticket one", "Ticket two"]
    assert {(r["scope"]["agent_id"], r["scope"]["agent_version"]) for r in recs} == {("triage-bot", "2.1")}
    assert not (project.path / "fixtures/cassettes/test_marked").exists()

    project.runpytest("--promptcache=replay").assert_outcomes(passed=2)
    assert llm_server.calls == 2


INI_TESTS = """
import llm


def test_chat():
    with llm.openai_client() as client:
        client.chat.completions.create(
            model="gpt-x",
            messages=llm.user("Say   hello\\n  to the team"),
            extra_body={"session_ref": "ref-private-77"},
        )
"""

PYPROJECT = """
[tool.pytest.ini_options]
promptcache_mode = "auto"
promptcache_store = "recorded/llm"
promptcache_agent_id = "ini-agent"
promptcache_scrub_fields = ["session_ref"]
promptcache_policy = "collapse"
"""


def test_ini_options_configure_store_agent_scrubbing_and_policy(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """pyproject ini options set the mode, store folder, agent id, extra scrubbed fields and key policy;
    ``--promptcache-store`` on the command line overrides the ini store."""
    project.makepyprojecttoml(PYPROJECT)
    project.makepyfile(test_ini=INI_TESTS)
    project.runpytest().assert_outcomes(passed=1)
    path = project.path / "recorded/llm/test_ini/test_chat.yaml"
    assert recordings(path)[0]["scope"]["agent_id"] == "ini-agent"
    assert "ref-private-77" not in path.read_text(encoding="utf-8")
    assert not (project.path / "fixtures").exists()

    # collapse: a prompt that differs only in whitespace is the same key, so replay hits.
    project.makepyfile(test_ini=INI_TESTS.replace("Say   hello\\n  to", "Say hello to"))
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert llm_server.calls == 1

    project.runpytest("--promptcache-store=elsewhere").assert_outcomes(passed=1)
    assert (project.path / "elsewhere/test_ini/test_chat.yaml").exists()
    assert llm_server.calls == 2


PRECEDENCE_ROOT = """
import llm


def test_ini(promptcache):
    llm.note("ini", [promptcache.mode, promptcache.agent_id, promptcache.agent_version])
"""

PRECEDENCE_SUB_CONFTEST = """
import pytest


@pytest.fixture
def promptcache_config():
    return {"mode": "auto", "agent_id": "fixture-agent", "agent_version": "7"}
"""

PRECEDENCE_SUB = """
import pytest

import llm


def test_fixture(promptcache):
    llm.note("fixture", [promptcache.mode, promptcache.agent_id, promptcache.agent_version])


@pytest.mark.promptcache(mode="rewrite", agent_id="marker-agent")
def test_marker(promptcache):
    llm.note("marker", [promptcache.mode, promptcache.agent_id, promptcache.agent_version])
"""


def test_precedence_is_cli_then_marker_then_fixture_then_ini(project: pytest.Pytester) -> None:
    """Each setting comes from the command line, else the marker, else ``promptcache_config``, else ini."""
    project.makeini("[pytest]\npromptcache_mode = record\npromptcache_agent_id = ini-agent\n")
    project.makepyfile(test_root=PRECEDENCE_ROOT)
    sub = project.mkdir("sub")
    (sub / "conftest.py").write_text(PRECEDENCE_SUB_CONFTEST)
    (sub / "test_sub.py").write_text(PRECEDENCE_SUB)

    project.runpytest().assert_outcomes(passed=3)
    assert outputs(project) == {
        "ini": ["record", "ini-agent", "0"],
        "fixture": ["auto", "fixture-agent", "7"],
        "marker": ["rewrite", "marker-agent", "7"],
    }

    project.runpytest("--promptcache=replay").assert_outcomes(passed=3)
    assert outputs(project) == {
        "ini": ["replay", "ini-agent", "0"],
        "fixture": ["replay", "fixture-agent", "7"],
        "marker": ["replay", "marker-agent", "7"],
    }


def test_fixture_without_a_mode_does_not_enable_record_replay(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """A ``promptcache_config`` that only sets the agent leaves plain tests untouched (not enabled)."""
    project.makeconftest(
        (project.path / "conftest.py").read_text()
        + "\n\n@pytest.fixture\ndef promptcache_config():\n    return {'agent_id': 'x'}\n"
    )
    project.makepyfile(test_plain=ONE_CALL)
    project.runpytest().assert_outcomes(passed=1)
    assert llm_server.calls == 1
    assert not (project.path / "fixtures").exists()


# --- bad values -----------------------------------------------------------------------------------------


def test_bad_mode_on_the_command_line_is_a_usage_error_listing_the_modes(project: pytest.Pytester) -> None:
    """``--promptcache=replya`` stops the run with a usage error that lists every valid mode."""
    project.makepyfile(test_x="def test_x():\n    pass\n")
    result = project.runpytest("--promptcache=replya")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--promptcache must be one of {VALID_MODES}, got 'replya'*"])


def test_bad_mode_in_ini_is_a_usage_error_listing_the_modes(project: pytest.Pytester) -> None:
    """A typo in ini ``promptcache_mode`` stops the run with one usage error listing every valid mode,
    instead of erroring every test."""
    project.makeini("[pytest]\npromptcache_mode = replya\n")
    project.makepyfile(test_x="def test_x():\n    pass\n\ndef test_y():\n    pass\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*must be one of {VALID_MODES}, got 'replya'*"])


def test_bad_mode_in_a_marker_errors_that_test_listing_the_modes(project: pytest.Pytester) -> None:
    """A marker with an unknown mode errors only the test it marks, with the valid modes in the message."""
    project.makepyfile(
        test_x=(
            "import pytest\n\n@pytest.mark.promptcache(mode='recrod')\ndef test_bad():\n    pass\n\n"
            "def test_fine():\n    pass\n"
        )
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*must be one of {VALID_MODES}, got 'recrod'*"])


# --- modes ------------------------------------------------------------------------------------------------


def test_replay_without_a_cassette_fails_and_says_how_to_record(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Replay with nothing recorded sends nothing and tells the user to record with ``--promptcache=auto``."""
    project.makepyfile(test_new=ONE_CALL)
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the cassette has no recordings (record them with --promptcache=auto)*",
            "*to re-record this test: pytest --promptcache=rewrite test_new.py::test_chat*",
        ]
    )
    assert llm_server.calls == 0
    assert not (project.path / "fixtures").exists()


def test_auto_replays_what_exists_and_records_only_what_is_missing(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """``auto`` answers a recorded request from the cassette and sends (and appends) only the new one."""
    project.makepyfile(test_auto=ONE_CALL)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    project.makepyfile(test_auto=ONE_CALL + "    llm.note('second', llm.chat('Name a sea'))\n")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    assert outputs(project) == {"answer": "answer #1 to: Name a river", "second": "answer #2 to: Name a sea"}
    assert llm_server.calls == 2
    assert prompts(project.path / "fixtures/cassettes/test_auto/test_chat.yaml") == [
        "Name a river",
        "Name a sea",
    ]


def test_record_calls_again_and_overwrites_only_the_requests_made(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """``record`` sends even recorded requests and replaces their recordings, keeping the others."""
    path = project.path / "fixtures/cassettes/test_rec/test_chat.yaml"
    project.makepyfile(test_rec=ONE_CALL + "    llm.chat('Name a sea')\n")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    project.makepyfile(test_rec=ONE_CALL)
    project.runpytest("--promptcache=record").assert_outcomes(passed=1)
    assert llm_server.calls == 3
    assert outputs(project)["answer"] == "answer #3 to: Name a river"
    assert sorted(answers(path)) == ["answer #2 to: Name a sea", "answer #3 to: Name a river"]

    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert outputs(project)["answer"] == "answer #3 to: Name a river"


def test_rewrite_drops_the_tests_recordings_then_records(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """``rewrite`` forgets everything the test had recorded, so only the requests it makes now remain."""
    path = project.path / "fixtures/cassettes/test_rw/test_chat.yaml"
    project.makepyfile(test_rw=ONE_CALL + "    llm.chat('Name a sea')\n")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    project.makepyfile(test_rw=ONE_CALL)
    project.runpytest("--promptcache=rewrite").assert_outcomes(passed=1)
    assert llm_server.calls == 3
    assert answers(path) == ["answer #3 to: Name a river"]


def test_off_sends_everything_and_leaves_cassettes_alone(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """``--promptcache=off`` beats a marker: calls go upstream and the recorded cassette is untouched."""
    project.makepyfile(test_off=ONE_CALL)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    path = project.path / "fixtures/cassettes/test_off/test_chat.yaml"
    before = path.read_bytes()
    outputs(project)

    project.makepyfile(
        test_off="import pytest\n"
        + ONE_CALL.replace("def test", "@pytest.mark.promptcache('replay')\ndef test")
    )
    project.runpytest("--promptcache=off").assert_outcomes(passed=1)
    assert outputs(project) == {"answer": "answer #2 to: Name a river"}
    assert llm_server.calls == 2
    assert path.read_bytes() == before
