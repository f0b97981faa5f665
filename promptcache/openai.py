"""Drop-in caching for the OpenAI SDK: ``client = wrap(AsyncOpenAI(), cache, agent_id="classifier")``.

Needs the ``openai`` extra: ``pip install promptcache[openai]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

try:
    import openai as _openai  # noqa: F401 - the import guard: fail here, with the extra's name
except ImportError as exc:  # pragma: no cover - exercised by the lint step's no-extras import check
    raise ImportError("promptcache.openai needs the openai SDK: pip install 'promptcache[openai]'") from exc

from promptcache.integrations._wrap import wrap

__all__ = ["wrap"]
