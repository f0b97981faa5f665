"""Rate-limited warnings: one line per (operation, cause) per interval, plus a count of what was held back.

A store that fails every call (Redis full, down, or slow) must not turn each request into a log line: a
busy service would write thousands per second. The first failure of a kind is logged at once, with the
exception's message; the same kind again within ``interval`` seconds is only counted, and the next line of
that kind says how many were suppressed. Thread-safe: one cache serves callers on many threads.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_LOG_INTERVAL", "ThrottledLog", "describe"]

DEFAULT_LOG_INTERVAL: Final = 10.0
_MAX_MESSAGE: Final = 200


def describe(exc: BaseException) -> str:
    """``Type: message`` for a log line, the message cut to a readable length."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ThrottledLog:
    """Warnings on ``logger``, at most one per ``key`` per ``interval`` seconds.

    Args:
        logger: Where the lines go.
        interval: Seconds between two lines of the same key.
        clock: Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line of ``key`` went out less than ``interval`` ago.

        Returns whether the line was written.
        """
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, held, now - last if last is not None else 0.0)
        self._logger.warning(message, *args)
        return True

    def suppressed(self) -> int:
        """Lines held back and not yet reported."""
        with self._lock:
            return sum(self._held.values())
