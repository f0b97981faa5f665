"""Cassettes never hold a credential, and loading one never runs code or hangs on hostile YAML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from promptcache._cassette import (
    MAX_CASSETTE_BYTES,
    find_secret,
    load_cassette,
    recorded_events,
    save_cassette,
)
from promptcache.exceptions import CassetteFormatError, SecretLeakError
from promptcache.pytest_plugin._stores import REDIS_PREFIX, RedisCassetteStore

if TYPE_CHECKING:
    from fake_llm import FakeLLM

OPENAI_SECRET = "sk-proj-" + "Zq81" * 8
ANTHROPIC_SECRET = "sk-ant-api03-" + "Wm27" * 8
BEARER_TOKEN = "tok9Xy" * 4
PLAIN_API_KEY = "plain-looking-value-1"
PRIVATE_REF = "ref-4417-private"
SCRUB_WARNING = "promptcache.pytest_plugin._content.CassetteScrubWarning"
PLANTED = (OPENAI_SECRET, ANTHROPIC_SECRET, BEARER_TOKEN, PLAIN_API_KEY, PRIVATE_REF, "Zq81Zq81", "Wm27Wm27")

SECRET_TESTS = f"""
import asyncio

import llm

OPENAI_SECRET = {OPENAI_SECRET!r}
ANTHROPIC_SECRET = {ANTHROPIC_SECRET!r}
BEARER = "Bearer " + {BEARER_TOKEN!r}


def test_openai():
    headers = {{"OpenAI-Organization": OPENAI_SECRET, "X-Upstream-Auth": BEARER}}
    with llm.openai_client(api_key=OPENAI_SECRET, default_headers=headers) as client:
        reply = client.chat.completions.create(
            model="gpt-x",
            messages=[
                {{"role": "system", "content": f"Authorization: {{BEARER}}"}},
                {{"role": "user", "content": f"my keys are {{OPENAI_SECRET}} and {{ANTHROPIC_SECRET}}"}},
            ],
            extra_body={{"api_key": {PLAIN_API_KEY!r}, "session_ref": {PRIVATE_REF!r}}},
        )
    answer = reply.choices[0].message.content
    assert OPENAI_SECRET in answer or "<scrubbed>" in answer


def test_anthropic_async():
    async def main():
        headers = {{"X-Upstream-Auth": BEARER}}
        async with llm.async_anthropic_client(api_key=ANTHROPIC_SECRET, default_headers=headers) as client:
            return await client.messages.create(
                model="claude-x",
                max_tokens=64,
                system=f"use {{OPENAI_SECRET}}",
                messages=llm.user(f"the token is {{BEARER}} and {{ANTHROPIC_SECRET}}"),
                metadata={{"user_id": OPENAI_SECRET}},
            )

    asyncio.run(main())
"""


def cassette_texts(pytester: pytest.Pytester) -> dict[str, str]:
    root = pytester.path / "fixtures" / "cassettes"
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.yaml"))}


def test_planted_keys_in_headers_bodies_and_responses_never_reach_the_cassette(
    project: pytest.Pytester, llm_server: FakeLLM
) -> None:
    """Keys planted in headers, prompts, extra fields and the echoed answer are absent from every
    cassette file (scrubbed, not dropped), each answer that lost one is warned about, and the scrubbed
    cassettes still replay."""
    project.makepyfile(test_secrets=SECRET_TESTS)
    result = project.runpytest(
        "--promptcache=auto", "--promptcache-scrub-field=session_ref", "-W", f"default::{SCRUB_WARNING}"
    )
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(["*CassetteScrubWarning: promptcache: the recorded answer of *differs*"])
    # The secrets really went over the wire and came back in the answers.
    assert OPENAI_SECRET in llm_server.requests[0].headers["openai-organization"]
    assert any(ANTHROPIC_SECRET in value for value in llm_server.requests[1].headers.values())
    assert OPENAI_SECRET in llm_server.requests[1].raw.decode()

    texts = cassette_texts(project)
    assert sorted(texts) == ["test_secrets/test_anthropic_async.yaml", "test_secrets/test_openai.yaml"]
    for name, text in texts.items():
        for planted in PLANTED:
            assert planted not in text, f"{planted!r} leaked into {name}"
        assert "<scrubbed>" in text

    project.runpytest("--promptcache=replay").assert_outcomes(passed=2)
    assert llm_server.calls == 2


STREAMED_SECRET_TESTS = f"""
import llm


def test_echo_stream():
    text = llm.chat_stream("please repeat {OPENAI_SECRET}")
    assert text.endswith({OPENAI_SECRET!r})
