"""Example tests of ``examples/support_agent.py``, replayed from committed cassettes: no network, no key.

The agent builds its own ``AsyncOpenAI`` clients, exactly as in production; the promptcache pytest plugin
intercepts them at the HTTP transport and answers from
``fixtures/cassettes/tests/examples/test_support_agent/<test>.yaml``. Each LLM test carries
``@pytest.mark.promptcache(mode="replay")``, so a plain ``pytest tests/examples`` replays with nothing
else to set up, and a request that was not recorded fails the test with a diff of what changed.

The cassettes were recorded from ``tests/fake_llm.py`` (the project's local OpenAI-compatible test server,
which answers ``answer #<n> to: <last user message>``), not from a real model: that is why the labels
below are the category words of each ticket's subject, echoed back. To record them (offline: no key,
loopback only)::

    .venv/bin/pytest tests/examples --promptcache=auto      # record what is missing (a new test)
    .venv/bin/pytest tests/examples --promptcache=rewrite   # record every example test again

The command line beats the marker, and in a recording mode (or with ``PROMPTCACHE_EXAMPLES_RECORD=1``) the
``llm_base_url`` fixture starts a fresh FakeLLM for each test (see ``conftest.py``), so these cassettes can
only come from the fake server. Then put the provenance line back at the top of each rewritten cassette
and check them: ``fixtures/README.md`` has both commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from examples.support_agent import SAMPLE_TICKETS, SupportAgent, parse_label

if TYPE_CHECKING:
    from promptcache.pytest_plugin import Recorder

MODEL = "gpt-4o-mini"
API_KEY = "not-a-real-key"  # replay sends nothing, and the local fake server ignores it
# Recorded against a FakeLLM on a free port, replayed against a port nothing listens on: one alias keys both
# (the upstream's URL is part of the key otherwise).
UPSTREAM = "fake-llm"


def open_agent(base_url: str) -> SupportAgent:
    # memory://, not the example's sqlite file: a cache left by an earlier run must not hide the calls.
    return SupportAgent(base_url=base_url, api_key=API_KEY, model=MODEL, cache_url="memory://")


def assert_llm_calls(promptcache: Recorder, expected: int, *, recording: bool) -> None:
    """``expected`` calls reached the HTTP transport: all replayed, or (when recording) all recorded."""
    if recording:
        assert promptcache.replayed + promptcache.recorded == expected
    else:
        assert (promptcache.replayed, promptcache.recorded, promptcache.missing) == (expected, 0, 0)


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("billing", "billing"),
        ("Shipping.", "shipping"),
        ("Category: TECHNICAL", "technical"),
        ("account (or maybe billing)", "account"),
        ("rebilling", "other"),
        ("", "other"),
    ],
)
def test_parse_label_takes_the_first_label_word(answer: str, label: str) -> None:
    """The label is the first whole label word of the answer, in any case; none at all is ``other``."""
    assert parse_label(answer) == label


@pytest.mark.anyio
@pytest.mark.promptcache(mode="replay", agent_id="support-agent", upstream=UPSTREAM, production_cache=True)
async def test_sample_tickets_are_labelled_and_answered(
    llm_base_url: str, promptcache: Recorder, recording: bool
) -> None:
    """Each sample ticket is classified, then answered with the reply prompt of its team."""
    async with open_agent(llm_base_url) as agent:
        results = await agent.triage_all(SAMPLE_TICKETS)
        stats = agent.stats()

    assert [r.label for r in results] == ["billing", "shipping", "account", "other"]
    for i, result in enumerate(results):
        # Recorded from the fake server: call 2i+1 classified ticket i, call 2i+2 drafted its reply.
        assert result.answer == f"answer #{2 * i + 1} to: {result.ticket}"
        assert result.reply == f"answer #{2 * i + 2} to: {result.ticket}"
    if not recording:
        # What was replayed is what the agent sent: each reply prompt names the team the classifier chose.
        reply_prompts = [
            rec["request"]["messages"][0]["content"] for rec in promptcache.replayed_recordings[1::2]
        ]
        assert len(reply_prompts) == len(results)
        for result, prompt in zip(results, reply_prompts, strict=True):
            assert f"on the {result.label} team" in prompt
    assert (stats.hits, stats.misses, stats.upstream_calls) == (0, 8, 8)
    assert_llm_calls(promptcache, 8, recording=recording)


@pytest.mark.anyio
@pytest.mark.promptcache(mode="replay", agent_id="support-agent", upstream=UPSTREAM, production_cache=True)
async def test_a_repeated_ticket_is_answered_by_the_production_cache(
    llm_base_url: str, promptcache: Recorder, recording: bool
) -> None:
    """Asking the same ticket twice reaches the model once: the second triage is two cache hits."""
    ticket = SAMPLE_TICKETS[0]
    async with open_agent(llm_base_url) as agent:
        first = await agent.triage_all([ticket])
        again = await agent.triage_all([ticket])
        stats = agent.stats()
        classifier = agent.classifier.get_cache_stats()

    assert again == first
    assert first[0].label == "billing"
    assert first[0].reply == f"answer #2 to: {ticket}"
    assert (stats.hits, stats.misses, stats.upstream_calls) == (2, 2, 2)
    assert stats.tokens_saved > 0
    assert classifier == {"hit_rate": 50.0, "hits": 1, "misses": 1, "total_calls": 2}
    assert_llm_calls(promptcache, 2, recording=recording)  # only the first triage reached the transport


@pytest.mark.anyio
@pytest.mark.promptcache(mode="replay", agent_id="support-agent", upstream=UPSTREAM, production_cache=True)
async def test_an_edited_ticket_is_a_replay_miss_not_a_stale_answer(
    llm_base_url: str, promptcache: Recorder, recording: bool
) -> None:
    """In replay, a request that differs from the recording fails with a diff instead of reusing an answer."""
    ticket = SAMPLE_TICKETS[1]
    async with open_agent(llm_base_url) as agent:
        assert (await agent.triage(ticket)).label == "shipping"
        assert_llm_calls(promptcache, 2, recording=recording)
        if recording:
            return  # the miss below is what replay does with an unrecorded request: nothing to record
        edited = ticket.replace("nine days", "ten days")
        with pytest.raises(pytest.fail.Exception, match="no recording for this LLM request") as miss:
            await agent.triage(edited)

    diff = [line.strip() for line in str(miss.value).splitlines()]
    assert any(line.startswith("-") and "nine days" in line for line in diff)  # the nearest recording ...
    assert any(line.startswith("+") and "ten days" in line for line in diff)  # ... against this request
    message = str(miss.value)
    assert "pytest --promptcache=rewrite" in message
    assert (promptcache.replayed, promptcache.recorded, promptcache.missing) == (2, 0, 1)
