"""``mimax analyze | export | compare`` through mimax.cli.main: output against plain SQL, files written,
the database untouched, and bad input as one ``mimax: error:`` line with exit code 2."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from planted import bare_study, database_at_revision, planted_study

from mimax.cli import main

ROOT = Path(__file__).resolve().parents[2]


def strict_json(text: str):
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "studies.db"
    url = f"sqlite:///{path}"
    planted_study(url, "main", effect={"critic": {"concat": 0.05}}, corr="monotone", seeds=3, failed=["c0002-s1"])
    planted_study(url, "again", effect={"critic": {"concat": 0.05}}, corr="monotone", seeds=3, seed=9)
    planted_study(url, "other", critics=("bilinear", "concat"), seeds=2)  # another space
    planted_study(url, "one-seed", seeds=1)
    planted_study(url, "lone", critics=("bilinear", "concat"), estimators=("nce",), seeds=1)
    planted_study(url, "dead", seeds=1, failed="all", optuna_study=False)
    planted_study(url, "pending", seeds=1, evaluations=False, optuna_study=False)
    bare_study(url, "empty")
    return path, url


def sql_level_means(path, study: str, section: str) -> dict:
    """Mean final probe accuracy and test bound and n per level of ``section``.name over completed trials."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            f"SELECT json_extract(t.config_json, '$.{section}.name'), avg(e.probe_accuracy), avg(e.bound_test), "
            "count(*) FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id "
            "JOIN mimax_evaluations e ON e.trial_id = t.id WHERE s.name = ? AND t.state = 'completed' "
            "AND e.step = (SELECT max(step) FROM mimax_evaluations WHERE trial_id = t.id) GROUP BY 1", (study,)
        ).fetchall()
    return {level: (acc, bound, n) for level, acc, bound, n in rows}


# ---- analyze -------------------------------------------------------------------------------------


