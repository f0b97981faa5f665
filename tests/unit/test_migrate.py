"""`promptcache migrate`: v1 cassettes re-keyed to v2 offline, every response byte kept."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from promptcache._cassette import key_schema_of, parse_cassette
from promptcache._keys import SCHEMA_VERSION, make_key
from promptcache._route import route_from_record, route_of
from promptcache.cli import main

if TYPE_CHECKING:
    from collections.abc import Callable

V1 = Path(__file__).parents[1] / "data" / "v1_cassette.yaml"  # written by promptcache 0.2, unchanged


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    def go(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return go


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    path = tmp_path / "cassettes" / "v1.yaml"
    path.parent.mkdir()
    shutil.copyfile(V1, path)
    path.chmod(0o644)
    return path


def test_migrate_changes_only_the_keys(v1: Path, run: Callable[..., tuple[int, str]]) -> None:
    """Key lines change, a route line and key_schema appear; comments and responses stay byte for byte."""
    before = v1.read_text()
    code, out = run("migrate", str(v1.parent), "--upstream", "fake-llm")
    assert code == 0, out
    after = v1.read_text()
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert all(line.startswith(("-- key:", "+- key:", "+  route:", "+key_schema:")) for line in changed), (
        changed
    )
    assert after.splitlines()[0] == before.splitlines()[0]  # the provenance comment
    old, new = parse_cassette(before), parse_cassette(after)
    assert key_schema_of(old) == 1
    assert key_schema_of(new) == SCHEMA_VERSION
    for a, b in zip(old["recordings"], new["recordings"], strict=True):
        assert {k: v for k, v in a.items() if k != "key"} == {
            k: v for k, v in b.items() if k not in {"key", "route"}
        }
        assert b["route"] == {"upstream": "fake-llm"}
        scope = b["scope"]
        rebuilt = make_key(
            b["request"],
            namespace=scope["namespace"],
            agent_id=scope["agent_id"],
            agent_version=scope["agent_version"],
            tenant=scope["tenant"],
            endpoint=b["endpoint"],
            route=route_from_record(b["route"]),
        )
        assert rebuilt.digest == b["key"]
    assert v1.stat().st_mode & 0o777 == 0o644
    assert run("verify", str(v1))[0] == 0


def test_check_reports_without_writing_and_a_second_run_is_a_no_op(
    v1: Path, run: Callable[..., tuple[int, str]]
) -> None:
    before = v1.read_bytes()
    code, out = run("migrate", str(v1), "--check")
    assert (code, v1.read_bytes()) == (1, before)
    assert "would re-key" in out
    assert run("migrate", str(v1))[0] == 0
    migrated = v1.read_bytes()
    code, out = run("migrate", str(v1))
    assert (code, v1.read_bytes()) == (0, migrated)
    assert "1 already current" in out


def test_defaults_are_what_the_sdks_send(v1: Path, run: Callable[..., tuple[int, str]]) -> None:
    """Without options an OpenAI recording is keyed for 'openai'; an Anthropic one also gets the
    anthropic-version header every SDK release sends."""
    text = v1.read_text()
    anthropic = v1.with_name("claude.yaml")
    anthropic.write_text(text.replace("endpoint: chat.completions", "endpoint: anthropic.messages"))
    assert run("migrate", str(v1.parent), "--header", "OpenAI-Project=p1")[0] == 0
    routes = {p.name: parse_cassette(p.read_text())["recordings"][0]["route"] for p in (v1, anthropic)}
    project = route_of(
        method="POST",
        scheme="https",
        host="x",
        port=None,
        prefix="",
        query=(),
        headers=[("OpenAI-Project", "p1")],
    ).headers[0][1]  # what a live request with this header is keyed with
    assert routes == {
        "v1.yaml": {"upstream": "openai", "headers": {"openai-project": project}},
        "claude.yaml": {
            "upstream": "anthropic",
            "headers": {"anthropic-version": "2023-06-01", "openai-project": project},
        },
    }


def test_a_recording_whose_request_was_scrubbed_cannot_be_rekeyed(
    v1: Path, run: Callable[..., tuple[int, str]]
) -> None:
    """The key was made from the real request: a scrubbed one cannot rebuild it. Nothing is written."""
    v1.write_text(v1.read_text().replace("charged twice", "<scrubbed>", 1))
    before = v1.read_bytes()
    code, out = run("migrate", str(v1))
    assert code == 1
    assert "scrubbed" in out
    assert "re-record" in out
    assert v1.read_bytes() == before


@pytest.mark.parametrize("command", ["import", "verify"])
def test_v1_cassettes_are_refused_with_the_migrate_command(
    v1: Path, tmp_path: Path, command: str, run: Callable[..., tuple[int, str]]
) -> None:
    """Importing or verifying a v1 cassette says how to re-key it, instead of writing unreachable keys."""
    argv = [command, str(v1)]
    if command == "import":
        argv += ["--url", f"sqlite:///{tmp_path / 'c.db'}"]
    code, out = run(*argv)
    assert code == 1
    assert "key schema v1" in out
    assert "promptcache migrate" in out


def test_bad_options_are_named(v1: Path, run: Callable[..., tuple[int, str]]) -> None:
    code, out = run("migrate", str(v1), "--header", "no-equals-sign")
    assert code != 0
    assert "--header takes NAME=VALUE" in out
    code, out = run("migrate", str(v1.parent / "missing"))
    assert code != 0
    assert "no such file" in out
