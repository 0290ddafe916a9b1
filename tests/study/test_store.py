"""The results store against real SQLite and PostgreSQL databases (every test runs on both).

Oracles: the values put in, row counts read back with plain SQL on a separate connection (not through
the Store), hashes computed here from the spec (sha256 of the sorted-key JSON without the seed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import threading
import time
from importlib import metadata

import pytest
import sqlalchemy as sa

from mimax.study.environment import collect_environment
from mimax.storage.db import STATES, DatabaseError, UnknownStudy, head_revision
from mimax.storage.store import LeaseLost, Store, StudyExists

PASSWORD = "s3cr3t-pw"


def sql(url: str, query: str, **params):
    """Run one query on a connection of its own: an oracle independent of the Store."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query), params).all()
    finally:
        engine.dispose()


def cfg(x: int, seed: int) -> dict:
    return {"encoder": {"name": "mlp", "hidden": [x]}, "train": {"lr": 1e-3 * x}, "seed": seed}


def spec_hash(config: dict) -> str:
    body = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_trials(store, study_fields, keys=("a", "b")):
    store.create_study("s", **study_fields)
    store.add_trials("s", [{"trial_key": k, "config": cfg(i + 1, 0)} for i, k in enumerate(keys)])


# ---------------------------------------------------------------------------------------- studies


def test_create_get_list_studies(store, study_fields):
    before = dt.datetime.now(dt.UTC)
    sid = store.create_study("alpha", **study_fields)
    store.create_study("beta", **dict(study_fields, budget="paper", n_configs_requested=None))
    got = store.get_study("alpha")
    assert got["id"] == sid
    for key, value in study_fields.items():
        assert got[key] == value, key
    assert got["status"] == "running" and got["driver_owner"] is None
    assert got["created_at"].tzinfo is not None and got["created_at"].utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= got["created_at"] <= dt.datetime.now(dt.UTC)
    assert store.get_study("nope") is None
    listed = store.list_studies()
    assert [s["name"] for s in listed] == ["alpha", "beta"]
    assert listed[1]["budget"] == "paper" and listed[1]["n_configs_requested"] is None
    assert listed[0]["trial_counts"] == {s: 0 for s in STATES}
    assert sql(store.url, "SELECT count(*) FROM mimax_studies") == [(2,)]


def test_second_create_raises_study_exists(store, study_fields):
    store.create_study("alpha", **study_fields)
    with pytest.raises(StudyExists, match="alpha"):
        store.create_study("alpha", **study_fields)
    assert sql(store.url, "SELECT count(*) FROM mimax_studies") == [(1,)]


def test_unknown_study_message_lists_known_names(store, study_fields):
    with pytest.raises(UnknownStudy) as err:
        store.require_study("gamma")
    assert str(err.value) == f"unknown study 'gamma' in {store.display_url} (known: none)"
    store.create_study("beta", **study_fields)
    store.create_study("alpha", **study_fields)
    with pytest.raises(UnknownStudy) as err:
        store.require_study("gamma")
    assert str(err.value) == f"unknown study 'gamma' in {store.display_url} (known: alpha, beta)"
    assert store.require_study("alpha")["name"] == "alpha"
    for call in (lambda: store.trials("gamma"), lambda: store.state_counts("gamma"),
                 lambda: store.update_study("gamma", status="failed")):
        with pytest.raises(UnknownStudy, match="known: alpha, beta"):
            call()


def test_update_study_validates_fields(store, study_fields):
    store.create_study("alpha", **study_fields)
    store.update_study("alpha", status="interrupted", n_configs_requested=20, metrics=["a", "b"])
    got = store.get_study("alpha")
    assert (got["status"], got["n_configs_requested"], got["metrics"]) == ("interrupted", 20, ["a", "b"])
    assert got["updated_at"] >= got["created_at"]
    with pytest.raises(DatabaseError, match="status"):
        store.update_study("alpha", status="exploded")
    with pytest.raises(DatabaseError, match="colour"):
        store.update_study("alpha", colour="red")
    assert store.get_study("alpha")["status"] == "interrupted"


