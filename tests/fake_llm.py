"""A local OpenAI-/Anthropic-compatible HTTP server for tests, spoken to by the real SDKs over loopback.

Stdlib only (``http.server.ThreadingHTTPServer`` on 127.0.0.1, a free port, a daemon thread); the SDKs are
imported lazily by the client helpers at the bottom. Typical use::

    with FakeLLM() as server:
        client, aclient = openai_clients(server)
        reply = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "answer #1 to: hi"
        client.close()

Endpoints (POST, JSON): ``/v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings`` (OpenAI) and
``/v1/messages`` (Anthropic), each also with ``"stream": true`` where the real API streams. Every request to
one of them is an upstream *call* and gets the next call number ``n`` (1, 2, ...), including calls answered
by an injected failure. The generated text is ``answer #<n> to: <last user message text>``, so a second
upstream call for the same prompt answers differently, which is how a test tells a cache hit from a call
(``server.numbered = False`` leaves the number out; ids still change; ``server.clock`` sets the answers'
creation times).

A request whose last user message contains ``use_tool`` and that declares tools gets a call of the first
tool, with arguments ``{"query": <user text>}``. The finish reason can be forced for the next answer with
``server.next_finish_reason`` or per request with the header ``x-fake-finish-reason``; chat vocabulary
(``stop``/``length``/``tool_calls``/``content_filter``) is translated to each API's own (Anthropic
``end_turn``/``max_tokens``/``tool_use``; Responses status ``incomplete``), and native names pass through.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import socketserver
import struct
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    import anthropic
    import openai

__all__ = [
    "ANTHROPIC_TEST_KEY",
    "OPENAI_TEST_KEY",
    "Failure",
    "FakeLLM",
    "RecordedRequest",
    "anthropic_clients",
    "openai_clients",
]

OPENAI_TEST_KEY = "sk-test-0000000000000000000000"
ANTHROPIC_TEST_KEY = "sk-ant-test-0000"
EMBEDDING_DIMS = 8
STREAM_PIECES = 4

JSON = dict[str, Any]

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"
MESSAGES_PATH = "/v1/messages"
MODEL_PATHS = frozenset({CHAT_PATH, RESPONSES_PATH, EMBEDDINGS_PATH, MESSAGES_PATH})

_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_TO_CHAT = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
_INCOMPLETE = {
    "length": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "content_filter": "content_filter",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it; ``body`` is the parsed JSON, or None when it was not JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    raw: bytes


@dataclass(frozen=True)
class Failure:
    """An injected error: status, body (JSON-able, str or bytes; None = the API's error JSON), headers."""

    status: int
    body: Any
    headers: dict[str, str | None]


@dataclass(frozen=True)
class _Turn:
    """What the fake model "says" for one call, independent of the wire format."""

    n: int
    model: str
    prompt: str
    prompt_tokens: int
    text: str
    tool: str | None
    arguments: str
    finish: str  # chat vocabulary unless a native name was forced
    created: int  # unix time

    @property
    def output_tokens(self) -> int:
        return _words(self.arguments if self.tool else self.text)


class _Abort(Exception):  # noqa: N818 - control flow, not an error
    """Drop the connection without finishing the response."""


# --- the server ----------------------------------------------------------------------------------


class FakeLLM:
    """A threaded fake of the OpenAI and Anthropic HTTP APIs with failure injection and request capture."""

    def __init__(self, *, poll_interval: float = 0.02) -> None:
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._release = threading.Event()
        self.stream_hung = threading.Event()
        self._init_state()

    def _init_state(self) -> None:
        with self._lock:
            self._requests: list[RecordedRequest] = []
            self._calls = 0
            self._failures: deque[Failure] = deque()
            self.errors: list[str] = []
        self.next_finish_reason: str | None = None
        self.invalid_json_next = False
        self.delay = 0.0
        self.stream_hang_after: int | None = None
        self.stream_drop_after: int | None = None
        self.sse_line_end = b"\n"  # what ends each SSE line: LF, CRLF or CR are all valid
        self.stream_pieces = STREAM_PIECES  # deltas a streamed text or tool input is cut into
        self.hang_timeout = 30.0
        self.stream_hung.clear()
        self.numbered = True  # False: the text leaves out the call number (ids and times still change)
        self.clock: Callable[[], float] = time.time  # the answers' creation times

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._release = threading.Event()
        httpd = _HTTPServer(self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=f"fake-llm-{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed/hanging handlers, cut open connections and join every thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        self.release_hangs()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _shutdown_socket(conn)
        httpd.server_close()  # joins the handler threads
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeLLM is not started; call start() or use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.anthropic_base_url}/v1"

    # control -----------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        count: int = 1,
        body: Any = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> None:
        """Answer the next ``count`` model calls with ``status`` (default headers: ``retry-after-ms: 1``).

        A header mapped to None is left out; ``body=None`` sends the API's own error JSON shape.
        """
        merged: dict[str, str | None] = {"retry-after-ms": "1", **(headers or {})}
        with self._lock:
            self._failures.extend(Failure(status, body, merged) for _ in range(count))

    def release_hangs(self) -> None:
        """Let streams held by ``stream_hang_after`` continue (they drop instead when the server stops)."""
        with self._lock:
            release, self._release = self._release, threading.Event()
        release.set()

    def reset(self) -> None:
        """Forget requests, calls, queued failures and every knob (the server keeps running)."""
        self.release_hangs()
        self._init_state()

    # introspection -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("FakeLLM received no request")
            return self._requests[-1]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # called from handler threads ---------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                stopping = self._stopping.is_set()
            else:
                self._connections.discard(conn)
                stopping = False
        if stopping:
            _shutdown_socket(conn)

    def _record(self, request: RecordedRequest, *, is_call: bool) -> int:
        with self._lock:
            self._requests.append(request)
            if is_call:
                self._calls += 1
            return self._calls

    def _take_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _take_invalid_json(self) -> bool:
        with self._lock:
            flag, self.invalid_json_next = self.invalid_json_next, False
            return flag

    def _take_finish_reason(self) -> str | None:
        with self._lock:
            reason, self.next_finish_reason = self.next_finish_reason, None
            return reason

    def _record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Abort

    def _hang(self) -> bool:
        """Hold a stream until released (True), or until stop/timeout (False: drop it)."""
        with self._lock:
            release = self._release
        self.stream_hung.set()
        released = release.wait(self.hang_timeout)
        return released and not self._stopping.is_set()


def _shutdown_socket(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, fake: FakeLLM) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - fixed signature
        self.fake._record_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, small writes meet delayed ACKs on loopback: ~44 ms per call instead of ~1 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client went away between requests
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # request handling --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in {b"\r\n", b"\n", b""}:
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        raw = self._read_body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            raw=raw,
        )
        is_call = self.command == "POST" and path in MODEL_PATHS and isinstance(body, dict)
        n = fake._record(request, is_call=is_call)
        try:
            if not is_call:
                if self.command == "POST" and path in MODEL_PATHS:
                    self._send_error(400, "invalid_request_error", "request body must be a JSON object")
                else:
                    self._send_error(404, "not_found_error", f"no route for {self.command} {path}")
                return
            self._answer(n, body, request.headers)
        except _Abort:
            self.close_connection = True
        except OSError:  # the client went away mid-answer
            self.close_connection = True
        except Exception:  # noqa: BLE001 - a bug in the fake: record it and tell the client
            fake._record_error(traceback.format_exc())
            self.close_connection = True
            with contextlib.suppress(Exception):  # the headers may already be out
                self._send_error(500, "fake_llm_error", "FakeLLM failed; see server.errors")

    def _answer(self, n: int, body: JSON, headers: Mapping[str, str]) -> None:
        fake = self.server.fake
        path = self.path.split("?")[0].rstrip("/")
        fake._sleep(fake.delay)
        failure = fake._take_failure()
        if failure is not None:
            self._send_failure(failure)
            return
        if fake._take_invalid_json():
            self._send_bytes(200, b'{"id": "truncated', "application/json", self._id_headers(n))
            return
        if path == EMBEDDINGS_PATH:
            self._send_json(200, _embeddings(body), self._id_headers(n))
            return
        forced = headers.get("x-fake-finish-reason") or fake._take_finish_reason()
        stream = body.get("stream") is True
        if path == CHAT_PATH:
            turn = _turn(n, body, body.get("messages"), _tool_name(body, "chat"), forced, fake)
            if stream:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = _chat_chunks(turn, include_usage=include_usage, pieces=fake.stream_pieces)
                self._send_sse(n, [(None, c) for c in chunks], done=True)
            else:
                self._send_json(200, _chat_completion(turn), self._id_headers(n))
        elif path == RESPONSES_PATH:
            turn = _turn(n, body, body.get("input"), _tool_name(body, "responses"), forced, fake)
            if stream:
                self._send_sse(n, _response_events(turn, body, pieces=fake.stream_pieces))
            else:
                self._send_json(200, _response(turn, body), self._id_headers(n))
        else:
            turn = _turn(n, body, body.get("messages"), _tool_name(body, "anthropic"), forced, fake)
            if stream:
                self._send_sse(n, _anthropic_events(turn, pieces=fake.stream_pieces))
            else:
                self._send_json(200, _anthropic_message(turn), self._id_headers(n))

    # writing -----------------------------------------------------------------------------------

    def _is_anthropic(self) -> bool:
        return self.path.split("?")[0].rstrip("/") == MESSAGES_PATH

    def _id_headers(self, n: int) -> dict[str, str]:
        name = "request-id" if self._is_anthropic() else "x-request-id"
        return {name: f"req_{n}", "x-fake-llm-call": str(n)}

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str | None]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            if value is not None:
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str | None] | None = None) -> None:
        self._send_bytes(status, _dumps(payload), "application/json", headers or {})

    def _send_error(
        self, status: int, kind: str, message: str, headers: Mapping[str, str | None] | None = None
    ) -> None:
        if self._is_anthropic():
            payload: JSON = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        self._send_json(status, payload, headers)

    def _send_failure(self, failure: Failure) -> None:
        if failure.body is None:
            kind = _error_kind(failure.status, anthropic=self._is_anthropic())
            self._send_error(failure.status, kind, f"injected {failure.status} failure", failure.headers)
        elif isinstance(failure.body, bytes | str):
            data = failure.body.encode() if isinstance(failure.body, str) else failure.body
            content_type = failure.headers.get("content-type") or "text/plain; charset=utf-8"
            headers = {k: v for k, v in failure.headers.items() if k.lower() != "content-type"}
            self._send_bytes(failure.status, data, content_type, headers)
        else:
            self._send_json(failure.status, failure.body, failure.headers)

    def _send_sse(self, n: int, events: list[tuple[str | None, JSON]], *, done: bool = False) -> None:
        """Stream ``events`` as chunked Server-Sent Events, one flushed chunk each, with hang/drop hooks."""
        fake = self.server.fake
        hang_after, drop_after = fake.stream_hang_after, fake.stream_drop_after
        sent = 0

        def checkpoint() -> None:
            nonlocal hang_after
            if drop_after is not None and sent >= drop_after:
                raise _Abort
            if hang_after is not None and sent >= hang_after:
                hang_after = None
                if not fake._hang():
                    raise _Abort

        def write_chunk(data: bytes) -> None:
            checkpoint()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for header, value in self._id_headers(n).items():
            self.send_header(header, value)
        self.end_headers()
        end = fake.sse_line_end
        for name, payload in events:
            prefix = b"event: " + name.encode() + end if name else b""
            write_chunk(prefix + b"data: " + _dumps(payload) + end + end)
            sent += 1
        if done:
            write_chunk(b"data: [DONE]" + end + end)
            sent += 1
        checkpoint()
        self.wfile.write(b"0\r\n\r\n")


