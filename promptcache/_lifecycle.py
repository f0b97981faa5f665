"""The lifecycle half of :class:`~promptcache.PromptCache`: closing from sync code, ``async with``, and the
closed check every public call makes. ``aclose`` itself lives with the parts it finishes (``_cache.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Self

from promptcache.exceptions import PromptCacheError

__all__ = ["Lifecycle"]


class Lifecycle:
    """Closing, as a base of PromptCache (which sets ``_closed`` and defines ``aclose``)."""

    _closed: bool
    if TYPE_CHECKING:

        async def aclose(self) -> None: ...

    def close(self) -> None:
        """:meth:`aclose` from sync code (a cache used by sync SDK clients); blocks until it is done.

        Raises:
            PromptCacheError: Called from a thread running an event loop (it would block that loop):
                use ``await cache.aclose()`` there.

        .. versionadded:: 0.1.0
        """
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            raise PromptCacheError("cache.close() would block this event loop; use `await cache.aclose()`")
        from promptcache.integrations import _portal  # noqa: PLC0415 - only sync users need the portal

        _portal.call(self.aclose)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` (or :meth:`close`) has run; later calls raise PromptCacheError."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise PromptCacheError(f"{self!r} is closed")
