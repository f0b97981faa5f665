"""What the corpus server answers: payloads that are a pure function of what the request *means*.

The generated text names a fingerprint of everything that selects the answer on a real API: the upstream
(listener and path prefix), the query string, the answer-changing headers, the body minus the fields that
never change an answer (``IGNORED_FIELDS`` and every ``cache_control`` marker), and the server-side state
the request refers to. Two requests the real API would answer alike get the same text; two it would answer
differently get different texts. Ids (``chatcmpl-<n>``, ``resp_<n>``, ``msg_<n>``) carry the call number,
so they differ per call, as on the real APIs.

The wire shapes come from :mod:`fake_llm`'s builders (the same chunks, events and fields), extended with
``n`` choices, logprobs, JSON output for ``response_format``/``text.format``/``output_config`` schemas,
Anthropic containers and background Responses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import Any, Final

from fake_llm import (
    _anthropic_events,
    _anthropic_message,
    _chat_chunks,
    _chat_completion,
    _last_user_text,
    _response,
    _response_events,
    _strings,
    _tool_name,
    _Turn,
    _vector,
    _words,
)

JSON = dict[str, Any]
Events = list[tuple[str | None, JSON]]

# Body fields a real API answers alike whatever their value (billing, tracing, transport, storage).
IGNORED_FIELDS: Final = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "service_tier",
    }
)
# Headers that select the answer (or the organisation whose state is read).
# (``x-route`` stands for a header only a particular gateway answers by: wrap(..., key_headers=[...])).
ANSWER_HEADERS: Final = (
    "anthropic-version",
    "anthropic-beta",
    "anthropic-workspace-id",  # the SDK sends messages.create(workspace_id=...) as this header
    "anthropic-user-profile-id",  # ... and user_profile_id=... as this one
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-route",
)
# Query parameters that carry credentials: who pays, not which answer.
CREDENTIAL_PARAMS: Final = frozenset(
    {"api-key", "api_key", "key", "access_token", "token", "sig", "signature"}
)


def strip_markers(value: Any) -> Any:
    """``value`` without any ``cache_control`` key, at any depth (prompt-caching markers)."""
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return value


def _plain(message: Any) -> Any:
    """An Anthropic message whose content is one plain text block, as the string it stands for."""
    if (
        isinstance(message, dict)
        and isinstance(message.get("content"), list)
        and len(message["content"]) == 1
    ):
        block = message["content"][0]
        if isinstance(block, dict) and set(block) == {"type", "text"} and block["type"] == "text":
            return {**message, "content": block["text"]}
    return message


def meaning(body: JSON, endpoint: str) -> JSON:
    """The part of a body that selects the answer."""
    found = {k: strip_markers(v) for k, v in body.items() if k not in IGNORED_FIELDS and k != "cache_control"}
    if endpoint == "messages" and isinstance(found.get("messages"), list):
        found["messages"] = [_plain(m) for m in found["messages"]]
    return found


def fingerprint(*parts: Any) -> str:
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def prompt_of(body: JSON, endpoint: str) -> str:
    if endpoint == "responses":
        return _last_user_text(body.get("input"))
    return _last_user_text(body.get("messages"))


def _reply_text(prompt: str, fp: str) -> str:
    short = " ".join(prompt.split())[:60]
    return f"answer {fp} to: {short}"


# --- JSON output ---------------------------------------------------------------------------------


def _instance(schema: Any, text: str, defs: JSON) -> Any:
    """A value valid under a (simple) JSON schema, derived from ``text``."""
    if not isinstance(schema, dict):
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _instance(defs.get(ref.removeprefix("#/$defs/")), text, defs)
    if schema.get("enum"):
        return schema["enum"][0]
    for union in ("anyOf", "oneOf"):
        options = [o for o in schema.get(union) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return _instance(options[0], text, defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _instance(sub, f"{name}: {text}", defs) for name, sub in props.items()}
    if kind == "array":
        return [_instance(schema.get("items"), text, defs)]
    if kind == "integer":
        return len(text)
    if kind == "number":
        return len(text) / 4
    if kind == "boolean":
        return True
    return text


def _json_text(fmt: Any, text: str) -> str | None:
    """The JSON text to answer with under a JSON output format (any API's spelling), or None."""
    if not isinstance(fmt, dict) or fmt.get("type") not in {"json_object", "json_schema"}:
        return None
    if fmt["type"] == "json_object":
        return json.dumps({"answer": text})
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    defs = schema.get("$defs") or {} if isinstance(schema, dict) else {}
    return json.dumps(_instance(schema, text, defs))


def _output_format(body: JSON, endpoint: str) -> Any:
    if endpoint == "chat":
        return body.get("response_format")
    if endpoint == "responses":
        return (body.get("text") or {}).get("format")
    config = body.get("output_config") or {}
    return config.get("format") or body.get("output_format")


# --- turns and payloads --------------------------------------------------------------------------


def make_turn(n: int, body: JSON, endpoint: str, fp: str) -> _Turn:
    """One answer: text (or JSON text) named by ``fp``, or a call of the first tool when asked for."""
    prompt = prompt_of(body, endpoint)
    tool = _tool_name(body, {"messages": "anthropic"}.get(endpoint, endpoint))
    choice = body.get("tool_choice")
    forced = choice == "required" or (isinstance(choice, dict) and choice.get("type") in {"function", "tool"})
    use_tool = tool is not None and choice != "none" and ("use_tool" in prompt or forced)
    text = _reply_text(prompt, fp)
    json_text = _json_text(_output_format(body, endpoint), text)
    source = [body.get("system"), body.get("instructions"), body.get("messages"), body.get("input")]
    return _Turn(
        n=n,
        model=str(body.get("model") or "corpus-model"),
        prompt=prompt,
        prompt_tokens=_words(" ".join(_strings(source))),
        text="" if use_tool else (json_text or text),
        tool=tool if use_tool else None,
        arguments=json.dumps({"query": prompt, "fp": fp}) if use_tool else "",
        finish="tool_calls" if use_tool else "stop",
        created=int(time.time()),
    )


def _logprobs(text: str) -> JSON:
    tokens = [
        {"token": w, "logprob": -0.25, "bytes": list(w.encode()), "top_logprobs": []} for w in text.split()
    ]
    return {"content": tokens, "refusal": None}


def chat_body(turn: _Turn, body: JSON) -> JSON:
    payload = _chat_completion(turn)
    count = body["n"] if isinstance(body.get("n"), int) else 1
    first = payload["choices"][0]
    choices = []
    for index in range(max(1, count)):
        choice = json.loads(json.dumps(first))
        choice["index"] = index
        if index and choice["message"]["content"]:
            choice["message"]["content"] += f" (choice {index})"
        if body.get("logprobs") is True:
            choice["logprobs"] = _logprobs(choice["message"]["content"] or "")
        choices.append(choice)
    payload["choices"] = choices
    return payload


def chat_chunks(turn: _Turn, body: JSON) -> list[JSON]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return _chat_chunks(turn, include_usage=include_usage)


def _response_extras(payload: JSON, body: JSON, status: str | None) -> JSON:
    conversation = body.get("conversation")
    if isinstance(conversation, str):
        conversation = {"id": conversation}
    payload.update(
        conversation=conversation,
        background=bool(body.get("background")),
        prompt=body.get("prompt"),
    )
    if status is not None:  # a background response starts queued, without output
        payload.update(status=status, output=[], usage=None, completed_at=None)
    return payload


def response_body(turn: _Turn, body: JSON, status: str | None = None) -> JSON:
    return _response_extras(_response(turn, body), body, status)


def response_events(turn: _Turn, body: JSON) -> Events:
    events = _response_events(turn, body)
    for _, data in events:
        if isinstance(data.get("response"), dict):
            _response_extras(data["response"], body, None)
    return events


def _container(body: JSON) -> JSON | None:
    container = body.get("container")
    cid = container.get("id") if isinstance(container, dict) else container
    return {"id": cid, "expires_at": "2099-01-01T00:00:00Z"} if isinstance(cid, str) else None


def message_body(turn: _Turn, body: JSON) -> JSON:
    payload = _anthropic_message(turn)
    payload["container"] = _container(body)
    return payload


def message_events(turn: _Turn, body: JSON) -> Events:
    events = _anthropic_events(turn)
    events[0][1]["message"]["container"] = _container(body)
    return events


def embeddings_body(body: JSON, fp: str) -> JSON:
    raw = body.get("input")
    tokens_only = isinstance(raw, list) and bool(raw) and all(isinstance(x, int) for x in raw)
    inputs: list[Any] = [raw] if isinstance(raw, str) or tokens_only or not isinstance(raw, list) else raw
    dims = body["dimensions"] if isinstance(body.get("dimensions"), int) else 8
    data = []
    for index, item in enumerate(inputs):
        vector = _vector([fp, item], dims)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(_words(item) if isinstance(item, str) else max(1, len(item)) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model") or "corpus-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
