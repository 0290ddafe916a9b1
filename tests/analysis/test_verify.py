"""``mimax verify``: planted-truth databases get the right verdicts (a claim that holds, one that fails,
one that 2 seeds cannot decide, one that Holm's adjustment turns inconclusive, one read before its
endpoint, checks apart); the numbers match independent oracles (pandas means over the database, the
pooled two-sample t-test, Welch's, scipy's paired t-test, scipy's t distribution, statsmodels' power, an
exhaustive permutation test, a brute-force Holm loop); malformed claims files are one line and exit 2;
the shipped paper claims run on a database shaped like the reference one. The error rates over many
synthetic studies are in test_verify_error_rates.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted import planted_study
from planted_paper import CHECKS, EXPECTED, write_paper_studies
from planted_paper import z as unit_noise
from scipy import stats as sps

from mimax.analysis.claims import evidence as E
from mimax.analysis.claims import load_claims, verify
from mimax.analysis.claims.verify import family_of
from mimax.cli import main

ROOT = Path(__file__).resolve().parents[2]
SD = 0.01  # seed noise of the planted accuracies (exactly this sample sd within every configuration)


def exact(means: dict, seeds: int, sd: float = SD, metric: str = "probe_accuracy"):
    """A record hook: final ``metric`` = means[(critic, estimator)] + sd · z(seed), where z has mean 0 and
    sd 1 over the seeds; means keys may also be (critic, estimator, lr)."""
    def rec(lv, seed, step, frac):
        key = tuple(lv[k] for k in ("critic", "estimator", "train.lr") if k in lv)
        final = means[key] + sd * unit_noise(seed, seeds)
        return {metric: 0.1 + (final - 0.1) * frac}
    return rec


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "claims.db"
    url = f"sqlite:///{path}"
    crit = {("bilinear", "nce"): 0.86, ("bilinear", "nwj"): 0.85, ("separable", "nce"): 0.84,
            ("separable", "nwj"): 0.84, ("concat", "nce"): 0.76, ("concat", "nwj"): 0.75}
    planted_study(url, "truth", seeds=5, record=exact(crit, 5), optuna_study=False)
    small = {("bilinear", "nce"): 0.81, ("concat", "nce"): 0.80}  # +0.01 against a seed sd of 0.005
    planted_study(url, "two-seeds", critics=("bilinear", "concat"), estimators=("nce",), seeds=2,
                  record=exact(small, 2, sd=0.005), optuna_study=False)
    planted_study(url, "ten-seeds", critics=("bilinear", "concat"), estimators=("nce",), seeds=10,
                  record=exact(small, 10, sd=0.005), optuna_study=False)
    # Holm: at lr 1e-4 bilinear − concat = 1.83 sd (Welch p ≈ 0.01 with 5 seeds), elsewhere exactly 0.
    lrs = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4]
    holm = {(c, "nce", lr): 0.80 + (0.0183 if (c, lr) == ("bilinear", 1e-4) else 0.0)
            for c in ("bilinear", "concat") for lr in lrs}
    planted_study(url, "holm", critics=("bilinear", "concat"), estimators=("nce",), params={"train.lr": lrs},
                  seeds=5, record=exact(holm, 5), optuna_study=False)

    def bounds(lv, seed, step, frac):  # one NCE value above log 64 = 4.159: bilinear, seed 1, step 500
        over = lv["critic"] == "bilinear" and lv["estimator"] == "nce" and seed == 1 and step == 500
        return {"bound_test": 4.2 if over else 3.0}

    planted_study(url, "bounds", seeds=3, record=bounds, optuna_study=False)
    planted_study(url, "nocorr", seeds=4, corr="zero", optuna_study=False)
    planted_study(url, "mono", seeds=4, corr="monotone", optuna_study=False)
    planted_study(url, "partial", critics=("bilinear", "concat"), estimators=("nce",), seeds=3,
                  failed=["c0000-s2"], optuna_study=False)  # fails after its step-0 evaluation
    return path, url


def claims_file(tmp_path: Path, *claims: str, head: str = "") -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(head + "claims:\n" + "".join(claims))
    return path


def claim(cid: str, study: str, test: str, metric: str = "probe_accuracy", extra: str = "") -> str:
    return f"  - {{id: {cid}, finding: f, study: {study}, metric: {metric}, {test}{', ' + extra if extra else ''}}}\n"


def run_verify(url: str, tmp_path: Path, *claims: str, n_boot: int = 4000):
    parsed, source = load_claims(str(claims_file(tmp_path, *claims)))
    return verify(parsed, source, url, n_boot=n_boot)


def finals(path, study: str, metric: str = "probe_accuracy") -> list[dict]:
    """Oracle: each completed trial's last evaluation, read with plain SQL."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT t.trial_key, t.replicate_group, json_extract(t.config_json, '$.critic.name'), "
            "json_extract(t.config_json, '$.estimator.name'), json_extract(t.config_json, '$.train.lr'), "
            "json_extract(e.metrics, ?) FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id "
            "JOIN mimax_evaluations e ON e.trial_id = t.id WHERE s.name = ? AND t.state = 'completed' "
            "AND e.step = (SELECT max(step) FROM mimax_evaluations WHERE trial_id = t.id)",
            (f'$."{metric}"', study)).fetchall()
    return [dict(zip(("key", "config", "critic", "estimator", "lr", "value"), r)) for r in rows]


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    return math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


# ---- the four planted truths ------------------------------------------------------------------------


def test_a_true_claim_holds_and_a_false_one_fails(db, tmp_path):
    path, _ = db
    order = "order: {{factor: critic, a: {a}, op: '>', b: {b}}}"
    res = run_verify(db[1], tmp_path, claim("right", "truth", order.format(a="bilinear", b="concat")),
                     claim("wrong", "truth", order.format(a="concat", b="bilinear")),
                     claim("right-per", "truth", order.format(a="separable", b="concat"), extra="per: [estimator]"))
    got = {d.claim.id: d for d in res.verdicts}
    assert {k: d.verdict for k, d in got.items()} == {"right": "holds", "wrong": "fails", "right-per": "holds"}
    # Oracle: the level mean is the mean of its configurations' means (each over its seeds).
    rows = finals(path, "truth")
    conf = {}
    for r in rows:
        conf.setdefault((r["critic"], r["estimator"]), []).append(r["value"])
    level = {c: np.mean([np.mean(conf[(c, e)]) for e in ("nce", "nwj")]) for c in ("bilinear", "concat")}
    assert got["right"].test.estimate == pytest.approx(level["bilinear"] - level["concat"], abs=1e-12)
    assert got["wrong"].test.estimate == pytest.approx(level["concat"] - level["bilinear"], abs=1e-12)
    assert got["right"].test.n == 20 and got["right-per"].test.n == 10
    lo, hi = got["right"].test.ci
    assert lo < got["right"].test.estimate < hi and lo > 0
    assert got["right"].p_holds < 1e-6 and got["wrong"].p_fails < 1e-6
    # The per-estimator claim reports its least favourable stratum: nwj (0.84 − 0.75 = +0.09 > nce's +0.08)
    # is more favourable, so nce (+0.08) is shown.
    assert [s.label for s in got["right-per"].strata] == ["estimator=nce", "estimator=nwj"]
    assert got["right-per"].test.estimate == pytest.approx(0.08, abs=1e-9)


