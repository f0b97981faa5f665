"""The plugin's lifecycle (#15): what prune and rewrite may remove (subset runs, shared cassettes, xdist),
interception for the whole session, replay with no API key, the Redis store's prefix and reachability,
and the details of the summary and of miss reports."""

from __future__ import annotations

import os
import re
import socket
import stat
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
import redis
from helpers import outputs

from promptcache._cassette import dump_cassette, load_cassette
from promptcache.pytest_plugin._prune import Outcome
from promptcache.pytest_plugin._recorder import Mode, Recorder
from promptcache.pytest_plugin._report import summary_line
from promptcache.pytest_plugin._stores import DirectoryStore

if TYPE_CHECKING:
    from pathlib import Path

    from fake_llm import FakeLLM

XDIST = [pytest.param((), id="serial"), pytest.param(("-n", "2"), id="xdist")]


def run(project: pytest.Pytester, xdist: tuple[str, ...], *args: str) -> pytest.RunResult:
    """An inner run: in process, or under pytest-xdist in a subprocess."""
    if xdist:
        return project.runpytest_subprocess(*xdist, *args)
    return project.runpytest(*args)


def cassette_files(project: pytest.Pytester) -> list[str]:
    root = project.path / "fixtures/cassettes"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def cassette(project: pytest.Pytester, name: str) -> dict[str, Any]:
    doc = load_cassette(project.path / "fixtures/cassettes" / f"{name}.yaml")
    assert doc is not None, f"no cassette {name}"
    return doc


def prompts(doc: dict[str, Any]) -> list[str]:
    return [r["request"]["messages"][0]["content"] for r in doc["recordings"]]


def summary(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if re.match(r"promptcache: \d+ replayed", line)]
    assert len(lines) == 1, result.outlines
    return lines[0]


def go_offline(server: FakeLLM, monkeypatch: pytest.MonkeyPatch, *allow_ports: int) -> None:
    server.stop()
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    monkeypatch.setenv("PC_ALLOW_PORTS", ",".join(map(str, allow_ports)))


SUBSET_TESTS = """
import llm


def test_a():
    llm.note("a", llm.chat("alpha"))


def test_b():
    llm.note("b", llm.chat("beta"))


def test_c():
    llm.note("c", llm.chat("gamma"))
"""


@pytest.mark.parametrize("xdist", XDIST)
def test_a_subset_run_with_prune_keeps_the_cassettes_of_the_tests_it_did_not_select(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...]
) -> None:
    """With prune on (ini), running one test by node id, in replay or with the re-record command a miss
    prints, deletes nothing of the module's other tests and says why; everything replays offline."""
    project.makeini("[pytest]\npromptcache_prune = true\n")
    project.makepyfile(test_sub=SUBSET_TESTS)
    run(project, xdist, "--promptcache=auto").assert_outcomes(passed=3)
    live = outputs(project)
    files = cassette_files(project)
    assert files == ["test_sub/test_a.yaml", "test_sub/test_b.yaml", "test_sub/test_c.yaml"]

    one = run(project, xdist, "--promptcache=replay", "test_sub.py::test_a")
    one.assert_outcomes(passed=1)
    assert summary(one).endswith("; kept 2 cassettes: tests not selected in this run")
    assert cassette_files(project) == files

    rewritten = run(project, xdist, "--promptcache=rewrite", "test_sub.py::test_b")
    rewritten.assert_outcomes(passed=1)
    assert summary(rewritten).endswith("; kept 2 cassettes: tests not selected in this run")
    assert cassette_files(project) == files

    go_offline(llm_server, monkeypatch)
    run(project, xdist, "--promptcache=replay").assert_outcomes(passed=3)
    replayed = outputs(project)
    assert (replayed["a"], replayed["c"]) == (live["a"], live["c"])
    assert not (project.path / "connects.log").exists()


SHARED_TESTS = """
import pytest

import llm

PROMPTS_A = ["alpha", "alpha extra"]


@pytest.mark.promptcache(cassette="shared/x")
def test_a():
    llm.note("a", [llm.chat(p) for p in PROMPTS_A])


@pytest.mark.promptcache(cassette="shared/x")
def test_b():
    llm.note("b", llm.chat("beta"))
"""


