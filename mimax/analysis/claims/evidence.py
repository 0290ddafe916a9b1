"""The statistics behind a verdict, on plain arrays (docs/VERIFY.md says what each number means).

- :func:`fit`: the claim's configurations as one linear model (statsmodels OLS): a mean per
  configuration, seeds as replicates, the residual variance pooled over every configuration the claim
  selects (``pool="none"``: each configuration's own variance, Welch–Satterthwaite df), and with
  ``pair=True`` a block per seed, for metrics whose seed effects are shared across configurations.
- :meth:`Model.contrast`: θ = Σ_k w_k μ_k with its standard error and degrees of freedom;
  :func:`sum_of` adds contrasts of independent studies (Welch–Satterthwaite).
- :func:`compare`: one-sided p-values for "the claim holds" and "the claim fails" from Student's t
  (an equivalence claim is two one-sided tests, TOST), and the matching two-sided interval.
- :func:`spearman_sign`: Spearman's ρ, a percentile bootstrap interval (trials resampled with
  mimax.analysis.stats' resampling engine) and one-sided permutation p-values.
- :func:`holm`, :func:`combine` (a claim over strata) and the power
  calculations behind ``n_needed`` (:func:`power`, :func:`seeds_needed`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from mimax.analysis.stats import boot_spearman

__all__ = ["Contrast", "Model", "Test", "combine", "compare", "fit", "holm", "power", "seeds_needed",
           "spearman_sign", "sum_of"]

_CHUNK = 1_000_000  # elements of a permutation matrix built at once
_EXACT = 1e-12  # relative differences below this are rounding, not seed noise
MAX_SEEDS = 10_000  # n_needed beyond this is reported as "more than" it: the effect is too small to chase


@dataclass(frozen=True)
class Contrast:
    estimate: float
    se: float  # 0 when every configuration's seeds agree exactly (a deterministic measurement)
    df: float  # residual degrees of freedom behind se (inf when se is exact)
    n: int  # values (trials) in the configurations the contrast weighs
    sd: float = math.nan  # the pooled seed-to-seed sd the se comes from (per-configuration with pool none)
    unit: float = math.nan  # se at one seed per configuration: se(n) = unit / √n for a balanced design


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
    sd: float = math.nan
    unit: float = math.nan


@dataclass(frozen=True)
class Model:
    """Per-configuration means of one metric, with the residual variance behind them."""

    means: Mapping[str, float]  # each configuration's mean over its seeds
    counts: Mapping[str, int]
    variances: Mapping[str, float]  # per configuration (ddof 1), for pool none
    sigma2: float  # the pooled residual variance, NaN with pool none
    df_resid: float
    pooled: bool
    paired: bool = False
    effects: Mapping[str, float] | None = None  # paired: configuration effects adjusted for seeds
    cov: pd.DataFrame | None = None  # paired: their covariance

    def contrast(self, weights: Mapping[str, float], offset: float = 0.0) -> Contrast:
        """θ = Σ w_k μ_k + offset over configurations k (each must be in the model). A paired model takes
        differences only (Σ w_k = 0): the seed blocks cancel in them."""
        w = {k: float(v) for k, v in weights.items() if v != 0}
        n = sum(self.counts[k] for k in w)
        if self.paired:
            if abs(sum(w.values())) > 1e-9:
                raise ValueError("a paired model gives differences between configurations only")
            estimate = offset + sum(v * self.effects[k] for k, v in w.items())
            vec = pd.Series(w).reindex(self.cov.index, fill_value=0.0).to_numpy()
            var = _exact(float(vec @ self.cov.to_numpy() @ vec), estimate)
            sd, df = math.sqrt(max(self.sigma2, 0.0)), self.df_resid
        elif self.pooled:
            estimate = offset + sum(v * self.means[k] for k, v in w.items())
            var = _exact(self.sigma2 * sum(v * v / self.counts[k] for k, v in w.items()), estimate)
            sd, df = math.sqrt(max(self.sigma2, 0.0)), self.df_resid
        else:  # Welch–Satterthwaite over each configuration's own variance
            estimate = offset + sum(v * self.means[k] for k, v in w.items())
            parts = [(v * v * self.variances[k] / self.counts[k], self.counts[k] - 1) for k, v in w.items()]
            var = _exact(sum(p for p, _ in parts), estimate)
            denom = sum(p * p / d for p, d in parts if d > 0)
            df = var * var / denom if denom > 0 else math.inf
            sd = math.sqrt(sum(self.variances[k] for k in w) / len(w)) if w else math.nan
        # se at one seed per configuration (se(n) = unit / √n in a balanced design), for n_needed
        inv = sum(v * v / self.counts[k] for k, v in w.items())
        unit = math.sqrt(var * sum(v * v for v in w.values()) / inv) if inv > 0 else math.nan
        return Contrast(estimate, math.sqrt(var), df if var > 0 else math.inf, n, sd, unit)

    def df_at(self, seeds: int) -> float:
        """The residual df with ``seeds`` seeds in each of the model's configurations."""
        c = len(self.counts)
        if self.paired:
            return (c - 1) * (seeds - 1)
        return c * (seeds - 1) if self.pooled else 2 * (seeds - 1)  # Welch: about two sides' worth


