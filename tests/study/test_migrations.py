"""Schema migrations: a database written at an older revision is upgraded by Store(url) with its data kept
(and 0003's ceiling and true MI backfilled from each trial's config, as the trainer reports them), read
as it is by a read-only Store, and the models match the migrated schema exactly (Alembic's autogenerate
comparison finds nothing), on SQLite and PostgreSQL, with Optuna's tables in the same database.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from schema_at import migration, upgrade_to

from mimax.storage.db import MIGRATIONS, VERSION_TABLE, Base, DatabaseError
from mimax.storage.store import Store

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def schema_diffs(url: str) -> list:
    """What autogenerate would change to make the database match the models (mimax tables only)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE,
            "compare_type": True,
            "include_name": lambda name, type_, parents: type_ != "table" or name.startswith("mimax_"),
        })
        diffs = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    return diffs


def fill_0001(url: str) -> None:
    """Rows written by a mimax at schema 0001 (plain SQL against that schema)."""
    engine = sa.create_engine(url)
    ts = T0.replace(tzinfo=None) if url.startswith("sqlite") else T0
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO mimax_studies (id, name, space_source, space_json, space_fingerprint, budget, sampler, "
            "directions, metrics, seeds, n_configs_requested, optuna_study_name, results_dir, status, created_at, "
            "updated_at) VALUES (1, 'old', 'paper', :space, 'fp', 'smoke', 'tpe', '[\"maximize\"]', "
            "'[\"probe_accuracy\"]', 2, 4, 'old-optuna', '/r', 'interrupted', :ts, :ts)"),
            {"space": json.dumps({"lr": [1, 2]}), "ts": ts})
        conn.execute(sa.text(
            "INSERT INTO mimax_trials (id, study_id, trial_key, optuna_trial_number, config_json, config_hash, seed, "
            "replicate_group, replicate_index, state, checkpoint, last_step, updated_at) VALUES "
            "(1, 1, '0-0', 0, :config, 'h', 0, '0', 0, 'running', '/ck/0', 20, :ts)"),
            {"ts": ts, "config": json.dumps({"lr": 1, "seed": 0})})
        conn.execute(sa.text(
            "INSERT INTO mimax_evaluations (trial_id, step, bound_train, loss, metrics, recorded_at) VALUES "
            "(1, 10, 1.5, -1.5, :m1, :ts), (1, 20, 2.5, -2.5, :m2, :ts)"),
            {"ts": ts, "m1": json.dumps({"bound_train": 1.5}), "m2": json.dumps({"bound_train": 2.5})})
    engine.dispose()


def test_three_revisions_ship():
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == ["0001", "0002", "0003"]
    assert script.get_current_head() == "0003"


