"""Server-sent events: an incremental parser for recording streams, and the writer that replays them.

Events are kept as ``{"event": name | None, "data": parsed JSON}``, or ``{"event": ..., "text": raw}`` when
the data is not JSON (OpenAI's ``[DONE]``), so entries and cassettes hold structured chunks a person can
read; the replayed bytes parse to the same objects in the SDKs.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["SSEParser", "encode_events"]


def _event(name: str | None, text: str) -> dict[str, Any]:
    try:
        return {"event": name, "data": orjson.loads(text)}
    except orjson.JSONDecodeError:
        return {"event": name, "text": text}


class SSEParser:
    """Feed it the decoded bytes of a stream as they arrive; it collects complete events."""

    def __init__(self) -> None:
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            self._add(block.decode("utf-8", "replace"))

    def _add(self, block: str) -> None:
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue  # blank or comment (keep-alive)
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data or name is not None:
            self.events.append(_event(name, "\n".join(data)))


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
