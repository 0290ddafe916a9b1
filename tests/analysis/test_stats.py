"""mimax.analysis.stats and importance against planted truths and brute-force oracles."""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from planted import planted_study
from scipy import stats as sps

from mimax.analysis import stats as S
from mimax.analysis.importance import importances
from mimax.analysis.load import load

EFFECT = {"critic": {"concat": 0.05}}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Three planted studies of the same space: a +5 point concat effect with a zero (U-shaped)
    bound–accuracy relation, the same effect with a monotone relation, and no effect at all."""
    path = tmp_path_factory.mktemp("stats") / "planted.db"
    url = f"sqlite:///{path}"
    planted_study(url, "zero", effect=EFFECT, corr="zero", failed=["c0003-s4"], seed=1)
    planted_study(url, "mono", effect=EFFECT, corr="monotone", seed=2)
    planted_study(url, "anti", corr="anti", seed=3)
    return path, url


@pytest.fixture(scope="module")
def zero(db):
    return load(db[1], "zero")


@pytest.fixture(scope="module")
def mono(db):
    return load(db[1], "mono")


def sql_finals(path, study: str) -> pd.DataFrame:
    """Independent oracle: the last evaluation of each completed trial, with plain SQL and json."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT t.trial_key, t.config_json, e.probe_accuracy, e.bound_test, e.bound_train FROM mimax_trials t "
            "JOIN mimax_studies s ON s.id = t.study_id JOIN mimax_evaluations e ON e.trial_id = t.id "
            "WHERE s.name = ? AND t.state = 'completed' AND e.step = "
            "(SELECT max(step) FROM mimax_evaluations WHERE trial_id = t.id)", (study,)).fetchall()
    out = []
    for key, config, acc, bound, bound_train in rows:
        config = json.loads(config)
        out.append({"trial_key": key, "critic": config["critic"]["name"], "estimator": config["estimator"]["name"],
                    "batch_size": config["train"]["batch_size"], "probe_accuracy": acc, "bound_test": bound,
                    "bound_train": bound_train})
    return pd.DataFrame(out)


# ---- effects and pairwise ------------------------------------------------------------------------


def test_effects_equal_a_brute_force_groupby(db, zero):
    oracle = sql_finals(db[0], "zero")
    eff = S.effects(zero, n_boot=200).set_index(["factor", "level", "metric"])
    assert len(eff) == (3 + 2) * 3
    for factor in ("critic", "estimator"):
        for metric in ("probe_accuracy", "bound_train", "bound_test"):
            g = oracle.groupby(factor)[metric]
            for level, mean in g.mean().items():
                row = eff.loc[(factor, level, metric)]
                assert row["mean"] == pytest.approx(mean, rel=1e-12)
                assert row["sd"] == pytest.approx(g.std(ddof=1)[level], rel=1e-9)
                assert row["n"] == g.count()[level]
                assert row["ci_low"] < row["mean"] < row["ci_high"]


def test_bootstrap_ci_matches_the_normal_theory_width(zero):
    # For a mean of n = 30 near-normal values, the percentile bootstrap CI is close to mean ± 1.96 sd/sqrt(n).
    eff = S.effects(zero, metric_cols=("bound_test",), n_boot=4000, seed=3)
    for _, row in eff[eff["factor"] == "estimator"].iterrows():
        half = 1.96 * row["sd"] * math.sqrt((row["n"] - 1) / row["n"]) / math.sqrt(row["n"])
        assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(half, rel=0.15)


def test_planted_critic_effect_is_found_and_null_pairs_cover_zero(zero):
    pw = S.pairwise(zero, metric_cols=("probe_accuracy",), n_boot=2000)
    assert len(pw) == 3 + 1  # 3 pairs of critics, 1 pair of estimators
    rows = {(r["level_a"], r["level_b"]): r for _, r in pw.iterrows()}
    up = rows[("bilinear", "concat")]
    assert up["diff"] == pytest.approx(0.05, abs=0.002)  # one failed replicate shifts it a little
    assert up["ci_low"] > 0.03 and up["ci_high"] < 0.07 and up["p_boot"] < 0.001
    down = rows[("concat", "separable")]
    assert down["ci_high"] < 0 and down["diff"] == pytest.approx(-0.05, abs=0.002)
    for null in (("bilinear", "separable"), ("nce", "nwj")):
        assert rows[null]["ci_low"] < 0 < rows[null]["ci_high"], rows[null]
        assert rows[null]["p_boot"] > 0.05


