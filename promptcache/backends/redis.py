"""The Redis store (``redis.asyncio``, pooled), for one server; Redis Cluster is a separate seam.

redis-py's own retries are turned off (``Retry(NoBackoff(), 0)``): the cache puts a deadline of tens of
milliseconds on every call and a circuit breaker around the store, and a retry hidden inside a call would
break that deadline. A command cancelled mid-reply makes redis-py drop the connection rather than return
it to the pool half-read (redis-py >= 4.5.5), so a cancelled caller can never receive another's reply.
GETs (every cache hit) go through the loop's GET lane (:mod:`._lane`): connections of their own beside
the pool, spoken to through redis-py's connection API, past the client's per-command layers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from promptcache._validate import positive
from promptcache.backends._lane import FULL, GetLane
from promptcache.backends._loopclient import LoopClient, LoopClients, admission_of

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping, Sequence

    from redis.commands.core import AsyncScript

    from promptcache.backends._base import Invalidations

__all__ = ["RedisStore", "is_reply_error", "is_timeout", "redact_url"]

SCAN_COUNT: Final = 1000
DELETE_BATCH: Final = 500
# No socket timeout by default: redis-py then sends and reads without its own asyncio.wait_for, whose
# handling of cancellation on Python 3.11 can swallow the cache's deadline (the call then lasts until the
# socket timeout). Every call the cache makes runs under its own deadline instead; code that uses a
# RedisStore directly should do the same (asyncio.timeout).
DEFAULT_SOCKET_TIMEOUT: Final[float | None] = None
# Connections per event loop. A call waits for a free one rather than fail (redis-py's plain pool raises
# MaxConnectionsError): hundreds of concurrent callers share a few dozen connections instead of opening
# one each, which would cost more in connection set-up than the GETs themselves.
DEFAULT_MAX_CONNECTIONS: Final = 64
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")

_UNLOCK_LUA: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


# Set KEYS[1] unless a fence (KEYS[2..]) holds a time later than ARGV[3]: the fence check and the write in one
# step, so an invalidation's or refresh's fence can never land between them (_fences.py).
_SET_FENCED_LUA: Final = """
local after = tonumber(ARGV[3])
for i = 2, #KEYS do
  local fence = tonumber(redis.call('get', KEYS[i]))
  if fence and fence > after then return 0 end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_USERINFO: Final = re.compile(r"//[^/@]*@")
_QUERY_SECRET: Final = re.compile(r"(?i)((?:password|passwd|pwd|username|user)=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with user name, password and password-like query values replaced by ``***``.

    Never raises, even for a malformed URL: it is used while reporting exactly such URLs.
    """
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub("//***@", str(url), count=1))


def is_reply_error(exc: BaseException) -> bool:
    """True for an error Redis itself replied with (OOM, WRONGTYPE, NOSCRIPT ...): the server is up.

    Cluster and failover replies (CLUSTERDOWN, TRYAGAIN, MASTERDOWN, READONLY) are not: they mean the
    store cannot serve right now, and the breaker should hear about them.
    """
    from redis import exceptions as rex  # noqa: PLC0415 - keeps the module's import light

    unavailable = (rex.ClusterError, rex.TryAgainError, rex.MasterDownError, rex.ReadOnlyError)
    return isinstance(exc, rex.ResponseError) and not isinstance(exc, unavailable)


def is_timeout(exc: BaseException) -> bool:
    """True for a timeout, whoever noticed it: the builtin one or redis-py's own (not a subclass of it)."""
    from redis import exceptions as rex  # noqa: PLC0415 - as above

    return isinstance(exc, TimeoutError | rex.TimeoutError)


def _clone(client: aioredis.Redis) -> aioredis.Redis:
    """A client with ``client``'s connection settings and pool bound, for another event loop."""
    pool = client.connection_pool
    options: dict[str, Any] = {
        "connection_class": pool.connection_class,
        "max_connections": pool.max_connections,
        **pool.connection_kwargs,
    }
    if isinstance(pool, aioredis.BlockingConnectionPool):
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool(timeout=pool.timeout, **options))
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(**options))


def _lane_of(slot: LoopClient[aioredis.Redis]) -> GetLane | bool:
    """This loop's GET lane (see :mod:`._lane`), made on first use; False for a client that keeps one
    connection of its own (``single_connection_client``), whose GETs go through it."""
    if (found := slot.extras.get("lane")) is not None:
        lane_found: GetLane | bool = found
        return lane_found
    client = slot.client
    lane: GetLane | bool = False
    if not getattr(client, "single_connection_client", False):
        width = getattr(client.connection_pool, "max_connections", None)
        limit = width if isinstance(width, int) and 0 < width <= DEFAULT_MAX_CONNECTIONS else None
        lane = GetLane(client.connection_pool, limit or DEFAULT_MAX_CONNECTIONS)
        slot.closers.append(lane.aclose)
    slot.extras["lane"] = lane
    return lane


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


