"""The upstream APIs promptcache caches; every key names the one its request is for."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Endpoint"]


class Endpoint(StrEnum):
    """The upstream API a request is for; part of the key material.

    .. versionadded:: 0.1.0
    """

    CHAT_COMPLETIONS = "chat.completions"
    RESPONSES = "responses"
    EMBEDDINGS = "embeddings"
    ANTHROPIC_MESSAGES = "anthropic.messages"