"""


def test_secret_echoed_in_a_stream_is_not_left_split_across_chunks(project: pytest.Pytester) -> None:
    """A key the model streams back, split across several chunks, is not in the cassette even in pieces."""
    project.makepyfile(test_stream_secret=STREAMED_SECRET_TESTS)
    project.runpytest("--promptcache=auto", "-W", f"default::{SCRUB_WARNING}").assert_outcomes(
        passed=1, warnings=1
    )
    path = project.path / "fixtures/cassettes/test_stream_secret/test_echo_stream.yaml"
    doc = load_cassette(path)
    assert doc is not None
    chunks = recorded_events(doc["recordings"][0])
    assert chunks is not None
    streamed = "".join(
        c["data"]["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if (c.get("data") or {}).get("choices")
    )
    assert find_secret(streamed) is None, streamed
    assert "Zq81Zq81" not in path.read_text(encoding="utf-8")


KEY_NAMED_SECRET_TESTS = f"""
import llm


def test_secret_as_a_json_key():
    with llm.openai_client() as client:
        client.chat.completions.create(
            model="gpt-x", messages=llm.user("hi"), extra_body={{"tags": {{{OPENAI_SECRET!r}: "x"}}}}
        )
"""


def test_credential_that_scrubbing_misses_makes_the_write_refused(project: pytest.Pytester) -> None:
    """A key used as a JSON object key survives scrubbing; the scan then refuses to write the cassette,
    failing the test with SecretLeakError, and neither the cassette nor a temp file is left behind."""
    project.makepyfile(test_json_key=KEY_NAMED_SECRET_TESTS)
    result = project.runpytest("--promptcache=auto")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*SecretLeakError: refusing to write *test_secret_as_a_json_key.yaml*"])
    root = project.path / "fixtures" / "cassettes"
    assert not [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-" + "A1b2" * 6,
        "sk-ant-api03-" + "C3d4" * 6,
        "Bearer eyJhbGciOi.payload.sig",
        "AKIA" + "ABCDEFGH12345678",
        "AIza" + "x" * 35,
        "ghp_" + "a" * 36,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_save_cassette_refuses_any_credential_pattern(tmp_path: Path, secret: str) -> None:
    """Writing a document that still holds a credential raises SecretLeakError naming the file (not the
    secret) and leaves no file, not even a temp file."""
    path = tmp_path / "sub" / "c.yaml"
    doc = {
        "version": 1,
        "test": "t",
        "recordings": [{"key": "k", "endpoint": "x", "response": {"note": secret}}],
    }
    with pytest.raises(SecretLeakError) as caught:
        save_cassette(path, doc)
    assert str(path) in str(caught.value)
    assert secret not in str(caught.value)
    assert not path.exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_refused_write_keeps_the_previous_cassette(tmp_path: Path) -> None:
    """A refused overwrite leaves the existing cassette byte-for-byte as it was."""
    path = tmp_path / "c.yaml"
    good = {"version": 1, "test": "t", "recordings": [{"key": "k", "endpoint": "x", "response": "fine"}]}
    save_cassette(path, good)
    before = path.read_bytes()
    bad = {**good, "recordings": [{"key": "k", "endpoint": "x", "response": "sk-proj-" + "E5f6" * 6}]}
    with pytest.raises(SecretLeakError):
        save_cassette(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_text_that_merely_resembles_a_key_is_not_flagged() -> None:
    """Ordinary prompt text (short ``sk-`` words, the word bearer) does not trip the scan."""
    assert find_secret("the task-sk-1 ticket; a bearer of bad news; ask-me-anything") is None
    assert find_secret("sk-proj-" + "A1b2" * 4) is not None


@pytest.mark.redis
def test_redis_store_refuses_a_credential(redis_url: str) -> None:
    """The Redis store runs the same scan: a document holding a key is refused and nothing is stored."""
    store = RedisCassetteStore(redis_url)
    doc = {
        "version": 1,
        "test": "t",
        "recordings": [{"key": "k", "endpoint": "x", "response": OPENAI_SECRET}],
    }
    with pytest.raises(SecretLeakError, match="refusing to write"):
        store.update("t/leak", lambda _current: doc)
    assert store.client.exists(REDIS_PREFIX + "t/leak") == 0


# --- hostile and corrupt YAML ------------------------------------------------------------------------


def _alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _deep_block(levels: int) -> str:
    return "version: 1\nrecordings:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(levels)) + "x: 1\n"


def hostile_cases(pwned: Path) -> dict[str, str | bytes]:
    touch = f'["touch {pwned}"]'
    rec = "- key: abc\n  endpoint: chat.completions\n"
    return {
        "python_apply": f"version: 1\nrecordings: !!python/object/apply:os.system {touch}\n",
        "python_nested": f"version: 1\nrecordings:\n{rec}  response: !!python/object/new:os.system {touch}\n",
        "python_name": "version: 1\nrecordings: !!python/name:os.system\n",
        "python_module": "version: 1\nrecordings: !!python/module:os\n",
        "alias_bomb": _alias_bomb(),
        "benign_anchor": f"version: 1\nrecordings:\n{rec}  response: &r {{x: 1}}\n",
        "truncated_mid_token": f'version: 1\nrecordings:\n{rec}  response: {{"id": "x", "choices": [{{"mess',
        "truncated_mid_recording": f"version: 1\nrecordings:\n{rec}",
        "deep_flow": "version: 1\nrecordings: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep_block": _deep_block(1500),
        "non_utf8": b"version: 1\ntest: caf\xe9 \xff\xfe\nrecordings: []\n",
        "empty": "",
        "not_a_mapping": "- version\n- 1\n",
        "wrong_version": "version: 2\nrecordings: []\n",
        "recordings_not_a_list": "version: 1\nrecordings: {a: 1}\n",
        "recording_without_key": "version: 1\nrecordings:\n- endpoint: x\n  response: {}\n",
        "not_yaml": "version: 1\nrecordings: [\n\t}: :\n",
    }


@pytest.mark.parametrize("case", list(hostile_cases(Path("/unused"))))
def test_hostile_or_corrupt_cassette_is_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    """Python tags, aliases, truncation, deep nesting, bad encoding and wrong shapes are refused with a
    CassetteFormatError whose message starts with the file's path, and no code runs."""
    pwned = tmp_path / "pwned"
    content = hostile_cases(pwned)[case]
    path = tmp_path / "cassettes" / "victim.yaml"
    path.parent.mkdir()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CassetteFormatError) as caught:
        load_cassette(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert not pwned.exists()


def test_oversized_cassette_is_refused_by_size_before_reading(tmp_path: Path) -> None:
    """A 70 MB cassette (sparse, so the test stays cheap) is refused by its size, naming the file."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(70 * 1024 * 1024)
    assert path.stat().st_size > MAX_CASSETTE_BYTES
    with pytest.raises(CassetteFormatError, match="larger than") as caught:
        load_cassette(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_missing_cassette_is_not_an_error(tmp_path: Path) -> None:
    """A cassette that does not exist yet loads as None (nothing recorded), not as a format error."""
    assert load_cassette(tmp_path / "absent.yaml") is None


VICTIM_TESTS = """
import llm


def test_chat():
    llm.chat("hello")
"""


def test_plugin_reports_hostile_cassette_as_test_error_naming_the_file(project: pytest.Pytester) -> None:
    """Replaying from a cassette carrying a python tag errors the test with the cassette's path, and the
    tagged command never runs."""
    project.makepyfile(test_victim=VICTIM_TESTS)
    pwned = project.path / "pwned"
    path = project.path / "fixtures/cassettes/test_victim/test_chat.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(f'version: 1\nrecordings: !!python/object/apply:os.system ["touch {pwned}"]\n')
    result = project.runpytest("--promptcache=replay")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*CassetteFormatError: {path}: not valid cassette YAML*"])
    assert not pwned.exists()


@pytest.mark.redis
def test_redis_store_refuses_hostile_yaml_naming_the_key(redis_url: str, tmp_path: Path) -> None:
    """A python-tagged cassette planted in Redis is refused with an error naming the Redis key."""
    pwned = tmp_path / "pwned"
    store = RedisCassetteStore(redis_url)
    store.client.set(
        REDIS_PREFIX + "t/evil",
        f'version: 1\nrecordings: !!python/object/apply:os.system ["touch {pwned}"]\n',
    )
    with pytest.raises(CassetteFormatError, match=f"key {REDIS_PREFIX}t/evil: not valid cassette YAML"):
        store.load("t/evil")
    assert not pwned.exists()


def _corrupt(text: str, how: str) -> str:
    if how == "status":
        return text.replace("status: 200", "status: oops")
    head, _, _ = text.partition("  response:")
    return head + "  chunks:\n  - 1\n  - [2]\n"


@pytest.mark.parametrize("how", ["status", "chunks"])
def test_hand_corrupted_recording_fails_naming_the_file(project: pytest.Pytester, how: str) -> None:
    """A recording whose fields have the wrong type (a hand edit gone wrong) fails the test with an error
    that names the cassette file, rather than an obscure error from inside the SDK."""
    project.makepyfile(test_victim=VICTIM_TESTS)
    project.runpytest("--promptcache=auto").assert_outcomes(passed=1)
    path = project.path / "fixtures/cassettes/test_victim/test_chat.yaml"
    path.write_text(_corrupt(path.read_text(encoding="utf-8"), how), encoding="utf-8")
    result = project.runpytest("--promptcache=replay", "--tb=short")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0
    assert str(path) in result.stdout.str()
