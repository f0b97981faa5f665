"""The committed example cassettes say where their answers come from, and load as cassettes."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptcache._cassette import load_cassette

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CASSETTES = ROOT / "fixtures" / "cassettes" / "tests" / "examples"
PROVENANCE = (
    "# Recorded from tests/fake_llm.py (the project's local OpenAI-compatible test server), not a real model."
)


def test_every_example_cassette_names_the_fake_server_it_was_recorded_from(recording: bool) -> None:
    """Each example cassette starts with the provenance line (fixtures/README.md re-adds it)."""
    if recording:
        pytest.skip("the cassettes are being rewritten; add the provenance line afterwards")
    paths = sorted(EXAMPLE_CASSETTES.rglob("*.yaml"))
    assert paths, f"no example cassettes under {EXAMPLE_CASSETTES}"
    for path in paths:
        first_line = path.read_text(encoding="utf-8").partition("\n")[0]
        assert first_line == PROVENANCE, f"{path.relative_to(ROOT)} lacks the provenance line"
        doc = load_cassette(path)  # the extra comment is only a comment: the file still loads
        assert doc is not None
        assert doc["recordings"]
