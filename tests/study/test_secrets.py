"""A database password never lands on disk: not in the results directory, not in Ray's session
directory (its logs included), not in what the commands print, not in any table of the database.

The test server trusts local connections, so a URL with a made-up password still connects; the
password is unique to the test, so any hit can only come from this run.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, table, column

from engine_helpers import SPACES, run, start, trials

pytestmark = pytest.mark.slow


def files_under(root: Path):
    for dirpath, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():  # skips Ray's sockets
                yield path


def hits_in_files(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in files_under(root):
        try:
            if secret in path.read_bytes():
                found.append(str(path))
        except OSError:  # a file Ray removed while we walked
            pass
    return found


def hits_in_database(url: str, secret: str) -> tuple[list[str], int]:
    """(table.column where the secret occurs, number of values read): every column of every table."""
    engine = create_engine(url)
    found, values = [], 0
    try:
        names = inspect(engine).get_table_names()
        with engine.connect() as conn:
            for name in names:
                cols = [c["name"] for c in inspect(engine).get_columns(name)]
                for row in conn.execute(select(*(column(c) for c in cols)).select_from(table(name))):
                    for col, value in zip(cols, row):
                        values += 1
                        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                        if secret in text:
                            found.append(f"{name}.{col}")
    finally:
        engine.dispose()
    return sorted(set(found)), values


def ray_session_of(pid: int) -> Path:
    """Ray names a session directory after the process that started the cluster: session_<date>_<pid>."""
    from ray._common.utils import get_default_ray_temp_dir

    sessions = list(Path(get_default_ray_temp_dir()).glob(f"session_*_{pid}"))
    assert len(sessions) == 1, sessions
    return sessions[0]


@pytest.mark.parametrize("given", ["--db", "MIMAX_DB"])
def test_database_password_never_lands_on_disk(tmp_path, pg_databases, monkeypatch, given):
    password = f"Pw{uuid.uuid4().hex}"
    database = pg_databases.new()
    url = pg_databases.url_for(database, password)
    assert password in url
    db_args = ["--db", url] if given == "--db" else []
    if given == "MIMAX_DB":
        monkeypatch.setenv("MIMAX_DB", url)  # inherited by the commands (engine_helpers.env copies os.environ)
    results = tmp_path / "res"
    log = tmp_path / "launch.log"  # stdout and stderr of the driver

    proc = start("launch", SPACES / "tiny-random.yaml", "--name", "secret", *db_args, "--results-dir", results,
                 cwd=tmp_path, log=log)
    try:
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    assert [t["state"] for t in trials(url, "secret").values()] == ["completed"]
    session = ray_session_of(proc.pid)

    status = run("status", "secret", *db_args, "--json", cwd=tmp_path)
    listed = run("list", *db_args, cwd=tmp_path)
    listed_json = run("list", *db_args, "--json", cwd=tmp_path)
    for r in (status, listed, listed_json):
        assert r.returncode == 0, r.stderr
    assert json.loads(status.stdout)["states"]["completed"] == 1
    assert [s["name"] for s in json.loads(listed_json.stdout)] == ["secret"]

    # What we search is real: the places hold this run's traces, only not the password.
    assert database in listed.stdout  # the list names the database (its URL with the password hidden)
    assert list(files_under(results)) and any(b"secret" in p.read_bytes() for p in files_under(results))
    assert list(files_under(session / "logs"))
    secret = password.encode()
    assert hits_in_files(results, secret) == []
    assert hits_in_files(session, secret) == []
    assert secret not in log.read_bytes()
    for r in (status, listed, listed_json):
        assert password not in r.stdout and password not in r.stderr
    found, values = hits_in_database(url, password)
    assert values > 100 and found == [], found


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_head(monkeypatch):
    """A one-node Ray cluster on 127.0.0.1 that outlives the driver, so its job table can be read."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(shutdown_at_exit=True)
    try:
        cluster.add_node(gcs_server_port=free_port(), include_dashboard=False, node_ip_address="127.0.0.1",
                         num_cpus=1, num_gpus=0, dashboard_agent_listen_port=None)
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("given", [
    "--db",
    "MIMAX_DB",
])
def test_database_password_is_not_in_rays_job_table(tmp_path, pg_databases, monkeypatch, loopback_head, given):
    """Ray keeps each driver's entrypoint in the cluster's job table (dashboard, `ray list jobs`, and GCS's
    Redis when it is made fault tolerant): the password must not be there either."""
    from ray._raylet import GcsClient

    password = f"Pw{uuid.uuid4().hex}"
    url = pg_databases.url_for(pg_databases.new(), password)
    db_args = ["--db", url] if given == "--db" else []
    if given == "MIMAX_DB":
        monkeypatch.setenv("MIMAX_DB", url)
    r = run("launch", SPACES / "tiny-random.yaml", "--name", "job", *db_args, "--address", loopback_head.address,
            "--results-dir", tmp_path / "res", "--quiet", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    jobs = GcsClient(address=loopback_head.address).get_all_job_info()
    entrypoints = [info.entrypoint for info in jobs.values()]
    assert any("mimax.cli" in e and "launch" in e for e in entrypoints), entrypoints  # the driver's job is there
    assert not [str(info) for info in jobs.values() if password in str(info)]
