"""``mimax decide``'s error control (mimax.analysis.claims.sequential): the group-sequential boundaries
against published values and a Monte Carlo of the Brownian motion they are defined on; then 1,000
simulated decide runs under null effects: the false-verdict rate stays within alpha, and naive
re-testing at the fixed level after every batch exceeds it in the same simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mimax.analysis.claims import evidence as E
from mimax.analysis.claims import sequential as S


def test_boundaries_are_the_published_lan_demets_obrien_fleming_ones():
    # Five equally spaced looks, one-sided 0.025 (Jennison & Turnbull 2000, table 7.6; gsDesign's sfLDOF).
    got = S.boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025, "obf")
    assert got == pytest.approx((4.877, 3.357, 2.680, 2.290, 2.031), abs=1e-3)
    got = S.boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025, "pocock")
    assert got == pytest.approx((2.438, 2.427, 2.410, 2.397, 2.386), abs=2e-3)
    fine = S._GRID
    try:  # the grid's resolution: a 4,001-point grid moves no boundary by more than 2e-5
        S._GRID = 4001
        S.boundaries.cache_clear()
        finer = S.boundaries((0.15, 0.25, 0.4, 0.6, 1.0), 0.0125)
    finally:
        S._GRID = fine
        S.boundaries.cache_clear()
    assert S.boundaries((0.15, 0.25, 0.4, 0.6, 1.0), 0.0125) == pytest.approx(finer, abs=2e-5)


@pytest.mark.parametrize("kind", S.SPENDING)
def test_the_boundaries_spend_alpha_on_the_brownian_motion_they_are_defined_on(kind):
    """Monte Carlo oracle: Z_k = W(t_k) / √t_k for a Brownian motion W; the chance of crossing any
    boundary is alpha, and of crossing by look k is the spending function at t_k."""
    fractions = np.array([3, 5, 8, 12, 20]) / 20
    alpha = 0.0125
    b = np.array(S.boundaries(tuple(fractions), alpha, kind))
    rng = np.random.default_rng(1)
    n = 400_000
    w = np.cumsum(rng.standard_normal((n, len(fractions))) * np.sqrt(np.diff(np.r_[0, fractions])), axis=1)
    crossed = np.maximum.accumulate(w / np.sqrt(fractions) >= b, axis=1)
    for k, t in enumerate(fractions):
        want = S.spent(t, alpha, kind)
        assert crossed[:, k].mean() == pytest.approx(want, abs=4 * math.sqrt(want / n) + 2e-6), k


def test_the_ladder():
    assert S.ladder(3, 20, 5) == [3, 5, 8, 12, 20]
    assert S.ladder(3, 8, 3) == [3, 5, 8] and S.ladder(5, 5, 4) == [5] and S.ladder(3, 20, 1) == [20]
    with pytest.raises(ValueError):
        S.ladder(1, 5, 3)


def test_holm_recycles_only_what_a_decision_frees():
    design = S.Design([3, 5, 8, 12, 20])
    strong = [S.Look(n, 1e-6, 1.0) for n in (3, 5)]
    weak = [S.Look(3, 0.5, 0.5), S.Look(5, 0.004, 0.9)]  # below 0.025's boundary at look 2, not 0.0125's
    level_2 = S.nominal_levels([0.15, 0.25], 0.025)[-1]
    level_2_half = S.nominal_levels([0.15, 0.25], 0.0125)[-1]
    assert level_2_half < 0.004 <= level_2, (level_2_half, level_2)
    alone = S.run_family(design, {"weak": weak})
    assert alone["weak"].verdict == "holds" and alone["weak"].look == 1
    both = S.run_family(design, {"strong": strong, "weak": weak})
    assert both["strong"].verdict == "holds" and both["weak"].verdict == "holds"  # strong's share recycled
    other_way = S.run_family(design, {"strong": [S.Look(n, 1.0, 1e-6) for n in (3, 5)], "weak": weak})
    assert other_way["strong"].verdict == "fails" and other_way["weak"].verdict == "open"  # nothing to recycle


def _p_values(frame: pd.DataFrame, seeds: int) -> dict[str, tuple[float, float]]:
    """Each claim (a > b, a > c) at one look: the pooled model over the trials with seed < ``seeds``."""
    model = E.fit(frame[frame["seed"] < seeds])
    out = {}
    for other in ("b", "c"):
        t = E.compare(model.contrast({"a": 1.0, other: -1.0}), ">", 0.05)
        out[f"a>{other}"] = (t.p_holds, t.p_fails)
    return out


def test_a_thousand_decide_runs_keep_the_false_verdict_rate_and_naive_retesting_does_not():
    """Null effects, a family of two claims, five looks at 3, 5, 8, 12, 20 seeds per configuration."""
    design = S.Design([3, 5, 8, 12, 20])
    rng = np.random.default_rng(23)
    runs, false_seq, false_naive, false_fixed = 1000, 0, 0, 0
    for _ in range(runs):
        frame = pd.DataFrame([{"config_id": c, "seed": s, "value": rng.standard_normal()}
                              for c in "abc" for s in range(design.most)])
        looks = {"a>b": [], "a>c": []}
        naive = False
        for n in design.ladder:
            ps = _p_values(frame, n)
            for cid, (ph, pf) in ps.items():
                looks[cid].append(S.Look(n, ph, pf))
            holm_h, holm_f = E.holm([p[0] for p in ps.values()]), E.holm([p[1] for p in ps.values()])
            naive |= min(holm_h) <= 0.025 or min(holm_f) <= 0.025  # verify's fixed level, again at every look
        out = S.run_family(design, looks)
        false_seq += any(o.verdict != "open" for o in out.values())
        false_naive += naive
        ps = _p_values(frame, design.most)  # one look at the end: the fixed-sample design
        false_fixed += min(E.holm([p[0] for p in ps.values()])) <= 0.025 or min(E.holm([p[1] for p in ps.values()])) <= 0.025
    se = math.sqrt(0.05 * 0.95 / runs)
    assert false_seq / runs <= 0.05 + 3 * se, false_seq / runs
    assert false_fixed / runs <= 0.05 + 3 * se  # the simulation itself is sound
    assert false_naive / runs > 0.05 + 3 * se, false_naive / runs  # the test has teeth


def test_power_is_not_thrown_away_and_seeds_are_saved():
    """At a true effect of 1.5 sd the sequential design decides nearly as often as one look at 20 seeds
    (Holm over the two claims at the fixed level: Pocock's last boundary is stricter, the price of
    stopping early), and stops, on average, well before 20."""
    design = S.Design([3, 5, 8, 12, 20])
    rng = np.random.default_rng(5)
    runs, seq, fixed, used = 300, 0, 0, []
    for _ in range(runs):
        frame = pd.DataFrame([{"config_id": c, "seed": s, "value": rng.standard_normal() + (1.5 if c == "a" else 0)}
                              for c in "abc" for s in range(design.most)])
        looks = {"a>b": [], "a>c": []}
        for n in design.ladder:
            for cid, (ph, pf) in _p_values(frame, n).items():
                looks[cid].append(S.Look(n, ph, pf))
        out = S.run_family(design, looks)
        seq += all(o.verdict == "holds" for o in out.values())
        used.append(max(design.ladder[o.look] if o.look is not None else design.most for o in out.values()))
        fixed += max(E.holm([p[0] for p in _p_values(frame, design.most).values()])) <= 0.025
    assert seq / runs >= fixed / runs - 0.05, (seq, fixed)
    assert np.mean(used) < 0.6 * design.most, np.mean(used)