def test_pairwise_is_seeded(zero):
    a = S.pairwise(zero, n_boot=300, seed=5)
    b = S.pairwise(zero, n_boot=300, seed=5)
    c = S.pairwise(zero, n_boot=300, seed=6)
    assert a.equals(b) and not a.equals(c)


# ---- correlations --------------------------------------------------------------------------------


def brute_kendall(x, y) -> float:
    c = d = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        c += s > 0
        d += s < 0
    return (c - d) / (len(x) * (len(x) - 1) / 2)


def brute_spearman(x, y) -> float:
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_zero_correlation_has_a_ci_covering_zero(db, zero):
    corr = S.correlations(zero)
    overall = corr[corr["stratum"] == "all"].iloc[0]
    oracle = sql_finals(db[0], "zero")
    assert overall["n"] == len(oracle) == 59
    assert overall["spearman"] == pytest.approx(brute_spearman(oracle["bound_test"], oracle["probe_accuracy"]),
                                                abs=1e-12)
    assert overall["spearman"] == pytest.approx(0, abs=1e-12) and overall["kendall"] == pytest.approx(0, abs=1e-12)
    assert overall["ci_low"] < 0 < overall["ci_high"]


@pytest.mark.parametrize("name, sign", [("mono", 1), ("anti", -1)])
def test_monotone_relation_has_rank_correlation_one(db, name, sign):
    corr = S.correlations(load(db[1], name), n_boot=300)
    oracle = sql_finals(db[0], name)
    overall = corr[corr["stratum"] == "all"].iloc[0]
    assert brute_kendall(oracle["bound_test"].to_numpy(), oracle["probe_accuracy"].to_numpy()) == sign
    assert overall["spearman"] == pytest.approx(sign) and overall["kendall"] == pytest.approx(sign)
    # Every resample of a monotone relation is monotone too, and so is every stratum.
    assert overall["ci_low"] == pytest.approx(sign) and overall["ci_high"] == pytest.approx(sign)
    assert set(corr["stratum"]) == {"all", "estimator", "encoder", "critic"}
    assert np.allclose(corr["spearman"], sign) and np.allclose(corr["kendall"], sign)


def test_strata_rows_equal_scipy_within_each_level(db, zero):
    corr = S.correlations(zero, n_boot=0).set_index(["stratum", "level"])
    oracle = sql_finals(db[0], "zero")
    for critic, g in oracle.groupby("critic"):
        row = corr.loc[("critic", critic)]
        assert row["n"] == len(g)
        assert row["spearman"] == pytest.approx(brute_spearman(g["bound_test"], g["probe_accuracy"]), abs=1e-12)
        assert row["kendall"] == pytest.approx(sps.kendalltau(g["bound_test"], g["probe_accuracy"]).statistic)
        assert math.isnan(row["ci_low"])  # n_boot=0: no bootstrap


def test_ceiling_gap_is_log_batch_size_minus_the_nce_bound(db, zero):
    corr = S.correlations(zero, n_boot=0).set_index(["stratum", "level"])
    oracle = sql_finals(db[0], "zero")
    nce = oracle[oracle["estimator"] == "nce"]
    gap = (np.log(nce["batch_size"]) - nce["bound_test"]).mean()
    assert corr.loc[("all", "all"), "ceiling_gap"] == pytest.approx(gap)
    assert corr.loc[("all", "all"), "n_ceiling"] == len(nce)
    assert math.isnan(corr.loc[("estimator", "nwj"), "ceiling_gap"])
    for critic, g in nce.groupby("critic"):
        assert corr.loc[("critic", critic), "ceiling_gap"] == pytest.approx((np.log(64) - g["bound_test"]).mean())


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_spearman_equals_spearman_of_explicit_resamples(ties):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float) if ties else rng.normal(size=40)
    y = x + (rng.integers(0, 3, 40) if ties else rng.normal(size=40))
    fast = S.boot_spearman(x, y, 64, np.random.default_rng(11))
    weights = next(S._weights(np.random.default_rng(11), 40, 64))
    slow = [brute_spearman(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))) for w in weights]
    assert np.allclose(fast, slow, atol=1e-12)


# ---- ANOVA ---------------------------------------------------------------------------------------