@pytest.mark.parametrize("xdist", XDIST)
def test_prune_of_a_shared_cassette_removes_only_what_no_user_reached(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...]
) -> None:
    """Two tests share a cassette: prune never counts one test's recordings as the other's unused; with
    one user deselected it keeps everything; with both passing it drops only what neither reached."""
    project.makepyfile(test_shared=SHARED_TESTS)
    run(project, xdist, "--promptcache=auto").assert_outcomes(passed=2)
    live = outputs(project)
    assert sorted(prompts(cassette(project, "shared/x"))) == ["alpha", "alpha extra", "beta"]

    clean = run(project, xdist, "--promptcache=replay", "--promptcache-prune")
    clean.assert_outcomes(passed=2)
    assert "unused" not in summary(clean)
    assert len(cassette(project, "shared/x")["recordings"]) == 3

    project.makepyfile(test_shared=SHARED_TESTS.replace(', "alpha extra"]', "]"))
    partial = run(project, xdist, "--promptcache=replay", "--promptcache-prune", "-k", "test_a")
    assert partial.parseoutcomes()["passed"] == 1  # xdist's controller does not count the deselected
    assert summary(partial).endswith("; kept 1 cassette: tests not selected in this run")
    assert len(cassette(project, "shared/x")["recordings"]) == 3

    pruned = run(project, xdist, "--promptcache=replay", "--promptcache-prune")
    pruned.assert_outcomes(passed=2)
    assert summary(pruned).endswith("; 1 unused recording (pruned)")
    assert sorted(prompts(cassette(project, "shared/x"))) == ["alpha", "beta"]

    outputs(project)
    go_offline(llm_server, monkeypatch)
    run(project, xdist, "--promptcache=replay").assert_outcomes(passed=2)
    assert outputs(project) == {"a": live["a"][:1], "b": live["b"]}


@pytest.mark.parametrize("xdist", XDIST)
def test_rewrite_of_one_test_in_a_shared_cassette_keeps_the_other_tests_recordings(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...]
) -> None:
    """The re-record command for one test of a shared cassette replaces that test's recordings only;
    each recording names its tests and the header lists them sorted; the other test replays offline."""
    project.makepyfile(test_shared=SHARED_TESTS.replace(', "alpha extra"]', "]"))
    run(project, xdist, "--promptcache=auto").assert_outcomes(passed=2)
    live = outputs(project)

    run(project, xdist, "--promptcache=rewrite", "test_shared.py::test_a").assert_outcomes(passed=1)
    rewritten = outputs(project)["a"]
    assert rewritten != live["a"]
    doc = cassette(project, "shared/x")
    assert sorted(prompts(doc)) == ["alpha", "beta"]
    assert doc["tests"] == ["test_shared.py::test_a", "test_shared.py::test_b"]
    assert {r["request"]["messages"][0]["content"]: r["tests"] for r in doc["recordings"]} == {
        "alpha": ["test_shared.py::test_a"],
        "beta": ["test_shared.py::test_b"],
    }

    go_offline(llm_server, monkeypatch)
    run(project, xdist, "--promptcache=replay").assert_outcomes(passed=2)
    assert outputs(project) == {"a": rewritten, "b": live["b"]}


