"""The per-configuration table (mimax.analysis.stats.configurations, configurations.csv, the JSON and text
of ``mimax analyze``) against an oracle of plain sqlite3, json and ``statistics`` loops."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import statistics

import pandas as pd
import pytest
from planted import planted_study

from mimax.analysis import stats as S
from mimax.analysis.load import load
from mimax.cli import main

FACTORS = ("critic.name", "estimator.name", "train.lr")
METRICS = ("probe_accuracy", "bound_test", "bound_train", "log_cond_p50")  # log_cond_p50: a metrics-JSON key
DEAD = ["c0005-s0", "c0005-s1", "c0005-s2"]  # every seed of configuration 5 fails: a row with n = 0


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("configurations") / "planted.db"
    url = f"sqlite:///{path}"
    planted_study(url, "grid", effect={"critic": {"concat": 0.05}}, params={"train.lr": [1e-4, 1e-3]}, seeds=3,
                  failed=["c0002-s1", *DEAD], seed=4)
    planted_study(url, "one", critics=(), estimators=(), seeds=4, seed=5)
    planted = planted_study(url, "late", critics=("bilinear", "concat"), estimators=("nce",), seeds=3, seed=6)
    _add_late_evaluations(url, "late", planted)
    return path, url


def _add_late_evaluations(url: str, name: str, planted) -> None:
    """One more evaluation after the planted last step: better than the planted final for seed 0, worse
    for the others, so "best" and "last" pick different evaluations."""
    from mimax.storage.store import Store

    rows = []
    for f in planted.finals:
        better = f["seed"] == 0
        rec = {"event": "eval", "step": 1500, "probe_accuracy": f["probe_accuracy"] + (0.02 if better else -0.03),
               "bound_test": 4.0 + f["seed"], "bound_train": 4.5 + f["seed"], "loss": -4.0, "wall_s": 9.0,
               "log_cond_p50": 5.0 - f["seed"], "replayed": False}
        rows.append({"trial_key": f["trial_key"], "step": 1500, "record": rec})
    store = Store(url)
    try:
        store.write_evaluations(name, rows)
    finally:
        store.close()


# ---- the oracle ----------------------------------------------------------------------------------


def oracle(path, study: str, how: str = "last", factors=FACTORS) -> dict[tuple, dict]:
    """Per configuration (the factors' values read from config_json): n and, per metric, the list of the
    final values of its completed trials, final = highest step ("last") or highest probe accuracy ("best")."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        trials = conn.execute(
            "SELECT t.id, t.state, t.config_json FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id "
            "WHERE s.name = ?", (study,)).fetchall()
        evals = conn.execute("SELECT trial_id, step, metrics FROM mimax_evaluations").fetchall()
    per_trial: dict[int, list] = {}
    for trial_id, step, metrics in evals:
        per_trial.setdefault(trial_id, []).append((step, json.loads(metrics)))
    out: dict[tuple, dict] = {}
    for trial_id, state, config in trials:
        config = json.loads(config)
        key = tuple(config[k.split(".")[0]][k.split(".")[1]] for k in factors)
        row = out.setdefault(key, {"n": 0, **{m: [] for m in METRICS}})
        if state != "completed":
            continue
        row["n"] += 1
        chosen = None
        for step, rec in per_trial[trial_id]:
            if chosen is None:
                chosen = (step, rec)
            elif how == "last" and step > chosen[0]:
                chosen = (step, rec)
            elif how == "best" and rec["probe_accuracy"] > chosen[1]["probe_accuracy"]:
                chosen = (step, rec)
        for m in METRICS:
            row[m].append(chosen[1][m])
    return out


def check_against_oracle(table: pd.DataFrame, expected: dict[tuple, dict], factors=FACTORS) -> None:
    assert len(table) == len(expected)
    assert [tuple(r) for r in table[list(factors)].itertuples(index=False)] == sorted(expected)
    for _, row in table.iterrows():
        want = expected[tuple(row[f] for f in factors)]
        assert row["n"] == want["n"]
        for m in METRICS:
            values = want[m]
            if not values:
                assert math.isnan(row[f"{m}_mean"]) and math.isnan(row[f"{m}_sd"])
                continue
            assert row[f"{m}_mean"] == pytest.approx(statistics.mean(values), rel=1e-12, abs=1e-15)
            if len(values) > 1:
                assert row[f"{m}_sd"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-15)
            else:
                assert math.isnan(row[f"{m}_sd"])


# ---- stats.configurations -------------------------------------------------------------------------


def test_means_and_sds_equal_the_oracle(db):
    path, url = db
    table = S.configurations(load(url, "grid"), n_boot=200)
    expected = oracle(path, "grid")
    assert len(expected) == 12
    check_against_oracle(table, expected)
    stats_cols = [f"{m}_{s}" for m in METRICS for s in ("mean", "sd", *(("ci_low", "ci_high")
                                                                           if m == "probe_accuracy" else ()))]
    assert list(table.columns) == [*FACTORS, "n", *stats_cols]  # no loss, wall_s, step, replayed


