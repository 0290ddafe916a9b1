"""A real two-node Ray cluster on loopback (``two_node_cluster``, a fixture of tests/conftest.py) and free ports."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound then released, never listened on)."""
    return free_port()


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head and one worker node, one CPU each, all on 127.0.0.1; this process never joins it."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.cluster_utils import Cluster

    loopback = dict(node_ip_address="127.0.0.1", num_cpus=1, num_gpus=0,
                    dashboard_agent_listen_port=None)  # a random agent port: other Ray sessions may run beside us
    cluster = Cluster(shutdown_at_exit=True)
    try:
        cluster.add_node(gcs_server_port=free_port(), include_dashboard=False, **loopback)
        cluster.add_node(**loopback)
        cluster.wait_for_nodes(timeout=60)
        yield cluster
    finally:
        cluster.shutdown()
