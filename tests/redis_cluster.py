"""A real Redis Cluster for tests: 3 primaries + 3 replicas on loopback, no persistence, stopped by pid.

Six ``redis-server`` processes are started with cluster mode on free loopback ports (each with an explicit
bus port, so a high client port never pushes the bus port past 65535), joined with
``redis-cli --cluster create ... --cluster-replicas 1``, and waited on until every node reports
``cluster_state:ok`` and every replica's link to its primary is up. A test may SIGKILL a primary, wait for
its replica to be promoted, and :meth:`LocalRedisCluster.revive` the dead node, which rejoins as a replica.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pytest
import redis
from redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

INSTALL_HINT = (
    "redis-server and redis-cli are needed for the Redis Cluster tests; install them with "
    "`apt-get install redis-server redis-tools` (Debian/Ubuntu)"
)
NODE_TIMEOUT_MS = 1000  # failure detection; a replica is promoted within ~2-3 s of its primary's death
START_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 15.0


def require_cluster_binaries() -> tuple[str, str]:
    """Return (redis-server, redis-cli); skip the test locally, fail it under CI=true, if one is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(INSTALL_HINT + " (CI=true: Redis Cluster tests must run, not skip)")
        pytest.skip(INSTALL_HINT)
    return server, cli


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``predicate`` until it is true; raise TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout} s")


@dataclass
class ClusterNodeProcess:
    """One redis-server of the cluster."""

    port: int
    bus_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client on this node alone, for inspection and admin commands."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
        )

    def cluster_state(self) -> str:
        """``cluster_state`` from CLUSTER INFO (``ok`` / ``fail``), or ``down`` when the node is silent."""
        try:
            with self.client() as client:
                return str(client.execute_command("CLUSTER INFO").get("cluster_state", "?"))
        except redis.RedisError:
            return "down"

    def replication(self) -> dict[str, object]:
        """INFO replication as redis-py parses it; empty when the node does not answer."""
        try:
            with self.client() as client:
                return dict(client.info("replication"))
        except redis.RedisError:
            return {}


class LocalRedisCluster:
    """Six private redis-server processes joined into one cluster (3 primaries, 1 replica each).

    Args:
        server_binary: The redis-server executable.
        cli_binary: The redis-cli executable (for ``--cluster create``).
    """

    def __init__(self, server_binary: str, cli_binary: str, *, size: int = 6) -> None:
        self.server_binary = server_binary
        self.cli_binary = cli_binary
        self.dir = tempfile.mkdtemp(prefix="promptcache-cluster-")
        self.nodes: list[ClusterNodeProcess] = []
        taken: set[int] = set()
        for _ in range(size):
            port, bus = self._fresh_port(taken), self._fresh_port(taken)
            self.nodes.append(ClusterNodeProcess(port, bus))

    @staticmethod
    def _fresh_port(taken: set[int]) -> int:
        while True:
            port = free_port()
            if port not in taken:
                taken.add(port)
                return port

    @property
    def url(self) -> str:
        """The URL promptcache opens the cluster with (any node is a startup node)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def redis_url(self) -> str:
        """The same node as redis-py's own cluster client wants it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node, create the cluster and wait until it is fully up.

        Any failure or interruption on the way (including Ctrl-C, or xdist stopping a worker) stops the
        nodes already started, so none outlives the test session.
        """
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self) -> None:
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            poll(functools.partial(self._pings, node), 10, f"PING on node {node.port}")
        create = [
            self.cli_binary,
            "--cluster", "create", *(n.address for n in self.nodes),
            "--cluster-replicas", "1",
            "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            msg = f"redis-cli --cluster create failed ({done.returncode}): {done.stdout[-2000:]!r}"
            raise RuntimeError(msg)
        self.wait_healthy()

    def _spawn(self, node: ClusterNodeProcess) -> None:
        args = [
            self.server_binary,
            "--port", str(node.port),
            "--cluster-port", str(node.bus_port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{node.port}.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # A replica may take over whatever its data age: these tests kill a primary on purpose.
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--logfile", f"redis-{node.port}.log",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _pings(self, node: ClusterNodeProcess) -> bool:
        if node.proc is None or node.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {node.port} exited: {self.log_tail(node.port)}")
        try:
            with node.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every live node says ``cluster_state:ok`` and every live replica's link is up."""

        def healthy() -> bool:
            for node in self.live_nodes():
                if node.cluster_state() != "ok":
                    return False
                repl = node.replication()
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return len(self.primaries()) == 3

        poll(healthy, timeout, "a healthy cluster (state ok on every node, replicas in sync)")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` by its pid: the abrupt death of a crashed or OOM-killed server."""
        node = self.node(port)
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def wait_failover(self, dead_port: int, timeout: float = FAILOVER_TIMEOUT) -> None:
        """Wait until the survivors agree the dead primary failed and a replica serves its slots."""

        def promoted() -> bool:
            live = self.live_nodes()
            if any(n.cluster_state() != "ok" for n in live):
                return False
            return len(self.primaries()) == 3 and dead_port not in {p.port for p in self.primaries()}

        poll(promoted, timeout, f"failover of the primary on port {dead_port}")

    def revive(self, port: int) -> None:
        """Restart a killed node from its nodes.conf; it rejoins as a replica. Waits for a healthy cluster."""
        node = self.node(port)
        if node.alive:
            return
        self._spawn(node)
        poll(functools.partial(self._pings, node), 10, f"PING on revived node {port}")

        def rejoined() -> bool:
            repl = node.replication()
            return repl.get("role") == "slave" and repl.get("master_link_status") == "up"

        poll(rejoined, FAILOVER_TIMEOUT, f"node {port} rejoining as a replica")
        self.wait_healthy()

    def cleanup(self) -> None:
        """Stop every node by pid (SIGTERM, then SIGKILL) and remove the data directory."""
        for node in self.nodes:
            proc = node.proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            node.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- inspection ---------------------------------------------------------------------------------

    def node(self, port: int) -> ClusterNodeProcess:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def live_nodes(self) -> list[ClusterNodeProcess]:
        return [n for n in self.nodes if n.alive]

    def primaries(self) -> list[ClusterNodeProcess]:
        """The live primaries serving at least one slot, as the first live node's CLUSTER NODES says."""
        for node in self.live_nodes():
            try:
                with node.client() as client:
                    table = client.execute_command("CLUSTER NODES")  # parsed: {"host:port": {...}}
            except redis.RedisError:
                continue
            ports = {
                int(address.rsplit(":", 1)[1].split("@")[0])
                for address, row in table.items()
                if "master" in row["flags"].split(",") and "fail" not in row["flags"] and row["slots"]
            }
            return [n for n in self.live_nodes() if n.port in ports]
        return []

    def flush(self) -> None:
        """Empty every live primary (the replicas follow)."""
        for node in self.primaries():
            with node.client() as client:
                client.flushall()

    def dbsize(self, port: int) -> int:
        with self.node(port).client() as client:
            return int(client.dbsize())

    def log_tail(self, port: int, lines: int = 20) -> str:
        path = Path(self.dir) / f"redis-{port}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
