"""``mimax analyze | export | compare``: read a results database, never write to it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mimax.analysis.load import AnalysisError
from mimax.analysis.tables import isnan, level_text
from mimax.contract import json_safe
from mimax.storage.db import DB_HELP, choose_url

__all__ = ["analyze", "register", "summary"]

TABLES = ("configurations", "effects", "pairwise", "correlations", "anova")
MAX_CONFIG_LINES = 40  # the text summary; configurations.csv has them all


def _stat_options(p: argparse.ArgumentParser) -> None:
    from mimax.analysis.claims.cli import at_least

    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--how", choices=["last", "best"], default="last",
                   help="a trial's final value: its last evaluation, or its best by probe accuracy")
    p.add_argument("--n-boot", type=at_least(0), default=2000, metavar="N", help="bootstrap resamples for CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def register(sub) -> None:
    p = sub.add_parser("analyze", help="effects, correlations, importance and a report of a study")
    p.add_argument("name", help="study name")
    p.add_argument("--out", metavar="DIR", help="where the report and CSVs go (default reports/NAME)")
    p.add_argument("--no-importance", action="store_true", help="skip Optuna's importance evaluators")
    p.add_argument("--claims", metavar="FILE", help="verify FILE's claims about this study (a path, or: paper) "
                                                   "and put the verdicts into the report")
    _stat_options(p)
    p.set_defaults(func=_analyze)

    p = sub.add_parser("export", help="a study's trials and evaluations as tidy tables")
    p.add_argument("name", help="study name")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--out", metavar="DIR", required=True)
    p.set_defaults(func=_export)

    p = sub.add_parser("compare", help="two studies of the same space, configuration by configuration")
    p.add_argument("name_a", metavar="NAME1")
    p.add_argument("name_b", metavar="NAME2")
    p.add_argument("--db2", help="database of NAME2 (default: the same as --db)")
    _stat_options(p)
    p.set_defaults(func=_compare)

    from mimax.analysis.claims.cli import register as register_verify

    register_verify(sub)


# ---- shared ---------------------------------------------------------------------------------------


def _plain(obj):
    """JSON-safe (``contract.json_safe``): numpy scalars as numbers, missing values (NaN, inf, pd.NA, NaT)
    as null, anything else JSON cannot say as its text."""
    def scalar(value):
        if hasattr(value, "dtype") and hasattr(value, "item"):  # numpy scalar
            return value.item()
        import pandas as pd

        return None if pd.api.types.is_scalar(value) and pd.isna(value) else str(value)

    return json_safe(obj, default=scalar)


def _print_json(obj) -> None:
    print(json.dumps(_plain(obj), allow_nan=False), flush=True)


# ---- analyze --------------------------------------------------------------------------------------


def summary(data, effects, correlations) -> dict:
    """The ``--json`` summary: per factor level the accuracy mean / sd, the test bound's mean and n
    (completed replicate trials), and the bound–accuracy correlation over all completed trials."""
    from mimax.analysis.stats import completed_finals

    factors: dict = {}
    for factor in data.factors:
        rows = effects[effects["factor"] == factor]
        per_level: dict = {}
        for level in rows["level"].drop_duplicates():
            at = rows[rows["level"] == level].set_index("metric")
            get = lambda metric, col: at.at[metric, col] if metric in at.index else None  # noqa: E731
            n = get("probe_accuracy", "n") if "probe_accuracy" in at.index else get("bound_test", "n")
            per_level[str(level)] = {"accuracy_mean": get("probe_accuracy", "mean"),
                                     "accuracy_sd": get("probe_accuracy", "sd"),
                                     "bound_mean": get("bound_test", "mean"), "n": int(n or 0)}
        factors[factor] = per_level
    overall = correlations[correlations["stratum"] == "all"]
    corr = {"spearman": None, "kendall": None, "ci_low": None, "ci_high": None, "n": 0}
    if len(overall):
        r = overall.iloc[0]
        corr = {"spearman": r["spearman"], "kendall": r["kendall"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "n": int(r["n"]), "x": r["x"], "y": r["y"]}
    states = data.trials["state"].value_counts().to_dict()
    return {
        "study": data.name,
        "n_trials": int(len(data.trials)),
        "n_completed": int(len(completed_finals(data))),
        "states": {k: int(v) for k, v in states.items()},
        "factors": factors,
        "bound_vs_accuracy": corr,
    }


def analyze(data, db_url: str, *, how: str = "last", n_boot: int = 2000, seed: int = 0,
            with_importance: bool = True) -> dict:
    """Everything ``mimax analyze`` computes: {"configurations", "effects", "pairwise", "correlations",
    "anova" (DataFrames), "importance" (see mimax.analysis.importance), "summary" (the --json dict, with
    the configurations table as a list of rows)}."""
    from mimax.analysis import stats
    from mimax.analysis.importance import METHODS, importances

    effects, pairwise = stats.effect_tables(data, stats.result_metrics(data), how=how, n_boot=n_boot, seed=seed)
    results = {
        "configurations": stats.configurations(data, how=how, n_boot=n_boot, seed=seed),
        "effects": effects,
        "pairwise": pairwise,
        "correlations": stats.correlations(data, how=how, n_boot=n_boot, seed=seed),
        "anova": stats.anova(data, how=how),
    }
    if with_importance:
        results["importance"] = importances(db_url, data, seed=seed)
    else:
        skipped = dict.fromkeys(METHODS, "skipped (--no-importance)")
        results["importance"] = {**{m: {} for m in METHODS}, "reasons": skipped}
    results["summary"] = summary(data, results["effects"], results["correlations"])
    results["summary"]["configurations"] = results["configurations"].to_dict(orient="records")
    results["summary"]["how"] = how
    return results


def _tidy_frames(data, how: str = "last") -> dict:
    from mimax.analysis.load import final

    return {"trials": data.trials, "evaluations": data.evaluations, "final": final(data, how)}


def _write_frames(frames: dict, out: Path, fmt: str = "csv") -> dict[str, Path]:
    """Each frame as ``out/<key>.<fmt>`` (csv or parquet)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / f"{key}.{fmt}" for key in frames}
    for key, frame in frames.items():
        if fmt == "csv":
            frame.to_csv(paths[key], index=False)
        else:
            _arrow_safe(frame).to_parquet(paths[key], index=False)
    return paths


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n")
    return path