def test_database_at_0001_is_upgraded_with_data_kept(db_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    upgrade_to(db_url, "0001")
    fill_0001(db_url)
    optuna.create_study(study_name="old-optuna", storage=db_url)  # Optuna's tables beside ours
    # the comparison sees what 0002 adds: proof that it can fail
    diffs = schema_diffs(db_url)
    assert ("add_table", "mimax_environment") in [(d[0], d[1].name) for d in diffs if d[0] == "add_table"]
    assert any(d[0] == "add_column" and d[3].name == "checkpoint_step" for d in diffs)

    # Read-only, the database is read as it is: the columns of revision 0001, no environment table.
    with Store(db_url, read_only=True) as old:
        assert old.schema_version() == "0001"
        (trial,) = old.trials("old")
        assert trial["last_step"] == 20 and "checkpoint_step" not in trial and "ceiling" not in trial
        assert old.environments("old") == [] and old.state_counts("old")["running"] == 1
        with pytest.raises(DatabaseError, match="open read-only"):
            old.update_study("old", status="completed")
    assert schema_diffs(db_url)  # still at 0001
    store = Store(db_url, create=False)  # an existing database (as `mimax resume` opens it) is upgraded
    assert store.schema_version() == "0003"
    study = store.require_study("old")
    assert (study["space_json"], study["directions"], study["status"], study["created_at"]) == (
        {"lr": [1, 2]}, ["maximize"], "interrupted", T0)
    (trial,) = store.trials("old")
    assert (trial["trial_key"], trial["config"], trial["checkpoint"], trial["last_step"], trial["checkpoint_step"]) == (
        "0-0", {"lr": 1, "seed": 0}, "/ck/0", 20, None)
    assert (trial["ceiling"], trial["true_mi"]) == (None, None)  # nothing in its config says
    assert [(e["step"], e["bound_train"], e["loss"]) for e in store.evaluations("old")] == [
        (10, 1.5, -1.5), (20, 2.5, -2.5)]
    # the new columns and table work
    store.update_trial("old", "0-0", checkpoint_step=20, ceiling=1.5, true_mi=0.25)
    store.record_environment("old", {"python": "3.11", "device": "cpu"}, session=1)
    assert [store.trials("old")[0][k] for k in ("checkpoint_step", "ceiling", "true_mi")] == [20, 1.5, 0.25]
    assert store.environments("old")[0]["device"] == "cpu"
    store.close()

    assert schema_diffs(db_url) == []
    # Optuna's study and its own version table are intact
    assert len(optuna.load_study(study_name="old-optuna", storage=db_url).trials) == 0
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM mimax_alembic_version")).all() == [("0003",)]
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() != "0003"
    engine.dispose()


def test_fresh_database_matches_models(db_url):
    Store(db_url).close()
    assert schema_diffs(db_url) == []


def test_newer_schema_is_refused(db_url):
    Store(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE mimax_alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="9999.*newer than this mimax"):
        Store(db_url)
    with pytest.raises(DatabaseError, match="9999.*newer than this mimax"):
        Store(db_url, read_only=True)


# ---- 0003: each trial's ceiling and true MI ------------------------------------------------------------

NONIID = 0.020411  # the paper's true MI of the Fig. 4c pairs, -1/2 log(1 - 0.2^2), to 6 digits


def _config(estimator, data="digits", batch_size=64, **data_params):
    return {"data": {"name": data, **data_params}, "encoder": {"name": "mlp"},
            "critic": None if estimator is None else {"name": "bilinear"},
            "estimator": None if estimator is None else {"name": estimator, "target": None},
            "train": {"steps": 10, "batch_size": batch_size, "mode": "infomax" if estimator else "adversarial"},
            "eval": {"every": 5}, "seed": 0}


# (trial config, its ceiling, its true MI): closed forms
BACKFILLED = [
    (_config("nce", batch_size=64), math.log(64), None),
    (_config("kpair", batch_size=128), math.log(128), None),
    (_config("triplet", batch_size=32), math.log(2), None),
    (_config("nwj"), None, None),
    (_config("nce", "gaussian", batch_size=32, dim=2, mi=2.5), math.log(32), 2.5),
    (_config("smile", "noniid-gaussian", iid=False), None, NONIID),
    (_config(None, "mnist"), None, None),
]


def test_0003_backfills_ceiling_and_true_mi_from_the_config(db_url):
    upgrade_to(db_url, "0002")
    fill_0001(db_url)  # study 'old' with trial '0-0', whose config is no trial config at all
    engine = sa.create_engine(db_url)
    ts = T0.replace(tzinfo=None) if db_url.startswith("sqlite") else T0
    with engine.begin() as conn:
        for i, (config, _, _) in enumerate(BACKFILLED):
            conn.execute(sa.text(
                "INSERT INTO mimax_trials (id, study_id, trial_key, config_json, config_hash, seed, replicate_group, "
                "replicate_index, state, updated_at) VALUES (:id, 1, :key, :config, 'h', 0, 'g', 0, 'completed', :ts)"),
                {"id": 10 + i, "key": f"t{i}", "config": json.dumps(config), "ts": ts})
    Store(db_url).close()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT trial_key, ceiling, true_mi FROM mimax_trials")).all()
    got = {key: (ceiling, true_mi) for key, ceiling, true_mi in rows}
    engine.dispose()
    assert got.pop("0-0") == (None, None)
    for i, (_, ceiling, true_mi) in enumerate(BACKFILLED):
        c, m = got[f"t{i}"]
        assert c == (None if ceiling is None else pytest.approx(ceiling, rel=1e-12)), i
        assert m == (None if true_mi is None else pytest.approx(true_mi, abs=5e-7 if true_mi == NONIID else 1e-12)), i


def test_0003_backfill_is_what_the_trainer_reports():
    """The migration's frozen snapshot against the live registries: every estimator's ceiling at two batch
    sizes, every dataset's true MI."""
    from mimax.trainables.plugins import BUILTIN  # as shipped: other tests in this process may add plugins

    DATASETS, ESTIMATORS = BUILTIN["data"], BUILTIN["estimator"]
    m = migration("0003")
    for name, cls in ESTIMATORS.items():
        estimator = cls(cls.Params())
        for k in (2, 64, 128):
            assert m.ceiling(_config(name, batch_size=k)) == estimator.ceiling(k), (name, k)
    for name, cls in DATASETS.items():
        params = {"mi": 2.5} if name == "gaussian" else {}
        want = cls(cls.Params(**params)).true_mi if name in ("gaussian", "noniid-gaussian") else cls.true_mi
        assert m.true_mi(_config("nce", name, **params)) == want, name
