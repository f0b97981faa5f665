"""The GET lane: one event loop's connections for a Redis store's GETs, beside its client's pool.

A cache hit is one GET, and ``redis.asyncio``'s own path around it (the client's command dispatch with
its retry wrapper and response callbacks, the blocking pool's condition, lock and timeout on every lend and
return) costs about as much CPU as the round trip itself on a loopback Redis. The lane keeps its own idle
connections, made by the pool's ``make_connection`` (the pool's connection class and settings, TLS and
auth included), and speaks to each through redis-py's public connection API: ``pack_command`` (each key's
packed GET kept for its next read), ``send_packed_command``, then ``read_response``. redis-py's own fault
handling is unchanged: a connection that fails, times out or is cancelled mid-command disconnects itself
(never half-read) and reconnects on its next use.

The lane never takes a connection from the pool, so it can never starve the pool's other users; it opens
at most ``limit`` connections (the pool's width: the store's admission already lets no more GETs run at
once), and a GET past that (only a caller outside the cache's guard) goes through the client as before.
A lane connection is opened by the first GET that needs it, under that GET's deadline, as a pool
connection is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection, ConnectionPool

__all__ = ["FULL", "GetLane"]

PACKED_KEYS: Final = 4096
FULL: Any = object()  # returned by GetLane.get when every lane connection is busy: use the client


class GetLane:
    """Idle connections for GETs, in one event loop (connections cannot cross loops).

    Args:
        pool: The client's pool: its ``make_connection`` makes each lane connection.
        limit: At most this many lane connections.
    """

    __slots__ = ("_idle", "_limit", "_made", "_packed", "_pool", "closed")

    def __init__(self, pool: ConnectionPool, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []
        # Each key's GET as redis-py packs it (the same for every connection of one pool): a hot key is
        # read again and again. Bounded: emptied when full.
        self._packed: dict[str, list[bytes]] = {}
        self.closed = False

    @property
    def connections(self) -> int:
        """How many connections the lane has made (idle or in use)."""
        return len(self._made)

    async def get(self, key: str) -> Any:  # noqa: ANN401 - bytes, str (decode_responses) or None
        """``GET key`` on an idle lane connection (a new one when none is idle), or :data:`FULL`."""
        idle = self._idle
        if idle:
            conn = idle.pop()
            reused = True
        elif len(self._made) < self._limit and not self.closed:
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call] # redis-py leaves it untyped
            self._made.append(conn)
            reused = False
        else:
            return FULL
        try:
            if reused:
                # What redis-py's pool does before lending a connection: one the server has closed (a
                # restart, an idle timeout) or with bytes pending is dropped, and reconnects as it sends.
                try:
                    dirty = await conn.can_read()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    dirty = True
                if dirty:
                    await conn.disconnect()
            packed = self._packed.get(key)
            if packed is None:
                packed = conn.pack_command("GET", key)
                if len(self._packed) >= PACKED_KEYS:
                    self._packed.clear()
                self._packed[key] = packed
            await conn.send_packed_command(packed)
            return await conn.read_response()
        finally:
            # After a fault redis-py has disconnected it already; it reconnects on its next use.
            if self.closed:
                await conn.disconnect()
            else:
                idle.append(conn)

    async def aclose(self) -> None:
        """Disconnect every lane connection; later GETs go through the client."""
        self.closed = True
        made, self._made = self._made, []
        self._idle.clear()
        for conn in made:
            await conn.disconnect()
