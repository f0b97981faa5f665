"""docs/KEY_FIELDS.md is generated from the code, and every row says what make_key really does."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from promptcache._endpoints import Endpoint
from promptcache._field_table import KNOWN_FIELDS, render, rule_for
from promptcache._fields import Rule
from promptcache._keys import make_key
from promptcache.exceptions import ServerStateError

DOC = Path(__file__).parents[2] / "docs" / "KEY_FIELDS.md"

# Where each SDK keeps the TypedDict of an endpoint's parameters (module, class).
SDK_PARAMS = {
    Endpoint.CHAT_COMPLETIONS: ("openai.types.chat.completion_create_params", "CompletionCreateParamsBase"),
    Endpoint.RESPONSES: ("openai.types.responses.response_create_params", "ResponseCreateParamsBase"),
    Endpoint.EMBEDDINGS: ("openai.types.embedding_create_params", "EmbeddingCreateParams"),
    Endpoint.ANTHROPIC_MESSAGES: ("anthropic.types.message_create_params", "MessageCreateParamsBase"),
}


def sdk_fields(endpoint: Endpoint) -> set[str]:
    """The installed SDK's parameters for ``endpoint`` (any release: newer ones add fields)."""
    module_name, class_name = SDK_PARAMS[endpoint]
    cls = getattr(importlib.import_module(module_name), class_name)
    return {name for klass in cls.__mro__ for name in getattr(klass, "__annotations__", {})}


def test_the_committed_table_is_the_generated_one() -> None:
    if not DOC.is_file():
        pytest.skip("docs/ is not beside these tests (an installed-wheel run)")
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/KEY_FIELDS.md is stale: python -m promptcache._field_table > docs/KEY_FIELDS.md"
    )


def cases() -> list[tuple[Endpoint, str]]:
    out = set()
    for endpoint in Endpoint:
        out |= {(endpoint, name) for name in KNOWN_FIELDS[endpoint]}
        out |= {(endpoint, name) for name in sdk_fields(endpoint)}
    return sorted(out)


BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}


@pytest.mark.parametrize(("endpoint", "name"), cases(), ids=str)
def test_each_row_is_what_the_key_does(endpoint: Endpoint, name: str) -> None:
    """In the key: two values, two keys. Out of the key: one key. Bypass: a reference is not keyed."""
    rule = rule_for(endpoint, name)

    def key(value: Any) -> str:
        return make_key({**BASE, name: value}, agent_id="a", endpoint=endpoint).digest

    if rule.rule is Rule.IN:
        assert key({"v": "value-a"}) != key({"v": "value-b"})
    elif rule.rule is Rule.OUT:
        assert key("value-a") == key({"other": [1]}) == make_key(BASE, agent_id="a", endpoint=endpoint).digest
    elif rule.rule is Rule.BYPASS:
        value: Any = True if name == "background" else {"id": "x"} if name == "prompt" else "ref_1"
        with pytest.raises(ServerStateError):
            key(value)
    else:  # normalised: text follows the policy, store=true is the default; different content still differs
        assert key("a") != key("b")


def test_the_locked_sdks_have_no_parameter_the_table_misses() -> None:
    """The table names every parameter of the SDKs in uv.lock (a newer release may add some: still keyed)."""
    import anthropic  # noqa: PLC0415
    import openai  # noqa: PLC0415

    if (openai.__version__, anthropic.__version__) != ("3.60.0", "2.17.0"):
        pytest.skip("not the locked SDK releases (the version matrix): new parameters default to the key")
    for endpoint in Endpoint:
        assert sdk_fields(endpoint) - {"stream"} <= set(KNOWN_FIELDS[endpoint]), endpoint
