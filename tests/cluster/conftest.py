"""The local cluster (devtools/cluster.py: `make cluster`) for the tests marked `cluster`:
started if it is not running (and then stopped after the session), a vhost of the session's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devtools import cluster


@pytest.fixture(scope="session")
def cluster_vhost() -> Iterator[str]:
    """A fresh vhost on the 3-node RabbitMQ cluster, whose replica set runs too."""
    was_running = bool(cluster.running_node_indexes()) and cluster.primary() is not None
    cluster.start()
    vhost = f"orders-cluster-{uuid.uuid4().hex[:8]}"
    cluster.create_vhost(vhost)
    try:
        yield vhost
    finally:
        for index in range(1, cluster.SIZE + 1):
            cluster.start_node(index)  # a test that failed halfway may have left one down
        cluster.delete_vhost(vhost)
        if not was_running:
            cluster.stop()
