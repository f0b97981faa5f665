"""The GET lane: one event loop's connections for a Redis store's GETs, beside its client's pool.

A cache hit is one GET, and ``redis.asyncio``'s own path around it (the client's command dispatch with
its retry wrapper and response callbacks, the blocking pool's condition, lock and timeout on every lend and
return) costs about as much CPU as the round trip itself on a loopback Redis. The lane keeps its own idle
connections, made by the pool's ``make_connection`` (the pool's connection class and settings, TLS and
auth included), and speaks to each through redis-py's public connection API: ``pack_command`` (each key's
packed GET kept for its next read), ``send_packed_command``, then ``read_response``. redis-py's own fault
handling is unchanged: a connection that fails, times out or is cancelled mid-command disconnects itself
(never half-read) and reconnects on its next use.

The lane never takes a connection from the pool, so it can never starve the pool's other users. It opens
its connections in the background, outside any deadline: a GET that finds no idle lane connection goes
through the client and its pool, exactly as before the lane, and asks the lane to grow by one, up to
``limit`` connections (the pool's width: the store's admission already lets no more GETs run at once).
So a burst of hits on a cold lane costs no connection set-up under the hits' deadlines beyond what the
pool itself would have cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection, ConnectionPool

__all__ = ["FULL", "GetLane"]

PACKED_KEYS: Final = 4096
FULL: Any = object()  # returned by GetLane.get when no lane connection is idle: use the client

log = logging.getLogger("promptcache")


class GetLane:
    """Idle connections for GETs, in one event loop (connections cannot cross loops).

    Args:
        pool: The client's pool: its ``make_connection`` makes each lane connection.
        limit: At most this many lane connections.
    """

    __slots__ = ("_growing", "_idle", "_limit", "_made", "_packed", "_pool", "closed")

    def __init__(self, pool: ConnectionPool, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []
        self._growing: asyncio.Task[None] | None = None
        # Each key's GET as redis-py packs it (the same for every connection of one pool): a hot key is
        # read again and again. Bounded: emptied when full.
        self._packed: dict[str, list[bytes]] = {}
        self.closed = False

    @property
    def connections(self) -> int:
        """How many connections the lane has open (idle or in use)."""
        return len(self._made)

    async def get(self, key: str) -> Any:  # noqa: ANN401 - bytes, str (decode_responses) or None
        """``GET key`` on an idle lane connection, or :data:`FULL` when none is idle (the lane grows)."""
        idle = self._idle
        if not idle:
            self._grow_by_one()
            return FULL
        conn = idle.pop()
        try:
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
            # A health check only where the client asked for them (it is a no-op at interval 0).
            await conn.send_packed_command(packed, check_health=bool(conn.health_check_interval))
            return await conn.read_response()
        finally:
            # After a fault redis-py has disconnected it already; it reconnects on its next use.
            if self.closed:
                await conn.disconnect()
            else:
                idle.append(conn)

    def _grow_by_one(self) -> None:
        # One connection opened at a time, and only while GETs keep finding none idle: the lane grows to
        # the concurrency its GETs meet, not to its limit at the first burst.
        if self._growing is None and not self.closed and len(self._made) < self._limit:
            self._growing = asyncio.get_running_loop().create_task(self._grow())

    async def open(self, connections: int) -> None:
        """Open lane connections until there are ``connections`` (at most the limit), concurrently."""
        wanted = min(connections, self._limit) - len(self._made)
        await asyncio.gather(*(self._open_one() for _ in range(max(0, wanted))))

    async def _grow(self) -> None:
        """Open one connection, outside any caller's deadline."""
        try:
            await self._open_one()
        finally:
            self._growing = None

    async def _open_one(self) -> None:
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call] # redis-py leaves it untyped
        try:
            await conn.connect()
        except Exception as exc:  # noqa: BLE001 - a warm-up: the GETs meanwhile go through the pool
            # Redis is unreachable: the GETs through the client count the faults; the next GET that
            # finds no idle connection tries again.
            log.debug("promptcache: GET lane could not open a connection: %r", exc)
            await conn.disconnect()
            return
        except BaseException:  # cancelled (the lane is closing): no half-open socket left behind
            await conn.disconnect()
            raise
        if self.closed or len(self._made) >= self._limit:
            await conn.disconnect()
            return
        self._made.append(conn)
        self._idle.append(conn)

    async def aclose(self) -> None:
        """Disconnect every lane connection; later GETs go through the client."""
        self.closed = True
        growing = self._growing
        if growing is not None and growing is not asyncio.current_task():
            growing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await growing
        made, self._made = self._made, []
        self._idle.clear()
        for conn in made:
            await conn.disconnect()