# ----------------------------------------------------------------------------------------- trials


def test_trials_round_trip(store, study_fields):
    store.create_study("s", **study_fields)
    rows = [
        {"trial_key": f"{n}-{seed}", "config": cfg(n + 1, seed), "optuna_trial_number": n,
         "replicate_group": str(n), "replicate_index": seed}
        for n in range(2) for seed in range(3)
    ]
    store.add_trials("s", rows)
    got = store.trials("s")
    assert [t["trial_key"] for t in got] == [r["trial_key"] for r in rows]
    for row, t in zip(rows, got):
        assert t["config_json"] == row["config"] and t["config"] == row["config"]
        assert t["seed"] == row["config"]["seed"]  # taken from the config when not given
        assert t["config_hash"] == spec_hash(row["config"])
        assert (t["optuna_trial_number"], t["replicate_group"], t["replicate_index"]) == (
            row["optuna_trial_number"], row["replicate_group"], row["replicate_index"])
        assert t["state"] == "pending" and t["started_at"] is None and t["ended_at"] is None
    # replicates (same config, other seed) share the hash; other configs do not
    assert len({t["config_hash"] for t in got}) == 2

    # idempotent on (study, trial_key): a second add changes nothing and adds only the new key
    store.add_trials("s", [dict(rows[0], config=cfg(9, 0)), {"trial_key": "extra", "config": cfg(5, 7)}])
    again = store.trials("s")
    assert len(again) == 7 and again[0]["config"] == rows[0]["config"]
    assert again[-1]["replicate_group"] == spec_hash(cfg(5, 7)) and again[-1]["replicate_index"] == 0
    assert sql(store.url, "SELECT count(*) FROM mimax_trials") == [(7,)]

    store.update_trial("s", "0-0", state="running", node="node-1", resources={"CPU": 1, "GPU": 0.5})
    store.update_trial("s", "0-1", state="completed")
    store.update_trial("s", "1-0", state="failed", error="boom")
    t = {r["trial_key"]: r for r in store.trials("s")}
    assert t["0-0"]["started_at"] is not None and t["0-0"]["ended_at"] is None
    assert t["0-0"]["resources"] == {"CPU": 1, "GPU": 0.5} and t["0-0"]["node"] == "node-1"
    assert t["0-1"]["ended_at"] is not None and t["1-0"]["error"] == "boom"
    store.update_trial("s", "0-0", state="running")  # resumed: the first start is kept
    store.update_trial("s", "0-1", state="running")  # run again: no longer ended
    t2 = {r["trial_key"]: r for r in store.trials("s")}
    assert t2["0-0"]["started_at"] == t["0-0"]["started_at"] and t2["0-1"]["ended_at"] is None
    store.update_trial("s", "0-1", state="completed")
    assert [r["trial_key"] for r in store.trials("s", states=["running", "failed"])] == ["0-0", "1-0"]
    assert store.state_counts("s") == dict.fromkeys(STATES, 0) | {"pending": 4, "running": 1,
                                                                         "completed": 1, "failed": 1}
    assert store.list_studies()[0]["trial_counts"] == store.state_counts("s")

    with pytest.raises(DatabaseError, match="no trial 'zzz'"):
        store.update_trial("s", "zzz", state="running")
    with pytest.raises(DatabaseError, match="state"):
        store.update_trial("s", "0-0", state="exploded")
    with pytest.raises(DatabaseError, match="naive"):
        store.update_trial("s", "0-0", ended_at=dt.datetime(2024, 1, 1))
    with pytest.raises(DatabaseError, match="unknown trial state"):
        store.trials("s", states=["bogus"])


def test_add_trials_requires_a_seed(store, study_fields):
    store.create_study("s", **study_fields)
    with pytest.raises(DatabaseError, match="seed"):
        store.add_trials("s", [{"trial_key": "a", "config": {"lr": 1}}])
    store.add_trials("s", [{"trial_key": "a", "config": {"lr": 1}, "seed": 4}])
    assert store.trials("s")[0]["seed"] == 4


# ------------------------------------------------------------------------------------ evaluations


