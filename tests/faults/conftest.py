"""Fixtures of the fault tests: a private network of hosts, a PostgreSQL cluster on it, a Ray cluster
per test."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import Network, Postgres, RayCluster, missing_requirement
from requires import require

HOSTS = 3  # a head (which also runs the driver) and two worker hosts


@pytest.fixture(scope="module")
def network():
    missing = missing_requirement()
    require(missing is None, f"{missing} for the fault harness")
    net = Network(HOSTS)
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="module")
def postgres(network):
    pg = Postgres(network)
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="module")
def ray_env() -> dict:
    """The environment of every Ray process and driver here: one token (so the driver joins whether or
    not ~/.ray/auth_token exists), one thread per trial, and a head that declares a silent node dead
    after ~5–10 s instead of ~30 s (the faults then cost seconds, not minutes)."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1",
               RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="2000",
               RAY_health_check_failure_threshold="5")
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # `ray start --address` refuses to join when it is set (even to 0)
    return env


@pytest.fixture(scope="module")
def ray_cluster(network, ray_env):
    head, *workers = network.hosts
    temp = Path(tempfile.mkdtemp(prefix="mxf", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        cluster = RayCluster.start(head, workers, temp, ray_env)
        try:
            yield cluster
        finally:
            cluster.close()
    finally:
        if not os.environ.get("MIMAX_FAULTS_KEEP_LOGS"):
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def cluster(ray_cluster):
    """The module's Ray cluster, whole: hosts an earlier test killed or cut off (or anything else stopped:
    other tests on this machine may run `ray stop`, which stops every Ray) are brought back."""
    ray_cluster.revive()
    return ray_cluster


@pytest.fixture
def database(postgres, request) -> str:
    """A fresh database on the test cluster for this test."""
    name = f"t_{request.node.name.split('[')[0][-40:]}_{secrets.token_hex(3)}".lower()
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"
