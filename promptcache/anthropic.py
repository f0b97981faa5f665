"""Drop-in caching for the Anthropic SDK: ``client = wrap(AsyncAnthropic(), cache, agent_id="writer")``.

Needs the ``anthropic`` extra: ``pip install promptcache[anthropic]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

try:
    import anthropic as _anthropic  # noqa: F401 - the import guard: fail here, with the extra's name
except ImportError as exc:  # pragma: no cover - exercised by the lint step's no-extras import check
    raise ImportError(
        "promptcache.anthropic needs the anthropic SDK: pip install 'promptcache[anthropic]'"
    ) from exc

from promptcache.integrations._wrap import wrap

__all__ = ["wrap"]