def _exact(var: float, scale: float) -> float:
    """Variances at the level of float rounding are exactly 0 (seeds that agree)."""
    return 0.0 if var <= (_EXACT * max(1.0, abs(scale))) ** 2 else var


def fit(values: pd.DataFrame, *, pool: bool = True, pair: bool = False) -> Model:
    """``values``: columns config_id, seed, value (one row per trial). ``pool``: one residual variance
    over every configuration (OLS, a mean per configuration); ``pair``: and a block per seed."""
    frame = values[["config_id", "seed", "value"]].copy()
    frame["config_id"] = frame["config_id"].astype(str)
    groups = frame.groupby("config_id", sort=True)["value"]
    means, counts = groups.mean().to_dict(), groups.size().to_dict()
    variances = groups.var(ddof=1).to_dict()
    if not pool:
        return Model(means, counts, variances, math.nan, math.nan, False)
    if not pair:  # the cell-means OLS in closed form (a test checks it against statsmodels'): 10× faster
        resid = frame["value"].to_numpy(dtype=float) - frame["config_id"].map(means).to_numpy(dtype=float)
        df = float(len(frame) - len(means))
        return Model(means, counts, variances, float(resid @ resid / df) if df > 0 else math.nan, df, True)
    import statsmodels.api as sm

    configs = pd.get_dummies(frame["config_id"], dtype=float)
    seeds = pd.get_dummies(frame["seed"].astype(str), dtype=float, drop_first=True).add_prefix("seed=")
    result = sm.OLS(frame["value"].to_numpy(dtype=float), pd.concat([configs, seeds], axis=1).to_numpy()).fit()
    df = float(result.df_resid)
    sigma2 = float(result.ssr / df) if df > 0 else math.nan
    k = configs.shape[1]
    effects = dict(zip(configs.columns, map(float, result.params[:k])))
    cov = pd.DataFrame(result.cov_params()[:k, :k] if df > 0 else np.full((k, k), np.nan),
                       index=configs.columns, columns=configs.columns)
    return Model(means, counts, variances, sigma2, df, True, True, effects, cov)


def sum_of(parts: Sequence[Contrast]) -> Contrast:
    """The sum of contrasts of independent studies: variances add; Welch–Satterthwaite df."""
    var = sum(c.se ** 2 for c in parts)
    denom = sum(c.se ** 4 / c.df for c in parts if c.se > 0 and math.isfinite(c.df))
    df = var * var / denom if denom > 0 else math.inf
    first = parts[0]
    return Contrast(sum(c.estimate for c in parts), math.sqrt(var), df if var > 0 else math.inf,
                    sum(c.n for c in parts), first.sd, first.unit)


def _beyond(estimate: float, threshold: float, se: float, df: float) -> tuple[float, float]:
    """(P(θ̂ ≥ observed | θ = threshold), P(θ̂ ≤ observed | θ = threshold)): one-sided p-values for
    "θ > threshold" and for "θ < threshold". With se = 0 the estimate is exact."""
    if se == 0:
        if abs(estimate - threshold) > _EXACT * max(1.0, abs(estimate), abs(threshold)):
            return (0.0, 1.0) if estimate > threshold else (1.0, 0.0)
        return 1.0, 1.0
    if not math.isfinite(se) or not df > 0:
        return 1.0, 1.0
    t = (estimate - threshold) / se
    return float(sps.t.sf(t, df)), float(sps.t.cdf(t, df))


def thresholds(op: str, margin: float | None = None, by: float | None = None,
               tol: float | None = None) -> tuple[float, float]:
    """The claim as θ's region: (low, high) such that it holds when low < θ (``>``, ``>=``), θ < high
    (``<``, ``<=``), or low < θ < high (``~``)."""
    if op in (">", ">="):
        return (-(margin or 0.0) if op == ">=" else (by or 0.0)), math.inf
    if op in ("<", "<="):
        return -math.inf, ((margin or 0.0) if op == "<=" else -(by or 0.0))
    return -tol, tol


