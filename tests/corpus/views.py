"""What a caller got, seen two ways: its *content* (the answer) and its *shape* (what the SDK handed over).

A side's outcome is one of

* ``Got("plain", obj)`` - the parsed object a call returned (a completion, response, message, embeddings);
* ``Got("stream", events)`` - every event of a stream;
* ``Got("manager", (events, final))`` - an SDK stream helper's events and its final object;
* ``Got("error", (exception type name, HTTP status))``.

:func:`content` is comparable across plain and streamed answers: a hit must carry exactly the content of the
answer it replays. :func:`shape` is what a hit must share with what the bare SDK would have got for the
same request: the types the SDK parsed into, the fields present, the number of choices and outputs, and
for streams the event kinds (a usage chunk iff ``include_usage`` was asked for, every event kind the SDK's
stream accumulators rely on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Fields whose values echo request fields that may differ between two requests answered alike.
_OPAQUE: Final = frozenset({"metadata"})
# Events no SDK accumulator needs (progress notes, keep-alives): a replay may leave them out.
_OPTIONAL_EVENTS: Final = frozenset({"response.in_progress", "ping"})


@dataclass(frozen=True)
class Got:
    kind: str  # "plain", "stream", "manager", "error"
    value: Any

    def describe(self) -> str:
        if self.kind == "error":
            return f"error {self.value[0]} (HTTP {self.value[1]})"
        return self.kind


def dump(obj: Any) -> Any:
    """A JSON-like view of an SDK object (pydantic models dumped, lists walked)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", warnings=False)
    if isinstance(obj, list | tuple):
        return [dump(x) for x in obj]
    return obj


