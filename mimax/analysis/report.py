"""The study report: one self-contained ``report.html`` (figures embedded as base64 PNG, CSS inline, no
external URL), the same content as ``report.md`` (figures as relative links into ``figures/``), and
every figure as PNG and SVG under ``figures/``.

Text from the database (study names, config values, environment strings) is user data: it is
HTML-escaped everywhere, in the Markdown too (Markdown renderers pass raw HTML through).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mimax.analysis import figures as F
from mimax.analysis.stats import completed_finals
from mimax.analysis.tables import html_table, isnan, md_escape, md_table, num
from mimax.contract import ceiling_label
from mimax.storage.db import Environment

__all__ = ["findings", "write_report"]

# (stem, title, what it shows, draw(data, how)) in report order; None from draw: nothing to show.
FIGURES: list[tuple[str, str, str, Callable]] = [
    ("curves-probe_accuracy", "Probe accuracy during training",
     "Linear-probe test accuracy vs training step: per configuration the mean over seeds (line) ± 1 sample "
     "standard deviation (band).", lambda d, how: F.curves(d, "probe_accuracy")),
    ("curves-bound_test", "Bound on held-out data during training",
     "The estimator's value on test data (nats) vs step, mean ± 1 sd over seeds; a dashed line is the "
     "ceiling its trials recorded (log K for NCE, K the batch size).", lambda d, how: F.curves(d, "bound_test")),
    ("curves-bound_train", "Bound on training batches during training",
     "The estimator's value on training batches (nats) vs step, mean ± 1 sd over seeds.",
     lambda d, how: F.curves(d, "bound_train")),
    ("final-scatter", "Final accuracy vs final bound",
     "One point per completed trial: its last probe accuracy against its last test bound.",
     lambda d, how: F.final_scatter(d, how=how)),
    ("conditioning", "Conditioning of the encoder (Fig. 2)",
     "Per-example log condition number of g1's Jacobian vs step: p5–p95 (light), p25–p75 (dark) and "
     "the median, each averaged over seeds.", lambda d, how: F.conditioning(d)),
    ("calibration", "Estimator calibration",
     "Final test estimate vs the true MI of the data: mean ± 1 sd over seeds and configurations, "
     "trials as faint points; on the dotted line the estimate equals the true MI.",
     lambda d, how: F.calibration(d, how=how)),
    ("adversarial", "Adversarial training (Fig. 1c)",
     "Probe accuracy (solid) and the adversary's classifier accuracy (dashed) vs round, mean ± 1 sd.",
     lambda d, how: F.adversarial(d)),
]

METRIC_WORDS = {
    "probe_accuracy": "probe accuracy",
    "bound_test": "test bound",
    "bound_train": "train bound",
}
_word = lambda metric: METRIC_WORDS.get(metric, metric)  # noqa: E731
PROSE_METRICS = ("probe_accuracy", "bound_test")  # findings in words; every metric is in the tables
ENV_COLUMNS = tuple(c for c in Environment.__table__.c.keys() if c not in ("id", "study_id", "extra"))

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2228;
background:#fff;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #dde1e6;
padding-bottom:.2em}h3{font-size:1.05em;margin-bottom:.3em}
.sub{color:#59636e;margin-top:0}
nav{font-size:.92em;color:#59636e}nav a{color:#0b62b5;text-decoration:none;margin-right:.9em}
ul.findings li{margin:.35em 0}
.tbl{overflow-x:auto;margin:.4em 0 1em}
table{border-collapse:collapse;font-size:.86em;font-variant-numeric:tabular-nums}
th,td{padding:3px 9px;border-bottom:1px solid #e6e9ec;text-align:right;white-space:nowrap}
th{background:#f4f6f8;border-bottom:2px solid #d0d5db;position:sticky;top:0}
td.t,th.t{text-align:left}
tr:hover td{background:#fafbfc}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #eceef1}
figcaption{font-size:.9em;color:#59636e;margin-top:.3em}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:.92em}
dl.meta dt{color:#59636e}dl.meta dd{margin:0;word-break:break-all}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:.82em}
.note{color:#59636e;font-size:.9em}
"""


# ---- formatting ------------------------------------------------------------------------------------


def _fixed(x: float, digits: int = 3, sign: str = "") -> str:
    """``sign="+"``: a difference, signed either way."""
    return f"{x:{sign}.{digits}f}".replace("-", "−")


