"""Studies on a Ray cluster: trials spread over the nodes of a real multi-node cluster on loopback,
resource requests no node can meet are refused up front, a head that cannot be reached or refuses the
driver is one line of error. Every Ray process here listens on 127.0.0.1 with ports chosen free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from engine_helpers import MIMAX, SPACES, env, query, run, trials
from ray_cluster import closed_port

pytestmark = pytest.mark.slow


def test_trials_spread_over_both_nodes_of_a_cluster(tmp_path, sqlite_url, two_node_cluster):
    assert two_node_cluster.address.startswith("127.0.0.1:")
    r = run("launch", SPACES / "tiny-grid.yaml", "--name", "multi", "--db", sqlite_url, "--address",
            two_node_cluster.address, "--cpus-per-trial", "1", "--results-dir", tmp_path / "res", "--quiet",
            cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    ts = trials(sqlite_url, "multi")
    assert len(ts) == 4 and all(t["state"] == "completed" for t in ts.values()), ts
    # The node column names "ip/node id"; the oracle is the cluster's own list of node ids.
    node_ids = {n.node_id for n in two_node_cluster.list_all_nodes()}
    assert len(node_ids) == 2
    used = {t["node"] for t in ts.values()}
    assert len(used) == 2, used
    assert {u.split("/", 1)[1] for u in used} == node_ids
    assert all(u.split("/", 1)[0] == "127.0.0.1" for u in used)
    # Each trial asked Ray for exactly one CPU and no GPU.
    for (res,) in query(sqlite_url, "SELECT resources FROM mimax_trials"):
        assert json.loads(res).get("CPU") == 1 and not json.loads(res).get("GPU"), res


def _fake_nodes(monkeypatch, nodes: list[dict]) -> None:
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: nodes)


def _node(cpu: float, gpu: float = 0.0, alive: bool = True) -> dict:
    resources = {"CPU": cpu, "memory": 8e9, "node:127.0.0.1": 1.0}
    if gpu:
        resources["GPU"] = gpu
    return {"NodeID": os.urandom(8).hex(), "Alive": alive, "Resources": resources}


def test_check_resources_accepts_a_fractional_gpu_on_a_one_gpu_node(monkeypatch):
    from mimax.study.cluster import check_resources

    _fake_nodes(monkeypatch, [_node(cpu=8, gpu=1), _node(cpu=8)])
    check_resources(1, 0.25)  # four trials share the one GPU
    check_resources(8, 1)  # exactly what the node has


def test_check_resources_refuses_more_gpus_than_any_one_node_has(monkeypatch):
    from mimax.errors import ConfigError
    from mimax.study.cluster import check_resources

    # Two GPUs in the cluster, but one per node: a 2-GPU trial can never be placed. A dead node with
    # eight GPUs does not count.
    _fake_nodes(monkeypatch, [_node(cpu=8, gpu=1), _node(cpu=8, gpu=1), _node(cpu=64, gpu=8, alive=False)])
    with pytest.raises(ConfigError) as err:
        check_resources(1, 2)
    msg = str(err.value)
    assert err.value.path == "--gpus-per-trial"
    assert "wait forever" in msg and "has 1" in msg and "\n" not in msg, msg


def test_check_resources_refuses_more_cpus_than_the_largest_node(monkeypatch):
    from mimax.errors import ConfigError
    from mimax.study.cluster import check_resources

    _fake_nodes(monkeypatch, [_node(cpu=2), _node(cpu=4), _node(cpu=32, alive=False)])
    check_resources(4, 0)
    with pytest.raises(ConfigError) as err:
        check_resources(5, 0)
    assert err.value.path == "--cpus-per-trial" and "has 4" in str(err.value), str(err.value)
    with pytest.raises(ConfigError) as err:  # no GPU anywhere
        check_resources(1, 0.25)
    assert err.value.path == "--gpus-per-trial"


def test_an_unreachable_address_fails_fast_with_one_line(tmp_path, sqlite_url):
    port = closed_port()
    t0 = time.monotonic()
    r = run("launch", SPACES / "tiny-random.yaml", "--name", "x", "--db", sqlite_url, "--address",
            f"127.0.0.1:{port}", cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--address" in lines[0] and f"127.0.0.1:{port}" in lines[0], r.stderr
    assert elapsed < 15, elapsed
    assert query(sqlite_url, "SELECT name FROM mimax_studies") == []


# A head node started in a child process, so that its settings (here: Ray's token authentication) stay
# out of the test process. It prints its address, and shuts down when its stdin closes.
HEAD = textwrap.dedent("""
    import socket, sys
    from ray.cluster_utils import Cluster
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    c = Cluster(shutdown_at_exit=True)
    c.add_node(gcs_server_port=port, include_dashboard=False, node_ip_address="127.0.0.1", num_cpus=1,
               dashboard_agent_listen_port=None)
    print(c.address, flush=True)
    sys.stdin.read()
    c.shutdown()
""")



def test_a_cluster_that_refuses_the_driver_is_one_line(tmp_path, sqlite_url):
    """A head with Ray's token authentication on (what `ray start --head` does when ~/.ray/auth_token exists)
    accepts TCP connections but refuses a driver without RAY_AUTH_MODE=token: one line, exit 2."""
    head_env = dict(env(), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    head = subprocess.Popen([sys.executable, "-c", HEAD], env=head_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        address = head.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        driver_env = {k: v for k, v in env().items() if not k.startswith("RAY_AUTH_")}
        r = subprocess.run([*MIMAX, "launch", str(SPACES / "tiny-random.yaml"), "--name", "x", "--db", sqlite_url,
                            "--address", address, "--quiet"], cwd=tmp_path, env=driver_env, capture_output=True,
                           text=True, timeout=120)
    finally:
        head.stdin.close()
        head.wait(timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--address" in lines[0], r.stderr[-2000:]
    assert query(sqlite_url, "SELECT name FROM mimax_studies") == []
