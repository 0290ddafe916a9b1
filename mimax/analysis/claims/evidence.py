"""The statistics behind a verdict, on plain arrays (docs/VERIFY.md says what each number means).

- :func:`contrast`: θ = Σ_k w_k · mean(x_k) + offset over configurations k, its standard error from a
  bootstrap that resamples seeds within each configuration, and Welch–Satterthwaite degrees of freedom.
  Residuals are scaled by √(n_k / (n_k − 1)) before resampling, so that the bootstrap variance of a
  configuration's mean is s_k² / n_k (the plain bootstrap's is (n_k − 1) / n_k of that, which makes
  intervals from 2 or 3 seeds far too narrow).
- :func:`compare`: one-sided p-values for "the claim holds" and "the claim fails" from Student's t with
  those degrees of freedom, and the matching two-sided interval.
- :func:`spearman_sign`: Spearman's ρ, a percentile bootstrap interval (trials resampled) and one-sided
  permutation p-values (an exact test of no association).
- :func:`holm`: Holm's step-down adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mimax.analysis.stats import boot_spearman

__all__ = ["Contrast", "Test", "combine", "compare", "contrast", "holm", "spearman_sign"]

_CHUNK = 1_000_000  # elements of a resampling matrix built at once
_EXACT = 1e-12  # relative differences below this are rounding, not seed noise


@dataclass(frozen=True)
class Contrast:
    estimate: float
    se: float  # bootstrap standard error over seeds
    df: float  # Welch–Satterthwaite; inf when every configuration's seeds agree exactly
    n: int  # values (trials) used


@dataclass(frozen=True)
class Test:
    """A verdict's numbers: p_holds is small when the data show the claim true, p_fails when they show
    it false; ci is the two-sided interval at level 1 − alpha."""

    estimate: float
    ci: tuple[float, float]
    p_holds: float
    p_fails: float
    n: int
    se: float = math.nan
    df: float = math.nan


def contrast(groups: Sequence[tuple[float, np.ndarray]], n_boot: int, rng: np.random.Generator,
             offset: float = 0.0) -> Contrast:
    """θ = Σ w_k mean(x_k) + offset for ``groups`` = [(w_k, x_k)], each x_k ≥ 2 seeds of one configuration."""
    estimate = offset + sum(w * float(np.mean(x)) for w, x in groups)
    boot = np.zeros(n_boot)
    variances, dfs = [], []
    for w, x in groups:
        x = np.asarray(x, dtype=float)
        n = len(x)
        resid = x - x.mean()
        resid[np.abs(resid) <= _EXACT * max(1.0, float(np.abs(x).max()))] = 0.0  # equal seeds: exactly 0
        resid *= math.sqrt(n / (n - 1))
        rows = max(1, _CHUNK // n)
        for start in range(0, n_boot, rows):
            stop = min(n_boot, start + rows)
            boot[start:stop] += w * resid[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
        variances.append(w * w * float(resid @ resid) / n / n)  # s² / n, as resid carries n / (n − 1)
        dfs.append(n - 1)
    se = float(boot.std(ddof=1)) if n_boot > 1 else math.nan
    total = sum(variances)
    denom = sum(v * v / d for v, d in zip(variances, dfs))
    df = total * total / denom if denom > 0 else math.inf
    return Contrast(estimate, se, df, sum(len(x) for _, x in groups))


def _beyond(estimate: float, threshold: float, se: float, df: float) -> tuple[float, float]:
    """(P(θ̂ ≥ observed | θ = threshold), P(θ̂ ≤ observed | θ = threshold)): one-sided p-values for
    "θ > threshold" and for "θ < threshold". With se = 0 the estimate is exact."""
    if se == 0 or not math.isfinite(se):
        if se == 0 and abs(estimate - threshold) > _EXACT * max(1.0, abs(estimate), abs(threshold)):
            return (0.0, 1.0) if estimate > threshold else (1.0, 0.0)
        return 1.0, 1.0
    t = (estimate - threshold) / se
    return float(sps.t.sf(t, df)), float(sps.t.cdf(t, df))


def compare(c: Contrast, op: str, alpha: float, margin: float | None = None, tol: float | None = None) -> Test:
    """The claim ``θ op 0`` (``>`` θ > 0, ``>=`` θ ≥ −margin, ``<`` θ < 0, ``<=`` θ ≤ margin, ``~`` |θ| ≤
    tol) tested with Student's t on the bootstrap standard error."""
    if op in (">", ">="):
        up, down = _beyond(c.estimate, -(margin or 0.0), c.se, c.df)
        p_holds, p_fails = up, down
    elif op in ("<", "<="):
        up, down = _beyond(c.estimate, margin or 0.0, c.se, c.df)
        p_holds, p_fails = down, up
    else:  # two one-sided tests for |θ| ≤ tol; "fails" on either side, Bonferroni over the two
        above_low, below_low = _beyond(c.estimate, -tol, c.se, c.df)
        above_high, below_high = _beyond(c.estimate, tol, c.se, c.df)
        p_holds = max(above_low, below_high)
        p_fails = min(1.0, 2 * min(above_high, below_low))
    # se = 0 gives half = 0: Student's quantile is finite at every df ≥ 1, inf included
    half = float(sps.t.ppf(1 - alpha / 2, c.df)) * c.se if math.isfinite(c.se) else math.nan
    return Test(c.estimate, (c.estimate - half, c.estimate + half), p_holds, p_fails, c.n, c.se, c.df)


def spearman_sign(x: np.ndarray, y: np.ndarray, sign: str, alpha: float, n_boot: int,
                  rng: np.random.Generator) -> Test:
    """Spearman's ρ of (x, y) over trials; ``sign`` "positive" or "negative" is the claim. p-values are
    one-sided permutation tests, (1 + #{ρ_perm at least as extreme}) / (1 + n_boot); the interval is the
    percentile bootstrap of ρ, resampling trials."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if n < 3 or norm == 0:
        return Test(math.nan, (math.nan, math.nan), 1.0, 1.0, n)
    rho = float(rx @ ry) / norm
    eps = 1e-12 * max(1.0, abs(rho))
    above = below = 0
    rows = max(1, _CHUNK // n)
    for start in range(0, n_boot, rows):
        perm = rng.permuted(np.broadcast_to(ry, (min(rows, n_boot - start), n)), axis=1) @ rx / norm
        above += int((perm >= rho - eps).sum())
        below += int((perm <= rho + eps).sum())
    p_pos, p_neg = (1 + above) / (1 + n_boot), (1 + below) / (1 + n_boot)
    boot = boot_spearman(x, y, n_boot, rng)
    lo, hi = (np.nanpercentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if np.isfinite(boot).any()
              else (math.nan, math.nan))
    p_holds, p_fails = (p_pos, p_neg) if sign == "positive" else (p_neg, p_pos)
    return Test(rho, (float(lo), float(hi)), p_holds, p_fails, n)


def combine(tests: Sequence[Test]) -> tuple[float, float, int]:
    """A claim that must hold in every stratum: (p_holds, p_fails, index of the least favourable stratum).
    It holds only if every stratum does (intersection–union: the largest p_holds); it fails if any
    stratum fails (Bonferroni over the strata: S × the smallest p_fails)."""
    worst = max(range(len(tests)), key=lambda i: (tests[i].p_holds, -tests[i].p_fails))
    p_fails = min(1.0, len(tests) * min(t.p_fails for t in tests))
    return tests[worst].p_holds, p_fails, worst


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: sorted ascending, p_(i) × (m − i + 1), made monotone, capped at 1.
    Rejecting where the adjusted p ≤ level controls the family-wise error at that level."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
