"""Schema migrations: a database written at revision 0001 is upgraded by Store(url) with its data kept,
and the models match the migrated schema exactly (Alembic's autogenerate comparison finds nothing),
on SQLite and PostgreSQL, with Optuna's tables in the same database.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from schema_at import upgrade_to

from mimax.study.models import Base
from mimax.study.store import MIGRATIONS, VERSION_TABLE, Store, StoreError

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


def test_two_revisions_ship():
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == ["0001", "0002"]
    assert script.get_current_head() == "0002"


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

    with pytest.raises(StoreError, match="revision 0001"):
        Store(db_url, create=False)  # a read-only open must not silently work on an old schema
    store = Store(db_url)
    assert store.schema_version() == "0002"
    study = store.require_study("old")
    assert (study["space_json"], study["directions"], study["status"], study["created_at"]) == (
        {"lr": [1, 2]}, ["maximize"], "interrupted", T0)
    (trial,) = store.trials("old")
    assert (trial["trial_key"], trial["config"], trial["checkpoint"], trial["last_step"], trial["checkpoint_step"]) == (
        "0-0", {"lr": 1, "seed": 0}, "/ck/0", 20, None)
    assert [(e["step"], e["bound_train"], e["loss"]) for e in store.evaluations("old")] == [
        (10, 1.5, -1.5), (20, 2.5, -2.5)]
    # the new column and table work
    store.update_trial("old", "0-0", checkpoint_step=20)
    store.record_environment("old", {"python": "3.11", "device": "cpu"}, session=1)
    assert store.trials("old")[0]["checkpoint_step"] == 20
    assert store.environments("old")[0]["device"] == "cpu"
    store.close()

    assert schema_diffs(db_url) == []
    # Optuna's study and its own version table are intact
    assert len(optuna.load_study(study_name="old-optuna", storage=db_url).trials) == 0
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM mimax_alembic_version")).all() == [("0002",)]
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() != "0002"
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
    with pytest.raises(StoreError, match="9999.*newer than this mimax"):
        Store(db_url)