def write_tables(data, results: dict, out: Path) -> dict[str, Path]:
    frames = _tidy_frames(data, results["summary"].get("how", "last")) | {k: results[k] for k in TABLES}
    paths = _write_frames(frames, out)
    paths["summary"] = _write_json(out / "summary.json", {**results["summary"], "importance": results["importance"]})
    return paths


def _analyze(args) -> int:
    from mimax.analysis.load import load

    url = choose_url(args.db)
    data = load(url, args.name)
    results = analyze(data, url, how=args.how, n_boot=args.n_boot, seed=args.seed,
                      with_importance=not args.no_importance)
    out = (Path(args.out) if args.out else Path("reports") / args.name).absolute()
    if args.claims:  # mimax verify on this study's claims; the report shows the verdicts
        from mimax.analysis.claims import cli as claims_cli

        results["verdicts"] = claims_cli.run(args.claims, url, seed=args.seed, data=data)
    from mimax.analysis.report import write_report

    try:
        tables = write_tables(data, results, out)
        report = write_report(data, results, out)
        if "verdicts" in results:
            from mimax.analysis.claims import render

            report["verdicts"] = render.write(results["verdicts"], out)["json"]
    except OSError as e:
        raise AnalysisError(f"cannot write to {out}: {e.strerror or e}") from None
    if args.json:
        claims = {"claims": render.as_json(results["verdicts"])} if "verdicts" in results else {}
        _print_json({**results["summary"], "out": str(out), "report": report,
                     "importance": results["importance"], **claims})
        return 0
    _print_summary(results["summary"], results["importance"])
    if "verdicts" in results:
        print("  " + render.summary_sentence(results["verdicts"]))
    print(f"tables: {out}/ ({', '.join(p.name for p in tables.values())})")
    print(f"report: {report['html']}")
    return 0


def _fmt(x, digits: int = 3) -> str:
    return "–" if isnan(x) else f"{x:.{digits}f}"


def _config_lines(rows: list[dict]) -> list[str]:
    """``critic.name=concat estimator.name=nwj   n=3  probe_accuracy 0.799 ± 0.006  bound_test ...``:
    the objective (the metric with a CI) and the bounds; every metric is in configurations.csv."""
    labels, values = [], []
    for row in rows:
        keys = list(row)
        factors = keys[:keys.index("n")]
        labels.append(" ".join(f"{k}={_level(row[k])}" for k in factors) or "all")
        metrics = [k[:-len("_mean")] for k in keys if k.endswith("_mean")]
        target = next((m for m in metrics if f"{m}_ci_low" in row), None)
        shown = [m for m in dict.fromkeys([target, "bound_test", "bound_train"]) if m in metrics]
        values.append(f"n={row['n']}  " + "  ".join(f"{m} {_fmt(row[f'{m}_mean'])} ± {_fmt(row[f'{m}_sd'])}"
                                                   for m in shown))
    width = max(map(len, labels), default=0)
    return [f"{label:<{width}}   {v}".rstrip() for label, v in zip(labels, values)]