def test_two_seeds_cannot_decide_what_ten_seeds_can(db, tmp_path):
    order = "order: {factor: critic, a: bilinear, op: '>', b: concat}"
    res = run_verify(db[1], tmp_path, claim("two", "two-seeds", order), claim("ten", "ten-seeds", order))
    two, ten = res.verdicts
    assert two.verdict == "inconclusive" and ten.verdict == "holds"
    assert two.test.estimate == pytest.approx(0.01) == ten.test.estimate
    # The two seeds of each critic do not overlap (0.8135, 0.8065 vs 0.8035, 0.7965): a plain percentile
    # bootstrap would put every resampled difference above 0 and call the claim proven.
    vals = {c: np.array([r["value"] for r in finals(db[0], "two-seeds") if r["critic"] == c])
            for c in ("bilinear", "concat")}
    assert len(vals["bilinear"]) == 2 and vals["bilinear"].min() > vals["concat"].max()
    assert two.test.ci[0] < 0 < two.test.ci[1]
    # With 1 + 1 degrees of freedom Welch's t is 2 on df 2: p = 0.09 before Holm.
    se, df = welch(vals["bilinear"], vals["concat"])
    assert two.test.df == pytest.approx(df) and df == pytest.approx(2.0)
    assert two.strata[0].test.p_holds == pytest.approx(sps.t.sf(0.01 / se, df), rel=0.05)


def test_holm_turns_a_lone_success_into_inconclusive_among_five(db, tmp_path):
    lone = claim("lr1", "holm", "order: {factor: critic, a: bilinear, op: '>', b: concat}", extra="where: {train.lr: 0.0001}")
    alone = run_verify(db[1], tmp_path, lone)
    assert alone.verdicts[0].verdict == "holds"
    p = alone.verdicts[0].p_holds
    assert 0.005 < p < 0.0125 and alone.verdicts[0].p_holds_holm == p  # a family of one
    others = [claim(f"lr{i}", "holm", "order: {factor: critic, a: bilinear, op: '>', b: concat}",
                    extra=f"where: {{train.lr: {lr}}}") for i, lr in ((2, 0.0002), (3, 0.0003), (4, 0.0004), (5, 0.0005))]
    strong = claim("strong", "truth", "order: {factor: critic, a: bilinear, op: '>', b: concat}")
    res = run_verify(db[1], tmp_path, lone, *others, strong)
    got = {d.claim.id: d for d in res.verdicts}
    assert got["lr1"].p_holds == p  # the same numbers whatever else is in the file
    assert got["lr1"].verdict == "inconclusive" and got["strong"].verdict == "holds"
    assert all(got[f"lr{i}"].verdict == "inconclusive" for i in range(2, 6))
    # Oracle: Holm by its definition, a step-down loop over the sorted raw p-values.
    raw = [d.p_holds for d in res.verdicts]
    order = np.argsort(raw)
    m, running, adjusted = len(raw), 0.0, [0.0] * len(raw)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * raw[i]))
        adjusted[i] = running
    assert [d.p_holds_holm for d in res.verdicts] == pytest.approx(adjusted)
    assert got["lr1"].p_holds_holm == pytest.approx(5 * p)  # second smallest of 6: times 5
    # An exempt claim is decided alone, at the unadjusted level, and leaves the family.
    exempt = lone.replace("}\n", ", exempt: 'a pre-registered primary claim'}\n")
    res = run_verify(db[1], tmp_path, exempt, *others, strong)
    got = {d.claim.id: d for d in res.verdicts}
    assert got["lr1"].verdict == "holds" and got["lr1"].p_holds_holm is None
    assert "exempt from Holm" in got["lr1"].reason


def test_order_is_the_pooled_two_sample_t_test_on_one_configuration_per_level(db, tmp_path):
    res = run_verify(db[1], tmp_path, claim("w", "holm", "order: {factor: critic, a: bilinear, op: '>', b: concat}",
                                     extra="where: {train.lr: 0.0001}"))
    d = res.verdicts[0]
    rows = [r for r in finals(db[0], "holm") if r["lr"] == 1e-4]
    a = np.array([r["value"] for r in rows if r["critic"] == "bilinear"])
    b = np.array([r["value"] for r in rows if r["critic"] == "concat"])
    t = sps.ttest_ind(a, b, equal_var=True, alternative="greater")  # the oracle: scipy's pooled t-test
    assert d.test.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert d.test.df == len(a) + len(b) - 2
    assert d.p_holds == pytest.approx(t.pvalue, rel=1e-9)
    half = sps.t.ppf(0.975, d.test.df) * d.test.se
    assert d.test.ci == pytest.approx((d.test.estimate - half, d.test.estimate + half))


def test_the_variance_is_pooled_over_every_configuration_the_claim_selects(db, tmp_path):
    """bilinear > concat where lr = 1e-4 reads two configurations; without the where clause the model
    has all ten (two critics × five rates): the contrast averages the rates, the df grow to 50 − 10."""
    res = run_verify(db[1], tmp_path, claim("all", "holm", "order: {factor: critic, a: bilinear, op: '>', b: concat}"),
                     claim("welch", "holm", "order: {factor: critic, a: bilinear, op: '>', b: concat}",
                           extra="where: {train.lr: 0.0001}, pool: none"))
    full, welch_ = res.verdicts
    rows = finals(db[0], "holm")
    groups = {}
    for r in rows:
        groups.setdefault((r["critic"], r["lr"]), []).append(r["value"])
    resid = np.concatenate([np.array(v) - np.mean(v) for v in groups.values()])
    sigma2 = resid @ resid / (len(rows) - len(groups))  # the oracle: residual variance by hand
    means = {k: np.mean(v) for k, v in groups.items()}
    diff = np.mean([means[("bilinear", lr)] - means[("concat", lr)] for lr in {k[1] for k in groups}])
    assert full.test.df == len(rows) - len(groups) == 40
    assert full.test.estimate == pytest.approx(diff, abs=1e-12)
    assert full.test.se == pytest.approx(math.sqrt(sigma2 * 10 / 5 / 25), rel=1e-9)  # 10 cells of 5, w = ±1/5
    assert full.seeds == 5 and len(full.configs) == 10
    a = np.array(groups[("bilinear", 1e-4)])
    b = np.array(groups[("concat", 1e-4)])
    se, df = welch(a, b)  # pool: none is Welch's test
    assert welch_.test.se == pytest.approx(se, rel=1e-9) and welch_.test.df == pytest.approx(df)


