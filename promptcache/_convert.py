"""Streams and bodies of one answer: the shape a caller asked for, conversions, the compact stored form.

Pure functions, no I/O, shared by the cache, the SDK transport and the pytest plugin.

* **Shape** (chat completions): a stream carries usage only when the caller asked for it
  (``stream_options.include_usage``): then every chunk has ``usage: null`` and a last chunk without
  choices has the numbers. :func:`shape_stream` fits a stored stream to the caller, or says it cannot (a
  stream stored without usage for a caller who asked for it).
* **Conversion**: :func:`body_from_stream` (the body assembled from a stream, :mod:`._assemble`) and
  :func:`stream_from_body` (a stream synthesised from a body, :mod:`._synth`), each only when faithful.
* **Compact form** (cassettes): :func:`compact_stream` keeps a stream as its final body, the lengths of its
  text deltas and patches for whatever the synthesised stream does not reproduce; :func:`expand_stream`
  gives back exactly the recorded events.
"""

from __future__ import annotations

from typing import Any

import orjson

from promptcache._assemble import body_from_events, obj
from promptcache._keys import Endpoint
from promptcache._synth import Pieces, events_from_body, input_json

__all__ = [
    "body_from_stream",
    "compact_stream",
    "expand_stream",
    "has_usage",
    "shape_stream",
    "stream_from_body",
    "wants_usage",
]

Event = dict[str, Any]


def wants_usage(endpoint: Endpoint, request: Any) -> bool:  # noqa: ANN401 - a request body
    """Whether a streamed chat completions request asked for the usage chunk."""
    if endpoint is not Endpoint.CHAT_COMPLETIONS or not isinstance(request, dict):
        return False
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def has_usage(events: list[Event]) -> bool:
    """Whether a chat completions stream carries its token usage."""
    return any(isinstance(e.get("data"), dict) and isinstance(e["data"].get("usage"), dict) for e in events)