def _bound(x: float) -> str:
    """A CI bound: 3 decimals, but 2 significant digits when those would round a nonzero bound to 0
    (so "excludes 0" never sits beside a printed 0.000)."""
    return _fixed(x) if x == 0 or abs(x) >= 5e-4 else f"{x:.2g}".replace("-", "−")


# ---- findings ------------------------------------------------------------------------------------


def _best_level_findings(effects: pd.DataFrame, pairwise: pd.DataFrame, metric: str) -> list[str]:
    out = []
    if effects is None or effects.empty or metric not in set(effects["metric"]):
        return out
    word = _word(metric)
    for factor, rows in effects[effects["metric"] == metric].groupby("factor", sort=False):
        rows = rows.dropna(subset=["mean"])
        if len(rows) < 2:
            continue
        best = rows.loc[rows["mean"].idxmax()]
        sd = "" if isnan(best.get("sd")) else f" ± {_fixed(best['sd'])} sd"
        text = (f"{factor}: {F.level_text(best['level'])} has the highest mean {word} "
                f"({_fixed(best['mean'])}{sd}, n={int(best['n'])})")
        parts = []
        if pairwise is not None and not pairwise.empty:
            pw = pairwise[(pairwise["factor"] == factor) & (pairwise["metric"] == metric)]
            for _, r in pw.iterrows():
                if r["level_b"] == best["level"]:
                    other, d, lo, hi = r["level_a"], r["diff"], r["ci_low"], r["ci_high"]
                elif r["level_a"] == best["level"]:
                    other, d, lo, hi = r["level_b"], -r["diff"], -r["ci_high"], -r["ci_low"]
                else:
                    continue
                if isnan(d):
                    continue
                diff = f"{F.level_text(best['level'])} − {F.level_text(other)} = {_fixed(d, sign='+')}"
                if isnan(lo) or isnan(hi):
                    parts.append(f"{diff} (no CI)")
                    continue
                verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0: no clear difference"
                parts.append(f"{diff} [{_bound(lo)}, {_bound(hi)}] (95% bootstrap CI, {verdict})")
        out.append("; ".join([text, *parts]))
    return out


def _correlation_finding(corr: pd.DataFrame) -> list[str]:
    if corr is None or corr.empty:
        return []
    out = []
    rows = corr[corr["stratum"] == "all"]
    for _, r in rows.iterrows():
        rho, lo, hi, n = r["spearman"], r["ci_low"], r["ci_high"], r["n"]
        x, y = _word(r["x"]), _word(r["y"])
        if isnan(rho):
            out.append(f"No correlation of final {x} and {y} could be computed (n={int(n)}).")
            continue
        ci = "" if isnan(lo) else f" [{_fixed(lo, 2)}, {_fixed(hi, 2)}]"
        if isnan(lo) or lo <= 0 <= hi:
            lead = f"Higher final {x} does not predict higher {y}"
        elif rho > 0:
            lead = f"Higher final {x} goes with higher {y}"
        else:
            lead = f"Higher final {x} goes with lower {y}"
        text = f"{lead}: Spearman ρ = {_fixed(rho, 2)}{ci} across {int(n)} trials"
        if not isnan(r.get("kendall")):
            text += f" (Kendall τ = {_fixed(r['kendall'], 2)})"
        within = corr[(corr["stratum"] != "all") & (corr["x"] == r["x"]) & (corr["y"] == r["y"])
                      & corr["spearman"].notna()]
        levels = corr.groupby("stratum")["level"].transform("nunique")
        within = within[levels[within.index] > 1]  # a stratum with one level repeats "all"
        if len(within):
            text += "; within " + ", ".join(
                f"{r2['stratum']} {F.level_text(r2['level'])}: ρ = {_fixed(r2['spearman'], 2)}"
                + ("" if isnan(r2["ci_low"]) else f" [{_fixed(r2['ci_low'], 2)}, {_fixed(r2['ci_high'], 2)}]")
                + f" (n={int(r2['n'])})" for _, r2 in within.iterrows())
        out.append(text + ".")
    return out


def _per_config(gap: pd.Series, rows: pd.DataFrame, labels: dict) -> str:
    by = gap.groupby(rows["config_id"].astype(str)).mean()
    if len(by) < 2:
        return ""
    shown = sorted((labels.get(c, c), v) for c, v in by.items())
    return "; mean gap per configuration: " + ", ".join(f"{label} {_fixed(v)}" for label, v in shown)