def test_pair_by_seed_is_the_paired_t_test_for_two_configurations(tmp_path):
    """A seed effect shared by both configurations: pairing removes it (scipy's ttest_rel is the oracle)
    and decides what the unpaired test cannot."""
    url = f"sqlite:///{tmp_path / 'paired.db'}"
    shared = [0.3, -0.2, 0.5, -0.4, 0.1, -0.3]

    def rec(lv, seed, step, frac):
        own = 0.02 * (((seed * 7 + (2 if lv["critic"] == "concat" else 0)) % 5) - 2)  # each configuration's own
        value = 5.0 + (0.1 if lv["critic"] == "concat" else 0.0) + shared[seed] + own
        return {"bound_test": value * frac}

    planted_study(url, "p", critics=("bilinear", "concat"), estimators=("nwj",), seeds=6, record=rec,
                  optuna_study=False)
    test = "order: {factor: critic, a: concat, op: '>', b: bilinear}"
    res = run_verify(url, tmp_path, claim("paired", "p", test, metric="bound_test", extra="pair: seed, family: a"),
                     claim("unpaired", "p", test, metric="bound_test", extra="family: b"))
    paired, unpaired = res.verdicts
    rows = finals(tmp_path / "paired.db", "p", "bound_test")
    by = {c: [r["value"] for r in sorted(rows, key=lambda r: r["key"]) if r["critic"] == c] for c in ("concat", "bilinear")}
    oracle = sps.ttest_rel(by["concat"], by["bilinear"], alternative="greater")
    assert paired.test.df == 5 and paired.p_holds == pytest.approx(oracle.pvalue, rel=1e-9)
    assert paired.verdict == "holds" and unpaired.verdict == "inconclusive"


def test_a_claim_read_before_its_endpoint_is_untestable_and_leaves_holm(db, tmp_path):
    """The truth study trains 1,000 steps: a claim about step 5,000 is untestable, shows the value at
    step 1,000, is not tested and does not enlarge Holm's family; one about the study's end is tested."""
    order = "order: {factor: critic, a: bilinear, op: '>', b: concat}"
    res = run_verify(db[1], tmp_path, claim("late", "truth", order, extra="endpoint: {step: 5000}"),
                     claim("now", "truth", order, extra="endpoint: study"),
                     claim("lr1", "holm", order, extra="where: {train.lr: 0.0001}"))
    late, now, lr1 = res.verdicts
    assert late.verdict == "untestable" and late.p_holds_holm is None and late.n_needed is None
    assert (late.endpoint, late.read_at) == (5000, 1000)
    assert "stops at step 1000, before the claim's endpoint 5000" in late.reason
    assert late.test.estimate == pytest.approx(now.test.estimate)  # the value at the last step, shown
    assert now.verdict == "holds" and now.p_holds_holm == pytest.approx(2 * now.p_holds)  # a family of 2
    assert lr1.p_holds_holm == pytest.approx(max(lr1.p_holds, now.p_holds_holm))
    assert res.counts()["untestable"] == 1 and res.families()[0]["size"] == 2


def test_diverged_trials_are_excluded_and_counted(tmp_path):
    url = f"sqlite:///{tmp_path / 'div.db'}"

    def rec(lv, seed, step, frac):
        bound = -42.0 if (lv["critic"], seed) == ("concat", 2) else 3.0
        acc = (0.85 if lv["critic"] == "bilinear" else 0.80) + 0.002 * (seed - 1.5) + (
            -0.3 if bound < -10 else 0.0)
        return {"probe_accuracy": 0.1 + (acc - 0.1) * frac, "bound_test": bound * frac}

    planted_study(url, "d", critics=("bilinear", "concat"), estimators=("nwj",), seeds=4, record=rec,
                  optuna_study=False)
    line = claim("c", "d", "order: {factor: critic, a: bilinear, op: '>', b: concat}")
    parsed, source = load_claims(str(claims_file(tmp_path, line, head="diverged: {metric: bound_test, below: -10}\n")))
    with_rule = verify(parsed, source, url, n_boot=200).verdicts[0]
    parsed, source = load_claims(str(claims_file(tmp_path, line)))
    without = verify(parsed, source, url, n_boot=200).verdicts[0]
    assert with_rule.excluded == 1 and with_rule.test.n == 7 and without.excluded == 0 and without.test.n == 8
    assert with_rule.test.estimate == pytest.approx(0.85 - (0.80 + 0.002 * np.mean([-1.5, -0.5, 1.5])), abs=1e-9)
    assert without.test.estimate > with_rule.test.estimate + 0.05  # the diverged seed's −0.3 moved it


def test_families_are_finding_by_probe_with_declared_ones_apart(db, tmp_path):
    order = "order: {factor: critic, a: bilinear, op: '>', b: concat}"
    head = "primary_probe: sklearn\n"
    lines = [claim("a.sklearn", "truth", order), claim("a.torch", "truth", order),
             claim("b", "truth", order, extra="family: beyond"), claim("c", "truth", order)]
    lines = [lines[0].replace("probe_accuracy", "probe_accuracy.sklearn"),
             lines[1].replace("probe_accuracy", "probe_accuracy.torch"), lines[2], lines[3]]
    parsed, source = load_claims(str(claims_file(tmp_path, *lines, head=head)))
    assert {c.id: family_of(c, parsed.primary_probe) for c in parsed.claims} == {
        "a.sklearn": "f", "a.torch": "f · probe torch", "b": "beyond", "c": "f"}


def test_n_needed_is_the_seeds_for_80_percent_power_at_the_observed_effect(db, tmp_path):
    """Two configurations, pooled: the two-sample t-test, whose power statsmodels computes (the oracle).
    The ten-seeds study's +0.01 at sd 0.005 is decided; the two-seeds one is open and asks for n."""
    from statsmodels.stats.power import TTestIndPower

    res = run_verify(db[1], tmp_path, claim("two", "two-seeds", "order: {factor: critic, a: bilinear, op: '>', b: concat}"))
    d = res.verdicts[0]
    assert d.verdict == "inconclusive" and d.seeds == 2
    effect = d.test.estimate / d.test.sd  # Cohen's d at the pooled sd
    n = TTestIndPower().solve_power(effect_size=effect, alpha=0.025, power=0.8, alternative="larger")
    assert d.n_needed == math.ceil(n - 1e-9)
    assert d.as_dict()["n_needed"] == d.n_needed


