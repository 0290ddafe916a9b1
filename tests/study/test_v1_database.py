"""A study database written by mimax before the single trainer and the database layer (tests/fixtures/v1/db:
schema revision 0002, its driver SIGKILLed mid-study: one pack of 2 seeds completed, the other running with a
checkpoint at step 1000 of 3000) still analyses, shows its status and resumes.

Analysis and status only read it (the file stays byte-identical; at 0002 no trial has a ceiling, so there
is no ceiling line); the resume upgrades its schema (0003 backfills the ceilings) and completes the study.
The pack checkpoints were written by the old trainer: the resumed pack may continue from its checkpoint or
start again from step 0, but it must complete either way.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest

from engine_helpers import evaluations, optuna_trials, query, run, trials

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parents[1] / "fixtures" / "v1" / "db"
WRITTEN_AT = "/tmp/v1db"  # where the fixture was made: the absolute paths inside point there
STEPS = list(range(0, 3001, 500))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def v1(tmp_path) -> Path:
    """A copy of the fixture folder whose database names its own space file, results and checkpoints."""
    home = tmp_path / "v1db"
    shutil.copytree(FIXTURE, home)
    conn = sqlite3.connect(home / "v1.db")
    with conn:
        old, new = WRITTEN_AT, str(home)
        conn.execute("UPDATE mimax_studies SET space_source = replace(space_source, ?, ?), "
                     "results_dir = replace(results_dir, ?, ?)", (old, new, old, new))
        conn.execute("UPDATE mimax_trials SET checkpoint = replace(checkpoint, ?, ?)", (old, new))
    conn.close()
    return home


def test_a_v1_database_analyses_shows_its_status_and_resumes(v1):
    url = "sqlite:///v1.db"
    db = v1 / "v1.db"
    assert query(f"sqlite:///{db}", "SELECT version_num FROM mimax_alembic_version") == [("0002",)]
    before = sha(db)

    r = run("analyze", "v1", "--db", url, "--out", v1 / "report", "--n-boot", "50", "--json", cwd=v1)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["n_trials"], summary["n_completed"]) == (4, 2)
    assert "its ceiling" not in (v1 / "report" / "report.md").read_text()  # no trial recorded one at 0002
    r = run("status", "v1", "--db", url, cwd=v1)
    # its driver was SIGKILLed (tests/fixtures/v1/make_v1_db.py): the study still says running, its lease is stale
    assert r.returncode == 0 and "v1: driver gone" in r.stdout and "run `mimax resume v1`" in r.stdout, r.stderr
    r = run("status", "v1", "--db", url, "--json", cwd=v1)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert (status["total"], status["states"]["completed"], status["states"]["running"]) == (4, 2, 2)
    assert status["status"] == "running" and status["driver"] == "gone"
    assert sha(db) == before  # read, never written

    stored = {k: ts for k, ts in evaluations(f"sqlite:///{db}", "v1").items() if k[0].startswith("c0000")}
    r = run("resume", "v1", "--db", url, "--results-dir", "results", "--quiet", cwd=v1)
    assert r.returncode == 0, r.stderr[-3000:]

    url = f"sqlite:///{db}"
    assert query(url, "SELECT version_num FROM mimax_alembic_version") == [("0003",)]
    ts = trials(url, "v1")
    assert sorted(ts) == ["c0000-s0", "c0000-s1", "c0001-s0", "c0001-s1"]
    assert all(t["state"] == "completed" and t["last_step"] == 3000 for t in ts.values()), ts
    assert sorted(evaluations(url, "v1")) == sorted((k, s) for k in ts for s in STEPS)
    # The pack that had completed is left as it was; the other continued from its checkpoint at step 1000
    # or started again from 0 — written once per step either way.
    assert {k: v for k, v in evaluations(url, "v1").items() if k[0].startswith("c0000")} == stored
    assert [t.state for t in optuna_trials(url, "v1")] == [optuna.trial.TrialState.COMPLETE] * 2
    assert optuna.load_study(study_name="mimax:v1", storage=url).metric_names == ["probe_accuracy"]
    # 0003 backfilled each trial's ceiling from its config: log K for NCE (K = 64), none for NWJ.
    rows = dict(query(url, "SELECT t.trial_key, t.ceiling FROM mimax_trials t"))
    estimator = dict(query(url, "SELECT trial_key, config_json FROM mimax_trials"))
    for key, ceiling in rows.items():
        name = json.loads(estimator[key])["estimator"]["name"]
        assert ceiling == (pytest.approx(math.log(64)) if name == "nce" else None), key
    assert query(url, "SELECT status FROM mimax_studies") == [("completed",)]
    # ... and the analysis now draws and states NCE's ceiling (the line the analysis at 0002 had not).
    r = run("analyze", "v1", "--db", url, "--out", v1 / "after", "--n-boot", "50", "--no-importance", cwd=v1)
    assert r.returncode == 0, r.stderr
    assert f"its ceiling log K = {math.log(64):.3f} (K = 64)" in (v1 / "after" / "report.md").read_text()
