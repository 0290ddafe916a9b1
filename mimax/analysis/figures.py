"""Figures of a study in the style of Tschannen et al. (ICLR 2020): training step on x, the mean over
seeds as a line and ± 1 sample standard deviation as a shaded band, one band per configuration.

Every function takes a :class:`~mimax.analysis.load.StudyData` and returns a ``matplotlib.figure.Figure``
(or ``None`` when the study has nothing to show for it). No pyplot: figures are plain ``Figure``
objects, so nothing leaks into matplotlib's global state and any backend-less process can draw them.
``save(fig, out_dir, stem)`` writes the PNG and the SVG.

The mean line of a configuration has the gid ``"mean:<config_id>"`` and its band ``"band:<config_id>"``,
so a reader (or a test) can find them on the axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from mimax.analysis import load
from mimax.analysis.stats import completed_finals
from mimax.analysis.tables import isnan, level_text
from mimax.contract import LOG_COND, ceiling_label, mode_metrics

__all__ = [
    "adversarial",
    "band",
    "calibration",
    "calibration_table",
    "ceilings",
    "conditioning",
    "config_labels",
    "curves",
    "final_scatter",
    "is_adversarial",
    "level_text",
    "save",
    "true_mi",
]

METRIC_NAMES = {
    "probe_accuracy": "probe accuracy",
    "bound_test": "bound, test (nats)",
    "bound_train": "bound, train (nats)",
    "classifier_accuracy": "classifier accuracy",
    "loss": "training loss",
}
MAX_CONFIGS = 12  # more bands than this are unreadable: show the best ones
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.hashsalt": "mimax",  # stable ids in the SVG
}


# ---- helpers ---------------------------------------------------------------------------------------


def config_labels(data) -> dict[str, str]:
    """config_id -> a legend label from the study's factor levels ("bilinear · nce", "lr=0.0001").

    With no varying factor the label names the components instead; labels two configurations share
    get their config_id appended."""
    trials = data.trials
    factors = [f for f in data.factors if f in trials.columns]
    if not factors:
        factors = [c for c in ("encoder", "critic", "estimator") if c in trials.columns]
    rows = trials.drop_duplicates("config_id").set_index("config_id")
    labels = {}
    for cid, row in rows.iterrows():
        parts = [level_text(row[f]) if "." not in f else f"{f.rsplit('.', 1)[1]}={level_text(row[f])}"
                 for f in factors if not isnan(row[f])]
        labels[str(cid)] = " · ".join(parts) or str(cid)
    counts = pd.Series(list(labels.values())).value_counts()
    return {c: (f"{lab} [{c}]" if counts[lab] > 1 else lab) for c, lab in labels.items()}


def _tidy(data, metric: str) -> pd.DataFrame:
    """Evaluations with a non-null ``metric``, joined with their trial's config_id and columns."""
    ev = data.evaluations
    if metric not in ev.columns:
        return pd.DataFrame(columns=["trial_key", "step", metric, "config_id"])
    ev = ev[["trial_key", "step", metric]].dropna(subset=[metric])
    return ev.merge(data.trials[["trial_key", "config_id"]], on="trial_key", how="inner")


def band(ev: pd.DataFrame, metric: str, by: str = "step") -> pd.DataFrame:
    """Per step (or per value of ``by``): mean, sd (ddof=1; 0 with a single seed) and n of ``metric`` over
    the rows (seeds)."""
    g = ev.groupby(by)[metric]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()}).sort_index()
    out["sd"] = out["sd"].fillna(0.0)
    return out


def _colours(ids: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(ids) <= 10 else "tab20"]
    return {cid: cmap(i % cmap.N) for i, cid in enumerate(ids)}


def _colours_across_panels(data, ids: list[str], panel_by: str | None) -> dict[str, tuple]:
    """One colour per combination of the factors other than ``panel_by``, so that e.g. the bilinear
    critic has the same colour in the NCE and the NWJ panel."""
    rows = data.trials.drop_duplicates("config_id")
    t = rows.set_index(rows["config_id"].astype(str))
    others = [f for f in data.factors if f != panel_by and f in t.columns]
    if not others:
        return _colours(ids)
    key = {c: " · ".join(level_text(t.at[c, f]) for f in others) for c in ids}
    palette = _colours(sorted(set(key.values())))
    return {c: palette[key[c]] for c in ids}


def _select(ev: pd.DataFrame, metric: str, higher_is_better: bool = True) -> tuple[list[str], int]:
    """The configurations to draw (at most MAX_CONFIGS, the best by final mean) and how many there were."""
    ids = sorted(ev["config_id"].astype(str).unique())
    if len(ids) <= MAX_CONFIGS:
        return ids, len(ids)
    last = ev.sort_values("step").groupby(["config_id", "trial_key"])[metric].last().groupby(level=0).mean()
    best = last.sort_values(ascending=not higher_is_better).index[:MAX_CONFIGS]
    return sorted(str(c) for c in best), len(ids)