def test_a_lead_of_at_least_by(db, tmp_path):
    """"bilinear beats concat by at least 0.05" (truth: +0.095 over the estimators) holds; by 0.2 fails."""
    res = run_verify(db[1], tmp_path,
                     claim("by5", "truth", "order: {factor: critic, a: bilinear, op: '>', b: concat, by: 0.05}"),
                     claim("by20", "truth", "order: {factor: critic, a: bilinear, op: '>', b: concat, by: 0.2}"),
                     claim("below", "truth", "order: {factor: critic, a: concat, op: '<', b: bilinear, by: 0.05}"))
    assert [d.verdict for d in res.verdicts] == ["holds", "fails", "holds"]
    assert "+ 0.05" in res.verdicts[0].statement and "− 0.05" in res.verdicts[2].statement


def test_minus_reads_the_difference_of_two_metrics_per_evaluation(tmp_path):
    url = f"sqlite:///{tmp_path / 'gap.db'}"

    def rec(lv, seed, step, frac):
        gap = 0.10 if lv["critic"] == "concat" else 0.02
        torch_ = 0.85 + 0.003 * (seed - 1)
        return {"probe_accuracy.torch": torch_, "probe_accuracy.sklearn": torch_ - gap - 0.001 * seed}

    planted_study(url, "g", critics=("bilinear", "concat"), estimators=("nwj",), seeds=3, record=rec,
                  optuna_study=False)
    res = run_verify(url, tmp_path, claim("gap", "g", "order: {factor: critic, a: concat, op: '>', b: bilinear}",
                                          metric="probe_accuracy.torch", extra="minus: probe_accuracy.sklearn"))
    d = res.verdicts[0]
    assert d.test.estimate == pytest.approx(0.08, abs=1e-9) and d.verdict == "holds"
    assert "probe_accuracy.torch − probe_accuracy.sklearn" in d.statement


# ---- the other tests -------------------------------------------------------------------------------------


def test_versus_a_constant_another_study_and_the_same_trials(db, tmp_path):
    res = run_verify(
        db[1], tmp_path,
        claim("const", "truth", "versus: {op: '~', value: 0.755, tol: 0.02}", extra="where: {critic: concat}"),
        claim("below", "truth", "versus: {op: '<', value: 0.8}", extra="where: {critic: concat}, per: estimator"),
        claim("other", "ten-seeds", "versus: {op: '>', study: truth, where: {critic: concat}}",
              extra="where: {critic: bilinear}"),
        claim("rise", "truth", "versus: {op: '>', at: {step: 0}}"),
        claim("margin", "truth", "versus: {op: '>=', value: 0.77, margin: 0.03}", extra="where: {critic: concat}"),
    )
    got = {d.claim.id: d for d in res.verdicts}
    assert {k: d.verdict for k, d in got.items()} == {"const": "holds", "below": "holds", "other": "holds",
                                                        "rise": "holds", "margin": "holds"}
    assert got["const"].test.estimate == pytest.approx(0.755 - 0.755, abs=1e-12)
    assert got["other"].test.estimate == pytest.approx(0.81 - 0.755)
    assert got["other"].test.n == 10 + 10
    # Paired: the final accuracy minus step 0's (0.1 in every planted trial), averaged over configurations.
    assert got["rise"].test.estimate == pytest.approx(np.mean([0.86, 0.85, 0.84, 0.84, 0.76, 0.75]) - 0.1)
    assert got["margin"].test.estimate == pytest.approx(0.755 - 0.77)


def test_bound_is_a_census_of_every_evaluation(db, tmp_path):
    res = run_verify(
        db[1], tmp_path,
        claim("nce", "bounds", "bound: {at_most: ceiling}", metric="bound_test", extra="where: {estimator: nce}"),
        claim("concat", "bounds", "bound: {at_most: ceiling}", metric="bound_test",
              extra="where: {estimator: nce, critic: concat}"),
        claim("five", "bounds", "bound: {at_most: 5}", metric="bound_test"),
        claim("final", "bounds", "bound: {at_most: ceiling}", metric="bound_test", extra="where: {estimator: nce}, at: final"),
        claim("floor", "bounds", "bound: {at_least: 3.5}", metric="bound_test"),
    )
    got = {d.claim.id: d for d in res.verdicts}
    assert {k: d.verdict for k, d in got.items()} == {"nce": "failed", "concat": "passed", "five": "passed",
                                                        "final": "passed", "floor": "failed"}
    assert got["nce"].test.estimate == pytest.approx(4.2 - math.log(64))
    assert "trial c0000-s1 at step 500" in got["nce"].strata[0].detail
    n_evals = 3 * 3 * 3  # 3 NCE configurations x 3 seeds x 3 steps, every evaluation
    assert got["nce"].test.n == n_evals and got["final"].test.n == 9
    assert got["concat"].test.estimate == pytest.approx(3.0 - math.log(64))
    assert got["floor"].test.estimate == pytest.approx(3.5 - 3.0)
    assert all(d.kind == "check" and d.p_holds_holm is None and d.as_dict()["p_holds"] is None for d in got.values())
    # Checks are not findings: no Holm family, not in the findings' counts.
    assert res.families() == [] and res.counts() == dict.fromkeys(("holds", "fails", "inconclusive", "untestable"), 0)
    assert res.check_counts() == {"passed": 3, "failed": 2}


def test_correlation_sign(db, tmp_path):
    corr = "correlation: {{with: bound_test, sign: {sign}}}"
    res = run_verify(db[1], tmp_path, claim("pos", "mono", corr.format(sign="positive")),
                     claim("neg", "mono", corr.format(sign="negative"), extra="per: [critic]"),
                     claim("zero", "nocorr", corr.format(sign="positive")))
    got = {d.claim.id: d for d in res.verdicts}
    assert {k: d.verdict for k, d in got.items()} == {"pos": "holds", "neg": "fails", "zero": "inconclusive"}
    assert got["pos"].test.estimate == pytest.approx(1.0) and got["pos"].test.n == 24
    assert got["zero"].test.estimate == pytest.approx(0.0, abs=1e-12)
    assert got["pos"].p_holds == pytest.approx(1 / 4001)  # no permutation reaches rho = 1


def test_final_reads_completed_trials_and_a_step_reads_every_trial_that_reached_it(db, tmp_path):
    res = run_verify(db[1], tmp_path, claim("final", "partial", "versus: {op: '>', value: 0.5}"),
                     claim("step0", "partial", "versus: {op: '<', value: 0.5}", extra="at: {step: 0}"),
                     claim("paired", "partial", "versus: {op: '>', at: {step: 0}}"))
    got = {d.claim.id: d for d in res.verdicts}
    assert got["final"].test.n == 5 and got["step0"].test.n == 6 and got["paired"].test.n == 5
    assert got["step0"].test.estimate == pytest.approx(0.1 - 0.5)  # every planted trial starts at 0.1
    assert "a: 3 trials" not in got["final"].strata[0].detail


