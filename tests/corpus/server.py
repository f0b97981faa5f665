"""The corpus server: several upstreams in one process, sharing one stateful :class:`World`.

Listeners (each a threaded stdlib HTTP server on loopback):

* ``main`` - ``http://127.0.0.1:P``
* ``alt-host`` - ``http://127.0.0.2:P``: another host, same port and paths
* ``alt-port`` - ``http://127.0.0.1:Q``: another port
* ``tls`` - ``https://127.0.0.1:R``: another scheme (a self-signed certificate made with ``openssl``)

Every listener routes by path: ``<prefix>/chat/completions``, ``/responses``, ``/embeddings``,
``/messages``, ``/conversations``, ``GET <prefix>/responses/<id>``. The prefix (``/v1``,
``/gw/openai/v1``, ``/gw/groq/v1``, ``/openai/deployments/<name>`` for Azure) is part of the upstream's
identity, like a gateway that routes by path: the same model name answers differently under two prefixes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qsl, urlsplit

from corpus.world import Call, Reply, World

if TYPE_CHECKING:
    import socket
    from types import TracebackType

__all__ = ["UPSTREAMS", "CorpusServer"]

UPSTREAMS: Final = ("main", "alt-host", "alt-port", "tls")
_ENDPOINTS: Final = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
    ("/messages", "messages"),
    ("/conversations", "conversations"),
)


def route(path: str) -> tuple[str, str, str] | None:
    """``(prefix, endpoint, tail)`` of a path, or None."""
    for suffix, endpoint in _ENDPOINTS:
        head, found, tail = path.partition(suffix)
        if found and (not tail or tail.startswith("/")):
            if endpoint == "responses" and tail:
                return head, "retrieve", tail
            return head, endpoint, tail
    return None


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, owner: CorpusServer, name: str, host: str, port: int, tls: ssl.SSLContext | None
    ) -> None:
        self.owner, self.name, self.tls = owner, name, tls
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn) that can take seconds.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        if self.tls is not None:  # the handshake runs in the handler's thread, on its first read
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - fixed signature
        import traceback  # noqa: PLC0415

        self.owner.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client went away (closed a kept-alive connection, or a TLS handshake)
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        routed = route(url.path.rstrip("/"))
        if routed is None:
            self._send_json(404, {"error": {"message": f"no route for {url.path}", "type": "not_found"}})
            return
        prefix, endpoint, tail = routed
        call = Call(
            upstream=self.server.name,
            prefix=prefix,
            endpoint=endpoint,
            tail=tail,
            method=self.command,
            query=tuple(sorted(parse_qsl(url.query, keep_blank_values=True))),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.owner.seen.append(call)
        reply = self.server.owner.world.handle(call)
        if reply.events is not None:
            self._send_sse(reply)
        else:
            self._send_json(reply.status, reply.body)

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = [
            (f"event: {name}\n" if name else "") + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"
            for name, data in reply.events or []
        ]
        if reply.done_marker:
            chunks.append("data: [DONE]\n\n")
        for chunk in chunks:
            data = chunk.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


def _tls_context(folder: Path) -> ssl.SSLContext:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class CorpusServer:
    """The four listeners and their shared world; ``reset()`` starts a fresh, seeded world."""

    def __init__(self) -> None:
        self.world = World.seeded()
        self.seen: list[Call] = []
        self.errors: list[str] = []
        self._listeners: dict[str, _Listener] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> Self:
        with tempfile.TemporaryDirectory() as folder:
            try:
                tls = _tls_context(Path(folder))
            except (OSError, subprocess.CalledProcessError) as exc:
                raise RuntimeError(
                    f"the corpus's https upstream needs a working `openssl` command: {exc}"
                ) from exc
        for _ in range(20):  # alt-host needs main's port to be free on 127.0.0.2 too
            main = _Listener(self, "main", "127.0.0.1", 0, None)
            try:
                alt = _Listener(self, "alt-host", "127.0.0.2", main.server_port, None)
            except OSError as exc:
                main.server_close()
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise RuntimeError(
                        "the corpus's second host needs 127.0.0.2 (loopback, as on Linux)"
                    ) from exc
                continue
            break
        else:
            raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")
        self._listeners = {
            "main": main,
            "alt-host": alt,
            "alt-port": _Listener(self, "alt-port", "127.0.0.1", 0, None),
            "tls": _Listener(self, "tls", "127.0.0.1", 0, tls),
        }
        for listener in self._listeners.values():
            thread = threading.Thread(
                target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for listener in self._listeners.values():
            listener.shutdown()
            listener.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listeners, self._threads = {}, []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def origin(self, upstream: str) -> str:
        """``scheme://host:port`` of a listener."""
        listener = self._listeners[upstream]
        scheme = "https" if listener.tls is not None else "http"
        return f"{scheme}://{listener.server_name}:{listener.server_port}"

    def reset(self) -> None:
        self.world = World.seeded()
        self.seen = []

    @property
    def calls(self) -> int:
        """Model calls answered so far (every POST to a model endpoint, errors included)."""
        with self.world.lock:
            return self.world.calls
