"""Server-sent events: an incremental parser for recording streams, and the writer that replays them.

Events are kept as ``{"event": name | None, "data": parsed JSON}``, or ``{"event": ..., "text": raw}`` when
the data is not JSON (OpenAI's ``[DONE]``), so entries and cassettes hold structured chunks a person can
read; the replayed bytes parse to the same objects in the SDKs.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

__all__ = ["SSEParser", "encode_events"]


def _event(name: str | None, text: str) -> dict[str, Any]:
    try:
        return {"event": name, "data": orjson.loads(text)}
    except orjson.JSONDecodeError:
        return {"event": name, "text": text}


_LINE_END: Final = re.compile(rb"[\r\n]")


class SSEParser:
    """Feed it the bytes of a stream as they arrive; it collects complete events.

    Lines end with CRLF, LF or CR (the SSE specification), and a network chunk may end anywhere, including
    between the CR and the LF of one line ending: that pair still ends a single line. A blank line ends
    an event.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False  # the last chunk ended with CR: an LF starting the next one belongs to it
        self._name: str | None = None
        self._data: list[str] = []
        self.events: list[dict[str, Any]] = []

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = False
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        while (found := _LINE_END.search(buffer, start)) is not None:
            end = found.start()
            line = buffer[start:end]
            if buffer[end] == 0x0D:  # CR: alone, or the first half of CRLF (possibly in the next chunk)
                if end + 1 == len(buffer):
                    self._after_cr = True
                    start = end + 1
                else:
                    start = end + 2 if buffer[end + 1] == 0x0A else end + 1
            else:
                start = end + 1
            self._line(line)
        self._buffer = buffer[start:]

    def _line(self, raw: bytes) -> None:
        if not raw:  # a blank line ends the event
            if self._data or self._name is not None:
                self.events.append(_event(self._name, "\n".join(self._data)))
            self._name, self._data = None, []
            return
        if raw[:1] == b":":
            return  # a comment (keep-alive)
        field, _, value = raw.decode("utf-8", "replace").partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)


def encode_events(events: list[dict[str, Any]]) -> bytes:
    """The SSE bytes of recorded events (compact JSON data lines)."""
    out: list[bytes] = []
    for event in events:
        name = event.get("event")
        if name:
            out.append(b"event: " + str(name).encode() + b"\n")
        text = event.get("text")
        payload = text.encode() if isinstance(text, str) else orjson.dumps(event.get("data"))
        out.append(b"data: " + payload + b"\n\n")
    return b"".join(out)