def test_recorders_of_two_workers_recording_one_request_keep_one_recording_and_a_sorted_header(
    tmp_path: Path,
) -> None:
    """Two tests sharing a cassette both miss the same request at once (two xdist workers, both having
    loaded the cassette before either saved): the cassette keeps one recording naming both tests, and
    its header is the same whichever test saves first."""
    request = httpx2.Request(
        "POST",
        "https://api.openai.com/v1/chat/completions",
        json={"model": "gpt-x", "messages": [{"role": "user", "content": "same question"}]},
    )

    def answer(text: str) -> Any:
        async def send(req: httpx2.Request) -> httpx2.Response:
            message = {"role": "assistant", "content": text}
            body = {"model": "gpt-x", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            return httpx2.Response(200, json=body, request=req)

        return send

    headers = []
    for first, second in (("test_a", "test_b"), ("test_b", "test_a")):
        store = DirectoryStore(tmp_path / first)
        recorders = {
            name: Recorder(test_id=f"t.py::{name}", cassette="shared/x", mode=Mode.AUTO, store=store)
            for name in (first, second)
        }
        for name, recorder in recorders.items():
            anyio.run(recorder.handle, request, answer(f"from {name}"))
        for recorder in recorders.values():
            recorder.save()
        doc = load_cassette(store.path("shared/x"))
        assert doc is not None
        assert len(doc["recordings"]) == 1
        assert doc["recordings"][0]["response"]["choices"][0]["message"]["content"] == f"from {first}"
        assert doc["recordings"][0]["tests"] == ["t.py::test_a", "t.py::test_b"]
        headers.append(doc["tests"])
    assert headers == [["t.py::test_a", "t.py::test_b"]] * 2


def test_a_run_of_a_removed_test_is_pruned_and_reported_under_xdist(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Under ``-n 2`` the controller judges what the workers saw: the cassette of a removed test is
    reported and deleted by prune, and the summary says so."""
    project.makepyfile(test_sub=SUBSET_TESTS)
    run(project, ("-n", "2"), "--promptcache=auto").assert_outcomes(passed=3)
    project.makepyfile(test_sub=SUBSET_TESTS.split("def test_c", maxsplit=1)[0])
    result = run(project, ("-n", "2"), "--promptcache=replay", "--promptcache-prune")
    result.assert_outcomes(passed=2)
    assert summary(result).endswith("; 1 cassette of a test that no longer exists (pruned)")
    assert cassette_files(project) == ["test_sub/test_a.yaml", "test_sub/test_b.yaml"]
    assert llm_server.calls == 3


NO_KEY_TESTS = """
import anthropic
import openai


def test_clients_from_the_environment():
    # Configured from OPENAI_BASE_URL / ANTHROPIC_BASE_URL and the API key variables, as in production.
    with openai.OpenAI(max_retries=0) as client:
        client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    with anthropic.Anthropic(max_retries=0) as client:
        client.messages.create(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
"""


def test_replay_needs_no_api_key_and_leaves_the_environment_as_it_was(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded with keys, replayed with no key in the environment: the SDKs get placeholders for the
    session, and the variables are gone again afterwards."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm_server.anthropic_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000000000000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000")
    project.makepyfile(test_env=NO_KEY_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    go_offline(llm_server, monkeypatch)
    project.runpytest("--promptcache=replay").assert_outcomes(passed=1)
    assert "OPENAI_API_KEY" not in os.environ
    assert "ANTHROPIC_API_KEY" not in os.environ
    assert not (project.path / "connects.log").exists()


REPO_TEST = """
import os

import openai


def test_chat():
    with openai.OpenAI(base_url=os.environ["PC_LLM_URL"], api_key="sk-test-0000000000000000000000") as c:
        c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "PROMPT"}])
"""


@pytest.mark.redis
def test_two_projects_sharing_one_redis_keep_their_cassettes_apart(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """Same test id in two checkouts, one Redis: the default key prefix is the rootdir's name, so neither
    overwrites the other; ``--promptcache-redis-prefix`` sets another (a branch)."""
    store = f"--promptcache-store={redis_url}"
    for repo in ("repo_one", "repo_two"):
        (project.path / repo).mkdir()
        (project.path / repo / "pytest.ini").write_text("[pytest]\n")
        (project.path / repo / "test_chat.py").write_text(REPO_TEST.replace("PROMPT", f"asked in {repo}"))
        project.runpytest("--promptcache=auto", store, repo).assert_outcomes(passed=1)
    project.runpytest("--promptcache=auto", store, "--promptcache-redis-prefix=ci:branch-x:", "repo_one")
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match="*"))
    assert keys == [
        "ci:branch-x:test_chat/test_chat",
        "promptcache:cassette:repo_one:test_chat/test_chat",
        "promptcache:cassette:repo_two:test_chat/test_chat",
    ]

    go_offline(llm_server, monkeypatch, urlsplit(redis_url).port or 6379)
    for repo in ("repo_one", "repo_two"):
        project.runpytest("--promptcache=replay", store, repo).assert_outcomes(passed=1)
    assert not (project.path / "connects.log").exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("xdist", XDIST)
def test_an_unreachable_redis_store_is_one_usage_error_naming_the_url_without_its_password(
    project: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    """No test runs into a redis traceback: the session stops at start with one error naming the URL,
    password redacted."""
    port = closed_port()
    project.makepyfile(
        test_u="import llm\n\ndef test_one():\n    llm.chat('x')\n\ndef test_two():\n    llm.chat('y')\n"
    )
    result = run(
        project, xdist, "--promptcache=replay", f"--promptcache-store=redis://:hunter2-pw@127.0.0.1:{port}/0"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert f"cassette store redis://***@127.0.0.1:{port}/0 cannot be reached" in output
    assert output.count("cannot be reached") == 1
    assert "hunter2" not in output
    assert "Traceback" not in output


FIXTURE_TESTS = """
import pytest

import llm

PROMPT = "module briefing"


@pytest.fixture(scope="module")
def briefing():
    return llm.chat(PROMPT)


@pytest.fixture(scope="session")
def session_answer():
    return llm.chat("session question")


def test_module_fixture(briefing):
    llm.note("briefing", briefing)


def test_session_fixture(session_answer):
    llm.note("session", session_answer)
