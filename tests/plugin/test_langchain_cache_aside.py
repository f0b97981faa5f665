"""LangChain's ``set_llm_cache(PromptCacheLangChain(...))`` under the plugin: it steps aside like a wrapped
client's cache, so a call it would answer from the app's store still reaches (and is kept in) the cassette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from helpers import outputs

from promptcache._cassette import load_cassette

if TYPE_CHECKING:
    from fake_llm import FakeLLM

pytest.importorskip(
    "langchain_openai", reason="the frameworks extras (make test installs them; matrix-oldest does not)"
)

LLM_CACHE_TESTS = """
import pytest
from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI

import llm
from promptcache import PromptCache
from promptcache.langchain import PromptCacheLangChain

CACHE = PromptCache.from_url("memory://")  # the app's module-level production cache


@pytest.fixture(autouse=True, scope="module")
def _llm_cache():
    set_llm_cache(PromptCacheLangChain(CACHE, agent_id="app"))
    yield
    set_llm_cache(None)


def ask():
    with llm.openai_client() as client:  # a plain SDK client: LangChain's cache is the only cache
        chat = ChatOpenAI(
            model="gpt-x", api_key=llm.OPENAI_KEY, client=client.chat.completions, root_client=client
        )
        return chat.invoke("Same question").content


def test_a():
    llm.note("a", ask())


def test_b():
    llm.note("b", ask())
    llm.note("app_cache", [CACHE.stats().hits, CACHE.stats().bypasses > 0])
"""


def test_set_llm_cache_steps_aside_for_the_recorder(
    project: pytest.Pytester, llm_server: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test records its own call (the LangChain cache answers none), a replay of one test alone
    passes offline, and production_cache=True lets the LangChain cache answer again."""
    project.makepyfile(test_app=LLM_CACHE_TESTS)
    project.makeini("[pytest]\npromptcache_upstream = fake\n")
    project.runpytest("--promptcache=auto").assert_outcomes(passed=2)
    for name in ("test_a", "test_b"):
        doc = load_cassette(project.path / f"fixtures/cassettes/test_app/{name}.yaml")
        assert doc is not None, name
        assert len(doc["recordings"]) == 1, name
    assert outputs(project)["app_cache"] == [0, True]  # the LangChain cache answered nothing
    assert llm_server.calls == 2
    monkeypatch.setenv("PC_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("PC_BLOCK_NETWORK", "1")
    project.runpytest("--promptcache=replay", "test_app.py::test_b").assert_outcomes(passed=1)
    project.makepyfile(
        test_keep=LLM_CACHE_TESTS.replace(
            "def test_", "@__import__('pytest').mark.promptcache(production_cache=True)\ndef test_"
        )
    )
    monkeypatch.delenv("PC_BLOCK_NETWORK")
    monkeypatch.setenv("PC_LLM_URL", llm_server.base_url)
    project.runpytest("--promptcache=auto", "test_keep.py").assert_outcomes(passed=2)
    assert outputs(project)["app_cache"] == [1, False]  # test_b was answered by the LangChain cache
