"""Fixtures for tests marked ``cluster``: one real Redis Cluster (3 primaries + 3 replicas) per session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from redis_cluster import LocalRedisCluster, require_cluster_binaries

if TYPE_CHECKING:
    from collections.abc import Iterator


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``cluster`` marker (so ``--strict-markers`` accepts it and ``-m cluster`` selects it)."""
    config.addinivalue_line(
        "markers",
        "cluster: needs a real Redis Cluster (6 local redis-servers started by the test session; skipped "
        "locally without redis-server/redis-cli, fails under CI=true)",
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """One 6-node cluster for the whole session on free loopback ports, with no persistence."""
    server, cli = require_cluster_binaries()
    cluster = LocalRedisCluster(server, cli)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    """The session cluster, healthy (a node a test killed is revived) and empty."""
    for node in redis_cluster.nodes:
        if not node.alive:
            redis_cluster.revive(node.port)
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    return redis_cluster
