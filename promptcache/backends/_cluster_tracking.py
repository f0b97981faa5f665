"""Invalidations from a whole Redis Cluster, for the hot tier: one subscription per node.

A key's changes are pushed by the node that applies the write, its slot's primary; a replica applying the
replication stream pushes nothing, but a replica promoted to primary pushes the writes it then takes. So
:class:`ClusterTracking` holds a :class:`~promptcache.backends._tracking.RedisTracking` on every reachable
node, primaries and replicas alike (a manual ``CLUSTER FAILOVER`` then leaves no moment in which writes
go unreported), and counts as live only while each of them is. The set of nodes is read with
``CLUSTER NODES`` in a daemon thread and read again every ``check_every`` seconds; when it differs (a
node failed, joined or left) the subscriptions are rebuilt under a new session, so the tier is emptied
before its next read. A node whose connection drops (a primary killed) empties it at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import weakref
from typing import Any, Final

from promptcache.backends._tracking import RedisTracking, sync_connection_factory

__all__ = ["ClusterTracking", "nodes_of"]

log = logging.getLogger("promptcache")

CHECK_EVERY: Final = 1.0  # seconds between reads of the cluster's nodes
_sessions = itertools.count(1)
Address = tuple[str, int]


def nodes_of(nodes: str, asked: Address) -> set[Address]:
    """The reachable nodes in ``CLUSTER NODES`` output, primaries and replicas (``asked``: the node it came
    from, whose own line may carry an empty host); those marked failing or not yet joined are left out."""
    found: set[Address] = set()
    for line in nodes.splitlines():
        parts = line.split()
        if len(parts) < 8 or {"fail", "fail?", "handshake", "noaddr"} & set(parts[2].split(",")):
            continue
        host, _, port = parts[1].split("@", 1)[0].rpartition(":")
        found.add((host or asked[0], int(port)))
    return found


class ClusterTracking:
    """The invalidations of every node of a cluster as one source (see the module docstring).

    Args:
        manager: The async cluster client's nodes manager (its startup nodes and connection settings).
        prefix: Keys whose changes are pushed (the cache's namespace and a colon).
        check_every: Seconds between reads of the set of nodes.
    """

    def __init__(self, manager: Any, prefix: str, *, check_every: float = CHECK_EVERY) -> None:  # noqa: ANN401
        self._manager = manager
        self._prefix = prefix
        self._check_every = check_every
        self._lock = threading.Lock()
        self._members: dict[Address, RedisTracking] = {}
        self._wanted: set[Address] | None = None  # the nodes the checker last read
        self._sessions: tuple[int, ...] = ()
        self._session = 0
        self._closed = False
        self._known: list[Address] = [(n.host, int(n.port)) for n in manager.startup_nodes.values()]
        # The checker holds only a weak reference: a cache dropped without close() ends it too.
        threading.Thread(
            target=_check, args=(weakref.ref(self),), name="promptcache-cluster", daemon=True
        ).start()

    def __repr__(self) -> str:
        return f"ClusterTracking(prefix={self._prefix!r}, nodes={sorted(self._members)})"

    def poll(self) -> tuple[int, list[str] | None]:
        """``(session, keys)`` over every node; session 0 unless each node's subscription is live."""
        with self._lock:
            wanted = self._wanted
            if wanted is None or self._closed:
                return 0, []
            if set(self._members) != wanted:  # a node failed, joined or left: start over
                for member in self._members.values():
                    member.close()
                self._members = {address: self._member(address) for address in wanted}
                self._sessions = ()
                self._session = 0
            keys: list[str] | None = []
            sessions = []
            for member in self._members.values():
                session, changed = member.poll()
                sessions.append(session)
                if changed is None:
                    keys = None
                elif keys is not None:
                    keys.extend(changed)
            if not sessions or 0 in sessions:
                self._session = 0
                return 0, keys
            if tuple(sessions) != self._sessions or not self._session:
                self._sessions = tuple(sessions)
                self._session = next(_sessions)
            return self._session, keys

    def check(self) -> bool:
        """Read the set of nodes once (the checker thread does, every ``check_every`` seconds);
        False once closed."""
        if self._closed:
            return False
        found = self._read_nodes()
        if found is not None:
            with self._lock:
                self._wanted = found
                self._known = sorted(found | set(self._known))
        return not self._closed

    def _member(self, address: Address) -> RedisTracking:
        connect = sync_connection_factory(self._manager, host=address[0], port=address[1])
        return RedisTracking(connect, self._prefix)

    def _read_nodes(self) -> set[Address] | None:
        for address in list(self._known):
            conn = sync_connection_factory(self._manager, host=address[0], port=address[1])()
            try:
                conn.connect()
                conn.send_command("CLUSTER", "NODES")
                reply = conn.read_response()
            except Exception as exc:  # noqa: BLE001 - another node may answer
                log.debug("promptcache: reading the cluster's nodes from %s failed: %s", address, exc)
                continue
            finally:
                with contextlib.suppress(Exception):
                    conn.disconnect()
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            return nodes_of(text, address) or None
        return None

    def close(self) -> None:
        """Drop every subscription for good (idempotent)."""
        with self._lock:
            self._closed = True
            for member in self._members.values():
                member.close()
            self._members = {}
            self._session = 0


def _check(ref: weakref.ref[ClusterTracking]) -> None:
    while (tracking := ref()) is not None and tracking.check():
        pause = tracking._check_every  # noqa: SLF001 - the thread's own owner
        del tracking  # no strong reference while sleeping
        time.sleep(pause)
