"""Real databases for the store tests: a SQLite file in tmp_path, and fresh PostgreSQL databases.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth (override with MIMAX_TEST_PG_HOST / _PORT /
_USER). Each test session (each xdist worker) makes its own uniquely named databases and drops them at
the end. When the server cannot be reached the PostgreSQL tests FAIL in CI (CI=true) and are skipped
with the reason elsewhere.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_HOST = os.environ.get("MIMAX_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MIMAX_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("MIMAX_TEST_PG_USER", "postgres")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pg_url(database: str, password: str | None = None) -> str:
    auth = PG_USER if password is None else f"{PG_USER}:{password}"
    return f"postgresql+psycopg://{auth}@{PG_HOST}:{PG_PORT}/{database}"


class PgDatabases:
    """Creates uniquely named databases on the test server; drops them all on ``drop_all``."""

    def __init__(self, admin, tag: str):
        self.admin, self.tag, self.names = admin, tag, []

    def new(self) -> str:
        from psycopg import sql

        name = f"{self.tag}_{len(self.names)}"
        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        return name

    def url(self, password: str | None = None) -> str:
        """URL of a new database."""
        return pg_url(self.new(), password)

    @staticmethod
    def url_for(database: str, password: str | None = None) -> str:
        """URL of a database on the test server, made or not."""
        return pg_url(database, password)

    server = f"{PG_HOST}:{PG_PORT}"

    def drop_all(self) -> None:
        from psycopg import sql

        for name in self.names:
            self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_databases():
    import psycopg

    try:
        admin = psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5, autocommit=True
        )
    except psycopg.Error as e:
        reason = (
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is not reachable: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
        if IN_CI:
            pytest.fail(f"CI requires PostgreSQL for the store tests: {reason}", pytrace=False)
        pytest.skip(reason)
    dbs = PgDatabases(admin, f"mimax_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    try:
        yield dbs
    finally:
        dbs.drop_all()
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def postgres_url(pg_databases) -> str:
    """A fresh, empty PostgreSQL database for this test."""
    return pg_databases.url()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """The same test on both backends, each on a fresh empty database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def store(db_url):
    from mimax.storage.store import Store

    s = Store(db_url)
    yield s
    s.close()


STUDY_FIELDS = dict(
    space_source="paper-table1",
    space_json={"encoder": {"name": ["mlp", "conv"]}, "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    space_fingerprint="f" * 64,
    budget="smoke",
    sampler="tpe",
    directions=["maximize"],
    metrics=["probe_accuracy"],
    seeds=3,
    n_configs_requested=12,
    optuna_study_name="optuna-x",
    results_dir="/tmp/results/x",
)


@pytest.fixture
def study_fields() -> dict:
    """Keyword arguments of Store.create_study for a typical study."""
    return {k: (v.copy() if hasattr(v, "copy") else v) for k, v in STUDY_FIELDS.items()}