def ceilings(data) -> dict[str, tuple[float, str]]:
    """config_id -> its trials' ceiling and its label (``log K = 4.159 (K = 64)`` for NCE), for the
    configurations that have one (load.ceilings: what the trials recorded, or in a database from before
    revision 0003 the rule it backfills with)."""
    rows = data.trials.assign(_ceiling=load.ceilings(data.trials)).dropna(subset=["_ceiling"])
    rows = rows.drop_duplicates("config_id")
    ks = rows["train.batch_size"] if "train.batch_size" in rows else [None] * len(rows)
    return {str(c): (float(v), ceiling_label(float(v), None if pd.isna(k) else int(k)))
            for c, v, k in zip(rows["config_id"], rows["_ceiling"], ks)}


def _panels(data, panel_by: str | None) -> list[tuple[str | None, set[str]]]:
    """[(panel title, config_ids in it)]; one panel when ``panel_by`` is None or absent."""
    t = data.trials
    if panel_by is None or panel_by not in t.columns:
        return [(None, set(t["config_id"].astype(str)))]
    return [(level_text(level), set(rows["config_id"].astype(str)))
            for level, rows in t.groupby(panel_by, sort=True, dropna=False)]


def _default_panel_by(data) -> str | None:
    return "estimator" if "estimator" in data.factors else None


def _figure(n_panels: int, ncols: int = 3, width: float = 4.2, height: float = 3.2):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _draw_band(ax, stats: pd.DataFrame, colour, label: str, gid: str, alpha: float = 0.2):
    x = stats.index.to_numpy(dtype=float)
    m, s = stats["mean"].to_numpy(), stats["sd"].to_numpy()
    poly = ax.fill_between(x, m - s, m + s, color=colour, alpha=alpha, linewidth=0)
    poly.set_gid(f"band:{gid}")
    (line,) = ax.plot(x, m, color=colour, label=label, linewidth=1.5)
    line.set_gid(f"mean:{gid}")
    return line