def test_analyze_json_matches_sql(db, tmp_path, capsys):
    path, url = db
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    code, out, err = run(capsys, "analyze", "main", "--db", url, "--out", str(tmp_path / "r"), "--json",
                         "--n-boot", "500")
    assert code == 0, err
    s = strict_json(out)
    assert s["study"] == "main" and s["n_trials"] == 18
    assert set(s["factors"]) == {"critic", "estimator"}
    for factor in ("critic", "estimator"):
        oracle = sql_level_means(path, "main", factor)
        assert set(s["factors"][factor]) == set(oracle)
        for level, (acc, bound, n) in oracle.items():
            got = s["factors"][factor][level]
            assert got["accuracy_mean"] == pytest.approx(acc, rel=1e-12)
            assert got["bound_mean"] == pytest.approx(bound, rel=1e-12)
            assert got["n"] == n
    corr = s["bound_vs_accuracy"]
    assert corr["spearman"] == pytest.approx(1) and corr["kendall"] == pytest.approx(1)
    assert corr["ci_low"] == pytest.approx(1) and corr["ci_high"] == pytest.approx(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_analyze_writes_tables_and_report(db, tmp_path, capsys, monkeypatch):
    path, url = db
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIMAX_DB", url)  # the default database
    code, out, err = run(capsys, "analyze", "main", "--n-boot", "100")
    assert code == 0, err
    out_dir = tmp_path / "reports" / "main"
    assert "report: " in out and str(out_dir / "report.html") in out
    for name in ("trials", "evaluations", "final", "effects", "pairwise", "correlations", "anova"):
        assert (out_dir / f"{name}.csv").is_file(), name
    assert (out_dir / "report.html").is_file() and (out_dir / "report.md").is_file()
    with sqlite3.connect(path) as conn:
        n_evals = conn.execute("SELECT count(*) FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id "
                               "JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = 'main'").fetchone()[0]
    assert len(pd.read_csv(out_dir / "evaluations.csv")) == n_evals
    assert len(pd.read_csv(out_dir / "trials.csv")) == 18
    pairwise = pd.read_csv(out_dir / "pairwise.csv")
    acc = pairwise[(pairwise["metric"] == "probe_accuracy") & (pairwise["level_b"] == "concat")]
    assert (acc["ci_low"] > 0).all()  # the planted +5 points


def test_nan_becomes_null(db, tmp_path, capsys):
    _, url = db
    code, out, err = run(capsys, "analyze", "one-seed", "--db", url, "--out", str(tmp_path), "--json",
                         "--no-importance", "--n-boot", "0")
    assert code == 0, err
    s = strict_json(out)
    assert s["factors"]["critic"]["bilinear"]["n"] == 2
    assert s["bound_vs_accuracy"]["ci_low"] is None  # no bootstrap: NaN → null
    assert s["importance"]["reasons"]["fanova"].startswith("skipped")
    code, out, err = run(capsys, "analyze", "lone", "--db", url, "--out", str(tmp_path), "--json", "--n-boot", "10")
    assert code == 0, err
    s = strict_json(out)
    assert s["factors"]["critic"]["concat"]["n"] == 1 and s["factors"]["critic"]["concat"]["accuracy_sd"] is None
    assert "only one searched parameter" in s["importance"]["reasons"]["ped_anova"]


# ---- export and compare ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(db, tmp_path, capsys, fmt):
    path, url = db
    code, out, err = run(capsys, "export", "main", "--db", url, "--format", fmt, "--out", str(tmp_path))
    assert code == 0, err
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    trials, evals, final = (read(tmp_path / f"{n}.{fmt}") for n in ("trials", "evaluations", "final"))
    with sqlite3.connect(path) as conn:
        keys = [r[0] for r in conn.execute("SELECT trial_key FROM mimax_trials t JOIN mimax_studies s ON "
                                           "s.id = t.study_id WHERE s.name = 'main' ORDER BY t.id")]
    assert list(trials["trial_key"]) == keys == list(final["trial_key"])
    assert len(evals) == 17 * 3 + 1
    assert json.loads((tmp_path / "study.json").read_text())["factors"] == ["critic", "estimator"]


def test_compare_two_studies_of_one_space(db, capsys):
    _, url = db
    code, out, err = run(capsys, "compare", "main", "again", "--db", url, "--json", "--n-boot", "300")
    assert code == 0, err
    s = strict_json(out)
    assert s["studies"] == ["main", "again"]
    acc = [c for c in s["configs"] if c["metric"] == "probe_accuracy"]
    assert len(acc) == 6
    # Both studies planted the same configuration means: differences are 0 (except where a replicate of
    # "main" failed, which moves its mean a little) and every CI covers 0.
    for c in acc:
        if c["n_a"] == c["n_b"]:
            assert c["diff"] == pytest.approx(0, abs=1e-9)
        assert c["ci_low"] <= 0 <= c["ci_high"]
    assert {c["n_a"] for c in acc} == {2, 3} and {c["n_b"] for c in acc} == {3}
    code, out, err = run(capsys, "compare", "main", "again", "--db", url)
    assert code == 0 and "again − main" in out


# ---- bad input -----------------------------------------------------------------------------------


def one_line_error(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("mimax: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", [["analyze"], ["export", "--out", "/tmp/never"], ["compare", "main"]])
@pytest.mark.parametrize("study, needle", [
    ("nope", "unknown study 'nope'"),
    ("empty", "study 'empty' has no trials yet"),
    ("pending", "has no evaluations yet"),
    ("dead", "trials of study 'dead' failed"),
])
def test_bad_studies(db, capsys, command, study, needle):
    _, url = db
    verb, *rest = command
    argv = [verb, *rest[:1], study] if verb == "compare" else [verb, study, *rest]
    assert needle in one_line_error(capsys, *argv, "--db", url)


def test_compare_refuses_different_spaces(db, capsys):
    _, url = db
    assert "searched different spaces" in one_line_error(capsys, "compare", "main", "other", "--db", url)


def test_bad_databases(tmp_path, capsys):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert "no mimax tables" in one_line_error(capsys, "analyze", "x", "--db", f"sqlite:///{other}")
    assert "no database file" in one_line_error(capsys, "analyze", "x", "--db", f"sqlite:///{tmp_path}/none.db")
    err = one_line_error(capsys, "analyze", "x", "--db", "oracle://u:hunter2@h/db")
    assert "unsupported database" in err and "hunter2" not in err


@pytest.mark.parametrize("revision, needle", [
    ("0001", "unknown study 'x'"),  # an older schema is read as it is: here it has no study x
    ("9999", "revision 9999, newer than this mimax knows"),
])
def test_schema_revisions(tmp_path, capsys, revision, needle):
    path = tmp_path / "db.db"
    database_at_revision(f"sqlite:///{path}", "0001")
    if revision == "9999":
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE mimax_alembic_version SET version_num = '9999'")
    err = one_line_error(capsys, "analyze", "x", "--db", f"sqlite:///{path}")
    assert needle in err


# ---- a real study ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory):
    """`mimax launch tests/study/spaces/tiny-grid.yaml`: digits, 2 estimators × 2 seeds (≈20 s)."""
    tmp = tmp_path_factory.mktemp("real")
    url = f"sqlite:///{tmp / 'real.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mimax.cli", "launch", str(ROOT / "tests/study/spaces/tiny-grid.yaml"),
         "--name", "tiny", "--db", url, "--results-dir", str(tmp / "results"), "--quiet"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "real.db", url


@pytest.mark.slow
def test_real_study(tiny_grid, tmp_path, capsys):
    from mimax.analysis.load import final, load

    path, url = tiny_grid
    data = load(url, "tiny")
    assert data.factors == ["estimator"]
    assert len(data.trials) == 4 and (data.trials["state"] == "completed").all()
    assert set(final(data)["step"]) == {400}
    code, out, err = run(capsys, "analyze", "tiny", "--db", url, "--out", str(tmp_path), "--json",
                         "--n-boot", "200")
    assert code == 0, err
    s = strict_json(out)
    assert list(s["factors"]) == ["estimator"]
    oracle = sql_level_means(path, "tiny", "estimator")
    assert set(s["factors"]["estimator"]) == set(oracle) == {"nce", "nwj"}
    for level, (acc, bound, n) in oracle.items():
        assert s["factors"]["estimator"][level]["n"] == n == 2
        assert s["factors"]["estimator"][level]["accuracy_mean"] == pytest.approx(acc, rel=1e-12)
        assert s["factors"]["estimator"][level]["bound_mean"] == pytest.approx(bound, rel=1e-12)
    assert (tmp_path / "report.html").is_file()


def test_unwritable_output(db, tmp_path, capsys):
    _, url = db
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = one_line_error(capsys, "analyze", "main", "--db", url, "--out", str(blocker / "r"), "--n-boot", "10",
                         "--no-importance")
    assert "cannot write to" in err