def _level(value) -> str:
    return "–" if isnan(value) else level_text(value)


def _print_summary(s: dict, imp: dict) -> None:
    print(f"study {s['study']}: {s['n_trials']} trials, {s['n_completed']} completed")
    rows = s.get("configurations") or []
    if rows:
        print(f"  configurations (mean ± sd over completed seeds, final {s.get('how', 'last')}):")
        for line in _config_lines(rows[:MAX_CONFIG_LINES]):
            print(f"    {line}")
        if len(rows) > MAX_CONFIG_LINES:
            print(f"    ... {len(rows) - MAX_CONFIG_LINES} more in configurations.csv")
    for factor, levels in s["factors"].items():
        print(f"  {factor}:")
        for level, v in levels.items():
            print(f"    {level:<24} accuracy {_fmt(v['accuracy_mean'])} ± {_fmt(v['accuracy_sd'])}  "
                  f"bound {_fmt(v['bound_mean'])}  n={v['n']}")
    c = s["bound_vs_accuracy"]
    print(f"  bound vs accuracy: Spearman {_fmt(c['spearman'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}], "
          f"Kendall {_fmt(c['kendall'])} (n={c.get('n', 0)})")
    for method in ("ped_anova", "fanova"):
        if imp.get(method):
            shown = ", ".join(f"{k} {v:.2f}" for k, v in imp[method].items())
            print(f"  importance ({method}): {shown}")
        elif imp.get("reasons", {}).get(method):
            print(f"  importance ({method}): none ({imp['reasons'][method]})")


# ---- export ---------------------------------------------------------------------------------------


def _arrow_safe(frame):
    """Object columns holding several Python types (e.g. a config key that is a string in some trials
    and a number in others) become text, which Parquet can store."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if not isnan(v)}
            if len(kinds) > 1:
                out[col] = out[col].map(lambda v: None if v is None else str(v))
    return out


def _export(args) -> int:
    from mimax.analysis.load import load

    data = load(choose_url(args.db), args.name)
    out = Path(args.out)
    try:
        written = list(_write_frames(_tidy_frames(data), out, args.format).values())
        written.append(_write_json(out / "study.json",
                                   {**data.study, "factors": data.factors, "environment": data.environment}))
    except OSError as e:
        raise AnalysisError(f"cannot write to {out}: {e.strerror or e}") from None
    for path in written:
        print(path)
    return 0


# ---- compare --------------------------------------------------------------------------------------


def _compare(args) -> int:
    from mimax.analysis.load import load
    from mimax.analysis.stats import compare

    url_a = choose_url(args.db)
    url_b = args.db2 or url_a
    a, b = load(url_a, args.name_a), load(url_b, args.name_b)
    space_a, space_b = a.study.get("space_json") or {}, b.study.get("space_json") or {}
    same_fp = a.study["space_fingerprint"] == b.study["space_fingerprint"]
    name_a, name_b = space_a.get("name"), space_b.get("name")
    if not same_fp and not (name_a and name_a == name_b):
        raise AnalysisError(
            f"studies '{a.name}' and '{b.name}' searched different spaces "
            f"({name_a or '?'} {a.study['space_fingerprint'][:12]} vs {name_b or '?'} "
            f"{b.study['space_fingerprint'][:12]}); compare needs the same space")
    table = compare(a, b, how=args.how, n_boot=args.n_boot, seed=args.seed)
    if args.json:
        _print_json({"studies": [a.name, b.name], "factors": list(dict.fromkeys([*a.factors, *b.factors])),
                     "same_fingerprint": same_fp, "how": args.how, "configs": table.to_dict(orient="records")})
        return 0
    print(f"{b.name} − {a.name} per configuration (final {args.how}; 95% bootstrap CI)")
    for _, r in table.iterrows():
        print(f"  {r['config']:<32} {r['metric']:<15} {_fmt(r['mean_a'])} → {_fmt(r['mean_b'])}  "
              f"diff {_fmt(r['diff'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]  n={r['n_a']}/{r['n_b']}")
    return 0