def skeleton(value: Any) -> Any:
    """``value`` with every scalar replaced by its kind: strings, numbers and booleans stop mattering.

    Absent, None and empty (``[]``, ``{}``) are one thing: an assembled body need not invent empty fields.
    """
    if isinstance(value, dict):
        return {k: "*" if k in _OPAQUE else skeleton(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [skeleton(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    return "str" if isinstance(value, str) else repr(type(value))


# --- content -------------------------------------------------------------------------------------


def _chat_content(body: dict[str, Any]) -> Any:
    out = []
    for choice in sorted(body.get("choices") or [], key=lambda c: c.get("index", 0)):
        message = choice.get("message") or {}
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        out.append((choice.get("index"), message.get("content"), calls, choice.get("finish_reason")))
    return ("chat", out)


def _chat_stream_content(events: list[dict[str, Any]]) -> Any:
    texts: dict[int, str | None] = {}
    calls: dict[int, dict[int, list[str]]] = {}
    finish: dict[int, Any] = {}
    for chunk in events:
        for choice in chunk.get("choices") or []:
            index, delta = choice.get("index", 0), choice.get("delta") or {}
            if delta.get("content") is not None:
                texts[index] = (texts.get(index) or "") + delta["content"]
            else:
                texts.setdefault(index, None)
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(index, {}).setdefault(call.get("index", 0), ["", ""])
                function = call.get("function") or {}
                slot[0] += function.get("name") or ""
                slot[1] += function.get("arguments") or ""
            if choice.get("finish_reason") is not None:
                finish[index] = choice["finish_reason"]
    out = []
    for index in sorted(texts):
        text = texts[index] if texts[index] or index not in calls else None
        call_list = [tuple(v) for _, v in sorted(calls.get(index, {}).items())]
        out.append((index, text, call_list, finish.get(index)))
    return ("chat", out)


def _response_content(body: dict[str, Any]) -> Any:
    items: list[tuple[Any, ...]] = []
    for item in body.get("output") or []:
        if item.get("type") == "function_call":
            items.append(("call", item.get("name"), item.get("arguments")))
        elif item.get("type") == "message":
            texts = [p.get("text") for p in item.get("content") or [] if p.get("type") == "output_text"]
            items.append(("message", "".join(t or "" for t in texts)))
    return ("response", body.get("status"), items)


def _message_content(body: dict[str, Any]) -> Any:
    blocks: list[tuple[Any, ...]] = []
    for block in body.get("content") or []:
        if block.get("type") == "text":
            blocks.append(("text", block.get("text")))
        elif block.get("type") == "tool_use":
            blocks.append(("tool_use", block.get("name"), block.get("input")))
    return ("message", body.get("stop_reason"), blocks)


def _message_stream_content(events: list[dict[str, Any]]) -> Any:
    import json  # noqa: PLC0415

    blocks: dict[int, list[Any]] = {}
    stop = None
    for event in events:
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            blocks[event["index"]] = [block.get("type"), block.get("text") or "", block.get("name"), ""]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            slot = blocks[event["index"]]
            slot[1] += delta.get("text") or ""
            slot[3] += delta.get("partial_json") or ""
        elif kind == "message_delta":
            stop = (event.get("delta") or {}).get("stop_reason")
    out: list[Any] = []
    for _, (kind, text, name, partial) in sorted(blocks.items()):
        out.append(("text", text) if kind == "text" else (kind, name, json.loads(partial or "{}")))
    return ("message", stop, out)


def _body_content(body: Any) -> Any:
    if not isinstance(body, dict):
        return ("other", body)
    if body.get("object") == "chat.completion":
        return _chat_content(body)
    if body.get("object") == "response":
        return _response_content(body)
    if body.get("type") == "message":
        return _message_content(body)
    if body.get("object") == "list":
        vectors = [d.get("embedding") for d in body["data"]]  # base64 text when asked for explicitly
        return ("embeddings", [v if isinstance(v, str) else [round(x, 5) for x in v or []] for v in vectors])
    return ("other", body)


def _stream_content(events: list[Any]) -> Any:
    if not events:
        return ("empty stream",)
    first = events[0]
    if first.get("object") == "chat.completion.chunk":
        return _chat_stream_content(events)
    if str(first.get("type", "")).startswith("response."):
        finals = [e["response"] for e in events if e.get("type") == "response.completed"]
        deltas = "".join(
            e.get("delta") or "" for e in events if e.get("type") == "response.output_text.delta"
        )
        return (_response_content(finals[-1]) if finals else ("no response.completed",), deltas)
    if first.get("type") == "message_start":
        return _message_stream_content(events)
    return ("other stream", events)


def content(got: Got) -> Any:
    """The answer itself, the same whether it came as a body or as a stream."""
    if got.kind == "error":
        return ("error", *got.value)
    if got.kind == "stream":
        found = _stream_content(dump(got.value))
        if isinstance(found, tuple) and len(found) == 2 and found[0] and found[0][0] == "response":
            return found[0]  # the deltas' agreement with the final text is part of the shape
        return found
    if got.kind == "manager":
        return _body_content(dump(got.value[1]))
    return _body_content(dump(got.value))


# --- shape ---------------------------------------------------------------------------------------


def _chat_stream_shape(events: list[dict[str, Any]]) -> Any:
    usage_chunks = [e for e in events if not e.get("choices") and e.get("usage")]
    indices = sorted({c.get("index", 0) for e in events for c in e.get("choices") or []})
    role_first = [bool((e.get("choices") or [{}])[0].get("delta", {}).get("role")) for e in events[:1]]
    return {
        "choice indices": indices,
        "role in first chunk": role_first,
        "usage-only chunks": len(usage_chunks),
        "usage on last chunk": events[-1].get("usage") is not None,
    }


def _event_kinds_shape(events: list[Any], objects: list[Any]) -> dict[str, Any]:
    kinds = [e.get("type") for e in events if e.get("type") not in _OPTIONAL_EVENTS]
    return {
        "first event": kinds[:1],
        "last event": kinds[-1:],
        "event kinds": sorted(set(kinds)),
        "event classes": sorted({type(o).__name__ for o in objects if o.type not in _OPTIONAL_EVENTS}),
    }


def shape(got: Got) -> Any:
    """What the SDK handed over, independent of the answer's words."""
    if got.kind == "error":
        return {"error": got.value}
    if got.kind == "plain":
        return {"class": type(got.value).__name__, "fields": skeleton(dump(got.value))}
    if got.kind == "manager":
        events, final = got.value
        kinds = sorted({str(getattr(e, "type", type(e).__name__)) for e in events})
        return {"helper events": kinds, "final class": type(final).__name__, "final": skeleton(dump(final))}
    events = dump(got.value)
    if not events:
        return {"events": []}
    if events[0].get("object") == "chat.completion.chunk":
        return _chat_stream_shape(events)
    found = _stream_content(events)
    agree = True
    if str(events[0].get("type", "")).startswith("response.") and found[0][0] == "response":
        agree = "".join(i[1] for i in found[0][2] if i[0] == "message") == found[1]
    return {**_event_kinds_shape(events, list(got.value)), "deltas add up to the final text": agree}


def difference(expected: Any, got: Any, labels: tuple[str, str], path: str = "") -> str:
    """Where two views first differ, briefly: ``path: <label 0> <expected>, <label 1> <got>``."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            one, other = expected.get(key, "<absent>"), got.get(key, "<absent>")
            if one != other:
                return difference(one, other, labels, f"{path}.{key}")
    if isinstance(expected, list | tuple) and isinstance(got, list | tuple) and len(expected) == len(got):
        for index, (one, other) in enumerate(zip(expected, got, strict=True)):
            if one != other:
                return difference(one, other, labels, f"{path}[{index}]")
    return f"{path or '.'}: {labels[0]} {_brief(expected)}, {labels[1]} {_brief(got)}"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."