def test_write_evaluations_is_an_idempotent_upsert(store, study_fields):
    with_trials(store, study_fields)
    first = {"bound_train": 1.5, "bound_test": 1.25, "probe_accuracy": 0.5, "loss": -1.5, "wall_s": 3.0,
             "log_cond_p50": 2.0, "units": "nats"}
    assert store.write_evaluations("s", [
        {"trial_key": "a", "step": 10, "record": first, "trial": {"last_step": 10}},
        {"trial_key": "b", "step": 10, "record": dict(first, loss=7.0)},
    ]) == 2
    second = dict(first, bound_train=2.5, probe_accuracy=0.75, classifier_accuracy=0.9)
    # a separate call re-reporting (a, 10) as after a restore: the row is replaced, not duplicated
    assert store.write_evaluations("s", [
        {"trial_key": "a", "step": 10, "record": second,
         "trial": {"last_step": 10, "checkpoint": "/ckpt/a/10", "checkpoint_step": 10, "node": "n2"}},
    ]) == 1
    rows = sql(store.url, "SELECT t.trial_key, e.step, e.bound_train, e.probe_accuracy, e.loss, e.metrics "
                          "FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id "
                          "ORDER BY t.trial_key, e.step")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("a", 10, 2.5, 0.75, -1.5), ("b", 10, 1.5, 0.5, 7.0)]
    assert json.loads(rows[0][5]) == second
    evs = store.evaluations("s", "a")
    assert len(evs) == 1 and evs[0]["metrics"] == second and evs[0]["record"] == second
    assert evs[0]["bound_test"] == 1.25 and evs[0]["wall_s"] == 3.0 and evs[0]["trial_key"] == "a"
    trial = store.trials("s")[0]
    assert (trial["last_step"], trial["checkpoint"], trial["checkpoint_step"], trial["node"]) == (
        10, "/ckpt/a/10", 10, "n2")
    # within one batch the last row for a (trial, step) wins
    store.write_evaluations("s", [{"trial_key": "b", "step": 20, "record": {"loss": v}} for v in (1.0, 2.0, 3.0)])
    assert [(e["step"], e["loss"]) for e in store.evaluations("s", "b")] == [(10, 7.0), (20, 3.0)]
    assert sql(store.url, "SELECT count(*) FROM mimax_evaluations") == [(3,)]


def test_missing_and_non_finite_metrics(store, study_fields):
    with_trials(store, study_fields)
    store.write_evaluations("s", [
        {"trial_key": "a", "step": 1, "record": {"event": "diverged", "loss": None, "reason": "nan"}},
        {"trial_key": "a", "step": 2, "record": {"loss": float("nan"), "bound_train": float("inf")}},
    ])
    ev = store.evaluations("s", "a")
    assert ev[0]["loss"] is None and ev[0]["bound_train"] is None and ev[0]["metrics"]["event"] == "diverged"
    assert ev[1]["loss"] is None and ev[1]["bound_train"] == float("inf")


@pytest.mark.parametrize("poison", ["unknown trial", "null in NOT NULL column", "bad record value"])
def test_failed_batch_leaves_nothing(store, study_fields, poison):
    with_trials(store, study_fields)
    store.write_evaluations("s", [{"trial_key": "a", "step": 10, "record": {"loss": 1.0},
                                   "trial": {"last_step": 10}}])
    before_evals = sql(store.url, "SELECT trial_id, step, loss, metrics FROM mimax_evaluations ORDER BY id")
    before_trials = sql(store.url, "SELECT trial_key, last_step, state FROM mimax_trials ORDER BY id")
    batch = [
        {"trial_key": "a", "step": 10, "record": {"loss": 99.0}, "trial": {"last_step": 11}},  # would update
        {"trial_key": "a", "step": 20, "record": {"loss": 2.0}, "trial": {"state": "completed"}},  # would insert
        {"trial_key": "b", "step": 20, "record": {"loss": 3.0}},
    ]
    if poison == "unknown trial":
        batch.append({"trial_key": "ghost", "step": 20, "record": {"loss": 4.0}})
    elif poison == "null in NOT NULL column":  # refused by the database after the upsert already ran
        batch.append({"trial_key": "b", "step": 30, "record": {"loss": 4.0}, "trial": {"replicate_index": None}})
    else:
        batch.append({"trial_key": "b", "step": 30, "record": {"loss": "lots"}})
    with pytest.raises(DatabaseError) as err:
        store.write_evaluations("s", batch)
    assert "\n" not in str(err.value)
    assert sql(store.url, "SELECT trial_id, step, loss, metrics FROM mimax_evaluations ORDER BY id") == before_evals
    assert sql(store.url, "SELECT trial_key, last_step, state FROM mimax_trials ORDER BY id") == before_trials