def test_too_few_seeds_is_inconclusive_with_the_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    planted_study(url, "one", critics=("bilinear", "concat"), estimators=("nce",), seeds=1, optuna_study=False)
    parsed, source = load_claims(str(claims_file(tmp_path, claim("c", "one", "order: {factor: critic, a: bilinear, op: '>', b: concat}"))))
    d = verify(parsed, source, url, n_boot=200).verdicts[0]
    assert d.verdict == "inconclusive"
    assert "2 values in 2 configurations leave no degrees of freedom for the seed-to-seed variance" in d.reason


# ---- the statistics on plain arrays ----------------------------------------------------------------


def test_exact_values_decide_without_sampling_error():
    frame = __import__("pandas").DataFrame({"config_id": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                                            "value": [0.8] * 3 + [0.7] * 3})
    c = E.fit(frame).contrast({"a": 1.0, "b": -1.0}, offset=-0.05)
    assert c.se == 0 and c.df == math.inf and c.estimate == pytest.approx(0.05)
    t = E.compare(c, ">", 0.05)
    assert (t.p_holds, t.p_fails, t.ci) == (0.0, 1.0, (c.estimate, c.estimate))


@pytest.mark.parametrize("op, margin, tol, by", [(">", None, None, None), (">=", 0.2, None, None),
                                                  ("<", None, None, None), ("<=", 0.2, None, None),
                                                  ("~", None, 0.3, None), (">", None, None, 0.05),
                                                  ("<", None, None, 0.05)])
def test_compare_p_values_from_students_t(op, margin, tol, by):
    c = E.Contrast(estimate=0.1, se=0.08, df=7.0, n=10)
    t = E.compare(c, op, 0.05, margin, tol, by)
    cdf = lambda x: sps.t.cdf(x, 7.0)  # noqa: E731
    sf = lambda x: sps.t.sf(x, 7.0)  # noqa: E731
    want = {(">", None): (sf(0.1 / 0.08), cdf(0.1 / 0.08)), (">=", None): (sf(0.3 / 0.08), cdf(0.3 / 0.08)),
            ("<", None): (cdf(0.1 / 0.08), sf(0.1 / 0.08)), ("<=", None): (cdf(-0.1 / 0.08), sf(-0.1 / 0.08)),
            ("~", None): (max(sf(0.4 / 0.08), cdf(-0.2 / 0.08)), min(1, 2 * min(sf(-0.2 / 0.08), cdf(0.4 / 0.08)))),
            (">", 0.05): (sf(0.05 / 0.08), cdf(0.05 / 0.08)),  # θ > 0.05
            ("<", 0.05): (cdf(0.15 / 0.08), sf(0.15 / 0.08))}[(op, by)]  # θ < −0.05
    assert (t.p_holds, t.p_fails) == pytest.approx(want)
    assert t.ci == pytest.approx((0.1 - sps.t.ppf(0.975, 7) * 0.08, 0.1 + sps.t.ppf(0.975, 7) * 0.08))


def test_the_test_keeps_its_level_with_three_seeds_where_a_percentile_bootstrap_does_not():
    """Under a true null (equal means), a claim "a > b" with 3 seeds per side is called holds at most
    about alpha / 2 = 2.5 % of the time; the plain percentile bootstrap calls it about 10 % of the time."""
    import pandas as pd

    rng = np.random.default_rng(11)
    reps, n_boot = 1500, 400
    ours = naive = 0
    for _ in range(reps):
        a, b = rng.standard_normal(3), rng.standard_normal(3)
        frame = pd.DataFrame({"config_id": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "value": [*a, *b]})
        ours += E.compare(E.fit(frame).contrast({"a": 1.0, "b": -1.0}), ">", 0.05).p_holds <= 0.025
        boot = a[rng.integers(0, 3, (n_boot, 3))].mean(1) - b[rng.integers(0, 3, (n_boot, 3))].mean(1)
        naive += (1 + (boot <= 0).sum()) / (n_boot + 1) <= 0.025
    assert ours / reps < 0.035 and naive / reps > 0.07


def test_spearman_permutation_p_matches_the_exhaustive_permutation_test():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 5.5])
    rho = sps.spearmanr(x, y).statistic
    perms = [sps.spearmanr(x, np.array(p)).statistic for p in itertools.permutations(y)]
    exact_p = np.mean([r >= rho - 1e-12 for r in perms])
    t = E.spearman_sign(x, y, "positive", 0.05, 50_000, np.random.default_rng(2))
    assert t.estimate == pytest.approx(rho)
    assert t.p_holds == pytest.approx(exact_p, abs=4 * math.sqrt(exact_p / 50_000) + 1e-4)
    assert t.p_fails == pytest.approx(np.mean([r <= rho + 1e-12 for r in perms]), abs=0.01)
    assert t.ci[0] <= rho <= t.ci[1]


def test_the_closed_form_pooled_model_and_holm_match_statsmodels():
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"config_id": np.repeat(list("abcd"), [3, 4, 5, 3]), "seed": np.arange(15) % 5,
                          "value": rng.normal(size=15)})
    model = E.fit(frame)
    ols = sm.OLS(frame["value"], pd.get_dummies(frame["config_id"], dtype=float)).fit()
    assert model.df_resid == ols.df_resid and model.sigma2 == pytest.approx(ols.scale, rel=1e-12)
    c = model.contrast({"a": 0.5, "b": 0.5, "c": -1.0})
    t = ols.t_test(np.array([[0.5, 0.5, -1.0, 0.0]]))
    assert c.estimate == pytest.approx(float(t.effect[0]), rel=1e-12)
    assert c.se == pytest.approx(float(t.sd[0, 0]), rel=1e-12)
    for p in ([0.01, 0.04, 0.03, 0.5], list(rng.uniform(size=9)), [0.2]):
        assert E.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)


def test_holm_and_combine():
    assert E.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    tests = [E.Test(1.0, (0, 2), 0.01, 0.99, 5), E.Test(0.5, (0, 1), 0.2, 0.8, 5), E.Test(2.0, (1, 3), 0.001, 0.999, 5)]
    assert E.combine(tests) == (0.2, 1.0, 1)
    assert E.combine([E.Test(1, (0, 0), 0.9, 0.1, 3), E.Test(1, (0, 0), 0.5, 0.02, 3)]) == (0.9, 0.04, 0)


# ---- malformed claims files: one line, exit 2 -------------------------------------------------------