def glob_escape(text: str) -> str:
    """Escape Redis glob specials so ``text`` matches itself literally in SCAN MATCH."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


async def add_counts(client: Any, key: str, counts: Mapping[str, int]) -> None:  # noqa: ANN401 - redis or cluster
    """HINCRBY each field, pipelined: one round trip (one key, so one slot on a cluster)."""
    if not counts:
        return
    pipe = client.pipeline(transaction=False)
    for name, n in counts.items():
        pipe.hincrby(key, name, int(n))
    await pipe.execute()


async def read_counts(client: Any, key: str) -> dict[str, int]:  # noqa: ANN401 - redis or cluster
    """The counter hash under ``key``, names decoded."""
    found = await client.hgetall(key)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in found.items()}


class RedisStore:
    """A store on one Redis server (or a Sentinel/proxy that looks like one).

    Args:
        client: A ``redis.asyncio.Redis`` client; closed by :meth:`aclose` only when ``owns_client``.
        owns_client: Whether this store closes the client.

    .. versionadded:: 0.1.0
    """

    def __init__(self, client: aioredis.Redis, *, owns_client: bool = True, label: str = "redis") -> None:
        # One client per event loop: ``client`` in the first loop that uses the store, a clone with the
        # same settings and pool bound in each other (connections cannot cross loops).
        self._clients: LoopClients[aioredis.Redis] = LoopClients(
            client, owns=owns_client, clone=_clone, close=_close
        )
        self._label = label

    @property
    def client(self) -> aioredis.Redis:
        """The ``redis.asyncio`` client of the running event loop (outside a loop: the one given)."""
        return self._clients.client()

    def hold_loop(self) -> Callable[[], None]:
        """Keep this loop's client open at loop shutdown until the returned function is called."""
        return self._clients.hold()

    def admission(self) -> asyncio.Semaphore | None:
        """A semaphore as wide as this loop's pool: calls past it wait outside their deadline."""
        return admission_of(self._clients.get())

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
        max_connections: int | None = None,
    ) -> RedisStore:
        """Open a pooled client on ``redis://`` / ``rediss://`` / ``unix://`` with retries disabled.

        The pool holds at most ``max_connections`` connections per event loop (default
        :data:`DEFAULT_MAX_CONNECTIONS`); a call beyond that waits for a free one instead of failing.
        GETs have a lane of at most as many connections again, opened as concurrent GETs need them.
        """
        timeout = None if socket_timeout is None else positive(socket_timeout, "socket_timeout")
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        limit = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=int(positive(limit, "max_connections")), timeout=None, **kwargs
        )
        return cls(aioredis.Redis.from_pool(pool), label=redact_url(url))  # the client closes its pool

    def __repr__(self) -> str:
        return f"RedisStore({self._label!r})"

    # A loopback GET is ~0.13 ms; 50 ms means Redis is in trouble, not busy.
    default_timeout: float = 0.05
    is_reply_error = staticmethod(is_reply_error)
    is_timeout = staticmethod(is_timeout)

    def invalidations(self, prefix: str) -> Invalidations | None:
        """A subscription to changes of keys under ``prefix``, pushed by Redis (``CLIENT TRACKING``)."""
        from promptcache.backends._tracking import RedisTracking, sync_connection_factory  # noqa: PLC0415

        return RedisTracking(sync_connection_factory(self._clients.first.connection_pool), prefix)

    async def get(self, key: str) -> bytes | None:
        slot = self._clients.get()
        lane = slot.extras.get("lane")
        if lane is None:
            lane = _lane_of(slot)
        value = FULL if lane is False else await lane.get(key)  # type: ignore[union-attr] # a GetLane
        if value is FULL:
            value = await slot.client.get(key)
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def preconnect(self, connections: int) -> int:
        """Open up to ``connections`` connections for this loop's GETs now (at most the pool's width), so
        a first burst of hits finds them open; returns how many are open. Optional: GETs open them as
        they need them, in the background. Connections Redis refuses are not opened (no error).

        .. versionadded:: 0.4.0
        """
        lane = _lane_of(self._clients.get())
        if lane is False:
            return 0
        await lane.open(connections)  # type: ignore[union-attr] # a GetLane
        return lane.connections  # type: ignore[union-attr]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.client.set(key, value, px=max(1, int(positive(ttl, "ttl") * 1000)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order (None where absent), in one round trip (MGET)."""
        if not keys:
            return []  # MGET needs at least one key
        values = await self.client.mget(list(keys))
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        await add_counts(self.client, key, counts)

    async def read_counts(self, key: str) -> dict[str, int]:
        return await read_counts(self.client, key)

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= DELETE_BATCH:
                deleted += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.client.unlink(*batch)
        return int(deleted)

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:
        return bool(await self.client.set(name, token, nx=True, px=max(1, int(ttl * 1000))))

    async def unlock(self, name: str, token: str) -> bool:
        return await self.delete_if(name, token.encode())

    async def set_fenced(
        self, key: str, value: bytes, ttl: float, fences: Sequence[str], after: float
    ) -> bool:
        slot = self._clients.get()
        script: AsyncScript | None = slot.extras.get("set_fenced")
        if script is None:
            script = slot.extras["set_fenced"] = slot.client.register_script(_SET_FENCED_LUA)
        px = max(1, int(positive(ttl, "ttl") * 1000))
        return bool(await script(keys=[key, *fences], args=[value, px, repr(after)]))

    async def delete_if(self, key: str, value: bytes) -> bool:
        slot = self._clients.get()
        script: AsyncScript | None = slot.extras.get("unlock")
        if script is None:
            script = slot.extras["unlock"] = slot.client.register_script(_UNLOCK_LUA)
        return bool(await script(keys=[key], args=[value]))

    async def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (SCAN, never KEYS; for the CLI and tests)."""
        found = [k async for k in self.client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT)]
        return [k.decode() if isinstance(k, bytes) else str(k) for k in found]

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
