"""The verifier's error rates, by simulation: thousands of synthetic studies (in memory, drawn with a
known truth) go through ``verify`` exactly as a database's would.

- Under null effects the rate of false "holds" in a family stays at or below alpha / 2 (Holm within the
  family, one side at alpha / 2), within Monte Carlo error; the same claims each in a family of its own
  (no Holm) exceed it: the test has teeth.
- At a planted effect of one pooled sd, the rate of "holds" at n = 5 seeds matches the power the
  verifier reports (the power behind ``n_needed``); with each configuration's own variance (pool none,
  the old per-claim design) the rate falls short of it: pooling is what buys that power.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mimax.analysis.claims import load_claims, verify
from mimax.analysis.load import StudyData

ALPHA = 0.05
SIMS = 1000
CONFIGS = tuple("abcdefgh")


def study(rng: np.random.Generator, name: str, means: dict[str, float], seeds: int) -> StudyData:
    """One synthetic study: a configuration per critic level, ``seeds`` seeds each, a final accuracy of
    means[critic] + N(0, 1) per trial (the pooled sd is 1)."""
    rows, evals = [], []
    for ci, (critic, mean) in enumerate(means.items()):
        for s in range(seeds):
            key = f"c{ci:04d}-s{s}"
            rows.append({"trial_key": key, "state": "completed", "seed": s, "config_id": str(ci), "critic": critic,
                         "train.steps": 100})
            evals.append({"trial_key": key, "step": 100, "probe_accuracy": mean + rng.standard_normal()})
    return StudyData(study={"name": name, "budget": None}, trials=pd.DataFrame(rows),
                     evaluations=pd.DataFrame(evals), factors=["critic"])


def order(cid: str, study_: str, a: str, b: str, extra: str = "") -> str:
    return (f"  - {{id: {cid}, finding: f, study: {study_}, metric: probe_accuracy, "
            f"order: {{factor: critic, a: {a}, op: '>', b: {b}}}{', ' + extra if extra else ''}}}\n")


def run(tmp_path, lines: list[str], studies: list[StudyData]):
    path = tmp_path / "sim.yaml"
    path.write_text("claims:\n" + "".join(lines))
    return verify(*load_claims(str(path)), None, studies=studies, n_boot=100)


def rate(hits: int) -> tuple[float, float]:
    p = hits / SIMS
    return p, math.sqrt(max(p * (1 - p), 1e-4) / SIMS)


def test_false_holds_per_family_stay_within_alpha_under_null_effects_and_not_without_holm(tmp_path):
    """Each simulated study is a family of four null claims (a > b, c, d, e; every mean equal)."""
    rng = np.random.default_rng(2026)
    null = dict.fromkeys(CONFIGS[:5], 0.0)
    studies = [study(rng, f"s{i}", null, seeds=5) for i in range(SIMS)]
    lines = [order(f"s{i}-a-{x}", f"s{i}", "a", x, f"family: s{i}") for i in range(SIMS) for x in "bcde"]
    v = run(tmp_path, lines, studies)
    assert {f["size"] for f in v.families()} == {4} and len(v.families()) == SIMS
    holm = [any(d.verdict == "holds" for d in v.claims[4 * i: 4 * i + 4]) for i in range(SIMS)]
    naive = [any(d.p_holds <= ALPHA / 2 for d in v.claims[4 * i: 4 * i + 4]) for i in range(SIMS)]  # no Holm
    got, se = rate(sum(holm))
    assert got <= ALPHA / 2 + 3 * se, (got, se)
    got_naive, se_naive = rate(sum(naive))
    assert got_naive > ALPHA / 2 + 3 * se_naive, (got_naive, se_naive)  # without Holm the family's error exceeds it


def test_the_rate_of_holds_at_one_sd_matches_the_reported_power_and_the_unpooled_design_falls_short(tmp_path):
    """a − b = one pooled sd, 5 seeds, 8 configurations in the model (df 32)."""
    rng = np.random.default_rng(7)
    means = {c: (1.0 if c == "a" else 0.0) for c in CONFIGS}
    studies = [study(rng, f"s{i}", means, seeds=5) for i in range(SIMS)]
    lines = [line for i in range(SIMS) for line in (order(f"p{i}", f"s{i}", "a", "b", f"family: p{i}"),
                                                     order(f"w{i}", f"s{i}", "a", "b", f"family: w{i}, pool: none"))]
    v = run(tmp_path, lines, studies)
    pooled, unpooled = v.claims[0::2], v.claims[1::2]
    first = pooled[0]
    assert first.test.df == 32 and first.seeds == 5
    reported = first.power(1.0, 5)  # the power the verifier plans n_needed with, at the true effect
    assert 0.2 < reported < 0.8  # neither ~0 nor ~1, so that the match means something
    got, se = rate(sum(d.verdict == "holds" for d in pooled))
    assert got == pytest.approx(reported, abs=3 * se), (got, reported, se)
    low, low_se = rate(sum(d.verdict == "holds" for d in unpooled))
    assert low < reported - 3 * low_se, (low, reported)  # each configuration's own variance: less power
