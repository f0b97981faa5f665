"""ThrottledLog: one warning per cause per interval, with the exception's message and a held-back count."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from promptcache._logs import ThrottledLog, describe

if TYPE_CHECKING:
    import pytest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_one_cause_is_one_line_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    """2,000 failures of one kind within the interval make one line; the next line counts the rest."""
    clock = Clock()
    log = ThrottledLog(logging.getLogger("promptcache.test"), interval=10.0, clock=clock)
    error = OSError("OOM command not allowed when used memory > 'maxmemory'.")
    with caplog.at_level(logging.WARNING, logger="promptcache.test"):
        written = sum(
            log.warning(("set", "OSError"), "store set failed (%s)", describe(error)) for _ in range(2000)
        )
        assert written == 1
        assert log.suppressed() == 1999
        clock.now = 10.0
        assert log.warning(("set", "OSError"), "store set failed (%s)", describe(error))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "store set failed (OSError: OOM command not allowed when used memory > 'maxmemory'.)"
    assert lines[1].endswith("(1999 more like this in the last 10 s)")
    assert log.suppressed() == 0


def test_causes_are_limited_separately(caplog: pytest.LogCaptureFixture) -> None:
    """Another operation or another exception type gets its own line at once."""
    log = ThrottledLog(logging.getLogger("promptcache.test"), clock=Clock())
    with caplog.at_level(logging.WARNING, logger="promptcache.test"):
        assert log.warning(("get", "TimeoutError"), "a")
        assert log.warning(("set", "TimeoutError"), "b")
        assert log.warning(("get", "ConnectionError"), "c")
        assert not log.warning(("get", "TimeoutError"), "a")
    assert [r.getMessage() for r in caplog.records] == ["a", "b", "c"]


def test_describe_keeps_the_message_short_and_on_one_line() -> None:
    """A long, multi-line exception message is folded to one line and cut."""
    text = describe(ValueError("first line\nsecond " + "x" * 500))
    assert text.startswith("ValueError: first line second x")
    assert "\n" not in text
    assert len(text) <= len("ValueError: ") + 200
    assert describe(TimeoutError()) == "TimeoutError"
