"""Effects of factors, bound–accuracy correlations and ANOVA over a study's completed trials.

Every statistic is computed over the final evaluation of each *completed* trial (one row per seed
replicate). Confidence intervals are 95 % percentile bootstraps that resample those trials, seeded, and
vectorised: a bootstrap replicate is a vector of multiplicities ``w`` (how often each trial is drawn), so
a resampled mean is ``w @ x / n`` and a resampled Spearman correlation is a weighted Pearson correlation of
ranks that are recomputed from ``w`` with cumulative sums — no Python loop over replicates, no sort per
replicate.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mimax.analysis.load import SHORT_FACTORS, StudyData, final
from mimax.analysis.tables import isnan

__all__ = ["anova", "compare", "completed_finals", "configurations", "correlations", "effect_tables", "effects",
           "factor_levels", "final_metrics", "pairwise"]

METRICS = ("probe_accuracy", "bound_train", "bound_test")
MAX_LEVELS = 8  # a numeric factor with more distinct values (a sampled lr) is cut into quantile bins
N_BINS = 5
BOOKKEEPING = ("trial_key", "step", "loss", "wall_s", "pack_size")  # evaluation columns that are not results
_CHUNK = 128_000  # elements of a weight matrix built at once: small blocks stay in cache (~3× faster than 4M)


# ---- shared helpers -------------------------------------------------------------------------------


def completed_finals(data: StudyData, how: str = "last") -> pd.DataFrame:
    """``final(data, how)`` restricted to completed trials."""
    f = final(data, how)
    return f[f["state"] == "completed"].reset_index(drop=True)


def factor_levels(frame: pd.DataFrame, factor: str) -> pd.Series:
    """The level of each row for ``factor``: its value, or for a numeric factor with more than
    MAX_LEVELS distinct values its quantile bin ("[lo, hi]")."""
    col = frame[factor]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and col.nunique() > MAX_LEVELS:
        bins = pd.qcut(col, N_BINS, duplicates="drop")
        return bins.map(lambda iv: f"[{iv.left:.4g}, {iv.right:.4g}]").astype(object)
    return col.astype(object)


def _groups(frame: pd.DataFrame, factor: str) -> list[tuple[object, np.ndarray]]:
    """(level, row positions) for each level present, in sorted level order (NaN levels dropped)."""
    levels = factor_levels(frame, factor).reset_index(drop=True)
    out = levels.groupby(levels, sort=False).indices
    try:
        order = sorted(out)
    except TypeError:
        order = sorted(out, key=str)
    return [(level, out[level]) for level in order]


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> Iterator[np.ndarray]:
    """Bootstrap multiplicities, ``(rows, n)`` int64 chunks summing to ``n_boot`` rows: row b counts how
    often each of the n items is drawn when n items are drawn with replacement."""
    rows = max(1, _CHUNK // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)  # int64
        done += b


def _boot_means(rng: np.random.Generator, values: np.ndarray, n_boot: int) -> np.ndarray:
    """(n_boot, m) resampled column means of ``values`` (n, m); NaNs must be removed beforehand."""
    n = len(values)
    if n == 0:
        return np.full((n_boot, values.shape[1]), np.nan)
    return np.concatenate([w @ values / n for w in _weights(rng, n, n_boot)])


def _ci(boot: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        return np.nanpercentile(boot, 2.5, axis=axis), np.nanpercentile(boot, 97.5, axis=axis)


def result_metrics(data: StudyData) -> tuple[str, ...]:
    """``METRICS`` and, where a study records several probes, each one's accuracy (probe_accuracy.<label>)."""
    return (*METRICS, *sorted(c for c in data.evaluations.columns if c.startswith("probe_accuracy.")))


def _metrics(frame: pd.DataFrame, metric_cols: Sequence[str]) -> list[str]:
    return [m for m in metric_cols if m in frame.columns and frame[m].notna().any()]


# ---- effects --------------------------------------------------------------------------------------