def test_one_way_anova_against_hand_computed_sums_of_squares(db, zero):
    oracle = sql_finals(db[0], "zero")
    table = S.anova(zero)
    one = table[table["test"] == "one-way"].set_index("factor")
    y = oracle["probe_accuracy"]
    for factor in ("critic", "estimator"):
        groups = [g.to_numpy() for _, g in oracle.groupby(factor)["probe_accuracy"]]
        k, n = len(groups), len(y)
        ssb = sum(len(g) * (g.mean() - y.mean()) ** 2 for g in groups)
        ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
        F = (ssb / (k - 1)) / (ssw / (n - k))
        assert one.loc[factor, "F"] == pytest.approx(F, rel=1e-9)
        assert one.loc[factor, "p"] == pytest.approx(sps.f.sf(F, k - 1, n - k), rel=1e-6)
        assert one.loc[factor, "eta2"] == pytest.approx(ssb / (ssb + ssw), rel=1e-9)
    assert one.loc["critic", "p"] < 1e-10 and one.loc["estimator", "p"] > 0.05


def test_type_one_decomposition_adds_up(mono):
    # Balanced design (no failed trial): sequential SS of each factor equal its one-way SS, and all add up.
    table = S.anova(mono)
    seq = table[table["test"] == "type-I"].set_index("factor")
    one = table[table["test"] == "one-way"].set_index("factor")
    y = S.completed_finals(mono)["probe_accuracy"]
    assert seq["ss"].sum() == pytest.approx(((y - y.mean()) ** 2).sum(), rel=1e-9)
    for factor in ("critic", "estimator"):
        assert seq.loc[factor, "ss"] == pytest.approx(one.loc[factor, "ss"], rel=1e-9, abs=1e-15)
    assert seq.loc["residual", "df"] == 60 - 1 - 2 - 1


# ---- compare -------------------------------------------------------------------------------------


def test_compare_finds_the_planted_difference_per_configuration(db):
    a, b = load(db[1], "anti"), load(db[1], "mono")  # same space; only mono has the +5 concat effect
    table = S.compare(a, b, metric_cols=("probe_accuracy",), n_boot=1000)
    assert len(table) == 6
    for _, row in table.iterrows():
        if row["critic"] == "concat":
            assert row["diff"] == pytest.approx(0.05, abs=1e-9) and row["ci_low"] > 0
        else:
            assert row["diff"] == pytest.approx(0, abs=1e-9) and row["ci_low"] < 0 < row["ci_high"]
        assert row["n_a"] == row["n_b"] == 10


# ---- importance ----------------------------------------------------------------------------------


def test_fanova_ranks_the_planted_factor_first(db):
    imp = importances(db[1], "zero")
    assert set(imp["fanova"]) == {"critic.name", "estimator.name"}
    assert imp["fanova"]["critic.name"] > 0.9
    assert "fanova" not in imp["reasons"]


def _ped_anova_of_a_3x2_grid(value) -> dict:
    """Optuna's own PED-ANOVA on a 3 × 2 grid (in memory) whose objective is ``value(critic, estimator, rng)``."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = {"critic.name": ["bilinear", "separable", "concat"], "estimator.name": ["nce", "nwj"]}
    dists = {k: CategoricalDistribution(v) for k, v in grid.items()}
    study, rng = optuna.create_study(direction="maximize"), np.random.default_rng(0)
    for c, e in itertools.product(*grid.values()):
        study.add_trial(optuna.trial.create_trial(params={"critic.name": c, "estimator.name": e}, distributions=dists,
                                                  value=value(c, e, rng)))
    return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())


def test_ped_anova_is_not_shown_on_a_3x2_grid_where_it_cannot_tell_studies_apart(db, tmp_path, capsys):
    """On a 3 × 2 grid Optuna's PED-ANOVA gives the same numbers when the critic decides the objective,
    when the estimator does and when noise does: a statistic that cannot tell them apart is omitted, with
    the reason, while fANOVA (which can) still ranks the planted factor first."""
    from mimax.cli import main

    seen = [_ped_anova_of_a_3x2_grid(f) for f in (
        lambda c, e, rng: (c == "concat") + 0.01 * rng.standard_normal(),
        lambda c, e, rng: (e == "nwj") + 0.01 * rng.standard_normal(),
        lambda c, e, rng: rng.standard_normal())]
    assert seen[0] == pytest.approx(seen[1]) and seen[0] == pytest.approx(seen[2])  # blind to the data
    imp = importances(db[1], "zero")
    assert imp["ped_anova"] == {}
    assert imp["reasons"]["ped_anova"].startswith("omitted: 6 distinct configurations; PED-ANOVA compares the top "
                                                  "10 % of them with the rest and needs at least 50")
    assert main(["analyze", "zero", "--db", db[1], "--out", str(tmp_path), "--n-boot", "0"]) == 0
    printed = capsys.readouterr().out + (tmp_path / "report.md").read_text()
    assert "importance (ped_anova): none (omitted: 6 distinct configurations" in printed
    assert "PED-ANOVA importance" not in printed and "| ped_anova" not in printed and "ped_anova |" not in printed
    assert re.search(r"importance \(fanova\): critic\.name 0\.9\d, estimator\.name 0\.0\d", printed), printed


def test_where_one_factor_decides_both_importances_rank_it_first(tmp_path):
    """54 configurations (3 critics × 2 estimators × 9 learning rates), only the critic matters: with
    enough configurations PED-ANOVA is computed, and it and fANOVA both put the critic first."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    lrs = [1e-4 * 2**i for i in range(9)]
    planted_study(url, "big", params={"train.lr": lrs}, seeds=1, effect={"critic": {"concat": 0.05}},
                  steps=(0, 10), noise=0.0)
    imp = importances(url, "big")
    for method in ("ped_anova", "fanova"):
        ranked = sorted(imp[method], key=imp[method].get, reverse=True)
        assert ranked[0] == "critic.name", (method, imp[method])
        assert imp[method]["critic.name"] > 0.5 and sum(imp[method].values()) == pytest.approx(1)
    assert imp["reasons"] == {}