def save(fig: Figure, out_dir, stem: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.png`` (150 dpi) and ``out_dir/stem.svg``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    with rc_context(STYLE):
        fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return [png, svg]


# ---- figures ---------------------------------------------------------------------------------------


def curves(data, metric: str = "probe_accuracy", *, panel_by: str | None = "auto") -> Figure | None:
    """``metric`` vs training step: per configuration the mean over seeds ± 1 sd, one panel per level
    of ``panel_by`` (default: the estimator, when it varies). Bounds get a dashed log K line in the
    panels whose configurations recorded a ceiling (NCE's). None when no evaluation has ``metric``."""
    ev = _tidy(data, metric)
    if ev.empty:
        return None
    ids, n_all = _select(ev, metric, higher_is_better=metric != "loss")
    panel_by = _default_panel_by(data) if panel_by == "auto" else panel_by
    labels = config_labels(data)
    ids = sorted(ids, key=lambda c: labels[c])
    colours = _colours_across_panels(data, ids, panel_by)
    panels = _panels(data, panel_by)
    panels = [(title, [c for c in ids if c in cids]) for title, cids in panels]
    panels = [(title, cids) for title, cids in panels if cids]
    bounds = metric.startswith("bound")
    ceil = ceilings(data) if bounds else {}
    with rc_context(STYLE):
        fig, axes = _figure(len(panels))
        for ax, (title, cids) in zip(axes, panels, strict=True):
            for cid in cids:
                rows = ev[ev["config_id"].astype(str) == cid]
                n = rows["trial_key"].nunique()
                _draw_band(ax, band(rows, metric), colours[cid], f"{labels[cid]} (n={n})", cid)
            for k, label in sorted({ceil[c] for c in cids if c in ceil}):
                ax.axhline(k, color="0.35", linestyle="--", linewidth=1, label=f"ceiling {label}")
            ax.set_title(title or METRIC_NAMES.get(metric, metric))
            ax.set_xlabel("training step")
            ax.set_ylabel(METRIC_NAMES.get(metric, metric))
            ax.legend(loc="best")
        if n_all > len(ids):
            fig.suptitle(f"{METRIC_NAMES.get(metric, metric)}: the best {len(ids)} of {n_all} configurations "
                         "by final mean")
    return fig


def final_scatter(data, color_by: str | None = None, *, x: str = "bound_test",
                  y: str = "probe_accuracy", how: str = "last") -> Figure | None:
    """Final ``y`` (probe accuracy) vs final ``x`` (test bound), one point per trial, coloured by
    ``color_by`` (default: the first factor); ``how`` as in ``final``. None when either metric is
    missing everywhere."""
    fin = completed_finals(data, how)
    if x not in fin.columns or y not in fin.columns:
        return None
    fin = fin.dropna(subset=[x, y])
    if fin.empty:
        return None
    if color_by is None and data.factors:
        color_by = data.factors[0]
    with rc_context(STYLE):
        fig = Figure(figsize=(5.2, 4), layout="constrained")
        ax = fig.subplots()
        if color_by is None or color_by not in fin.columns:
            ax.scatter(fin[x], fin[y], s=18, color="C0")
        elif pd.api.types.is_numeric_dtype(fin[color_by]) and fin[color_by].nunique() > 6:
            sc = ax.scatter(fin[x], fin[y], c=fin[color_by], s=18, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=color_by)
        else:
            levels = sorted(fin[color_by].dropna().unique(), key=str)
            colours = _colours([str(v) for v in levels])
            for v in levels:
                rows = fin[fin[color_by] == v]
                ax.scatter(rows[x], rows[y], s=18, color=colours[str(v)], label=f"{level_text(v)} (n={len(rows)})")
            ax.legend(title=color_by, loc="best")
        ax.set_xlabel(f"final {METRIC_NAMES.get(x, x)}")
        ax.set_ylabel(f"final {METRIC_NAMES.get(y, y)}")
        ax.set_title(f"{len(fin)} trials")
    return fig


def conditioning(data) -> Figure | None:
    """Fig. 2: the Jacobian's log condition number vs step, per configuration: the p5–p95 band (light),
    p25–p75 (darker) and the median line, each the mean over seeds (bands whose percentiles were not
    recorded are left out). None when the study has no log_cond_* values."""
    ev = data.evaluations
    have = [c for c in LOG_COND if c in ev.columns and ev[c].notna().any()]
    if not have:
        return None
    ev = ev[["trial_key", "step", *have]].dropna(subset=have, how="all")
    ev = ev.merge(data.trials[["trial_key", "config_id"]], on="trial_key")
    ids, n_all = _select(ev, "log_cond_p50" if "log_cond_p50" in have else have[0])
    labels, colours = config_labels(data), _colours(ids)
    with rc_context(STYLE):
        fig, axes = _figure(len(ids))
        for ax, cid in zip(axes, ids, strict=True):
            rows = ev[ev["config_id"].astype(str) == cid]
            m = rows.groupby("step")[have].mean().sort_index()
            x = m.index.to_numpy(dtype=float)
            c = colours[cid]
            for lo, hi, alpha, gid in (("p5", "p95", 0.15, "band90"), ("p25", "p75", 0.35, "band50")):
                lo, hi = f"log_cond_{lo}", f"log_cond_{hi}"
                if lo in m.columns and hi in m.columns:
                    ax.fill_between(x, m[lo], m[hi], color=c, alpha=alpha, linewidth=0,
                                    label=f"{lo[9:]}–{hi[9:]}").set_gid(f"{gid}:{cid}")
            if "log_cond_p50" in m.columns:
                ax.plot(x, m["log_cond_p50"], color=c, linewidth=1.5, label="median")[0].set_gid(f"mean:{cid}")
            ax.set_title(f"{labels[cid]} (n={rows['trial_key'].nunique()})")
            ax.set_xlabel("training step")
            ax.set_ylabel("log condition number of the Jacobian")
            ax.legend(loc="best")
        if n_all > len(ids):
            fig.suptitle(f"the {len(ids)} of {n_all} configurations with the highest final median")
    return fig


def true_mi(data) -> pd.Series:
    """trial_key -> the true MI between the views in nats, as the trial recorded it (NaN where unknown)."""
    t = data.trials.set_index("trial_key")
    return t["true_mi"].astype(float) if "true_mi" in t.columns else pd.Series(np.nan, index=t.index)


def _final_with_true_mi(data, metric: str, how: str) -> tuple[pd.DataFrame, list[str]] | None:
    """The completed trials' finals with their true MI, and the keys of a calibration cell beside the true
    MI: the estimator and what changes the data distribution. None without known-MI data."""
    mi = true_mi(data)
    if mi.isna().all() or "estimator" not in data.trials.columns:
        return None
    fin = completed_finals(data, how)
    if metric not in fin.columns:
        return None
    fin = fin.assign(true_mi=fin["trial_key"].map(mi)).dropna(subset=["true_mi", metric])
    keys = ["estimator", *(f for f in data.factors if f == "data" or (f.startswith("data.") and f != "data.mi"))]
    return None if fin.empty else (fin, keys)


def calibration_table(data, metric: str = "bound_test", how: str = "last") -> pd.DataFrame | None:
    """Bias, variance and MSE of each estimator's final ``metric`` against the true MI, pooled over
    seeds and the configurations that share the estimator, the data setting and the true MI.

    variance uses ddof=0, so mse == bias**2 + variance exactly (all in nats / nats²). None when the
    study has no known-MI data."""
    found = _final_with_true_mi(data, metric, how)
    if found is None:
        return None
    fin, keys = found
    rows = []
    for key, g in fin.groupby([*keys, "true_mi"], sort=True, dropna=False):
        est, truth = g[metric].to_numpy(dtype=float), float(key[-1])
        err = est - truth
        rows.append({**dict(zip([*keys, "true_mi"], key, strict=True)), "n": len(est),
                     "mean": est.mean(), "bias": err.mean(), "variance": est.var(ddof=0),
                     "mse": float(np.mean(err**2))})
    return pd.DataFrame(rows)


def calibration(data, metric: str = "bound_test", how: str = "last") -> Figure | None:
    """Final estimate vs true MI, per estimator (mean ± 1 sd over seeds and configurations, trials as
    faint points), with the y = x line and the ceilings the trials recorded (log K for NCE). None when
    the study has no known-MI data."""
    found = _final_with_true_mi(data, metric, how)
    if found is None:
        return None
    fin, keys = found
    fin = fin.assign(_series=fin[keys].astype(str).agg(" · ".join, axis=1))
    series = sorted(fin["_series"].unique())
    colours = _colours(series)
    with rc_context(STYLE):
        fig = Figure(figsize=(5.6, 4.4), layout="constrained")
        ax = fig.subplots()
        lo, hi = float(fin["true_mi"].min()), float(fin["true_mi"].max())
        pad = 0.1 * (hi - lo) if hi > lo else 0.5 * max(hi, 0.05)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", linestyle=":", linewidth=1,
                label="y = x (true MI)")
        width = (hi - lo if hi > lo else max(hi, 0.05)) * 0.012  # side by side, not on top of each other
        for i, s in enumerate(series):
            rows = fin[fin["_series"] == s]
            dodge = (i - (len(series) - 1) / 2) * width
            ax.scatter(rows["true_mi"] + dodge, rows[metric], s=8, color=colours[s], alpha=0.3, linewidth=0)
            st = band(rows, metric, by="true_mi")
            ax.errorbar(st.index + dodge, st["mean"], yerr=st["sd"], color=colours[s], marker="o", markersize=4,
                        capsize=3, linewidth=1.2, label=s)
        rows = fin.dropna(subset=["ceiling"]) if "ceiling" in fin.columns else fin.iloc[:0]
        ks = rows["train.batch_size"] if "train.batch_size" in rows else [None] * len(rows)
        for k, label in sorted({(float(v), ceiling_label(float(v), None if pd.isna(b) else int(b)))
                                for v, b in zip(rows["ceiling"], ks)}):
            ax.axhline(k, color="0.35", linestyle="--", linewidth=1, label=f"ceiling {label}")
        ax.set_xlabel("true MI (nats)")
        ax.set_ylabel(f"final {METRIC_NAMES.get(metric, metric)}")
        ax.set_title("estimator calibration")
        ax.legend(loc="best")
    return fig


