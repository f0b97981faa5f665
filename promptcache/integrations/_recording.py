"""Whether the pytest plugin is recording or replaying the request being made now.

While it is, a production cache in the code under test steps aside: it must neither answer a request the
plugin should record (the cassette would miss it) nor keep what the plugin replays (a cassette's answer in
a real store). Both of promptcache's doors ask here: the transport ``wrap()`` installs, and LangChain's
``PromptCacheLangChain``. Imports nothing, so any door may use it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["production_cache_steps_aside", "recording"]


class _Recording:
    """The pytest plugin's interceptions active in this process: each says whether the request being
    made now belongs to a test that records or replays without the production cache."""

    active: ClassVar[list[Callable[[], bool]]] = []


def production_cache_steps_aside() -> bool:
    """True while the pytest plugin records or replays the current request without the production cache."""
    return bool(_Recording.active) and any(wants() for wants in _Recording.active)


@contextlib.contextmanager
def recording(steps_aside: Callable[[], bool]) -> Iterator[None]:
    """While the pytest plugin records or replays, production caches step aside when ``steps_aside()``
    (a test that means to exercise the production cache opts out)."""
    _Recording.active.append(steps_aside)
    try:
        yield
    finally:
        _Recording.active.remove(steps_aside)