def test_threads_share_one_store(store, study_fields):
    keys = [f"t{i}" for i in range(4)]
    with_trials(store, study_fields, keys)
    errors = []

    def work(key):
        try:
            for step in range(15):
                store.write_evaluations("s", [{"trial_key": key, "step": step, "record": {"loss": step + 0.5}}])
                store.update_trial("s", key, last_step=step)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sql(store.url, "SELECT count(*), sum(loss) FROM mimax_evaluations") == [(60, 4 * sum(s + 0.5 for s in range(15)))]
    assert {t["last_step"] for t in store.trials("s")} == {14}


# ---------------------------------------------------------------------------------- driver lease


def test_claim_driver(store, study_fields):
    store.create_study("s", **study_fields)
    store.claim_driver("s", "host:1:a")
    store.claim_driver("s", "host:1:a")  # re-claiming one's own lease is fine
    with pytest.raises(DatabaseError, match=r"study 's' is being run by host:1:a \(heartbeat \d+ s ago\)"):
        store.claim_driver("s", "host:2:b")
    asked = []
    with pytest.raises(DatabaseError, match="host:1:a"):
        store.claim_driver("s", "host:2:b", alive=lambda o: asked.append(o) or True)
    assert asked == ["host:1:a"]
    store.claim_driver("s", "host:2:b", alive=lambda o: False)  # holder known dead: taken over
    assert store.get_study("s")["driver_owner"] == "host:2:b"
    with pytest.raises(LeaseLost):
        store.heartbeat("s", "host:1:a")
    store.release_driver("s", "host:1:a")  # not the holder: no effect
    assert store.get_study("s")["driver_owner"] == "host:2:b"

    time.sleep(0.3)
    store.claim_driver("s", "host:3:c", stale_after_s=0.2)  # heartbeat older than stale_after_s
    store.heartbeat("s", "host:3:c")
    beat = store.get_study("s")["driver_heartbeat_at"]
    assert abs((dt.datetime.now(dt.UTC) - beat).total_seconds()) < 5
    with pytest.raises(DatabaseError, match="host:3:c"):
        store.claim_driver("s", "host:4:d", stale_after_s=60)
    store.release_driver("s", "host:3:c")
    got = store.get_study("s")
    assert got["driver_owner"] is None and got["driver_heartbeat_at"] is None
    store.claim_driver("s", "host:4:d")
    with pytest.raises(UnknownStudy):
        store.claim_driver("nope", "host:4:d")


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it now (pids are not reused this soon)