def is_adversarial(data) -> bool:
    """Whether the study trained adversarially (Fig. 1c): train.mode, or the metrics only that mode reports."""
    t, ev = data.trials, data.evaluations
    return bool(("train.mode" in t.columns and (t["train.mode"] == "adversarial").any()) or any(
        m in ev.columns and ev[m].notna().any() for m in mode_metrics("adversarial")))


def adversarial(data) -> Figure | None:
    """Fig. 1c: probe accuracy (and the adversary's classifier accuracy) vs round, mean ± 1 sd over
    seeds per configuration. None when the study did not train adversarially."""
    ev = data.evaluations
    if not is_adversarial(data):
        return None
    metrics = [m for m in ("probe_accuracy", *mode_metrics("adversarial")) if m in ev.columns and ev[m].notna().any()]
    if not metrics:
        return None
    labels = config_labels(data)
    with rc_context(STYLE):
        fig = Figure(figsize=(5.6, 4), layout="constrained")
        ax = fig.subplots()
        n_styles = 0
        for metric, style in zip(metrics, ("-", "--"), strict=False):
            rows = _tidy(data, metric)
            ids = sorted(rows["config_id"].astype(str).unique())
            for i, cid in enumerate(ids):
                r = rows[rows["config_id"].astype(str) == cid]
                colour = f"C{(n_styles + i) % 10}"
                line = _draw_band(ax, band(r, metric), colour,
                                  f"{METRIC_NAMES[metric]}" + (f" · {labels[cid]}" if len(ids) > 1 else "")
                                  + f" (n={r['trial_key'].nunique()})", f"{metric}:{cid}")
                line.set_linestyle(style)
            n_styles += len(ids)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.set_title("adversarial training (Fig. 1c)")
        ax.legend(loc="best")
    return fig