def _ceiling_finding(data, how: str) -> list[str]:
    fin = completed_finals(data, how)
    if "ceiling" not in fin.columns or "bound_test" not in fin.columns:
        return []
    out, labels = [], F.config_labels(data)
    rows = fin.dropna(subset=["ceiling", "bound_test"])
    for (est, ceiling), g in rows.groupby(["estimator", "ceiling"], sort=True):
        gap = ceiling - g["bound_test"].astype(float)
        name = est.upper() if est == "nce" else est
        close = gap.mean() < 0.1
        where = f"within {_fixed(gap.mean())} nats of" if close else f"{_fixed(gap.mean())} nats below"
        k = g["train.batch_size"].iloc[0] if "train.batch_size" in g and g["train.batch_size"].nunique() == 1 else None
        out.append(f"{name} ends {where} its ceiling {ceiling_label(ceiling, k)} on "
                   f"average (final test bound {_fixed(g['bound_test'].mean())}; largest gap {_fixed(gap.max())}, "
                   f"n={len(g)} trials){_per_config(gap, g, labels)}.")
    return out


def _anova_findings(anova: pd.DataFrame) -> list[str]:
    if anova is None or anova.empty:
        return []
    out = []
    one = anova[(anova["test"] == "one-way") & anova["eta2"].notna()]
    for _, r in one.sort_values("eta2", ascending=False).iterrows():
        word = _word(r["metric"])
        out.append(f"{r['factor']} accounts for {100 * r['eta2']:.0f}% of the variance of final {word} "
                   f"(one-way ANOVA: η² = {_fixed(r['eta2'])}, F = {num(r['F'], '.3g')}, "
                   f"p = {num(r['p'], '.2g')}, {int(r['levels'])} levels, n={int(r['n'])}).")
    return out