def test_n_counts_completed_trials_only(db):
    _, url = db
    table = S.configurations(load(url, "grid"), n_boot=0).set_index(list(FACTORS))
    assert table.loc[("bilinear", "nwj", 1e-4), "n"] == 2  # c0002: one of its three seeds failed
    dead = table.loc[("separable", "nce", 1e-3)]  # c0005: all failed, kept with n = 0
    assert dead["n"] == 0 and dead.drop("n").isna().all()
    assert table["n"].sum() == 36 - 1 - len(DEAD)


def test_the_objectives_bootstrap_ci(db):
    path, url = db
    data = load(url, "grid")
    table = S.configurations(data, n_boot=500, seed=3)
    expected = oracle(path, "grid")
    for _, row in table[table["n"] > 0].iterrows():
        values = expected[tuple(row[f] for f in FACTORS)]["probe_accuracy"]
        # a resampled mean lies between the smallest and largest value (up to rounding)
        eps = 1e-12
        assert min(values) - eps <= row["probe_accuracy_ci_low"] <= row["probe_accuracy_mean"]
        assert row["probe_accuracy_mean"] <= row["probe_accuracy_ci_high"] <= max(values) + eps
    assert table.equals(S.configurations(data, n_boot=500, seed=3))  # seeded
    other = S.configurations(data, n_boot=500, seed=4)
    assert not other["probe_accuracy_ci_low"].equals(table["probe_accuracy_ci_low"])
    assert S.configurations(data, n_boot=0)["probe_accuracy_ci_low"].isna().all()


@pytest.mark.parametrize("how", ["last", "best"])
def test_last_and_best_pick_the_oracles_evaluation(db, how):
    path, url = db
    factors = ("critic.name",)
    table = S.configurations(load(url, "late"), how=how, n_boot=0)
    expected = {k[:1]: v for k, v in oracle(path, "late", how, ("critic.name", "estimator.name")).items()}
    check_against_oracle(table, expected, factors)
    # "last": the late evaluation of every seed (log_cond_p50 5, 4, 3); "best": the late one of seed 0
    # only, the planted last step (log_cond_p50 3) of the others
    want = 4.0 if how == "last" else 11 / 3
    assert table["log_cond_p50_mean"].to_numpy() == pytest.approx([want, want], rel=1e-12)


def test_a_study_without_searched_parameters_has_one_row(db):
    path, url = db
    data = load(url, "one")
    assert data.factors == []
    table = S.configurations(data, n_boot=100)
    assert len(table) == 1 and table["n"].iloc[0] == 4
    assert list(table.columns[:2]) == ["n", "probe_accuracy_mean"]
    (only,) = oracle(path, "one", factors=()).values()
    assert table["probe_accuracy_mean"].iloc[0] == pytest.approx(statistics.mean(only["probe_accuracy"]), rel=1e-12)
    assert table["bound_test_sd"].iloc[0] == pytest.approx(statistics.stdev(only["bound_test"]), rel=1e-9)


# ---- mimax analyze ---------------------------------------------------------------------------------


def test_analyze_writes_the_table_and_prints_it(db, tmp_path, capsys):
    path, url = db
    out_dir = tmp_path / "r"
    assert main(["analyze", "grid", "--db", url, "--out", str(out_dir), "--json", "--n-boot", "300",
                 "--no-importance"]) == 0
    rows = json.loads(capsys.readouterr().out)["configurations"]
    csv = pd.read_csv(out_dir / "configurations.csv")
    assert list(csv.columns) == list(rows[0])
    assert len(csv) == len(rows) == 12
    for rec, (_, row) in zip(rows, csv.iterrows()):
        for col, value in rec.items():
            if value is None:
                assert pd.isna(row[col]), col  # NaN → null
            elif isinstance(value, float):
                assert row[col] == pytest.approx(value, rel=1e-12), col
            else:
                assert row[col] == value, col
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["configurations"] == rows

    html = (out_dir / "report.html").read_text(encoding="utf-8")
    md = (out_dir / "report.md").read_text(encoding="utf-8")
    assert html.index('id="configurations"') < html.index('id="states"')
    assert md.index("## Configurations") < md.index("## Trials by state")
    assert "probe_accuracy_95% CI" in md

    assert main(["analyze", "grid", "--db", url, "--out", str(out_dir), "--n-boot", "0", "--no-importance"]) == 0
    text = capsys.readouterr().out
    values = oracle(path, "grid")[("concat", "nce", 0.001)]
    acc, bound = values["probe_accuracy"], values["bound_test"]
    label = re.escape("critic.name=concat estimator.name=nce train.lr=0.001")
    values = re.escape(f"n=3  probe_accuracy {statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f}  "
                       f"bound_test {statistics.mean(bound):.3f} ± {statistics.stdev(bound):.3f}  bound_train ")
    assert re.search(label + " +" + values, text), text
    assert re.search(r"critic\.name=separable estimator\.name=nce train\.lr=0\.001 +n=0  probe_accuracy – ± –", text)
    assert "configurations.csv" in text