GOOD = "  - {id: c1, finding: f, study: truth, metric: probe_accuracy, order: {factor: critic, a: bilinear, op: '>', b: concat}}\n"
MALFORMED = [
    ("claims: [\n  - {id: x", r"claims\.yaml: is not valid YAML: "),
    ("- 1\n- 2\n", r"claims\.yaml: expected a mapping with a claims list, got \[1, 2\]"),
    ("alpha: 0.05\n", r"claims\.yaml: claims: missing required key"),
    ("claim: []\n" + "claims:\n" + GOOD, r"claims\.yaml: claim: unknown key"),
    ("claims:\n  - {id: c1, finding: f, study: truth, order: {factor: critic, a: bilinear, op: '>', b: concat}}\n",
     r"claims\.yaml: claim c1: metric: missing required key"),
    ("claims:\n" + GOOD.replace("metric:", "metrc:"), r"claims\.yaml: claim c1: metrc: unknown key"),
    ("claims:\n" + GOOD.replace("op: '>'", "op: '=>'"), r"claims\.yaml: claim c1: order\.op: expected one of >, >=, <, <=, ~"),
    ("claims:\n" + GOOD.replace("op: '>'", "op: '>='"), r"claims\.yaml: claim c1: order\.margin: required with op '>='"),
    ("claims:\n" + GOOD.replace("}}", "}, bound: {at_most: 5}}"), r"claims\.yaml: claim c1: test: give exactly one of order, bound, versus, correlation, not order and bound"),
    ("claims:\n  - {id: c1, finding: f, study: truth, metric: probe_accuracy}\n", r"claims\.yaml: claim c1: test: give exactly one of"),
    ("claims:\n" + GOOD.replace("study: truth", "study: truth, preset: fig3-critics"), r"claims\.yaml: claim c1: study: give either study or preset"),
    ("claims:\n" + GOOD + GOOD, r"claims\.yaml: claim c1: id: duplicate id"),
    ("claims:\n" + GOOD.replace("}}", "}, at: last}"), r"claims\.yaml: claim c1: at: expected final, every or \{step: N\}, got 'last'"),
    ("claims:\n" + GOOD.replace("}}", "}, at: every}"), r"claims\.yaml: claim c1: at: every is for bound tests"),
    ("claims:\n  - {finding: f, study: truth, metric: m, bound: {at_most: 1}}\n", r"claims\.yaml: claim #1: id: missing required key"),
    ("claims:\n  - id: c1\n    id: c2\n", r"claims\.yaml: line 3: duplicate key 'id'"),
    ("claims:\n" + GOOD.replace("study: truth", "study: nosuch"), r"claims\.yaml: claim c1: study: unknown study 'nosuch' \(known: "),
    ("claims:\n" + GOOD.replace("probe_accuracy", "probe_acc"),
     r"claims\.yaml: claim c1: metric: unknown metric 'probe_acc' in study truth \(choose from probe_accuracy, bound_test, bound_train, "),
    ("claims:\n" + GOOD.replace("factor: critic", "factor: critc"), r"claims\.yaml: claim c1: order\.factor: unknown factor 'critc' in study truth \(factors: critic, estimator;"),
    ("claims:\n" + GOOD.replace("b: concat", "b: concatt"), r"claims\.yaml: claim c1: order\.b: unknown level 'concatt' of critic in study truth \(levels: bilinear, concat, separable\)"),
    ("claims:\n" + GOOD.replace("}}", "}, where: {train.lr: 0.5}}"), r"claims\.yaml: claim c1: where\.train\.lr: unknown level 0\.5 of train\.lr in study truth \(levels: 0\.001\)"),
    ("claims:\n" + GOOD.replace("}}", "}, per: [encoderr]}"), r"claims\.yaml: claim c1: per: unknown factor 'encoderr'"),
    ("claims:\n  - {id: c1, finding: f, study: bounds, metric: bound_test, bound: {at_most: ceiling}}\n",
     r"claims\.yaml: claim c1: bound\.at_most: trial c0001-s0 \(estimator nwj\) has no ceiling"),
    ("claims:\n" + GOOD.replace("}}", "}, at: {step: 7}}"), r"claims\.yaml: claim c1: at: no evaluation at step 7 in study truth \(steps: 0, 500, 1000\)"),
    ("claims:\n" + GOOD.replace("study: truth", "preset: fig3"), r"claims\.yaml: claim c1: preset: unknown preset 'fig3' \(choose from "),
    ("claims:\n" + GOOD.replace("study: truth", "preset: fig3-critics"), r"claims\.yaml: claim c1: budget: missing: a preset needs a budget"),
    ("budget: gpu\nclaims:\n" + GOOD.replace("study: truth", "preset: fig3-critics"),
     r"claims\.yaml: claim c1: budget: unknown budget 'gpu' of preset fig3-critics \(choose from smoke, cpu, paper-steps, paper\)"),
    ("claims:\n" + GOOD.replace("op: '>'", "op: '>', margin: 0.01"),
     r"claims\.yaml: claim c1: order\.margin: only with op '>=' or '<=', not '>' \(a lead that a must have over b: op '>' with by\)"),
    ("claims:\n" + GOOD.replace("op: '>'", "op: '>=', margin: 0.01, by: 0.02"),
     r"claims\.yaml: claim c1: order\.by: only with op '>' or '<'"),
    ("claims:\n" + GOOD.replace("op: '>'", "op: '>', by: -0.01"), r"claims\.yaml: claim c1: order\.by: input should be greater than 0"),
    ("claims:\n" + GOOD.replace("}}", "}, endpoint: last}"), r"claims\.yaml: claim c1: endpoint: expected paper, study or \{step: N\}, got 'last'"),
    ("claims:\n" + GOOD.replace("}}", "}, endpoint: study, at: {step: 0}}"), r"claims\.yaml: claim c1: endpoint: the claim reads step 0"),
    ("claims:\n  - {id: c1, finding: f, study: truth, metric: probe_accuracy, pair: seed, versus: {op: '<', value: 1}}\n",
     r"claims\.yaml: claim c1: pair: pairing by seed compares configurations of one study: only with an order test"),
    ("claims:\n" + GOOD.replace("}}", "}, pool: all}"), r"claims\.yaml: claim c1: pool: input should be 'selection' or 'none'"),
    ("diverged: {metric: bound_test}\nclaims:\n" + GOOD, r"claims\.yaml: diverged\.below: missing required key"),
    ("claims:\n  - {id: c1, finding: f, study: truth, metric: probe_accuracy, versus: {op: '<', value: 1, study: truth}}\n",
     r"claims\.yaml: claim c1: versus\.value: a constant takes no study"),
    ("claims:\n  - {id: c1, finding: f, study: truth, metric: probe_accuracy, correlation: {with: bound_test, sign: up}}\n",
     r"claims\.yaml: claim c1: correlation\.sign: input should be 'positive' or 'negative', got 'up'"),
    ("alpha: 2\nclaims:\n" + GOOD, r"claims\.yaml: alpha: input should be less than 1, got 2"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[f"m{i:02d}" for i in range(len(MALFORMED))])
def test_malformed_claims_file_is_one_line_and_exit_2(db, tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("claims.yaml").write_text(text)
    before = hashlib.sha256(db[0].read_bytes()).hexdigest()
    code = main(["verify", "claims.yaml", "--db", db[1], "--n-boot", "200"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mimax: error: "), out.err
    assert re.match(message, lines[0].removeprefix("mimax: error: ")), lines[0]
    assert hashlib.sha256(db[0].read_bytes()).hexdigest() == before


@pytest.mark.parametrize("args, message", [
    (["verify", "claims.yaml"], r"mimax: error: claims\.yaml: claim c1: metric: unknown metric 'probe_acc'"),
    (["verify", "nosuch.yaml"], r"mimax: error: nosuch\.yaml: no such claims file$"),
    (["verify", "papr"], r"mimax: error: papr: no such claims file and no shipped claims file of that name \(shipped: paper\)"),
])
def test_the_real_command_reports_bad_input_in_one_line(db, tmp_path, args, message):
    (tmp_path / "claims.yaml").write_text("claims:\n" + GOOD.replace("probe_accuracy", "probe_acc"))
    env = {**os.environ, "MIMAX_DB": db[1]}
    res = subprocess.run([sys.executable, "-m", "mimax.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and re.match(message, res.stderr), res.stderr


# ---- the command: exit codes, --json, --out -------------------------------------------------------


def test_exit_codes_json_and_out(db, tmp_path, capsys):
    holds = claim("h", "truth", "order: {factor: critic, a: bilinear, op: '>', b: concat}", extra="paper: 'bilinear wins'")
    path = claims_file(tmp_path, holds)
    assert main(["verify", str(path), "--db", db[1], "--n-boot", "500"]) == 0
    text = capsys.readouterr().out
    assert "holds        h" in text and "1 hold, 0 fail, 0 inconclusive, 0 untestable" in text
    path = claims_file(tmp_path, holds, claim("i", "two-seeds", "order: {factor: critic, a: bilinear, op: '>', b: concat}"))
    out_dir = tmp_path / "out"
    assert main(["verify", str(path), "--db", db[1], "--n-boot", "500", "--json", "--out", str(out_dir)]) == 1
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert (printed["holds"], printed["fails"], printed["inconclusive"], printed["untestable"]) == (1, 0, 1, 0)
    assert printed["checks"] == {"passed": 0, "failed": 0}
    first = printed["claims"][0]
    assert {"id", "finding", "kind", "family", "endpoint", "verdict", "estimate", "ci", "n", "seeds", "n_needed",
            "paper", "p_holds_holm", "strata"} <= set(first)
    assert (first["kind"], first["family"], first["endpoint"], first["n_needed"]) == ("finding", "f", None, None)
    assert printed["claims"][1]["n_needed"] >= 3
    assert first["id"] == "h" and first["verdict"] == "holds" and first["paper"] == "bilinear wins"
    assert first["ci"][0] < first["estimate"] < first["ci"][1] and first["n"] == 20
    assert printed["findings"] == [{"finding": "f", "verdict": "inconclusive", "claims": ["h", "i"], "holds": 1,
                                    "fails": 0, "inconclusive": 1, "untestable": 0, "probes": {}, "note": ""}]
    assert json.loads((out_dir / "verdicts.json").read_text()) == printed
    md = (out_dir / "verdicts.md").read_text()
    assert "| f | h | holds | truth |" in md and "| f | i | inconclusive | two-seeds |" in md


@pytest.fixture(scope="module")
def paper_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "reproduce-cpu.db"
    write_paper_studies(f"sqlite:///{path}")
    return path, f"sqlite:///{path}"


def test_paper_claims_on_a_database_shaped_like_the_reference_one(paper_db, capsys):
    code = main(["verify", "paper", "--db", paper_db[1], "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1  # a claim fails and two are inconclusive, as planted
    verdicts = {c["id"]: c["verdict"] for c in result["claims"] if c["kind"] == "finding"}
    checks = {c["id"]: c["verdict"] for c in result["claims"] if c["kind"] == "check"}
    claims, _ = load_claims("paper")
    assert list(verdicts) + list(checks) == [c.id for c in claims.claims if c.id in verdicts] + [
        c.id for c in claims.claims if c.id in checks] and len(verdicts) >= 45
    assert {k: v for k, v in verdicts.items() if v != "holds"} == EXPECTED
    assert checks == dict.fromkeys(CHECKS, "passed") and result["checks"] == {"passed": len(CHECKS), "failed": 0}
    assert sum(result[v] for v in ("holds", "fails", "inconclusive", "untestable")) == len(verdicts)
    findings = {f["finding"]: f for f in result["findings"]}
    assert set(findings) == {"pixel baseline", "fig1ab bijective encoder", "fig1c adversarial", "fig2 conditioning",
                             "fig3 critics", "fig4ab encoders", "fig4c non-i.i.d.", "§4 metric learning", "calibration"}
    assert findings["fig3 critics"]["probes"] == {"sklearn": "fails", "torch": "holds"}
    assert findings["fig3 critics"]["note"] == "holds under probe torch only"
    assert findings["fig2 conditioning"] == {**findings["fig2 conditioning"], "verdict": "holds", "note": "",
                                             "probes": {"sklearn": "holds", "torch": "holds"}}
    assert findings["fig4ab encoders"]["verdict"] == "untestable"
    assert findings["fig1ab bijective encoder"]["verdict"] == "partly untestable"
    # One family per finding × probe: the paper's probe primary, the converged one a sensitivity family;
    # what is not the paper's in one family of its own.
    by_id = {c["id"]: c for c in result["claims"]}
    assert by_id["fig3-bilinear-above-concat.sklearn"]["family"] == "fig3 critics"
    assert by_id["fig3-nwj-concat-above-bilinear"]["family"] == "fig3 critics"
    assert by_id["fig3-bilinear-above-concat.torch"]["family"] == "fig3 critics · probe torch"
    assert by_id["calibration-small-mi-nwj"]["family"] == by_id["pixel-noise-costs.sklearn"]["family"] == "beyond the paper"
    assert by_id["fig3-bilinear-above-concat.sklearn"]["endpoint"] == 21000
    assert by_id["fig1ab-accuracy-level.sklearn"]["endpoint"] == 21000 and by_id["fig1ab-accuracy-level.sklearn"]["read_at"] == 400
    assert by_id["fig3-bilinear-above-separable.sklearn"]["n_needed"] is None  # planted: exactly no difference
    # Every accuracy claim is written once per probe, with the same test.
    accuracy = [c for c in claims.claims if c.metric.startswith("probe_accuracy") and c.minus is None]
    by_twin = {}
    for c in accuracy:
        by_twin.setdefault(c.id.rsplit(".", 1)[0], set()).add(c.metric)
    assert all(m == {"probe_accuracy.sklearn", "probe_accuracy.torch"} for m in by_twin.values()), by_twin
    assert all(c.paper for c in claims.claims)


def test_paper_yaml_has_no_claim_that_cannot_fail():
    """Every bound (a census, true by construction when the code is right) is a check; every finding
    compares, or reads a value that the runs could have put on either side."""
    claims, _ = load_claims("paper")
    for c in claims.claims:
        if c.bound is not None:
            assert c.kind == "check", c.id
        else:
            assert c.kind == "finding" and c.test in ("order", "versus", "correlation"), c.id
    ceiling_like = [c.id for c in claims.claims if c.kind == "finding" and c.versus is not None
                    and c.versus.value is not None and c.versus.op in ("<", "<=") and c.metric.startswith("bound")
                    and c.where.get("estimator", [None])[0] in ("nce", "kpair", "triplet")]
    assert ceiling_like == []  # "Î_NCE < log K" is algebra, not a finding


@pytest.mark.slow
def test_analyze_claims_puts_the_verdicts_into_the_report(paper_db, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["analyze", "fig3-critics-paper-steps", "--db", paper_db[1], "--claims", "paper", "--out", str(out),
                 "--n-boot", "200", "--no-importance"])
    printed = capsys.readouterr().out
    assert code == 0
    n = len([c for c in load_claims("paper")[0].claims if c.preset == "fig3-critics"])
    assert f"Claims (the {n} claims of paper about study fig3-critics-paper-steps" in printed
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        assert "Findings checked" in text and "holds under probe torch only" in text
        assert "fig3-separable-above-concat.sklearn" in text and "fig3-bilinear-above-separable.torch" in text
        assert "Checks" in text and "fig3-nce-below-ceiling" in text.split("Checks")[1]  # apart from the findings
        assert "fig3 critics · probe torch" in text  # the sensitivity family, named
        assert "fig1ab" not in text.split("Findings checked")[1].split("Study")[0]  # other studies' claims stay out
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [c["study"] for c in verdicts["claims"]] == ["fig3-critics-paper-steps"] * n
    assert verdicts["scope"] == f"the {n} claims of paper about study fig3-critics-paper-steps"


def test_paper_yaml_ships_with_the_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"analysis/claims/*.yaml"' in pyproject
    assert (ROOT / "mimax" / "analysis" / "claims" / "paper.yaml").is_file()


@pytest.mark.parametrize("name, code", [("mine", 1), ("h200", 0)])
def test_the_docs_examples_run_as_written(paper_db, tmp_path, capsys, monkeypatch, name, code):
    """docs/VERIFY.md's examples: each claims file, run on its database (the planted one, or the real
    H200 run committed under docs/gpu), prints what the page shows."""
    doc = (ROOT / "docs" / "VERIFY.md").read_text()
    example = doc.split(f"# {name}.yaml\n", 1)[1].split("```", 1)[0]
    url = paper_db[1] if name == "mine" else f"sqlite:///{ROOT / 'docs' / 'gpu' / 'run1-h200.db'}"
    shown_url = "sqlite:///planted-paper.db" if name == "mine" else "sqlite:///docs/gpu/run1-h200.db"
    shown = doc.split(f"$ mimax verify {name}.yaml --db {shown_url}\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    Path(f"{name}.yaml").write_text(example)
    assert main(["verify", f"{name}.yaml", "--db", url]) == code
    assert capsys.readouterr().out == shown
    claims, _ = load_claims("paper")
    checks = sum(c.kind == "check" for c in claims.claims)
    assert f"as {len(claims.claims)}\nclaims ({len(claims.claims) - checks} findings' claims, {checks} checks)" in doc


def test_verify_imports_no_torch_ray_trainables_or_pyplot(db, tmp_path):
    path = claims_file(tmp_path, claim("c", "truth", "order: {factor: critic, a: bilinear, op: '>', b: concat}"))
    code = ("import sys; from mimax.analysis.claims import load_claims, verify, render; "
            f"c, s = load_claims({str(path)!r}); v = verify(c, s, {db[1]!r}, n_boot=200); render.lines(v); "
            "bad = [m for m in sys.modules if m in ('torch', 'ray', 'matplotlib.pyplot') or m.startswith('ray.') "
            "or m.startswith('mimax.trainables')]; print(v.counts(), bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "'holds': 1" in res.stdout, res.stdout + res.stderr


def test_verify_help_describes_the_claims_file_with_a_valid_example_and_points_to_the_docs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = capsys.readouterr().out
    assert "docs/VERIFY.md" in text and "check" in text and "by" in text
    example = text.split("a claims file is YAML:\n", 1)[1].split("\ntests:", 1)[0]
    (tmp_path / "help.yaml").write_text(example)
    parsed, _ = load_claims(str(tmp_path / "help.yaml"))  # the example is a valid claims file
    assert [c.kind for c in parsed.claims] == ["finding", "check"] and parsed.claims[0].order.by == 0.01


@pytest.mark.slow
def test_the_report_shows_families_and_checks_apart_in_a_headless_browser(paper_db, tmp_path):
    """What Debian's chromium renders of `mimax analyze --claims paper`'s report.html (its DOM after
    rendering, read back with --dump-dom): the claims table groups claims by family, each family named;
    the checks are a table of their own, under their own heading, and no check is among the claims."""
    from html.parser import HTMLParser

    from requires import require

    chromium = Path("/usr/bin/chromium")
    require(chromium.exists(), f"Debian's chromium at {chromium} (apt-get install chromium)")
    out = tmp_path / "report"
    assert main(["analyze", "fig3-critics-paper-steps", "--db", paper_db[1], "--claims", "paper", "--out", str(out),
                 "--n-boot", "200", "--no-importance"]) == 0
    res = subprocess.run([str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          (out / "report.html").resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert res.returncode == 0 and "</html>" in res.stdout, res.stderr[-2000:]

    class Tables(HTMLParser):  # {h2 id: [rows of cell texts]} for the table that follows each h2
        def __init__(self):
            super().__init__()
            self.tables, self.section, self.row, self.cell = {}, None, None, None

        def handle_starttag(self, tag, attrs):
            if tag == "h2":
                self.section = dict(attrs).get("id")
            elif tag == "tr" and self.section:
                self.row = []
            elif tag in ("td", "th") and self.row is not None:
                self.cell = ""

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.row.append(self.cell.strip())
                self.cell = None
            elif tag == "tr" and self.row is not None:
                self.tables.setdefault(self.section, []).append(self.row)
                self.row = None

    parser = Tables()
    parser.feed(res.stdout)
    claims, checks = parser.tables["claims"], parser.tables["claims-checks"]
    expected = [c for c in load_claims("paper")[0].claims if c.preset == "fig3-critics"]
    cols = claims[0]
    ids = {r[cols.index("claim")] for r in claims[1:]}
    families = {r[cols.index("family")] for r in claims[1:]}
    assert ids == {c.id for c in expected if c.kind == "finding"}  # every finding's claim, no check
    assert {"fig3 critics", "fig3 critics · probe torch"} <= families
    check_ids = {r[0] for r in checks[1:]}
    assert check_ids == {c.id for c in expected if c.kind == "check"} == {"fig3-nce-below-ceiling"}
    assert not check_ids & ids
