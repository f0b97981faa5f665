"""The whole corpus: every pair, by name (names are unique)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corpus import pairs_anthropic, pairs_chat, pairs_responses, pairs_upstreams

if TYPE_CHECKING:
    from corpus.runner import Pair


def all_pairs() -> list[Pair]:
    found = [
        *pairs_chat.pairs(),
        *pairs_responses.pairs(),
        *pairs_anthropic.pairs(),
        *pairs_upstreams.pairs(),
    ]
    names = [p.name for p in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"corpus pair names must be unique: {duplicates}")
    return found
