"""The Redis Cluster store (``redis.asyncio.cluster.RedisCluster``): the same Store, spread over shards.

Every command touches one key, so every command lives in one slot; nothing here ever sends a multi-key
command across slots. Entries are keyed ``<ns>:v1:<agent>:<version>:<tenant>:{<digest>}`` (a streamed
answer with ``:stream`` after it) and locks ``<ns>:lock:{<digest>}``: the ``{digest}`` hash tag puts an
entry, the stream of its request and its lock in the same slot, while the
digests of different requests (even of one agent) spread evenly over all slots and so over all primaries.
Invalidating an agent therefore has to look everywhere: :meth:`RedisClusterStore.delete_prefix` SCANs
every primary and UNLINKs what it finds one slot at a time.

Deadlines: redis-py's cluster client retries a failed command (after re-reading the topology, with
backoff) ``retry`` times, which would break the cache's per-call deadline of tens of milliseconds. Here
the cluster-level retry is ``Retry(NoBackoff(), 0)`` (each node's connections retry nothing already). A
failed command still marks the topology stale; the store then re-reads it (CLUSTER SLOTS, a few ms) in
one shared task that no caller's deadline cancels, and so finds a promoted replica within a call or two.
redis-py's own refresh would also re-fetch the whole COMMAND table (25-40 ms of parsing on the event
loop) each time; the store's key-position table is known up front instead. MOVED and ASK redirections
during a reshard are followed within the call. A command cancelled mid-reply (by the deadline) makes
redis-py drop that connection, never return it to the pool half-read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from promptcache._validate import positive
from promptcache.backends._loopclient import LoopClients
from promptcache.backends.redis import (
    DEFAULT_SOCKET_TIMEOUT,
    SCAN_COUNT,
    add_counts,
    glob_escape,
    is_reply_error,
    is_timeout,
    read_counts,
    redact_url,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from promptcache.backends._base import Invalidations

__all__ = ["RedisClusterStore", "cluster_url_to_redis"]

CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DELETE_BATCH: Final = 500  # UNLINKs per pipeline round (each one slot's keys)
REFRESH_TIMEOUT: Final = 2.0  # seconds one topology refresh may take; callers time out long before

_UNLOCK_LUA: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def cluster_url_to_redis(url: str) -> tuple[str, list[tuple[str, int]]]:
    """Split ``redis+cluster://[user:pass@]host:port[,host:port...][/0][?opts]`` for redis-py.

    Returns:
        The first node as a ``redis://`` (or ``rediss://``) URL that ``RedisCluster.from_url`` parses, and
        the further startup nodes as ``(host, port)`` pairs.

    Raises:
        ValueError: Unknown scheme, no host, a bad port, or a database other than 0.
    """
    scheme, sep, rest = url.partition("://")
    target = CLUSTER_SCHEMES.get(scheme.lower())
    if not sep or target is None:
        raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    parts = urlsplit(f"{target}://{rest}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "6379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each cluster node must be host:port, got {item.strip()!r}")
        seeds.append((host.strip("[]"), int(port)))
    if parts.path not in {"", "/", "/0"}:
        raise ValueError("Redis Cluster has only database 0")
    host, port_number = seeds[0]
    first = f"[{host}]:{port_number}" if ":" in host else f"{host}:{port_number}"  # IPv6 keeps its brackets
    netloc = f"{userinfo}{at}{first}"
    return urlunsplit((target, netloc, "", parts.query, "")), seeds[1:]


async def _close(client: RedisCluster) -> None:
    await client.aclose()


def _consume(task: asyncio.Task[Any]) -> None:
    # Mark the outcome retrieved: when every waiting caller has timed out, nobody else will.
    if not task.cancelled():
        task.exception()


def _text(key: object) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


class RedisClusterStore:
    """A store on a Redis Cluster; implements :class:`~promptcache.backends.LockingStore`.

    Args:
        client: A ``redis.asyncio.cluster.RedisCluster``; closed by :meth:`aclose` only when ``owns_client``.
            Pass your own to share its pool; give it ``retry=Retry(NoBackoff(), 0)`` as :meth:`from_url`
            does, or a retry inside a call can outlast the cache's per-call deadline. Its stock command
            parser is replaced by one that never re-fetches the COMMAND table (see the module docstring).
        owns_client: Whether this store closes the client.
        label: How ``repr`` names the store (never with a password).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        client: RedisCluster,
        *,
        owns_client: bool = True,
        label: str = "redis+cluster",
        factory: Callable[[], RedisCluster] | None = None,
    ) -> None:
        self._label = label
        self._closed = False
        # Every use of redis-py internals sits in one module, loaded here and not when promptcache is
        # imported: if a redis-py release moves them, only opening a cluster store fails, and says why.
        from promptcache.backends import _redis_private  # noqa: PLC0415

        self._private = _redis_private
        self._stale_flag = _redis_private.TOPOLOGY_STALE_FLAG
        _redis_private.install_lazy_command_table(client)
        # One client per event loop (connections cannot cross loops): ``client`` in the first loop, a
        # new one from ``factory`` in each other. Without a factory (a client you passed in), every loop
        # shares ``client``, which then belongs to the loop that first uses it.
        self._clients: LoopClients[RedisCluster] = LoopClients(
            client,
            owns=owns_client,
            clone=None if factory is None else (lambda _first: self._made(factory)),
            close=_close,
        )

    def _made(self, factory: Callable[[], RedisCluster]) -> RedisCluster:
        client = factory()
        self._private.install_lazy_command_table(client)
        return client

    @property
    def client(self) -> RedisCluster:
        """The cluster client of the running event loop (outside a loop: the one given)."""
        return self._clients.client()

    def hold_loop(self) -> Callable[[], None]:
        """Keep this loop's client open at loop shutdown until the returned function is called."""
        return self._clients.hold()

    def admission(self) -> asyncio.Semaphore | None:
        """None: the cluster client pools per node, so there is no one bound to admit against."""
        return None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
        max_connections: int | None = None,
    ) -> RedisClusterStore:
        """Open a cluster client on ``redis+cluster://host:port`` (more seeds after commas), retries off.

        No socket timeout by default, as for :class:`~promptcache.backends.redis.RedisStore`: the cache's
        own deadline bounds every call (and :data:`REFRESH_TIMEOUT` every topology refresh).
        ``max_connections`` is per node. Nothing connects until the first command.

        Raises:
            ValueError: The URL or an option in it is malformed.
        """
        redis_url, more = cluster_url_to_redis(url)
        timeout = None if socket_timeout is None else positive(socket_timeout, "socket_timeout")
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if more:
            kwargs["startup_nodes"] = [ClusterNode(host, port) for host, port in more]
        if max_connections is not None:
            kwargs["max_connections"] = int(positive(max_connections, "max_connections"))
        try:
            client = RedisCluster.from_url(redis_url, **kwargs)
        except (RedisClusterException, TypeError) as exc:  # db != 0, an option RedisCluster does not take
            raise ValueError(str(exc)) from None
        return cls(client, label=redact_url(url), factory=lambda: RedisCluster.from_url(redis_url, **kwargs))

    def __repr__(self) -> str:
        return f"RedisClusterStore({self._label!r})"

    # One routed GET is one loopback/LAN round trip, as for RedisStore; a topology refresh after a
    # failover (CLUSTER SLOTS + COMMAND, ~5-10 ms) also fits, so the first call after it is not a timeout.
    default_timeout: float = 0.05
    is_reply_error = staticmethod(is_reply_error)
    is_timeout = staticmethod(is_timeout)

    # -- one key, one slot -------------------------------------------------------------------------

    def invalidations(self, prefix: str) -> Invalidations | None:
        """A subscription to changes of keys under ``prefix`` on every primary (``CLIENT TRACKING``)."""
        from promptcache.backends._cluster_tracking import ClusterTracking  # noqa: PLC0415

        return ClusterTracking(self._clients.first.nodes_manager, prefix)

    async def get(self, key: str) -> bytes | None:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        value = await self.client.get(key)
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        await self.client.set(key, value, px=max(1, int(positive(ttl, "ttl") * 1000)))

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        await add_counts(self.client, key, counts)

    async def read_counts(self, key: str) -> dict[str, int]:
        return await read_counts(self.client, key)

    async def delete(self, key: str) -> bool:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        return bool(await self.client.delete(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order (None where absent): one GET per key, pipelined.

        MGET cannot cross slots and entry keys spread over all of them, so each key gets its own one-slot
        GET; the pipeline sends every primary its share in one round trip.
        """
        if not keys:
            return []
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        pipe = self.client.pipeline()
        for key in keys:
            pipe.get(key)
        values = await pipe.execute()
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    async def try_lock(self, name: str, token: str, ttl: float) -> bool:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        return bool(await self.client.set(name, token, nx=True, px=max(1, int(ttl * 1000))))

    async def unlock(self, name: str, token: str) -> bool:
        # Plain EVAL rather than a registered script: EVALSHA would need the script on whichever node now
        # owns the slot (a promoted replica has an empty script cache) and SCRIPT LOAD goes to every
        # primary, so one dead primary would break unlocking everywhere. EVAL with one key goes to one slot.
        return await self.delete_if(name, token.encode())

    async def delete_if(self, key: str, value: bytes) -> bool:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        return bool(await self.client.eval(_UNLOCK_LUA, 1, key, value))

    # -- every primary -----------------------------------------------------------------------------

    async def delete_prefix(self, prefix: str) -> int:
        """SCAN every primary for ``prefix`` (literal) and UNLINK what it holds, one slot per command."""
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        primaries = await self._primaries()
        counts = await asyncio.gather(*(self._delete_on(node, prefix) for node in primaries))
        return sum(counts)

    async def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, from every primary (SCAN, never KEYS; for the CLI and tests)."""
        found: list[str] = []
        for node in await self._primaries():
            found.extend([_text(key) async for key in self._scan(node, prefix)])
        return found

    async def key_counts(self) -> dict[str, int]:
        """Keys held by each primary (DBSIZE), by node name ``host:port``; ``sum()`` it for the cluster."""
        primaries = await self._primaries()
        sizes = await asyncio.gather(*(self.client.dbsize(target_nodes=node) for node in primaries))
        return {node.name: int(size) for node, size in zip(primaries, sizes, strict=True)}

    async def aclose(self) -> None:
        self._closed = True
        await self._clients.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------------

    async def _refresh_topology(self) -> None:
        """Read the topology (CLUSTER SLOTS) in one shared task that no caller's deadline can cancel.

        redis-py would do it inside the next command, under that caller's deadline; cancelled halfway, it
        closes every connection and leaves the topology stale, so under a short deadline it could fail for
        ever. Here callers wait on the shared task (shielded) and time out on their own, while the task
        finishes; its error, if any, reaches the callers waiting then and is dropped otherwise.
        """
        if self._closed:
            return  # after aclose: start no task that would outlive the store (redis-py reconnects inline)
        slot = self._clients.get()
        task: asyncio.Task[None] | None = slot.extras.get("refresh")
        if task is None or task.done():
            task = asyncio.create_task(self._initialize(slot.client))
            slot.extras["refresh"] = task
            task.add_done_callback(_consume)
        await asyncio.shield(task)

    async def _initialize(self, client: RedisCluster) -> None:
        # Bounded on its own: with no socket timeout, a node that accepts and never answers (paused, or
        # behind a partition) would otherwise hold the refresh, and so the store, for ever.
        async with asyncio.timeout(REFRESH_TIMEOUT):
            await client.initialize()

    async def _primaries(self) -> list[ClusterNode]:
        if getattr(self.client, self._stale_flag, False):
            await self._refresh_topology()
        return list(self.client.get_primaries())

    def _scan(self, node: ClusterNode, prefix: str) -> AsyncIterator[Any]:
        return self.client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT, target_nodes=node)

    async def _delete_on(self, node: ClusterNode, prefix: str) -> int:
        # Keys found on one node can still belong to many slots, and a multi-key UNLINK across slots is a
        # CROSSSLOT error even on one node: group by slot, one UNLINK per slot, pipelined per batch.
        deleted = 0
        by_slot: defaultdict[int, list[bytes]] = defaultdict(list)
        pending = 0
        async for key in self._scan(node, prefix):
            by_slot[self.client.keyslot(key)].append(key)
            pending += 1
            if pending >= DELETE_BATCH:
                deleted += await self._unlink(by_slot)
                by_slot.clear()
                pending = 0
        if pending:
            deleted += await self._unlink(by_slot)
        return deleted

    async def _unlink(self, by_slot: dict[int, list[bytes]]) -> int:
        pipe = self.client.pipeline()
        for keys in by_slot.values():
            pipe.execute_command("UNLINK", *keys)  # one slot's keys: never a cross-slot command
        return sum(int(n) for n in await pipe.execute())