"""


def test_calls_from_module_and_session_fixtures_are_replayed_from_the_session_cassette(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """With a mode set for the run, LLM calls made by module- and session-scoped fixtures are recorded
    in ``_session`` and replayed from it (the server, still up, sees nothing); a changed one is a miss."""
    project.makepyfile(test_fix=FIXTURE_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=2)
    live = outputs(project)
    assert sorted(prompts(cassette(project, "_session"))) == ["module briefing", "session question"]
    assert llm_server.calls == 2

    project.runpytest("--promptcache=replay").assert_outcomes(passed=2)
    assert outputs(project) == live
    assert llm_server.calls == 2

    project.makepyfile(test_fix=FIXTURE_TESTS.replace('"module briefing"', '"module briefing, edited"'))
    missed = project.runpytest("--promptcache=replay")
    missed.assert_outcomes(passed=1, errors=1)
    missed.stdout.fnmatch_lines(["*made outside any test*", "*to record it: pytest --promptcache=auto*"])
    assert llm_server.calls == 2


TASKGROUP_TESTS = """
import asyncio

import openai

import llm


def test_two_misses_in_a_task_group():
    async def main():
        async with llm.async_openai_client() as client:
            try:  # a first request on this client, so both tasks below reach the transport at once
                await client.models.list()
            except openai.NotFoundError:
                pass
            async with asyncio.TaskGroup() as group:
                for prompt in ("first unrecorded", "second unrecorded"):
                    request = client.chat.completions.create(model="gpt-x", messages=llm.user(prompt))
                    group.create_task(request)

    asyncio.run(main())

"""


def test_every_miss_of_a_test_is_in_its_report_whatever_wrapped_them(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two misses inside an ``asyncio.TaskGroup`` are both in the test's report, each with its key,
    not one buried in an exception group's traceback."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    project.makepyfile(test_misses=TASKGROUP_TESTS)
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "promptcache: 2 replay misses in this test" in out
    assert out.count("promptcache: no recording for this LLM request") == 2
    assert len(set(re.findall(r"key: +([0-9a-f]{64})", out))) == 2
    assert "(the test raised BaseExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions))" in out
    assert summary(result).startswith("promptcache: 0 replayed, 0 recorded, 2 missing;")


def test_new_cassettes_get_the_usual_file_mode_and_rewritten_ones_keep_theirs(
    project: pytest.Pytester,
) -> None:
    """A new cassette gets the mode of any new file under the umask (0644 under 022), not mkstemp's
    0600; a cassette whose mode was changed keeps it when rewritten."""
    project.makepyfile(test_mode="import llm\n\ndef test_it():\n    llm.chat('mode')\n")
    previous = os.umask(0o022)
    try:
        project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
        path = project.path / "fixtures/cassettes/test_mode/test_it.yaml"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        project.runpytest("--promptcache=rewrite").assert_outcomes(passed=1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(previous)


STREAM_TEST = """
import llm


def test_stream():
    with llm.openai_client() as client:
        stream = client.chat.completions.create(
            model="gpt-x",
            messages=llm.user("Count to five"),
            stream=True,
            stream_options={"include_usage": True},
        )
        llm.note("text", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
"""


def test_tokens_of_a_stream_recorded_without_a_usage_summary_are_counted(project: pytest.Pytester) -> None:
    """A stream recording without the ``usage`` summary (older or hand-made cassettes) still counts its
    tokens in the summary, from the usage its events carry."""
    project.makepyfile(test_stream=STREAM_TEST)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    path = project.path / "fixtures/cassettes/test_stream/test_stream.yaml"
    doc = load_cassette(path)
    assert doc is not None
    usage = doc["recordings"][0].pop("usage")
    path.write_text(dump_cassette(doc), encoding="utf-8")

    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(passed=1)
    tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    assert tokens > 0
    assert summary(result).startswith(f"promptcache: 1 replayed, 0 recorded, 0 missing; {tokens} tokens not")


@pytest.mark.parametrize(
    ("cost", "shown"),
    [(0.0, ""), (0.00012, " (<$0.01)"), (1.234, " (~$1.23)"), (1234.5, " (~$1,234.50)")],
)
def test_summary_prints_money_to_the_cent_and_nothing_when_zero(cost: float, shown: str) -> None:
    """The money not spent is rounded to cents, ``<$0.01`` below a cent, and left out when zero."""
    part = {"tests": 1, "replayed": 1, "recorded": 0, "missing": 0, "tokens": 9, "cost": cost, "priced": 1}
    line = summary_line([part], Outcome(), prune=False)
    assert line == f"promptcache: 1 replayed, 0 recorded, 0 missing; 9 tokens not paid for{shown}"