def compare(c: Contrast, op: str, alpha: float, margin: float | None = None, tol: float | None = None,
            by: float | None = None) -> Test:
    """The claim ``θ op 0``: ``>`` θ > by, ``>=`` θ ≥ −margin, ``<`` θ < −by, ``<=`` θ ≤ margin, ``~``
    |θ| ≤ tol (TOST: both one-sided tests must reject), tested with Student's t."""
    low, high = thresholds(op, margin, by, tol)
    if op in (">", ">="):
        p_holds, p_fails = _beyond(c.estimate, low, c.se, c.df)
    elif op in ("<", "<="):
        p_fails, p_holds = _beyond(c.estimate, high, c.se, c.df)
    else:  # TOST for |θ| ≤ tol; "fails" on either side, Bonferroni over the two
        above_low, below_low = _beyond(c.estimate, low, c.se, c.df)
        above_high, below_high = _beyond(c.estimate, high, c.se, c.df)
        p_holds = max(above_low, below_high)
        p_fails = min(1.0, 2 * min(above_high, below_low))
    half = float(sps.t.ppf(1 - alpha / 2, c.df)) * c.se if math.isfinite(c.se) and c.df > 0 else math.nan
    return Test(c.estimate, (c.estimate - half, c.estimate + half), p_holds, p_fails, c.n, c.se, c.df, c.sd,
                c.unit)


# ---- power ---------------------------------------------------------------------------------------------


def power(effect: float, se: float, df: float, level: float, two_sided_band: float | None = None) -> float:
    """P(a one-sided t test at ``level`` rejects) when θ − threshold = ``effect`` > 0 and θ̂ has standard
    error ``se`` on ``df`` degrees of freedom (noncentral t). With ``two_sided_band`` = 2·tol the TOST's
    power at a true θ whose distances to the two margins are ``effect`` and band − effect (a Bonferroni
    lower bound: both one-sided tests must reject)."""
    if se <= 0:
        return 1.0 if effect > 0 else 0.0
    crit = float(sps.t.ppf(1 - level, df))
    one = float(sps.nct.sf(crit, df, effect / se))
    if two_sided_band is None:
        return one
    other = float(sps.nct.sf(crit, df, (two_sided_band - effect) / se))
    return max(0.0, one + other - 1.0)


def seeds_needed(effect: float, unit: float, df_at, level: float, target: float = 0.8,
                 band: float | None = None, se_fixed: float = 0.0) -> int | None:
    """The fewest seeds per configuration n at which :func:`power` reaches ``target``, with se(n)² =
    unit² / n + se_fixed² and df(n) = ``df_at(n)``; None when no n ≤ MAX_SEEDS does."""
    if not effect > 0 or not unit > 0 or (band is not None and not band - effect > 0):
        return None

    def ok(n: int) -> bool:
        se = math.sqrt(unit * unit / n + se_fixed * se_fixed)
        return power(effect, se, max(1.0, df_at(n)), level, band) >= target

    # Start from the normal approximation (a few noncentral-t evaluations instead of ~30), then walk.
    z = float(sps.norm.ppf(1 - level) + sps.norm.ppf(target))
    if band is not None:
        z = float(sps.norm.ppf(1 - level) + sps.norm.ppf((1 + target) / 2))
    room = effect * effect / (z * z) - se_fixed * se_fixed
    guess = MAX_SEEDS if room <= 0 else min(MAX_SEEDS, max(2, math.ceil(unit * unit / room)))
    n = guess
    if ok(n):  # the normal approximation overshoots a little at small df: step down
        while n > 2 and ok(n - 1):
            n -= 1
        return n
    fail = n  # power grows with n: find an n that reaches the target, then the first one
    while not ok(n):
        if n >= MAX_SEEDS:
            return None
        fail, n = n, min(MAX_SEEDS, n + max(1, n // 8))
    while n - fail > 1:
        mid = (fail + n) // 2
        fail, n = (mid, n) if not ok(mid) else (fail, mid)
    return n


# ---- correlations ----------------------------------------------------------------------------------------


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


def spearman_trials_needed(rho: float, level: float, target: float = 0.8) -> int | None:
    """Trials for a one-sided test of ρ's sign at ``level`` to reach ``target`` power at the observed ρ
    (Fisher's z with the Bonett–Wright variance 1.06 / (n − 3) for Spearman's ρ)."""
    if not 0 < abs(rho) < 1:
        return None
    z = math.atanh(abs(rho))
    n = 3 + 1.06 * ((sps.norm.ppf(1 - level) + sps.norm.ppf(target)) / z) ** 2
    return math.ceil(n) if n <= MAX_SEEDS else None


# ---- several tests -------------------------------------------------------------------------------------


def combine(tests: Sequence[Test]) -> tuple[float, float, int]:
    """A claim that must hold in every stratum: (p_holds, p_fails, index of the least favourable stratum).
    It holds only if every stratum does (intersection–union: the largest p_holds); it fails if any
    stratum fails (Bonferroni over the strata: S × the smallest p_fails)."""
    worst = max(range(len(tests)), key=lambda i: (tests[i].p_holds, -tests[i].p_fails))
    p_fails = min(1.0, len(tests) * min(t.p_fails for t in tests))
    return tests[worst].p_holds, p_fails, worst


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: sorted ascending, p_(i) × (m − i + 1), made monotone, capped at 1.
    Rejecting where the adjusted p ≤ level controls the family-wise error at that level. Hand-written:
    statsmodels' multipletests gives the same numbers (a test checks) but runs a full garbage collection
    per call, about 1 s in a large process, and verify calls it twice per family."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
