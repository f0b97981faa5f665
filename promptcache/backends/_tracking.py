"""Invalidations pushed by Redis itself (server-assisted client-side caching), for the hot tier.

One plain redis-py connection (sync, RESP2) per tier: ``CLIENT TRACKING on REDIRECT <its own id> BCAST
PREFIX <namespace>:`` then ``SUBSCRIBE __redis__:invalidate``. From then on Redis pushes the name of every key
under the prefix that anyone writes, deletes, expires or evicts, and a null for ``FLUSHALL``/``FLUSHDB``.
This is Redis's own mechanism (https://redis.io/docs/latest/develop/reference/client-side-caching/); redis-py
offers client-side caching only for its sync RESP3 client and only for keys that client read itself, so
the connection is driven here, with redis-py's public connection API doing the protocol.

Nothing reads that connection in the background. Every tier read first takes what has arrived
(:meth:`RedisTracking.poll`, non-blocking: a ``can_read(0)``), so an invalidation that reached this process
before a read is applied before that read, from any thread or event loop. Connecting happens in a daemon
thread, never on a caller's path. A subscription counts as live only while Redis was heard from within
``lease`` seconds (a PING is sent after half of it): a connection that silently died cannot keep an old
answer alive for longer than that.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CHANNEL", "CLIENT_NAME", "RedisTracking", "sync_connection_factory"]

log = logging.getLogger("promptcache")

CHANNEL: Final = "__redis__:invalidate"
CLIENT_NAME: Final = "promptcache-tier"  # how the subscription shows in CLIENT LIST
DEFAULT_LEASE: Final = 10.0  # seconds a subscription stays live without hearing from Redis
RETRY_EVERY: Final = 1.0  # seconds between connection attempts after a failure
UNSUPPORTED_RETRY: Final = 60.0  # a server that refused CLIENT TRACKING is asked again this rarely
SOCKET_TIMEOUT: Final = 0.05  # a read that finds a partial message waits at most this long for the rest
CONNECT_TIMEOUT: Final = 1.0  # in the connecting thread only
_FAULTS: Final = (rex.ConnectionError, rex.TimeoutError, OSError, rex.ResponseError)
_sessions = itertools.count(1)
# This process's id, kept current by a fork hook: poll() runs on every tier read and must not make a
# system call to notice that it runs in a forked child.
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
_CARRIED: Final = frozenset(
    {"host", "port", "path", "db", "username", "password", "credential_provider", "client_name"}
    | {"socket_keepalive", "socket_keepalive_options"}
)
# redis-py's sync Connection, whose methods are not annotated: used through Any here.
Connection = Any


def sync_connection_factory(pool: Any, **address: Any) -> Callable[[], Connection]:  # noqa: ANN401
    """Makes sync connections to the server ``pool`` (a ``redis.asyncio`` pool, or a cluster client's
    nodes manager) connects to, or to ``address`` (``host=``, ``port=``): with its credentials, database
    and TLS settings, RESP2, short timeouts and no retries."""
    from redis.asyncio import connection as aconn  # noqa: PLC0415 - only when a tier is built

    cls = pool.connection_kwargs.get("connection_class") or pool.connection_class
    target: type[Any]
    if issubclass(cls, aconn.SSLConnection):
        target = redis.SSLConnection
    elif issubclass(cls, aconn.UnixDomainSocketConnection):
        target = redis.UnixDomainSocketConnection
    else:
        target = redis.Connection
    # The address, credentials, database and TLS settings only: the pool's other kwargs (its parser,
    # notification handlers, timeouts) belong to the asyncio client.
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _CARRIED or k.startswith("ssl_")}
    kwargs.update(
        address,
        protocol=2,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        client_name=CLIENT_NAME,
    )
    return lambda: target(**kwargs)


class RedisTracking:
    """One process's invalidation subscription on a key prefix (see the module docstring).

    Args:
        connect: Makes an unconnected sync redis-py connection (RESP2) to the store's server.
        prefix: Keys whose changes are pushed (the cache's namespace and a colon).
        lease: Seconds without hearing from Redis after which the subscription no longer counts as live.
        monotonic: The clock for the lease and retries; injectable for tests.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        prefix: str,
        *,
        lease: float = DEFAULT_LEASE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._prefix = prefix
        self._lease = lease
        self._mono = monotonic
        self._lock = threading.Lock()
        # The live connection and the one handed over by the connecting thread, in a dict that a
        # finaliser (holding no reference to self) closes if the owner is dropped without close().
        self._socks: dict[str, Connection | None] = {"conn": None, "ready": None}
        weakref.finalize(self, _close_all, self._socks)
        self._connecting = False
        self._next_attempt = 0.0
        self._session = 0
        self._heard = 0.0
        self._pinged = False
        self._poller: select.poll | None = None
        self._pid = os.getpid()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisTracking(prefix={self._prefix!r}, session={self._session})"

    def poll(self) -> tuple[int, list[str] | None]:
        """``(session, keys)``: the live subscription's number (0: none) and the keys invalidated since the
        last poll (None: everything, e.g. a flush). A new session number means earlier pushes may have
        been missed: whatever was cached under the old one must go. Never blocks on the network."""
        with self._lock:
            if self._pid != _PID[0]:  # a forked child must not read its parent's socket
                self._socks["conn"] = self._socks["ready"] = None
                self._connecting = False
                self._session = 0
                self._pid = _PID[0]
            conn = self._socks["conn"]
            if conn is None:
                return self._adopt_or_connect(), []
            now = self._mono()
            poller = self._poller
            if poller is not None and not poller.poll(0) and now - self._heard <= self._lease / 2:
                return self._session, []  # nothing arrived (one poll(2) call, no parser work)
            try:
                keys = self._drain(conn)
                if keys is not None and now - self._heard > self._lease / 2:
                    if not self._pinged:
                        conn.send_command("PING")
                        self._pinged = True
                    elif now - self._heard > self._lease:
                        raise rex.TimeoutError(f"no word from Redis for {self._lease:g} s")
            except _FAULTS as exc:
                self._lose(conn, exc)
                return 0, None
            return self._session, keys

    def _drain(self, conn: Connection) -> list[str] | None:
        keys: list[str] | None = []
        while conn.can_read(timeout=0):
            message = conn.read_response(disable_decoding=True)
            self._heard = self._mono()
            self._pinged = False
            if not isinstance(message, list) or len(message) < 3 or message[0] != b"message":
                continue  # a pong or a subscribe confirmation: only proof of life
            named = message[2]
            if named is None:
                keys = None  # FLUSHALL / FLUSHDB: everything
            elif keys is not None:
                keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in named)
        return keys

    def _lose(self, conn: Connection, exc: BaseException) -> None:
        log.warning("promptcache: hot tier off until Redis is reachable again: %s", exc)
        with contextlib.suppress(Exception):
            conn.disconnect()
        self._socks["conn"] = None
        self._poller = None
        self._session = 0
        self._next_attempt = self._mono()  # subscribe again at once; a failed attempt waits RETRY_EVERY

    def _adopt_or_connect(self) -> int:
        ready, self._socks["ready"] = self._socks["ready"], None
        if ready is not None:
            self._socks["conn"] = ready
            self._poller = _poller_for(ready)
            self._session = next(_sessions)
            self._heard = self._mono()
            self._pinged = False
            return self._session
        if not self._connecting and not self._closed and self._mono() >= self._next_attempt:
            self._connecting = True
            threading.Thread(target=self._subscribe, name="promptcache-tracking", daemon=True).start()
        return 0

    def _subscribe(self) -> None:
        conn: Connection | None = None
        retry = RETRY_EVERY
        try:
            conn = self._connect()
            conn.connect()
            conn.send_command("CLIENT", "ID")
            own_id = conn.read_response()
            conn.send_command("CLIENT", "TRACKING", "on", "REDIRECT", own_id, "BCAST", "PREFIX", self._prefix)
            conn.read_response()
            conn.send_command("SUBSCRIBE", CHANNEL)
            conn.read_response()
        except rex.ResponseError as exc:
            retry = UNSUPPORTED_RETRY
            log.warning("promptcache: the server refused CLIENT TRACKING, hot tier off: %s", exc)
            _dropped(conn)
            conn = None
        except Exception as exc:  # noqa: BLE001 - anything that stops the subscription is retried later
            log.debug("promptcache: hot tier subscription failed: %s", exc)
            _dropped(conn)
            conn = None
        with self._lock:
            self._connecting = False
            if conn is None or self._closed or self._pid != os.getpid():
                self._next_attempt = self._mono() + retry
                if conn is not None:
                    conn.disconnect()
                return
            self._socks["ready"] = conn

    def close(self) -> None:
        """Drop the subscription for good (idempotent)."""
        with self._lock:
            self._closed = True
            _close_all(self._socks)
            self._session = 0


def _dropped(conn: Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.disconnect()


def _close_all(socks: dict[str, Connection | None]) -> None:
    for name, conn in list(socks.items()):
        socks[name] = None
        _dropped(conn)


def _poller_for(conn: Connection) -> select.poll | None:
    """A poll object on ``conn``'s socket: whether anything arrived, in one system call. redis-py's
    ``can_read(0)`` answers the same but costs several (it flips the socket's timeout around a recv); the
    socket is redis-py's private ``_sock``, so without it ``can_read`` is used every time."""
    sock = getattr(conn, "_sock", None)
    if sock is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return poller