@pytest.mark.parametrize("owner, age_s, gone", [
    ("other-host:12:x", 0.0, False),
    ("other-host:12:x", 28.0, False),   # a driver on another host: only its heartbeat tells
    ("other-host:12:x", 31.0, True),    # past the lease timeout (30 s, docs/STUDIES.md)
    ("HERE:SELF:x", 0.0, False),        # this process: alive
    ("HERE:DEAD:x", 0.0, True),         # on this host and its process gone: at once
])
def test_status_and_list_tell_a_live_driver_from_a_stale_lease(store, study_fields, capsys, owner, age_s, gone):
    """After a SIGKILL the study still says 'running' and holds the lease: status said "running — 8/12 …
    ETA 0.6 min"."""
    import socket

    from mimax.cli import main

    owner = owner.replace("HERE", socket.gethostname()).replace("SELF", str(os.getpid()))
    owner = owner.replace("DEAD", str(_dead_pid()))
    with_trials(store, study_fields)
    store.update_trial("s", "a", state="completed", started_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=9))
    beat = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)).replace(microsecond=0)
    store.update_study("s", driver_owner=owner, driver_heartbeat_at=beat)
    assert main(["status", "s", "--db", store.url, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["status"] == "running" and st["driver"] == ("gone" if gone else "live")
    text = f"driver gone since {beat:%Y-%m-%d %H:%M:%S} UTC; run `mimax resume s`"
    assert st["driver_gone"] == (text if gone else None)
    assert (st["eta_s"] is None) == gone
    assert main(["status", "s", "--db", store.url]) == 0
    out = capsys.readouterr().out
    assert (text in out) == gone and ("s: driver gone — 1/" in out) == gone and ("ETA" in out) != gone, out
    assert main(["list", "--db", store.url, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["driver_gone"] == (text if gone else None)
    assert main(["list", "--db", store.url]) == 0
    assert ("driver gone" in capsys.readouterr().out) == gone


def test_claim_driver_is_atomic(store, study_fields):
    store.create_study("s", **study_fields)
    won, lost = [], []
    start = threading.Barrier(6)

    def claim(i):
        start.wait()
        try:
            store.claim_driver("s", f"host:{i}:x")
            won.append(i)
        except DatabaseError:
            lost.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    assert store.get_study("s")["driver_owner"] == f"host:{won[0]}:x"


# ----------------------------------------------------------------------------- URLs and errors


@pytest.mark.parametrize("url, expect", [
    (f"mysql+nope://u:{PASSWORD}@h/d", "database URL"),
    ("notaurl", "database URL"),
    (f"postgresql+psycopg://u:{PASSWORD}@h:notaport/x", "database URL"),
    (f"postgresql+psycopg2://u:{PASSWORD}@h/x", "driver 'psycopg2'"),
    (f"mysql+pymysql://u:{PASSWORD}@h/d", "unsupported database"),
    ("sqlite://", "file path"),
    ("sqlite+aiosqlite:///x.db", "driver 'aiosqlite'"),
    (f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x", "127.0.0.1:1"),
])
def test_bad_url_gives_one_line_without_password(url, expect):
    t = time.perf_counter()
    with pytest.raises(DatabaseError) as err:
        Store(url)
    assert time.perf_counter() - t < 6
    msg = str(err.value)
    assert expect in msg and PASSWORD not in msg and "\n" not in msg


def test_wrong_database_on_a_live_server(pg_databases):
    url = pg_databases.url_for("mimax_no_such_db_x", password=PASSWORD)
    with pytest.raises(DatabaseError) as err:
        Store(url)
    msg = str(err.value)
    assert pg_databases.server in msg and "mimax_no_such_db_x" in msg and PASSWORD not in msg and "\n" not in msg


def test_password_never_shown(pg_databases, study_fields):
    url = pg_databases.url(password=PASSWORD)  # trust auth accepts any password
    assert PASSWORD in url
    store = Store(url)
    try:
        assert store.url == url and PASSWORD not in store.display_url and PASSWORD not in repr(store)
        assert sa.engine.make_url(url).render_as_string(hide_password=True) == store.display_url
        with pytest.raises(UnknownStudy) as err:
            store.require_study("x")
        assert PASSWORD not in str(err.value)
        with pytest.raises(TypeError) as err:
            pickle.dumps(store)
        assert PASSWORD not in str(err.value)
    finally:
        store.close()


def test_sqlite_store_pickles_by_url(sqlite_url, study_fields):
    store = Store(sqlite_url)
    store.create_study("s", **study_fields)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url and copy.get_study("s")["name"] == "s"
    copy.close()
    store.close()


def test_open_without_create(db_url, tmp_path, study_fields):
    engine = sa.create_engine(db_url)  # a database with someone else's table only
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="no mimax tables in"):
        Store(db_url, create=False)
    with pytest.raises(DatabaseError, match="no database file"):
        Store(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE other"))  # now empty: mimax may make its tables there
    engine.dispose()
    Store(db_url).close()
    store = Store(db_url, create=False)
    store.create_study("s", **study_fields)
    assert store.schema_version() == head_revision()
    store.close()


def tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["launch", "fig3-critics", "--name", "x", "--quiet"]])
def test_another_programs_database_is_refused_and_left_as_it_was(db_url, tmp_path, capsys, argv):
    """`--db` on a database with unrelated tables added ~17 mimax and Optuna tables to it, silently."""
    from mimax.cli import main

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'Ada')"))
    engine.dispose()
    path = sa.engine.make_url(db_url).database
    before = open(path, "rb").read() if db_url.startswith("sqlite") else None
    assert main([*argv, "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a mimax database: it holds other tables (customers)" in err, err
    assert tables(db_url) == ["customers"]
    if before is not None:  # not even switched to WAL
        assert open(path, "rb").read() == before and not os.path.exists(path + "-wal")
    with pytest.raises(DatabaseError, match="not a mimax database"):
        Store(db_url)


def test_a_bare_path_is_echoed_with_the_url_to_write(tmp_path, capsys, monkeypatch):
    from mimax.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["list", "--db", "my.db"]) == 2
    assert capsys.readouterr().err == ("mimax: error: database URL 'my.db' is not a URL; for a SQLite file write "
                                       "sqlite:///my.db\n")
    assert not (tmp_path / "my.db").exists()


def test_sqlite_pragmas(sqlite_url):
    store = Store(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


# --------------------------------------------------------------------------- Optuna and environment


def test_optuna_storage_beside_mimax_tables(store, study_fields):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store.create_study("s", **study_fields)
    study = optuna.create_study(study_name="optuna-x", storage=store.optuna_storage(), direction="maximize")
    study.optimize(lambda t: -((t.suggest_float("x", -1, 1) - 0.25) ** 2), n_trials=3)
    tables = set(sa.inspect(sa.create_engine(store.url)).get_table_names())
    assert {"alembic_version", "mimax_alembic_version", "studies", "trials", "mimax_studies", "mimax_trials",
            "mimax_evaluations", "mimax_environment"} <= tables
    assert sql(store.url, "SELECT version_num FROM mimax_alembic_version") == [(head_revision(),)]
    (optuna_rev,), = sql(store.url, "SELECT version_num FROM alembic_version")
    assert optuna_rev != head_revision()  # Optuna's own revision, untouched by mimax
    loaded = optuna.load_study(study_name="optuna-x", storage=store.url)
    assert len(loaded.trials) == 3 and loaded.best_value <= 0
    reopened = Store(store.url, create=False)  # and mimax still opens the shared database
    assert reopened.get_study("s")["optuna_study_name"] == "optuna-x"
    reopened.close()


def test_record_environment(store, study_fields):
    store.create_study("s", **study_fields)
    info = collect_environment("cpu")
    store.record_environment("s", info, session=0)
    store.record_environment("s", dict(info, device="cuda"), session=1)
    store.record_environment("s", dict(info, device="cuda:1"), session=1)  # re-recorded: replaced
    envs = store.environments("s")
    assert [(e["session"], e["device"]) for e in envs] == [(0, "cpu"), (1, "cuda:1")]
    e = envs[0]
    for key, dist in [("optuna", "optuna"), ("sqlalchemy", "sqlalchemy"), ("torch", "torch"), ("ray", "ray")]:
        assert e[key] == metadata.version(dist)
    assert e["python"] == ".".join(map(str, __import__("sys").version_info[:3]))
    assert e["extra"]["cpu_count"] == __import__("os").cpu_count()
    assert e["recorded_at"].tzinfo is not None


def test_collect_environment_names_the_checkout():
    import subprocess
    from pathlib import Path

    import torch

    import mimax

    info = collect_environment("cuda:0")
    assert info["device"] == "cuda:0" and info["hostname"] and info["cpu"]
    assert info["mimax_version"] == mimax.__version__
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(mimax.__file__).parent,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = None
    assert (info["git_commit"] or "").removesuffix("+dirty") == (head or "")
    if not torch.cuda.is_available():
        assert info["gpu"] is None