def _without_usage(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        data = event.get("data")
        if isinstance(data, dict) and "usage" in data:
            if data.get("choices") == []:
                continue  # the usage chunk
            event = {**event, "data": {k: v for k, v in data.items() if k != "usage"}}  # noqa: PLW2901
        out.append(event)
    return out


def shape_stream(endpoint: Endpoint, events: list[Event], *, include_usage: bool) -> list[Event] | None:
    """``events`` as the API sends them to a caller who did (or did not) ask for usage.

    None when the caller asked for usage and the stream has none: it is not a faithful answer.
    Only chat completions have the option; other endpoints' streams are returned as they are.
    """
    if endpoint is not Endpoint.CHAT_COMPLETIONS:
        return events
    if include_usage:
        return events if has_usage(events) else None
    return _without_usage(events)


def _has_usage_fields(events: list[Event]) -> bool:
    return any(isinstance(e.get("data"), dict) and "usage" in e["data"] for e in events)


def body_from_stream(endpoint: Endpoint, events: list[Event]) -> dict[str, Any] | None:
    """The body a plain call would have got, from a complete stream; None when it would not be faithful.

    A chat completions stream recorded without usage makes no body (a body always reports usage).
    """
    body = body_from_events(endpoint, events)
    if body is None or not isinstance(body.get("usage"), dict):
        return None
    return body


def stream_from_body(endpoint: Endpoint, body: Any, *, include_usage: bool) -> list[Event] | None:  # noqa: ANN401
    """The stream of a stored body, as the API would send it to this caller; None when not streamable."""
    return events_from_body(endpoint, body, include_usage=include_usage)


# -- the compact form -------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:  # noqa: ANN401 - JSON
    """Strict JSON equality (``1``, ``1.0`` and ``true`` differ; key order does not matter)."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)


def _pointer(path: list[str]) -> str:
    """A JSON Pointer-like path (``data/delta/content``; ``~0`` for ``~`` and ``~1`` for ``/`` in names)."""
    return "/".join(name.replace("~", "~0").replace("/", "~1") for name in path)


def _names(pointer: str) -> list[str]:
    return [name.replace("~1", "/").replace("~0", "~") for name in pointer.split("/")] if pointer else []


def _diff(a: Any, b: Any, path: list[str], ops: list[list[Any]]) -> None:  # noqa: ANN401
    """Ops turning ``a`` into ``b``: ``[path, value]`` sets, ``[path]`` removes (one short line each)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name, value in b.items():
            if name not in a:
                ops.append([_pointer([*path, name]), value])
            elif not _same(a[name], value):
                _diff(a[name], value, [*path, name], ops)
        ops.extend([_pointer([*path, name])] for name in a if name not in b)
    elif not _same(a, b):
        ops.append([_pointer(path), b])


def _patch(value: Any, ops: list[Any]) -> Any:  # noqa: ANN401
    for op in ops:
        path = _names(str(op[0]))
        if not path:
            value = op[1]
            continue
        target = value
        for name in path[:-1]:
            target = target[name]
        if len(op) == 1:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = op[1]
    return value


def _pieces(endpoint: Endpoint, events: list[Event]) -> list[int]:
    """The lengths of a stream's text deltas, in order (where the synthesised stream cuts its texts)."""
    out: list[int] = []

    def add(text: Any) -> None:  # noqa: ANN401
        if isinstance(text, str) and text:
            out.append(len(text))

    for event in events:
        data = event.get("data")
        if not isinstance(data, dict):
            continue
        if endpoint is Endpoint.CHAT_COMPLETIONS:
            for choice in data.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    add(delta.get("content"))
                    add(delta.get("refusal"))
                    for call in delta.get("tool_calls") or []:
                        add(((call or {}).get("function") or {}).get("arguments"))
        elif endpoint is Endpoint.RESPONSES:
            if str(data.get("type")).endswith(".delta"):
                add(data.get("delta"))
        elif data.get("type") == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            add(delta.get("text") or delta.get("partial_json") or delta.get("thinking"))
    return out


def _inputs(events: list[Event], body: dict[str, Any]) -> dict[str, str]:
    """Anthropic tool inputs whose streamed JSON text is not the default dump of the parsed input."""
    raw: dict[int, str] = {}
    for event in events:
        data = event.get("data")
        if isinstance(data, dict) and data.get("type") == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                index = int(data.get("index", 0))
                raw[index] = raw.get(index, "") + str(delta.get("partial_json") or "")
    content = body.get("content")
    blocks: list[Any] = content if isinstance(content, list) else []
    return {
        str(index): text
        for index, text in raw.items()
        if index < len(blocks) and text != input_json(obj(blocks[index]).get("input"))
    }


def _synthesise(endpoint: Endpoint, compact: dict[str, Any]) -> list[Event] | None:
    inputs = obj(compact.get("inputs"))
    return events_from_body(
        endpoint,
        compact.get("response"),
        include_usage=compact.get("include_usage") is True,
        pieces=Pieces(
            [int(n) for n in compact.get("pieces") or []], {int(k): str(v) for k, v in inputs.items()}
        ),
    )


def compact_stream(endpoint: Endpoint, events: list[Event]) -> dict[str, Any] | None:
    """A recorded stream as ``{"response", "pieces", ...}`` (see below); None when it does not fit.

    ``response`` is the final body (what a reviewer reads), ``pieces`` the lengths of the text deltas,
    ``include_usage`` (chat) whether usage was streamed, ``inputs`` (Anthropic) tool input JSON text that
    is not the default dump, ``patches`` (by event index) what the synthesised stream does not reproduce.
    :func:`expand_stream` of the result is checked to equal ``events`` exactly; otherwise None (keep the
    events as they are).
    """
    body = body_from_events(endpoint, events)
    if body is None:
        return None
    compact: dict[str, Any] = {"response": body, "pieces": _pieces(endpoint, events)}
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        compact["include_usage"] = _has_usage_fields(events)
    if endpoint is Endpoint.ANTHROPIC_MESSAGES and (inputs := _inputs(events, body)):
        compact["inputs"] = inputs  # tool input JSON as it streamed (spacing, escapes)
    synthesised = _synthesise(endpoint, compact)
    if synthesised is None or len(synthesised) != len(events):
        return None
    patches: dict[str, list[list[Any]]] = {}
    for index, (made, real) in enumerate(zip(synthesised, events, strict=True)):
        ops: list[list[Any]] = []
        _diff(made, real, [], ops)
        if ops:
            patches[str(index)] = ops
    if patches:
        compact["patches"] = patches
    try:
        expanded = expand_stream(endpoint, orjson.loads(orjson.dumps(compact)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return compact if expanded is not None and _same(expanded, events) else None


def expand_stream(endpoint: Endpoint, compact: dict[str, Any]) -> list[Event] | None:
    """The recorded events of a compact stream (see :func:`compact_stream`); None when it is malformed."""
    events = _synthesise(endpoint, compact)
    if events is None:
        return None
    patches = compact.get("patches") or {}
    if not isinstance(patches, dict):
        return None
    events = list(orjson.loads(orjson.dumps(events)))  # private copies to patch
    for index, ops in patches.items():
        at = int(index)
        if not 0 <= at < len(events) or not isinstance(ops, list):
            return None
        events[at] = _patch(events[at], ops)
    return events