def _level_boot(frame: pd.DataFrame, factors: Sequence[str], metrics: list[str], n_boot: int, seed: int):
    """For each (factor, level, metric): the non-NaN values and ``n_boot`` bootstrap means. One set of
    resampling weights per level serves every metric (a resample draws trials, not single values); where
    a metric is missing for some trials the resampled mean is over the drawn trials that have it."""
    rng = np.random.default_rng(seed)
    values = frame[metrics].to_numpy(dtype=float) if metrics else np.empty((len(frame), 0))
    out = {}
    for factor in factors:
        for level, pos in _groups(frame, factor):
            X = values[pos]
            present = ~np.isnan(X)
            boot = np.empty((0, len(metrics)))
            if n_boot > 0 and len(pos) and metrics:
                X0, M = np.where(present, X, 0.0), present.astype(float)
                full = present.all()
                chunks = []
                for w in _weights(rng, len(pos), n_boot):
                    with np.errstate(invalid="ignore", divide="ignore"):
                        chunks.append(w @ X0 / (len(pos) if full else w @ M))
                boot = np.concatenate(chunks)
            for j, metric in enumerate(metrics):
                out[(factor, level, metric)] = (X[present[:, j], j], boot[:, j] if len(boot) else boot[:, :0])
    return out


def effect_tables(
    data: StudyData,
    metric_cols: Sequence[str] = METRICS,
    how: str = "last",
    n_boot: int = 2000,
    seed: int = 0,
    factors: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(effects(...), pairwise(...))`` from one set of bootstrap resamples (what ``analyze`` uses)."""
    frame = completed_finals(data, how)
    factors = list(data.factors if factors is None else factors)
    metrics = _metrics(frame, metric_cols)
    boots = _level_boot(frame, factors, metrics, n_boot, seed)
    return _effects_frame(boots), _pairwise_frame(boots, factors, metrics)


def _effects_frame(boots: dict) -> pd.DataFrame:
    rows = []
    for (factor, level, metric), (x, boot) in boots.items():
        lo, hi = _ci(boot) if len(boot) and len(x) else (np.nan, np.nan)
        rows.append({
            "factor": factor, "level": level, "metric": metric, "n": len(x),
            "mean": float(x.mean()) if len(x) else np.nan,
            "sd": float(x.std(ddof=1)) if len(x) > 1 else np.nan,
            "ci_low": float(lo), "ci_high": float(hi),
        })
    cols = ["factor", "level", "metric", "mean", "sd", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).astype({"level": object})


def _pairwise_frame(boots: dict, factors: Sequence[str], metrics: list[str]) -> pd.DataFrame:
    rows = []
    for factor in factors:
        levels = list(dict.fromkeys(lv for f, lv, _ in boots if f == factor))
        for metric in metrics:
            for a, b in itertools.combinations(levels, 2):
                xa, ba = boots[(factor, a, metric)]
                xb, bb = boots[(factor, b, metric)]
                diff = lo = hi = p = np.nan
                if len(xa) and len(xb):
                    diff = float(xb.mean() - xa.mean())
                    if len(ba) and len(bb):
                        d = bb - ba
                        lo, hi = _ci(d)
                        d = d[~np.isnan(d)]
                        p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if len(d) else np.nan
                rows.append({"factor": factor, "metric": metric, "level_a": a, "level_b": b,
                             "mean_a": float(xa.mean()) if len(xa) else np.nan,
                             "mean_b": float(xb.mean()) if len(xb) else np.nan,
                             "diff": diff, "ci_low": float(lo), "ci_high": float(hi), "p_boot": p,
                             "n_a": len(xa), "n_b": len(xb)})
    cols = ["factor", "metric", "level_a", "level_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
            "p_boot", "n_a", "n_b"]
    return pd.DataFrame(rows, columns=cols).astype({"level_a": object, "level_b": object})


def effects(data: StudyData, *args, **kwargs) -> pd.DataFrame:
    """Tidy frame, one row per (factor, level, metric) over completed trials: mean, sd (ddof 1), n
    (replicate trials with a value), ci_low / ci_high (95 % bootstrap of the mean, resampling trials).
    Arguments as :func:`effect_tables`."""
    return effect_tables(data, *args, **kwargs)[0]


def pairwise(data: StudyData, *args, **kwargs) -> pd.DataFrame:
    """For each factor, metric and pair of levels (a, b) in level order: ``diff`` = mean(b) − mean(a),
    its 95 % bootstrap CI (the two levels resampled independently) and ``p_boot``, the two-sided
    bootstrap p-value (twice the smaller share of resampled differences on either side of 0).
    Arguments as :func:`effect_tables`."""
    return effect_tables(data, *args, **kwargs)[1]


# ---- configurations -------------------------------------------------------------------------------


def objective(data: StudyData) -> str:
    """The study's first objective metric (probe_accuracy when the study row names none)."""
    metrics = data.study.get("metrics") or []
    return str(metrics[0]) if metrics else "probe_accuracy"


def final_metrics(data: StudyData) -> list[str]:
    """The numeric result columns of the evaluations: the objective, probe_accuracy, bound_test and
    bound_train first, then the others (log_cond_*, classifier_accuracy, true_mi, ...) in column order."""
    ev = data.evaluations
    cols = [c for c in ev.columns if c not in BOOKKEEPING and c not in data.trials.columns
            and pd.api.types.is_numeric_dtype(ev[c]) and not pd.api.types.is_bool_dtype(ev[c])]
    first = [objective(data), "probe_accuracy", "bound_test", "bound_train"]
    return list(dict.fromkeys([c for c in first if c in cols] + cols))


def config_columns(data: StudyData, frame: pd.DataFrame) -> list[str]:
    """The factors as dotted config columns ("critic" -> "critic.name") where the frame has them."""
    dotted = {f: f"{f}.name" if f in SHORT_FACTORS else f for f in data.factors}
    return [d if d in frame.columns else f for f, d in dotted.items()]


def _sorted_keys(keys: list[tuple]) -> list[tuple]:
    """Level tuples in order, missing values last; mixed types (a number and a string) by their text."""
    def key(k, text=False):
        return tuple((isnan(v), "" if isnan(v) else (str(v) if text else v)) for v in k)

    try:
        return sorted(keys, key=key)
    except TypeError:
        return sorted(keys, key=lambda k: key(k, text=True))


def configurations(data: StudyData, how: str = "last", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per configuration (a combination of the factors' values), sorted by them: ``n`` (its
    completed trials, i.e. seeds), then per final metric (:func:`final_metrics`) ``<m>_mean`` and
    ``<m>_sd`` (ddof 1) over the completed trials that have it, and for the study's first objective
    ``<m>_ci_low`` / ``<m>_ci_high``, a 95 % bootstrap CI of the mean (seeds resampled). A
    configuration none of whose trials completed keeps a row with n = 0, so it is not lost; two
    config_ids with the same values (a sampler that drew a combination twice) share one row."""
    fin = final(data, how)
    cols = config_columns(data, fin)
    done = (fin["state"] == "completed").to_numpy()
    metrics = _metrics(fin[done], final_metrics(data))
    target = objective(data)
    values = fin[metrics].to_numpy(dtype=float) if metrics else np.empty((len(fin), 0))
    groups: dict[tuple, list[int]] = {}
    for pos, row in enumerate(fin[cols].itertuples(index=False, name=None)):
        groups.setdefault(tuple(None if isnan(v) else v for v in row), []).append(pos)
    rng = np.random.default_rng(seed)
    rows = []
    for key in _sorted_keys(list(groups)):
        pos = [p for p in groups[key] if done[p]]
        row = {**dict(zip(cols, key)), "n": len(pos)}
        for j, m in enumerate(metrics):
            x = values[pos, j]
            x = x[~np.isnan(x)]
            row[f"{m}_mean"] = float(x.mean()) if len(x) else np.nan
            row[f"{m}_sd"] = float(x.std(ddof=1)) if len(x) > 1 else np.nan
            if m == target:
                lo = hi = np.nan
                if len(x) and n_boot > 0:
                    lo, hi = (float(v) for v in _ci(_boot_means(rng, x[:, None], n_boot)[:, 0]))
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo, hi
        rows.append(row)
    names = [f"{m}_{s}" for m in metrics for s in ("mean", "sd", *(("ci_low", "ci_high") if m == target else ()))]
    return pd.DataFrame(rows, columns=[*cols, "n", *names])


# ---- correlations ---------------------------------------------------------------------------------


def _doubled_centred_ranks(ws: np.ndarray, starts: np.ndarray | None, n: int) -> np.ndarray:
    """2 × (rank − (n + 1) / 2) inside each weighted resample, in exact integers, for items already in
    value order: ``ws`` (rows = resamples) are the items' multiplicities; ``starts`` the first item of
    each run of tied values (None: no ties). A value drawn w times after c earlier draws occupies
    places c+1..c+w, so its (average) rank is c + (w + 1) / 2."""
    if starts is None:
        r2 = np.cumsum(ws, axis=1)
        r2 *= 2
        r2 -= ws
    else:
        block_w = np.add.reduceat(ws, starts, axis=1)
        r2 = np.cumsum(block_w, axis=1)
        r2 *= 2
        r2 -= block_w
        r2 = np.repeat(r2, np.diff(np.r_[starts, ws.shape[1]]), axis=1)
    r2 -= n  # 2 * rank - (n + 1), with 2 * rank = 2c + w + 1
    return r2


def _order(values: np.ndarray):
    order = np.argsort(values, kind="stable")
    sv = values[order]
    tied = np.r_[True, sv[1:] != sv[:-1]]
    return order, (None if tied.all() else np.flatnonzero(tied))


def boot_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman's rho of ``n_boot`` resamples of the pairs (x, y); NaN where a resample is constant.

    Row b of the weights counts how often each pair is drawn. Ranks of a resample come from cumulative
    sums of the weights in value order, and their weighted mean is (n + 1) / 2 whatever the resample,
    so rho is a weighted Pearson correlation of centred ranks — computed in exact integer arithmetic
    (doubled ranks) and divided once at the end."""
    n = len(x)
    ox, tx = _order(x)
    oy, ty = _order(y)
    y_in_x = np.empty(n, dtype=np.intp)  # where each item of x-order sits in y-order
    y_in_x[oy] = np.arange(n)
    y_in_x = y_in_x[ox]
    out = []
    for w in _weights(rng, n, n_boot):
        wx = w[:, ox]
        dx = _doubled_centred_ranks(wx, tx, n)
        dy = _doubled_centred_ranks(w[:, oy], ty, n)[:, y_in_x]
        wdx = wx * dx
        cov = np.einsum("ij,ij->i", wdx, dy)
        vx = np.einsum("ij,ij->i", wdx, dx)
        vy = np.einsum("ij,ij->i", wx * dy, dy)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(cov / np.sqrt(vx.astype(float) * vy.astype(float)))
    return np.concatenate(out) if out else np.empty(0)


def _corr_row(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    n = len(x)
    row = {"n": n, "spearman": np.nan, "spearman_p": np.nan, "kendall": np.nan, "kendall_p": np.nan,
           "ci_low": np.nan, "ci_high": np.nan}
    if n < 3:
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said by the NaN itself
        s = sps.spearmanr(x, y)
        k = sps.kendalltau(x, y)
    row.update(spearman=float(s.statistic), spearman_p=float(s.pvalue), kendall=float(k.statistic),
               kendall_p=float(k.pvalue))
    if n_boot > 0 and not math.isnan(row["spearman"]):
        lo, hi = _ci(boot_spearman(x, y, n_boot, rng))
        row.update(ci_low=float(lo), ci_high=float(hi))
    return row


def correlations(
    data: StudyData,
    x: str = "bound_test",
    y: str = "probe_accuracy",
    strata: Sequence[str] = ("estimator", "encoder", "critic"),
    n_boot: int = 2000,
    seed: int = 0,
    how: str = "last",
) -> pd.DataFrame:
    """Spearman (with a 95 % percentile bootstrap CI) and Kendall correlations of ``x`` and ``y`` over all
    completed trials (stratum "all") and within each level of each stratum column present. Beside them:
    ``ceiling_gap``, the mean of ceiling − final bound over the trials of the row that recorded a ceiling
    (log K for NCE, K = train.batch_size), and ``n_ceiling``, how many they are."""
    frame = completed_finals(data, how)
    cols = ["stratum", "level", "x", "y", "n", "spearman", "spearman_p", "kendall", "kendall_p", "ci_low",
            "ci_high", "ceiling_gap", "n_ceiling"]
    if x not in frame.columns or y not in frame.columns:
        return pd.DataFrame(columns=cols)
    frame = frame[frame[x].notna() & frame[y].notna()].reset_index(drop=True)
    bound = x if x.startswith("bound") else "bound_test"
    gap = pd.Series(np.nan, index=frame.index)
    if "ceiling" in frame.columns and bound in frame.columns:
        gap = frame["ceiling"].astype(float) - frame[bound]
    rng = np.random.default_rng(seed)
    parts = [("all", "all", np.arange(len(frame)))]
    for s in strata:
        if s in frame.columns and frame[s].notna().any():
            parts += [(s, level, pos) for level, pos in _groups(frame, s)]
    rows = []
    xv, yv = frame[x].to_numpy(dtype=float), frame[y].to_numpy(dtype=float)
    for stratum, level, pos in parts:
        g = gap.iloc[pos].dropna()
        rows.append({"stratum": stratum, "level": level, "x": x, "y": y,
                     **_corr_row(xv[pos], yv[pos], n_boot, rng),
                     "ceiling_gap": float(g.mean()) if len(g) else np.nan, "n_ceiling": len(g)})
    return pd.DataFrame(rows, columns=cols).astype({"level": object})


# ---- ANOVA ----------------------------------------------------------------------------------------


def _dummies(levels: pd.Series) -> np.ndarray:
    """Treatment-coded indicator columns of a categorical (first level dropped)."""
    codes, uniq = pd.factorize(levels.astype(str), sort=True)
    return np.eye(len(uniq))[codes][:, 1:]


def anova(data: StudyData, metric: str = "probe_accuracy", how: str = "last",
          factors: Sequence[str] | None = None) -> pd.DataFrame:
    """Categorical ANOVA of ``metric`` over completed trials. ``test == "one-way"`` rows: per factor,
    scipy's f_oneway (F, p) and eta² = SS_between / SS_total. ``test == "type-I"`` rows (two or more
    factors): the sequential sums of squares of an additive main-effects model (factors in order, then
    the residual), with F, p and partial eta² = SS / (SS + SS_residual)."""
    cols = ["test", "factor", "metric", "df", "ss", "F", "p", "eta2", "n", "levels"]
    frame = completed_finals(data, how)
    factors = list(data.factors if factors is None else factors)
    if metric not in frame.columns:
        return pd.DataFrame(columns=cols)
    frame = frame[frame[metric].notna()].reset_index(drop=True)
    y = frame[metric].to_numpy(dtype=float)
    ss_total = float(((y - y.mean()) ** 2).sum()) if len(y) else np.nan
    rows = []
    for factor in factors:
        groups = [y[pos] for _, pos in _groups(frame, factor)]
        n = sum(len(g) for g in groups)
        row = {"test": "one-way", "factor": factor, "metric": metric, "df": len(groups) - 1, "n": n,
               "levels": len(groups), "ss": np.nan, "F": np.nan, "p": np.nan, "eta2": np.nan}
        if len(groups) >= 2 and n > len(groups):
            allv = np.concatenate(groups)
            ss_between = float(sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups))
            ss_tot = float(((allv - allv.mean()) ** 2).sum())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zero within-group variance: F is inf or NaN
                res = sps.f_oneway(*groups)
            row.update(ss=ss_between, F=float(res.statistic), p=float(res.pvalue),
                       eta2=ss_between / ss_tot if ss_tot > 0 else np.nan)
        rows.append(row)

    usable = [f for f in factors if f in frame.columns and factor_levels(frame, f).notna().all()]
    if len(usable) >= 2 and len(y) > 2:
        X = np.ones((len(y), 1))
        rss_prev, rank_prev = ss_total, 1
        seq = []
        for factor in usable:
            X = np.hstack([X, _dummies(factor_levels(frame, factor))])
            beta, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)  # rank: the matrix_rank of X
            rss = float(((y - X @ beta) ** 2).sum())
            seq.append((factor, int(rank) - rank_prev, rss_prev - rss))
            rss_prev, rank_prev = rss, int(rank)
        df_res = len(y) - rank_prev
        ms_res = rss_prev / df_res if df_res > 0 else np.nan
        for factor, df, ss in seq:
            F = (ss / df) / ms_res if df > 0 and ms_res and ms_res > 0 else np.nan
            rows.append({"test": "type-I", "factor": factor, "metric": metric, "df": df, "ss": ss, "F": F,
                         "p": float(sps.f.sf(F, df, df_res)) if not math.isnan(F) else np.nan,
                         "eta2": ss / (ss + rss_prev) if ss + rss_prev > 0 else np.nan,
                         "n": len(y), "levels": int(factor_levels(frame, factor).nunique())})
        rows.append({"test": "type-I", "factor": "residual", "metric": metric, "df": df_res, "ss": rss_prev,
                     "F": np.nan, "p": np.nan, "eta2": np.nan, "n": len(y), "levels": np.nan})
    return pd.DataFrame(rows, columns=cols)


# ---- two studies ----------------------------------------------------------------------------------


def _config_key(frame: pd.DataFrame, factors: Sequence[str]) -> pd.Series:
    return frame[list(factors)].astype(str).agg(" | ".join, axis=1) if factors else pd.Series("all", index=frame.index)


def compare(
    a: StudyData,
    b: StudyData,
    metric_cols: Sequence[str] = ("probe_accuracy", "bound_test"),
    how: str = "last",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per configuration (matched by the values of the two studies' factors): each study's mean final
    metric over its completed replicates, ``diff`` = b − a and its 95 % bootstrap CI (each study's
    replicates resampled independently). Configurations run by only one study keep NaN on the other side.
    One row per (configuration, metric)."""
    factors = list(dict.fromkeys([*a.factors, *b.factors]))
    fa, fb = completed_finals(a, how), completed_finals(b, how)
    for f in factors:  # a factor varied by one study only is fixed (or absent) in the other
        for frame in (fa, fb):
            if f not in frame.columns:
                frame[f] = None
    ka, kb = _config_key(fa, factors), _config_key(fb, factors)
    keys = list(dict.fromkeys([*ka, *kb]))
    rng = np.random.default_rng(seed)
    rows = []
    for key in keys:
        sel_a, sel_b = fa[(ka == key).to_numpy()], fb[(kb == key).to_numpy()]
        first = sel_a if len(sel_a) else sel_b
        levels = {f: first[f].iloc[0] for f in factors}
        for metric in metric_cols:
            xa = sel_a[metric].dropna().to_numpy(dtype=float) if metric in sel_a.columns else np.empty(0)
            xb = sel_b[metric].dropna().to_numpy(dtype=float) if metric in sel_b.columns else np.empty(0)
            ma = float(xa.mean()) if len(xa) else np.nan
            mb = float(xb.mean()) if len(xb) else np.nan
            lo = hi = np.nan
            if len(xa) and len(xb) and n_boot > 0:
                d = _boot_means(rng, xb[:, None], n_boot)[:, 0] - _boot_means(rng, xa[:, None], n_boot)[:, 0]
                lo, hi = (float(v) for v in _ci(d))
            rows.append({"config": key, **levels, "metric": metric, "mean_a": ma, "mean_b": mb, "diff": mb - ma,
                         "ci_low": lo, "ci_high": hi, "n_a": len(xa), "n_b": len(xb)})
    cols = ["config", *factors, "metric", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "n_a", "n_b"]
    return pd.DataFrame(rows, columns=cols)
