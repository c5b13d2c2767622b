"""A private Redis Cluster for the tests: 3 masters and 3 replicas on free loopback ports.

    cluster = start_cluster()          # LocalCluster (idnode.loadtest.redis_cluster)
    cluster.url                        # redis:// URL of one living node
    cluster.nodes, cluster.masters()   # every server started; the masters now
    cluster.master_of(key)             # the master serving a key's slot now
    cluster.kill_master()              # SIGKILL one; returns once a replica took over
    cluster.stop()

The launcher itself is the load-test harness's (one copy: the L2 benchmark starts the
same cluster). Without `redis-server` and `redis-cli` the test fails, saying what to
install: a cluster test is never skipped.
"""

from __future__ import annotations

import pytest

from idnode.loadtest.processes import ProcessError
from idnode.loadtest.redis_cluster import LocalCluster

__all__ = ["LocalCluster", "start_cluster"]


def start_cluster(masters: int = 3, replicas: int = 1) -> LocalCluster:
    try:
        return LocalCluster.start(masters, replicas)
    except ProcessError as exc:
        pytest.fail(f"a Redis Cluster is required for this test: {exc}", pytrace=False)
