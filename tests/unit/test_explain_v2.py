"""`promptcache explain` under key schema v2: the route, the field rules, bypasses, and why keys differ."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from promptcache.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

CLAUDE = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["explain", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(tmp_path: Path, name: str, body: dict[str, object]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def test_explain_shows_the_route_and_what_was_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = write(tmp_path, "a.json", {**CLAUDE, "cache_control": {"type": "ephemeral"}, "stream": True})
    code, out = explain(
        capsys, request, "--endpoint", "anthropic.messages", "--upstream", "anthropic",
        "--header", "anthropic-version=2023-06-01",
    )  # fmt: skip
    assert code == 0
    assert "route:      upstream: anthropic; method: POST; header anthropic-version: 2023-06-01" in out
    assert "left out:   cache_control, stream" in out
    assert "key schema v2" in out
    code, out = explain(capsys, request, "--endpoint", "anthropic.messages")
    assert "route:      none" in out


def test_explain_names_a_server_state_bypass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = write(tmp_path, "c.json", {**CLAUDE, "container": "c1"})
    code, out = explain(capsys, request, "--endpoint", "anthropic.messages")
    assert code == 0
    assert "bypass:     refers to mutable server-side state (container)" in out
    code, out = explain(capsys, request, "--endpoint", "anthropic.messages", "--server-state")
    assert "bypass:" not in out


def test_explain_against_says_the_route_differs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Same body, another organisation header or host: the diff names the route parts."""
    mine = write(tmp_path, "a.json", CLAUDE)
    code, out = explain(
        capsys, mine, "--against", mine, "--endpoint", "anthropic.messages",
        "--upstream", "openai", "--header", "OpenAI-Organization=org-a",
        "--against-upstream", "https://gw.example/v1", "--against-header", "OpenAI-Organization=org-b",
    )  # fmt: skip
    assert code == 0
    assert "~ route.headers.openai-organization: 'sha256:" in out  # account ids shown as fingerprints
    assert "org-a" not in out
    assert "~ route.upstream: 'https://gw.example:443/v1' -> 'openai'" in out
    code, out = explain(capsys, mine, "--against", mine, "--upstream", "openai")
    assert "same key" in out


def test_route_options_need_an_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, write(tmp_path, "a.json", CLAUDE), "--header", "anthropic-beta=x")
    assert code != 0
    assert "give its --upstream too" in out