# --- payload builders (pure functions) -----------------------------------------------------------


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _strings(value: Any) -> list[str]:
    """Every string under ``value`` except type/role tags, to count prompt "tokens"."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() if key not in {"type", "role", "id"} for s in _strings(item)]
    return []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") in {"text", "input_text"}]
        texts = [p.get("text") for p in parts]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
    return ""


def _tool_name(body: JSON, api: str) -> str | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    tool = tools[0]
    name = (tool.get("function") or {}).get("name") if api == "chat" else tool.get("name")
    return name if isinstance(name, str) else None


def _turn(n: int, body: JSON, messages: Any, tool: str | None, forced: str | None, fake: FakeLLM) -> _Turn:
    prompt = _last_user_text(messages)
    use_tool = tool is not None and "use_tool" in prompt
    prompt_tokens = _words(" ".join(_strings([body.get("system"), body.get("instructions"), messages])))
    return _Turn(
        n=n,
        model=str(body.get("model") or "fake-model"),
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        text="" if use_tool else f"answer #{n} to: {prompt}" if fake.numbered else f"answer to: {prompt}",
        tool=tool if use_tool else None,
        arguments=json.dumps({"query": prompt}) if use_tool else "",
        finish=forced or ("tool_calls" if use_tool else "stop"),
        created=int(fake.clock()),
    )


def _pieces(text: str, parts: int = STREAM_PIECES) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _error_kind(status: int, *, anthropic: bool) -> str:
    if anthropic:
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        return kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
    kinds = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
    return kinds.get(status, "server_error" if status >= 500 else "invalid_request_error")


# chat completions


def _chat_usage(turn: _Turn) -> JSON:
    return {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.prompt_tokens + turn.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_finish(turn: _Turn) -> str:
    return _TO_CHAT.get(turn.finish, turn.finish)


def _chat_completion(turn: _Turn) -> JSON:
    message: JSON = {"role": "assistant", "content": turn.text or None, "refusal": None, "annotations": []}
    if turn.tool:
        message["tool_calls"] = [
            {
                "id": f"call_{turn.n}",
                "type": "function",
                "function": {"name": turn.tool, "arguments": turn.arguments},
            }
        ]
    return {
        "id": f"chatcmpl-{turn.n}",
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _chat_finish(turn)}],
        "usage": _chat_usage(turn),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _chat_chunks(turn: _Turn, *, include_usage: bool, pieces: int = STREAM_PIECES) -> list[JSON]:
    created = turn.created

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        data: JSON = {
            "id": f"chatcmpl-{turn.n}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": turn.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return data

    if turn.tool:
        function = {"name": turn.tool, "arguments": ""}
        call = {"index": 0, "id": f"call_{turn.n}", "type": "function", "function": function}
        chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [call], "refusal": None})]
        cut = _pieces(turn.arguments, pieces)
        chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in cut]
    else:
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": piece}) for piece in _pieces(turn.text, pieces)]
    chunks.append(chunk({}, _chat_finish(turn)))
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = _chat_usage(turn)
        chunks.append(last)
    return chunks


# responses


def _response_item(turn: _Turn, *, done: bool) -> JSON:
    status = "completed" if done else "in_progress"
    if turn.tool:
        return {
            "type": "function_call",
            "id": f"fc_{turn.n}",
            "call_id": f"call_{turn.n}",
            "name": turn.tool,
            "arguments": turn.arguments if done else "",
            "status": status,
        }
    content = [{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}] if done else []
    return {
        "type": "message",
        "id": f"msg_{turn.n}",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _response(turn: _Turn, body: JSON, *, done: bool = True) -> JSON:
    incomplete = _INCOMPLETE.get(turn.finish) if done else None
    now = turn.created
    return {
        "id": f"resp_{turn.n}",
        "object": "response",
        "created_at": now,
        "completed_at": now if done and not incomplete else None,
        "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": turn.model,
        "output": [_response_item(turn, done=True)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": turn.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": turn.prompt_tokens + turn.output_tokens,
        }
        if done
        else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _response_events(
    turn: _Turn, body: JSON, *, pieces: int = STREAM_PIECES
) -> list[tuple[str | None, JSON]]:
    events: list[tuple[str | None, JSON]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    started = _response(turn, body, done=False)
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    item_id = f"fc_{turn.n}" if turn.tool else f"msg_{turn.n}"
    where: JSON = {"item_id": item_id, "output_index": 0}
    emit("response.output_item.added", output_index=0, item=_response_item(turn, done=False))
    if turn.tool:
        for piece in _pieces(turn.arguments, pieces):
            emit("response.function_call_arguments.delta", **where, delta=piece)
        emit("response.function_call_arguments.done", **where, name=turn.tool, arguments=turn.arguments)
    else:
        where["content_index"] = 0
        emit(
            "response.content_part.added",
            **where,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        for piece in _pieces(turn.text, pieces):
            emit("response.output_text.delta", **where, delta=piece, logprobs=[])
        emit("response.output_text.done", **where, text=turn.text, logprobs=[])
        part = {"type": "output_text", "text": turn.text, "annotations": []}
        emit("response.content_part.done", **where, part=part)
    emit("response.output_item.done", output_index=0, item=_response_item(turn, done=True))
    final = _response(turn, body)
    emit("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
    return events


# embeddings


def _vector(value: Any, dims: int) -> list[float]:
    """Deterministic floats in [-1, 1), exact in float32 so base64 and float answers agree."""
    seed = json.dumps(value, sort_keys=True).encode()
    data = b""
    counter = 0
    while len(data) < dims:
        data += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return [(byte - 128) / 128 for byte in data[:dims]]


def _embeddings(body: JSON) -> JSON:
    raw = body.get("input")
    tokens_only = isinstance(raw, list) and bool(raw) and all(isinstance(x, int) for x in raw)
    is_single = isinstance(raw, str) or tokens_only
    inputs: list[Any] = [raw] if is_single or not isinstance(raw, list) else raw
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and dims > 0 else EMBEDDING_DIMS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = _vector(item, dims)
        encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(_words(item) if isinstance(item, str) else max(1, len(item)) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model") or "fake-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# anthropic messages


def _anthropic_block(turn: _Turn, *, done: bool) -> JSON:
    if turn.tool:
        arguments = json.loads(turn.arguments) if done else {}
        return {"type": "tool_use", "id": f"toolu_{turn.n}", "name": turn.tool, "input": arguments}
    return {"type": "text", "text": turn.text if done else ""}


def _anthropic_message(turn: _Turn, *, done: bool = True) -> JSON:
    return {
        "id": f"msg_{turn.n}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": [_anthropic_block(turn, done=True)] if done else [],
        "stop_reason": _TO_ANTHROPIC.get(turn.finish, turn.finish) if done else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": turn.prompt_tokens,
            "output_tokens": turn.output_tokens if done else 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


def _anthropic_events(turn: _Turn, *, pieces: int = STREAM_PIECES) -> list[tuple[str | None, JSON]]:
    events: list[tuple[str | None, JSON]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, **fields}))

    emit("message_start", message=_anthropic_message(turn, done=False))
    emit("content_block_start", index=0, content_block=_anthropic_block(turn, done=False))
    if turn.tool:
        for piece in _pieces(turn.arguments, pieces):
            emit("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": piece})
    else:
        for piece in _pieces(turn.text, pieces):
            emit("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
    emit("content_block_stop", index=0)
    stop_reason = _TO_ANTHROPIC.get(turn.finish, turn.finish)
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    emit("message_delta", delta=delta, usage={"output_tokens": turn.output_tokens})
    emit("message_stop")
    return events


# --- SDK client helpers --------------------------------------------------------------------------


def openai_clients(server: FakeLLM, **kw: Any) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    """A sync and an async OpenAI client pointed at ``server``; close both. ``kw`` overrides the defaults.

    ``http_client`` / ``async_http_client`` replace the SDK's default httpx2 clients, which are built with
    ``verify=False`` here: loopback is plain HTTP, and loading the CA bundle costs ~20 ms per client.
    """
    import openai  # noqa: PLC0415 - the server itself is stdlib-only

    http_client = kw.pop("http_client", None) or openai.DefaultHttpxClient(verify=False)
    async_http_client = kw.pop("async_http_client", None) or openai.DefaultAsyncHttpxClient(verify=False)
    options: JSON = {"api_key": OPENAI_TEST_KEY, "base_url": server.base_url, "max_retries": 2, **kw}
    return (
        openai.OpenAI(**options, http_client=http_client),
        openai.AsyncOpenAI(**options, http_client=async_http_client),
    )


def anthropic_clients(server: FakeLLM, **kw: Any) -> tuple[anthropic.Anthropic, anthropic.AsyncAnthropic]:
    """A sync and an async Anthropic client pointed at ``server``; close both. Options: see openai_clients."""
    import anthropic  # noqa: PLC0415 - the server itself is stdlib-only

    http_client = kw.pop("http_client", None) or anthropic.DefaultHttpxClient(verify=False)
    async_http_client = kw.pop("async_http_client", None) or anthropic.DefaultAsyncHttpxClient(verify=False)
    options: JSON = {
        "api_key": ANTHROPIC_TEST_KEY,
        "base_url": server.anthropic_base_url,
        "max_retries": 2,
        **kw,
    }
    return (
        anthropic.Anthropic(**options, http_client=http_client),
        anthropic.AsyncAnthropic(**options, http_client=async_http_client),
    )