def _importance_findings(imp: dict | None) -> list[str]:
    if not imp:
        return []
    out = []
    names = {"ped_anova": "PED-ANOVA", "fanova": "fANOVA"}
    for method, values in imp.items():
        if method == "reasons" or not isinstance(values, dict) or not values:
            continue
        ranked = sorted(values.items(), key=lambda kv: -kv[1])
        out.append(f"{names.get(method, method)} importance (Optuna, over configurations): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in ranked) + ".")
    return out


def _calibration_findings(table: pd.DataFrame | None) -> list[str]:
    if table is None or table.empty:
        return []
    keys = [c for c in table.columns if c not in ("true_mi", "n", "mean", "bias", "variance", "mse")]
    by = table.groupby(keys, sort=False).agg(mse=("mse", "mean"), bias=("bias", "mean"), cells=("mse", "size"))
    by = by.sort_values("mse")
    name = lambda k: " · ".join(F.level_text(v) for v in (k if isinstance(k, tuple) else (k,)))  # noqa: E731
    text = "Calibration (final test estimate vs true MI, mean over the true-MI values): " + "; ".join(
        f"{name(k)}: MSE {num(r['mse'], '.3g')} nats², bias {_fixed(r['bias'], sign='+')} nats"
        for k, r in by.iterrows())
    return [text + "."]


def _adversarial_findings(data) -> list[str]:
    ev = data.evaluations
    if not F.is_adversarial(data):
        return []
    out = []
    for metric in ("probe_accuracy", "classifier_accuracy"):
        if metric not in ev.columns or ev[metric].isna().all():
            continue
        b = F.band(ev.dropna(subset=[metric]), metric)
        first, last = b.iloc[0], b.iloc[-1]
        out.append(f"{F.METRIC_NAMES[metric].capitalize()} goes from {_fixed(first['mean'])} at round "
                   f"{int(b.index[0])} to {_fixed(last['mean'])} ± {_fixed(last['sd'])} at round "
                   f"{int(b.index[-1])} (mean ± sd over {int(last['n'])} trials).")
    return out


def findings(data, results: dict, calibration_table: pd.DataFrame | None = None, how: str = "last") -> list[str]:
    """The report's plain-language findings, each with its numbers (plain text, not escaped)."""
    out = []
    for metric in PROSE_METRICS:
        out += _best_level_findings(results.get("effects"), results.get("pairwise"), metric)
    out += _correlation_finding(results.get("correlations"))
    if not out or not any("Spearman" in s for s in out):
        bva = (results.get("summary") or {}).get("bound_vs_accuracy")
        if isinstance(bva, str) and bva:
            out.append(bva)
    out += _ceiling_finding(data, how)
    out += _anova_findings(results.get("anova"))
    out += _importance_findings(results.get("importance"))
    out += _calibration_findings(calibration_table)
    out += _adversarial_findings(data)
    if results.get("verdicts") is not None:  # mimax analyze --claims: the verdicts lead
        from mimax.analysis.claims.render import summary_sentence

        out.insert(0, summary_sentence(results["verdicts"]))
    return out


# ---- tables --------------------------------------------------------------------------------------


def _ci_column(frame: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Fold <prefix>ci_low / <prefix>ci_high into one "<prefix>95% CI" text column after the estimate."""
    low, high = f"{prefix}ci_low", f"{prefix}ci_high"
    if {low, high} <= set(frame.columns):
        ci = [("–" if isnan(lo) or isnan(hi) else f"[{num(lo)}, {num(hi)}]")
              for lo, hi in zip(frame[low], frame[high])]
        pos = list(frame.columns).index(low)
        frame = frame.drop(columns=[low, high])
        frame.insert(pos, f"{prefix}95% CI", ci)
    return frame


def _configurations_frame(table) -> pd.DataFrame:
    """The configurations table with its one CI (the objective's) folded into a text column."""
    frame = _frame(table)
    prefix = next((c[: -len("ci_low")] for c in frame.columns if str(c).endswith("_ci_low")), "")
    return _ci_column(frame, prefix) if prefix else frame


def _importance_frame(imp: dict | None) -> tuple[pd.DataFrame, dict]:
    if not imp:
        return pd.DataFrame(), {}
    methods = {m: v for m, v in imp.items() if m != "reasons" and isinstance(v, dict) and v}  # omitted: its reason
    params = sorted({p for v in methods.values() for p in v})
    rows = [{"parameter": p, **{m: v.get(p, np.nan) for m, v in methods.items()}} for p in params]
    reasons = imp.get("reasons") or {}
    return pd.DataFrame(rows), {m: r for m, r in reasons.items() if r}


def _environment_frame(data) -> pd.DataFrame:
    """One row per recorded field, one column per driver session (narrow enough to read)."""
    envs = getattr(data, "environment", None) or []
    if not envs:
        return pd.DataFrame()
    fields = [c for c in ENV_COLUMNS if c != "session" and any(e.get(c) is not None for e in envs)]
    out = {"field": fields}
    for i, e in enumerate(envs):
        out[f"session {e.get('session', i)}"] = [num(e.get(c)) if e.get(c) is not None else "–" for c in fields]
    return pd.DataFrame(out)


def _tables(data, results: dict, calib: pd.DataFrame | None) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(anchor, title, explanation, frame) for every table of the report that has rows."""
    imp, reasons = _importance_frame(results.get("importance"))
    reason_text = " ".join(f"{m}: {r}." for m, r in reasons.items())
    states = data.trials["state"].value_counts().rename_axis("state").reset_index(name="trials")
    out = [
        ("configurations", "Configurations",
         "One row per configuration (a combination of the searched parameters): n = its completed trials "
         "(seeds), then for each metric of the final evaluation the mean and sample sd over those seeds; "
         "for the study's first objective a 95% bootstrap CI of the mean (seeds resampled).",
         _configurations_frame(results.get("configurations"))),
        ("states", "Trials by state", "How many trials (configuration × seed) ended in each state.", states),
        ("effects", "Effects of each factor",
         "Per factor level: the mean over completed trials of the final evaluation, its sample sd, n, and "
         "a 95% bootstrap CI of the mean (trials resampled).", _ci_column(_frame(results.get("effects")))),
        ("pairwise", "Pairwise differences",
         "diff = mean(level_b) − mean(level_a), with its 95% bootstrap CI and a two-sided bootstrap p-value; "
         "a CI that excludes 0 is a clear difference.", _ci_column(_frame(results.get("pairwise")))),
        ("correlations", "Bound vs accuracy",
         "Spearman ρ (95% bootstrap CI) and Kendall τ of the final bound and the final probe accuracy over "
         "completed trials, overall and within each level; ceiling_gap = mean of ceiling (log K for NCE) − "
         "final bound over the trials with a ceiling.", _ci_column(_frame(results.get("correlations")))),
        ("anova", "ANOVA",
         "one-way: each factor alone (η² = its share of the variance); type-I: sequential sums of squares of "
         "an additive model of all factors (partial η²).", _frame(results.get("anova"))),
        ("importance", "Hyperparameter importance",
         "Optuna's importance of each searched parameter over configurations (normalised to sum to 1). "
         + reason_text, imp),
    ]
    if calib is not None:
        out.append(("calibration", "Calibration table",
                    "Per estimator and true MI: the final test estimate's mean, bias (mean − true), variance "
                    "(ddof 0) and MSE = bias² + variance, over seeds and configurations.", calib))
    if results.get("verdicts") is not None:  # mimax analyze --claims: first among the tables
        from mimax.analysis.claims.render import report_tables

        out[:0] = report_tables(results["verdicts"])
    env = _environment_frame(data)
    if not env.empty:
        out.append(("environment", "Environment", "The software and machine of each driver session "
                    "(0 = launch, 1.. = resumes).", env))
    return out


def _frame(x) -> pd.DataFrame:
    return x if isinstance(x, pd.DataFrame) else pd.DataFrame()


# ---- metadata ------------------------------------------------------------------------------------


def _metadata(data, results: dict) -> list[tuple[str, str]]:
    s = data.study
    summary = results.get("summary") or {}
    n_trials = f"{summary.get('n_trials', len(data.trials))}"
    if summary.get("n_completed") is not None:
        n_trials += f" ({summary['n_completed']} completed)"
    items = [
        ("study", s.get("name")),
        ("space", s.get("space_source")),
        ("budget", s.get("budget") or "none"),
        ("sampler", s.get("sampler")),
        ("seeds per configuration", s.get("seeds")),
        ("configurations", f"{data.trials['config_id'].nunique()} run"
         + (f" of {s['n_configs_requested']} requested" if s.get("n_configs_requested") else "")),
        ("trials", n_trials),
        ("factors", ", ".join(summary.get("factors") or data.factors) or "none"),
        ("objectives", ", ".join(f"{m} ({d})" for m, d in zip(s.get("metrics") or [], s.get("directions") or []))),
        *_protocol(data.trials),
        ("status", s.get("status")),
        ("created", num(s["created_at"]) if s.get("created_at") is not None else None),
        ("database", getattr(data, "url", "")),
        ("results directory", s.get("results_dir")),
    ]
    return [(k, "" if v is None else str(v)) for k, v in items]


INIT_WORDS = {"torch": "torch (PyTorch's defaults)", "tf": "tf (Keras': Glorot-uniform weights, zero biases)"}
ADAM_WORDS = {"torch": "torch (ε on the bias-corrected √v̂)", "tf1": "tf1 (TF1's ε, on the uncorrected √v)"}


def _protocol(trials) -> list[tuple[str, str]]:
    """How the trials were run, where configs may differ: init, Adam's ε and the probes (label: settings).
    A key a trial's stored config lacks is at the default it had before the key existed."""
    def values(column: str, default: str) -> list[str]:
        col = trials[column] if column in trials.columns else None
        return sorted({default if v is None or v != v else str(v) for v in (col if col is not None else [None])})

    probes = set()
    for raw in (trials["eval.probe"] if "eval.probe" in trials.columns else []):
        if isinstance(raw, str) and raw.startswith("["):  # a list of probes, stored as its JSON text
            for p in json.loads(raw):
                label, name = p.get("label", p["name"]), p["name"]
                settings = ", ".join(f"{k} {v}" for k, v in p.items() if k not in ("label", "name"))
                probes.add(f"{label}: {name} ({settings})" if label != name else f"{name} ({settings})")
    if not probes and "eval.probe.name" in trials.columns:
        probes = {str(v) for v in trials["eval.probe.name"].dropna()}
    return [("initialisation", "; ".join(INIT_WORDS.get(v, v) for v in values("init", "torch"))),
            ("Adam", "; ".join(ADAM_WORDS.get(v, v) for v in values("train.adam", "torch"))),
            ("probes", "; ".join(sorted(probes)) or "none")]


def _space_text(data) -> str:
    space = data.study.get("space_json") or data.study.get("space")
    return json.dumps(space, indent=2, sort_keys=True, default=str) if space is not None else ""


# ---- writers -------------------------------------------------------------------------------------


def _basis(how: str) -> str:
    which = "best evaluation (by probe accuracy)" if how == "best" else "final evaluation"
    return f"statistics over the {which} of each completed trial"


def _write_html(path: Path, data, meta, facts, tables, figs, space: str, how: str) -> None:
    e = html.escape
    title = f"mimax report: {data.study.get('name')}"
    nav = ['<a href="#findings">findings</a>', '<a href="#figures">figures</a>']
    nav += [f'<a href="#{a}">{e(t.lower())}</a>' for a, t, _, f in tables if not f.empty]
    nav.append('<a href="#study">study</a>')
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<p class="sub">{e(str(data.study.get("space_source") or ""))} · '
        f'budget {e(str(data.study.get("budget") or "none"))} · {len(data.trials)} trials · '
        f"{e(_basis(how))}</p>",
        f"<nav>{''.join(nav)}</nav>",
        '<h2 id="findings">Findings</h2>',
        '<ul class="findings">' + "".join(f"<li>{e(f)}</li>" for f in facts) + "</ul>"
        if facts else '<p class="note">No finding: too few completed trials or no varying factor.</p>',
        '<h2 id="figures">Figures</h2>',
    ]
    for stem, ftitle, caption, png in figs:
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure id="fig-{e(stem)}"><h3>{e(ftitle)}</h3>'
                     f'<img src="data:image/png;base64,{b64}" alt="{e(ftitle)}">'
                     f"<figcaption>{e(caption)} (figures/{e(stem)}.png, .svg)</figcaption></figure>")
    for anchor, ttitle, expl, frame in tables:
        if frame.empty:
            continue
        parts.append(f'<h2 id="{anchor}">{e(ttitle)}</h2><p class="note">{e(expl)}</p>{html_table(frame)}')
    parts.append('<h2 id="study">Study</h2><dl class="meta">'
                 + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in meta) + "</dl>")
    if space:
        parts.append(f"<details><summary>search space</summary><pre>{e(space)}</pre></details>")
    parts.append("</main></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def _write_md(path: Path, data, meta, facts, tables, figs, space: str, how: str) -> None:
    m = md_escape
    lines = [f"# mimax report: {m(data.study.get('name'))}", "",
             f"{m(data.study.get('space_source') or '')} · budget {m(data.study.get('budget') or 'none')} · "
             f"{len(data.trials)} trials · {_basis(how)}", "",
             "## Findings", ""]
    lines += [f"- {m(f)}" for f in facts] or ["No finding: too few completed trials or no varying factor."]
    lines += ["", "## Figures", ""]
    for stem, ftitle, caption, _png in figs:
        lines += [f"### {m(ftitle)}", "", f"![{m(ftitle)}](figures/{stem}.png)", "",
                  f"{m(caption)} ([SVG](figures/{stem}.svg))", ""]
    for _anchor, ttitle, expl, frame in tables:
        if frame.empty:
            continue
        lines += [f"## {m(ttitle)}", "", m(expl), "", md_table(frame), ""]
    lines += ["## Study", "", "| | |", "|:---|:---|"]
    lines += [f"| {m(k)} | {m(v)} |" for k, v in meta]
    if space:
        lines += ["", "<details><summary>search space</summary>", "", "```json", space.replace("```", "'''"),
                  "```", "", "</details>"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_report(data, results: dict, out_dir) -> dict:
    """Write ``report.html``, ``report.md`` and ``figures/*.png|svg`` under ``out_dir`` for a loaded
    study ``data`` and its ``results`` (keys "configurations", "effects", "pairwise", "correlations",
    "anova": DataFrames of :mod:`mimax.analysis.stats`; "importance": dict of
    :mod:`mimax.analysis.importance`; "summary": dict). Missing results are left out. Returns
    ``{"html": path, "md": path, "figures": the figures folder}``."""
    how = (results.get("summary") or {}).get("how", "last")
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs, fig_paths = [], {}
    for stem, title, caption, draw in FIGURES:
        fig = draw(data, how)
        if fig is None:
            continue
        fig_paths[stem] = F.save(fig, fig_dir, stem)
        figs.append((stem, title, caption, fig_paths[stem][0]))
    calib = F.calibration_table(data, how=how)
    facts = findings(data, results, calib, how=how)
    tables = _tables(data, results, calib)
    meta, space = _metadata(data, results), _space_text(data)
    html_path, md_path = out / "report.html", out / "report.md"
    _write_html(html_path, data, meta, facts, tables, figs, space, how)
    _write_md(md_path, data, meta, facts, tables, figs, space, how)
    return {"html": html_path, "md": md_path, "figures": fig_dir}