def test_importance_without_enough_trials_or_params(tmp_path):
    url = f"sqlite:///{tmp_path / 'few.db'}"
    planted_study(url, "one", critics=("bilinear",), estimators=("nce",), seeds=2)
    planted_study(url, "single", critics=("bilinear", "concat"), estimators=("nce",), seeds=2)
    planted_study(url, "no-optuna", seeds=1, optuna_study=False)
    for name, needle in [("one", "at least 2 completed"), ("single", "only one searched parameter varies"),
                         ("no-optuna", "no readable Optuna study 'mimax:no-optuna'")]:
        imp = importances(url, name)
        assert imp["ped_anova"] == imp["fanova"] == {}
        assert needle in imp["reasons"]["ped_anova"] and needle in imp["reasons"]["fanova"]


# ---- missing values and numeric factors ------------------------------------------------------------


def test_effects_with_a_metric_missing_for_some_trials(db, zero):
    """Adversarial-mode trials have no bound: means and n are over the trials that have the metric,
    and the resampled means stay finite."""
    import dataclasses

    ev = zero.evaluations.copy()
    gone = ev["trial_key"].str.endswith(("-s0", "-s1", "-s2"))
    ev.loc[gone, "bound_test"] = np.nan
    data = dataclasses.replace(zero, evaluations=ev)
    oracle = sql_finals(db[0], "zero")
    oracle = oracle[~oracle["trial_key"].str.endswith(("-s0", "-s1", "-s2"))]
    eff = S.effects(data, metric_cols=("bound_test", "probe_accuracy"), n_boot=300).set_index(
        ["factor", "level", "metric"])
    for critic, g in oracle.groupby("critic"):
        row = eff.loc[("critic", critic, "bound_test")]
        assert row["n"] == len(g) and row["mean"] == pytest.approx(g["bound_test"].mean())
        assert np.isfinite(row["ci_low"]) and row["ci_low"] < row["mean"] < row["ci_high"]
        assert eff.loc[("critic", critic, "probe_accuracy"), "n"] >= 19  # untouched metric keeps its trials


def test_a_sampled_numeric_factor_is_cut_into_quantile_bins(tmp_path):
    url = f"sqlite:///{tmp_path / 'lr.db'}"
    lrs = [round(1e-4 * 1.6**i, 8) for i in range(10)]
    planted_study(url, "lr", critics=(), estimators=("nce",), params={"train.lr": lrs}, seeds=2,
                  optuna_study=False)
    data = load(url, "lr")
    assert data.factors == ["train.lr"]
    eff = S.effects(data, metric_cols=("probe_accuracy",), n_boot=50)
    assert len(eff) == S.N_BINS and eff["n"].sum() == 20
    for label in eff["level"]:
        lo, hi = (float(v) for v in label.strip("[]").split(", "))
        inside = [lr for lr in lrs if lo <= lr <= hi]
        assert inside, label
