"""mimax.analysis.load: the frames match what plain SQL reads from the database, the database is
never written, a database at an older schema revision is read as it is, and every kind of bad input is
one ConfigError line (a DatabaseError about the database, an AnalysisError about the study)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from planted import T0, bare_study, database_at_revision, planted_study

from mimax.analysis.load import final, list_studies, load
from mimax.storage.db import Database
from mimax.errors import ConfigError


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "planted.db"
    url = f"sqlite:///{path}"
    truth = planted_study(url, "p", seeds=3, effect={"critic": {"concat": 0.05}}, failed=["c0001-s2"])
    # A later, worse evaluation of one trial: its best evaluation is not its last.
    from mimax.storage.store import Store

    with Store(url) as store:
        store.write_evaluations("p", [{"trial_key": "c0000-s0", "step": 1500,
                                       "record": {"event": "eval", "step": 1500, "probe_accuracy": 0.25,
                                                  "bound_test": 0.5, "classifier_accuracy": 0.75}}])
    bare_study(url, "empty")
    return path, url, truth


def sql(path, query: str, *args) -> list:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


def test_trials_frame_matches_sql(planted):
    path, url, truth = planted
    data = load(url, "p")
    rows = sql(path, "SELECT t.trial_key, t.state, t.seed, t.replicate_group, t.optuna_trial_number, t.config_json "
                     "FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = 'p' ORDER BY t.id")
    assert list(data.trials["trial_key"]) == [r[0] for r in rows]
    t = data.trials.set_index("trial_key")
    for key, state, seed, group, number, config in rows:
        config = json.loads(config)
        assert t.loc[key, "state"] == state and t.loc[key, "seed"] == seed
        assert t.loc[key, "config_id"] == group and t.loc[key, "optuna_number"] == number
        assert t.loc[key, "critic"] == t.loc[key, "critic.name"] == config["critic"]["name"]
        assert t.loc[key, "estimator"] == config["estimator"]["name"]
        assert t.loc[key, "train.batch_size"] == config["train"]["batch_size"]
        assert t.loc[key, "eval.probe.name"] == config["eval"]["probe"]["name"]
        assert t.loc[key, "encoder.hidden"] == json.dumps(config["encoder"]["hidden"])
    assert data.factors == ["critic", "estimator"]
    assert data.study["name"] == "p" and data.study["space_json"]["params"]["critic.name"]["grid"][0] == "bilinear"
    assert data.environment[0]["hostname"] == "planted"


def test_timestamps_are_utc_and_durations_exact(planted):
    _, url, truth = planted
    t = load(url, "p").trials.set_index("trial_key")
    # planted: trial c, seed s starts at T0 + (c*seeds + s) min and ends 30 + s seconds later
    assert t.loc["c0002-s1", "started_at"] == T0 + dt.timedelta(minutes=2 * 3 + 1)
    assert str(t["started_at"].dt.tz) == "UTC"
    assert t.loc["c0002-s1", "duration_s"] == 31.0


def test_evaluations_frame_matches_sql(planted):
    path, url, _ = planted
    ev = load(url, "p").evaluations
    rows = sql(path, "SELECT t.trial_key, e.step, e.probe_accuracy, e.bound_test, e.metrics FROM mimax_evaluations e "
                     "JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON s.id = t.study_id "
                     "WHERE s.name = 'p'")
    assert len(ev) == len(rows)
    e = ev.set_index(["trial_key", "step"])
    for key, step, acc, bound, metrics in rows:
        assert e.loc[(key, step), "probe_accuracy"] == acc
        assert e.loc[(key, step), "bound_test"] == bound
        rec = json.loads(metrics)
        for extra in ("log_cond_p50", "classifier_accuracy"):
            if extra in rec:
                assert e.loc[(key, step), extra] == rec[extra]
    assert {"event", "replayed", "log_cond_p50", "classifier_accuracy"} <= set(ev.columns)


def test_final_last_and_best_against_sql(planted):
    path, url, _ = planted
    data = load(url, "p")
    last = final(data).set_index("trial_key")
    best = final(data, "best").set_index("trial_key")
    assert len(last) == len(data.trials)
    rows = sql(path, "SELECT t.trial_key, e.step, e.probe_accuracy FROM mimax_evaluations e "
                     "JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON s.id = t.study_id "
                     "WHERE s.name = 'p'")
    by_trial: dict = {}
    for key, step, acc in rows:
        by_trial.setdefault(key, []).append((step, acc))
    for key, evs in by_trial.items():
        step, acc = max(evs)
        assert last.loc[key, "step"] == step and last.loc[key, "probe_accuracy"] == acc
        b_step, b_acc = max(evs, key=lambda sa_: (sa_[1], sa_[0]))
        assert best.loc[key, "step"] == b_step and best.loc[key, "probe_accuracy"] == b_acc
    assert last.loc["c0000-s0", "step"] == 1500 and best.loc["c0000-s0", "step"] == 1000


def test_list_studies(planted):
    _, url, _ = planted
    studies = {s["name"]: s for s in list_studies(url)}
    assert set(studies) == {"p", "empty"}
    assert {k: n for k, n in studies["p"]["trial_counts"].items() if n} == {"completed": 17, "failed": 1}
    assert sum(studies["empty"]["trial_counts"].values()) == 0


def test_load_never_writes_the_database(planted, tmp_path):
    path, url, _ = planted
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    before = sha(copy)
    from mimax.analysis.importance import importances
    from mimax.analysis.stats import effects

    data = load(f"sqlite:///{copy}", "p")
    effects(data, n_boot=10)
    importances(f"sqlite:///{copy}", data)
    assert sha(copy) == before


# ---- bad input -------------------------------------------------------------------------------------


def expect(url: str, study: str, *needles: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(url, study)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_unknown_study_lists_known(planted):
    _, url, _ = planted
    expect(url, "nope", "unknown study 'nope'", "known: empty, p")


def test_empty_study(planted):
    _, url, _ = planted
    expect(url, "empty", "study 'empty' has no trials")


def test_study_without_evaluations(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    planted_study(url, "pending", seeds=1, evaluations=False, optuna_study=False)
    expect(url, "pending", "study 'pending' has no evaluations yet", "pending: 6")


def test_all_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    planted_study(url, "dead", seeds=1, failed="all", optuna_study=False)
    expect(url, "dead", "all 6 trials of study 'dead' failed")


def test_database_without_mimax_tables(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (id INTEGER)")
    expect(f"sqlite:///{path}", "x", "no mimax tables in")


def test_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(4096))
    expect(f"sqlite:///{path}", "x", "file is not a database")


@pytest.mark.parametrize("url, needle", [
    ("sqlite:////definitely/not/here.db", "no database file at /definitely/not/here.db"),
    ("mysql://u:secret@h/db", "unsupported database"),
    ("not a url", "not a URL"),
])
def test_bad_urls(url, needle):
    msg = expect(url, "x", needle)
    assert "secret" not in msg


def test_older_schema_is_read_as_it_is(planted, tmp_path):
    """A database at revision 0002 (before trials recorded their ceiling and true MI) loads, read-only:
    without the two columns, everything else as at the head revision."""
    path, url, _ = planted
    old = tmp_path / "old.db"
    old.write_bytes(path.read_bytes())
    with sqlite3.connect(old) as conn:  # undo 0003 by hand: the planted database as 0002 left it
        conn.execute("ALTER TABLE mimax_trials DROP COLUMN ceiling")
        conn.execute("ALTER TABLE mimax_trials DROP COLUMN true_mi")
        conn.execute("UPDATE mimax_alembic_version SET version_num = '0002'")
    before = sha(old)
    new, older = load(url, "p"), load(f"sqlite:///{old}", "p")
    assert sha(old) == before
    assert new.trials["ceiling"].notna().any()
    assert "ceiling" not in older.trials.columns and "true_mi" not in older.trials.columns
    same = [c for c in new.trials.columns if c not in ("ceiling", "true_mi")]
    assert older.trials[same].equals(new.trials[same]) and older.evaluations.equals(new.evaluations)


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    database_at_revision(url, "0001")
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("UPDATE mimax_alembic_version SET version_num = '9999'")
    expect(url, "x", "revision 9999, newer than this mimax knows")


# ---- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    host = os.environ.get("MIMAX_TEST_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("MIMAX_TEST_PG_PORT", "5432"))
    user = os.environ.get("MIMAX_TEST_PG_USER", "postgres")
    try:
        admin = psycopg.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=5,
                                autocommit=True)
    except psycopg.Error as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI requires PostgreSQL at {host}:{port}: {e}")
        pytest.skip(f"PostgreSQL at {host}:{port} is not reachable")
    name = f"mimax_analysis_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_postgresql_reads_the_same_as_sqlite(pg_url, tmp_path):
    lite = f"sqlite:///{tmp_path / 'same.db'}"
    for url in (pg_url, lite):
        planted_study(url, "p", seeds=2, effect={"critic": {"concat": 0.05}}, optuna_study=False)
    a, b = final(load(pg_url, "p")), final(load(lite, "p"))
    cols = ["trial_key", "state", "critic", "estimator", "step", "probe_accuracy", "bound_test", "duration_s"]
    assert a[cols].equals(b[cols])
    assert list(a["started_at"]) == list(b["started_at"])
    expect(pg_url, "nope", "unknown study 'nope'", "known: p")
    assert_read_only(pg_url, "read-only transaction")


def assert_read_only(url: str, needle: str) -> None:
    """The analysis engine refuses writes (not merely avoids them)."""
    engine = Database(url).readonly_engine()
    try:
        with pytest.raises(sa.exc.DBAPIError, match=needle), engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE intruder (i INTEGER)"))
    finally:
        engine.dispose()


def test_sqlite_engine_is_read_only(planted):
    assert_read_only(planted[1], "readonly database")


# ---- import hygiene --------------------------------------------------------------------------------


def test_importing_analysis_imports_neither_ray_nor_trainables():
    code = (
        "import sys, pkgutil, importlib, mimax.analysis as A\n"
        "for m in pkgutil.iter_modules(A.__path__): importlib.import_module('mimax.analysis.' + m.name)\n"
        "from mimax.analysis import effects, correlations, final, importances, analyze\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'mimax.trainables')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unreachable_postgresql_is_one_line_without_the_password():
    msg = expect("postgresql+psycopg://mimax:s3cr%40t@127.0.0.1:1/db", "x", "cannot connect to PostgreSQL")
    assert "s3cr" not in msg
    from mimax.analysis.importance import importances

    imp = importances("postgresql+psycopg://mimax:s3cr%40t@127.0.0.1:1/db", "x")
    assert imp["fanova"] == {} and "s3cr" not in imp["reasons"]["fanova"]
