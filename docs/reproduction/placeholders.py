"""The placeholder language of docs/reproduction/REPRODUCTION.md.in (documented at the top of the template).

``render(text, source, name)`` replaces every ``{{KIND ARG... KEY=VALUE...}}`` with what ``source`` (a
:class:`generate.Source`: the database, its studies and the verdicts of ``mimax verify paper``) says, and
drops every ``{# comment #}``. A malformed or unknown placeholder, or one naming an unknown claim, finding,
study, metric or level, raises ConfigError naming the template line and the placeholder.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import yaml

from mimax.analysis.claims.render import estimate_and_ci, family_text, p_text
from mimax.analysis.claims.verify import values, yaml_equal
from mimax.analysis.figures import calibration_table
from mimax.analysis.stats import configurations, final_metrics
from mimax.errors import ConfigError

__all__ = ["KINDS", "PENDING", "PROBES", "Pending", "PlaceholderError", "check", "render", "table", "unknown"]

PENDING = "*pending*"  # what a placeholder about a study not in the database yet shows (--partial)
PROBES = {"sklearn": "the paper's probe", "torch": "the converged probe"}
STATS = ("mean", "sd", "n", "min", "max", "mean_sd")
TOKEN = re.compile(r"\{#.*?#\}\n?|\{\{([^\n]*?)\}\}", re.S)
STRAY = re.compile(r"\{\{|\}\}|\{#|#\}")


class PlaceholderError(Exception):
    """What is wrong with one placeholder; ``render`` adds where it is."""


class Pending(Exception):
    """The placeholder reads a study that is not in the database yet (only with --partial)."""


@dataclass(frozen=True)
class Kind:
    args: tuple[str, ...]  # positional arguments; a last one ending in "..." takes any number (≥ 0)
    options: tuple[str, ...] = ()

    def usage(self, name: str) -> str:
        opts = {"where": "where=KEY=VALUE[,KEY=VALUE]", "at": "at=final|STEP", "stat": f"stat={'|'.join(STATS)}",
                "fmt": "fmt=SPEC", "none": "none=TEXT", "minus": "minus=KEY=VALUE[,KEY=VALUE]"}
        words = [name, *(f"[{a}]" if a.endswith("...") else a for a in self.args), *(f"[{opts[o]}]" for o in self.options)]
        return "{{" + " ".join(words) + "}}"


KINDS = {
    "summary": Kind(()),
    "provenance": Kind(()),
    "claims": Kind(("FINDING",)),
    "finding": Kind(("FINDING", "FIELD")),
    "claim": Kind(("ID", "FIELD"), ("fmt",)),
    "configs": Kind(("STUDY", "METRIC..."), ("where", "fmt")),
    "value": Kind(("STUDY", "METRIC"), ("where", "minus", "at", "stat", "fmt")),
    "study": Kind(("STUDY", "KEY"), ("none",)),
    "calibration": Kind(("STUDY",), ("where",)),
    "family": Kind(("FIELD", "FAMILY...")),
    "count": Kind(("VERDICT",)),
    "checks": Kind(()),
    "waiting": Kind(()),
    "spent": Kind(("SEEDS",)),
}
COUNTS = ("holds", "fails", "inconclusive", "untestable", "claims", "pending", "passed", "failed", "checks")


# ---- parsing -----------------------------------------------------------------------------------------


def parse(body: str) -> tuple[str, list[str], dict[str, str]]:
    """``value fig3-critics-cpu bound_test where=critic=concat`` -> (kind, positional args, options)."""
    try:
        words = shlex.split(body)
    except ValueError as e:
        raise PlaceholderError(f"malformed: {str(e).lower()}") from None
    if not words:
        raise PlaceholderError(f"empty placeholder (kinds: {', '.join(KINDS)})")
    name, rest = words[0], words[1:]
    kind = KINDS.get(name)
    if kind is None:
        raise PlaceholderError(f"unknown placeholder kind {name!r} (kinds: {', '.join(KINDS)})")
    args, opts = [], {}
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq:
            args.append(word)
        elif key not in kind.options:
            raise PlaceholderError(f"unknown option {key!r} (usage: {kind.usage(name)})")
        elif key in opts:
            raise PlaceholderError(f"option {key!r} given twice")
        else:
            opts[key] = value
    if "fmt" in opts:
        try:
            format(1.5, opts["fmt"])
        except ValueError:
            raise PlaceholderError(f"fmt: {opts['fmt']!r} is not a number format (e.g. .3f, .1%, ,d)") from None
    variadic = bool(kind.args) and kind.args[-1].endswith("...")
    fixed = len(kind.args) - variadic
    if len(args) < fixed or (len(args) > fixed and not variadic):
        raise PlaceholderError(f"expected {fixed}{' or more' if variadic else ''} argument"
                               f"{'s' * (fixed != 1)}, got {len(args)} (usage: {kind.usage(name)})")
    return name, args, opts


def _placeholders(text: str, name: str):
    """Each placeholder as (match, line), after checking the text before it for a stray or unclosed brace."""
    end = 0
    for m in TOKEN.finditer(text):
        _stray(text, end, m.start(), name)
        end = m.end()
        if m.group(1) is not None:  # not a {# comment #}
            yield m, text.count("\n", 0, m.start()) + 1
    _stray(text, end, len(text), name)


def _located(e: PlaceholderError, m: re.Match, line: int, name: str) -> ConfigError:
    return ConfigError(f"{name}:{line}", f"{m.group(0)}: {e}")


def check(text: str, name: str) -> None:
    """Parse every placeholder without reading a database: the malformed ones fail fast."""
    for m, line in _placeholders(text, name):
        try:
            parse(m.group(1))
        except PlaceholderError as e:
            raise _located(e, m, line, name) from None


def render(text: str, source, name: str) -> str:
    """``text`` with its placeholders filled in from ``source`` and its comments dropped. Raises
    ConfigError ``<name>:<line>: {{...}}: <what is wrong>``."""
    filled = {}
    for m, line in _placeholders(text, name):
        try:
            filled[m.start()] = _fill(m.group(1), source)
        except PlaceholderError as e:
            raise _located(e, m, line, name) from None
    return TOKEN.sub(lambda m: filled.get(m.start(), ""), text)


def _stray(text: str, start: int, stop: int, name: str) -> None:
    m = STRAY.search(text, start, stop)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        what = {"{{": "'{{' without '}}' on its line", "}}": "'}}' without '{{'", "{#": "'{#' without '#}'",
                "#}": "'#}' without '{#'"}[m.group(0)]
        raise ConfigError(f"{name}:{line}", f"malformed placeholder: {what}")


def _fill(body: str, source) -> str:
    kind, args, opts = parse(body)
    try:
        return FILL[kind](source, args, opts)
    except Pending:
        return PENDING


# ---- helpers -------------------------------------------------------------------------------------------


def number(x, fmt: str = ".3f") -> str:
    """``x`` formatted, with a true minus sign; ``–`` for a missing value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if fmt.endswith("d") and float(x).is_integer():
        x = int(x)
    return format(x, fmt).replace("-", "−")


def text(value) -> str:
    """A config value as the YAML would write it: true, 0.05, 3,000, nce."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1000 else f"{float(value):g}"
    return str(value)


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def unknown(what: str, word: str, known, context: str) -> PlaceholderError:
    """``unknown metric 'probe_acc' in study S (metrics: ...); did you mean probe_accuracy?``"""
    close = difflib.get_close_matches(word, list(known), n=3)
    return PlaceholderError(f"unknown {what} {word!r} {context}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def select(data, where: str | None):
    """The study with only the trials that ``where=KEY=VALUE[|VALUE...][,KEY=...]`` selects."""
    if not where:
        return data
    mask = pd.Series(True, index=data.trials.index)
    for part in where.split(","):
        key, eq, wanted = part.partition("=")
        if not eq or not key or not wanted:
            raise PlaceholderError(f"where: expected KEY=VALUE[,KEY=VALUE], got {where!r}")
        if key not in data.trials.columns:
            raise unknown("factor", key, data.factors, f"in study {data.name} (factors: "
                          f"{', '.join(data.factors) or 'none'}; any config key works)")
        levels = [yaml.safe_load(v) for v in wanted.split("|")]
        present = [v for v in data.trials[key].drop_duplicates() if v is not None and not pd.isna(v)]
        for level in levels:
            if not any(yaml_equal(level, p) for p in present):
                raise PlaceholderError(f"where: unknown level {wanted!r} of {key} in study {data.name} "
                                       f"(levels: {', '.join(sorted(map(text, present)))})")
        mask &= data.trials[key].map(lambda v: any(yaml_equal(v, lv) for lv in levels))
    if not mask.any():
        raise PlaceholderError(f"where: no trial of study {data.name} matches {where!r}")
    keys = set(data.trials.loc[mask, "trial_key"])
    return replace(data, trials=data.trials[mask], evaluations=data.evaluations[data.evaluations["trial_key"].isin(keys)])


def _metric(data, metric: str) -> None:
    names = final_metrics(data)
    if metric not in names:
        raise unknown("metric", metric, names, f"in study {data.name} (metrics: {', '.join(names)})")


def _at(data, at: str | None):
    if at in (None, "final"):
        return "final"
    if not at.isdigit():
        raise PlaceholderError(f"at: expected final or a step, got {at!r}")
    steps = sorted(set(data.evaluations["step"].astype(int)))
    if int(at) not in steps:
        raise PlaceholderError(f"at: no evaluation at step {at} in study {data.name} (steps: "
                               f"{', '.join(map(str, steps[:12]))}{' ...' if len(steps) > 12 else ''})")
    return int(at)


# ---- the kinds -------------------------------------------------------------------------------------------


def _summary(source, args, opts) -> str:
    probes = source.probe_labels()
    header = ["finding", *(f"{lab} ({PROBES.get(lab, 'probe')})" for lab in probes), "overall",
              "claims: hold / fail / inconclusive / untestable",
              "holds under one probe only"]
    rows = []
    for f in source.findings():
        if f["pending"] and not f["claims"]:
            rows.append([f["finding"], *(PENDING for _ in probes), PENDING, PENDING, ""])
            continue
        held = [lab for lab, v in f["probes"].items() if v == "holds"]
        only = f"yes: {held[0]} only" if len(f["probes"]) > 1 and len(held) == 1 else ""
        counts = f"{f['holds']} / {f['fails']} / {f['inconclusive']} / {f['untestable']}"
        if f["pending"]:
            counts += f" ({len(f['pending'])} pending)"
        rows.append([f["finding"], *(f["probes"].get(lab, "– (no probe)") for lab in probes), f["verdict"],
                     counts, only])
    return table(header, rows)


def _claims(source, args, opts) -> str:
    finding = source.finding(args[0])
    level = f"{100 * (1 - source.verification.alpha):g}% CI"
    rows = []
    for cid in finding["claims"]:
        d = source.verdict(cid)
        estimate, ci = estimate_and_ci(d.test)
        rows.append([f"`{cid}`", f"{d.study}: {d.statement}", estimate, ci, d.test.n, d.verdict, p_text(d),
                     d.claim.paper or ""])
    rows += [[f"`{cid}`", PENDING, "", "", "", PENDING, "", source.claim(cid).paper or ""] for cid in finding["pending"]]
    return table(["claim", "test", "estimate", level, "n", "verdict", "p-values", "the paper"], rows)


def _finding(source, args, opts) -> str:
    f, field = source.finding(args[0]), args[1]
    fields = list(dict.fromkeys(["verdict", "note", *f["probes"], *(PROBES if f["pending"] else ())]))
    if field not in fields:
        raise PlaceholderError(f"unknown field {field!r} of finding {args[0]!r} (fields: {', '.join(fields)})")
    return f[field] if field in ("verdict", "note") else f["probes"].get(field, PENDING)


def _claim(source, args, opts) -> str:
    cid, field = args
    source.claim(cid)
    fields = ("estimate", "ci", "verdict", "n", "test", "paper")
    if field not in fields:
        raise PlaceholderError(f"unknown field {field!r} of a claim (fields: {', '.join(fields)})")
    d = source.verdict(cid)
    if d is None:
        raise Pending
    estimate, ci = estimate_and_ci(d.test)
    if field == "estimate" and "fmt" in opts:
        estimate = number(d.test.estimate, opts["fmt"])
    if field == "ci" and "fmt" in opts and ci != "–":
        ci = "[" + ", ".join(number(x, opts["fmt"]) for x in d.test.ci) + "]"
    return {"estimate": estimate, "ci": ci, "verdict": d.verdict, "n": str(d.test.n),
            "test": f"{d.study}: {d.statement}", "paper": d.claim.paper or ""}[field]


def _configs(source, args, opts) -> str:
    data = select(source.data(args[0]), opts.get("where"))
    metrics = args[1:] or [m for m in final_metrics(data)[:3]]
    for m in metrics:
        _metric(data, m)
    frame = configurations(data, n_boot=0)
    factors = list(frame.columns[: list(frame.columns).index("n")])
    fmt = opts.get("fmt", ".3f")
    rows = []
    for r in frame.to_dict("records"):
        cells = [text(r[f]) if r[f] is not None else "–" for f in factors]
        for m in metrics:
            mean, sd = r.get(f"{m}_mean"), r.get(f"{m}_sd")
            cells.append(number(mean, fmt) + ("" if sd is None or not math.isfinite(sd) else f" ± {number(sd, fmt)}"))
        rows.append([*cells, r["n"]])
    header = [f.removesuffix(".name") for f in factors] + list(metrics) + ["n"]
    return table(header or ["all"], rows)


def _value(source, args, opts) -> str:
    data = source.data(args[0])
    metric, stat = args[1], opts.get("stat", "mean")
    _metric(data, metric)
    if stat not in STATS:
        raise PlaceholderError(f"stat: expected one of {', '.join(STATS)}, got {stat!r}")
    at = _at(data, opts.get("at"))
    x = _read(data, metric, at, opts.get("where"))
    fmt = opts.get("fmt", ",d" if stat == "n" else ".3f")
    if "minus" in opts:  # a difference of two selections' means: a contrast stated in prose, not typed
        if stat != "mean":
            raise PlaceholderError(f"minus= gives a difference of means: stat must be mean, not {stat!r}")
        return number(float(x.mean() - _read(data, metric, at, opts["minus"]).mean()), opts.get("fmt", "+.3f"))
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
    stats = {"mean": x.mean(), "sd": sd, "n": len(x), "min": x.min(), "max": x.max()}
    if stat == "mean_sd":
        return number(float(x.mean()), fmt) + (f" ± {number(sd, fmt)}" if len(x) > 1 else "")
    return number(stats[stat], fmt)


def _read(data, metric: str, at, where: str | None) -> np.ndarray:
    sub = select(data, where)
    x = values(sub, metric, at, pd.Series(True, index=sub.trials.index))["value"].to_numpy(dtype=float)
    if not len(x):
        raise PlaceholderError(f"no value of {metric} at {at} in the selected trials of study {data.name}")
    return x


def _study(source, args, opts) -> str:
    data, key = source.data(args[0]), args[1]
    counts = {"seeds": data.study.get("seeds"), "trials": len(data.trials),
              "completed": int((data.trials["state"] == "completed").sum()),
              "configurations": data.trials["config_id"].nunique()}
    if key in counts:
        return text(counts[key])
    if key not in data.trials.columns or "." not in key:
        raise unknown("key", key, [*counts, *data.trials.columns], f"of study {data.name} (keys: "
                      f"{', '.join(counts)}, or a config key such as train.steps)")
    present = [v for v in data.trials[key].drop_duplicates() if v is not None and not pd.isna(v)]
    return ", ".join(text(v) for v in sorted(present, key=lambda v: (str(type(v)), v))) or opts.get("none", "–")


def _calibration(source, args, opts) -> str:
    data = select(source.data(args[0]), opts.get("where"))
    cal = calibration_table(data)
    if cal is None:
        raise PlaceholderError(f"study {data.name} has no known-MI data: no calibration table")
    keys = [c for c in cal.columns if c not in ("true_mi", "n", "mean", "bias", "variance", "mse")]
    mis = sorted(cal["true_mi"].unique())
    rows = []
    for key, g in cal.groupby(keys, sort=True):
        by_mi = g.set_index("true_mi")
        key = key if isinstance(key, tuple) else (key,)
        rows.append([*(text(k) for k in key),
                     *(f"{number(by_mi.at[mi, 'bias'], '#.3g')} / {number(by_mi.at[mi, 'variance'], '#.2g')} / "
                       f"{number(by_mi.at[mi, 'mse'], '#.3g')}" if mi in by_mi.index else "–" for mi in mis)])
    return table([*keys, *(f"{mi:g} nats" for mi in mis)], rows)


def _family(source, args, opts) -> str:
    """``text``: how the verdicts were decided (alpha, Holm within each family, resamples); ``count``: the
    families Holm ran over; ``size FAMILY``: the claims Holm adjusted over in one family."""
    v = source.verification
    fams = {f["family"]: f for f in v.families()}
    field, rest = args[0], args[1:]
    if field == "text" and not rest:
        return family_text(v)
    if field == "count" and not rest:
        return str(sum(1 for f in fams.values() if f["size"]))
    if field == "size" and len(rest) == 1:
        if rest[0] not in fams:
            raise unknown("family", rest[0], fams, f"(families: {', '.join(fams)})")
        return str(fams[rest[0]]["size"])
    raise PlaceholderError(f"family takes text, count, or size FAMILY, not {' '.join(args)!r}")


def _count(source, args, opts) -> str:
    """How many of the findings' claims have a verdict (holds ... untestable), or all of them (claims),
    those waiting for a study (pending); how many checks passed, failed, or all (checks)."""
    word = args[0]
    if word not in COUNTS:
        raise PlaceholderError(f"count: expected one of {', '.join(COUNTS)}, got {word!r}")
    v = source.verification
    n = {**v.counts(), **v.check_counts(), "claims": len(v.claims), "checks": len(v.checks),
         "pending": sum(source.claim(c).kind == "finding" for c in source.pending)}[word]
    return str(n)


def _checks(source, args, opts) -> str:
    """The checks (true by construction), apart from the findings: a failed one is a bug report."""
    rows = [[f"`{d.claim.id}`", f"{d.study}: {d.statement}", d.test.n, number(d.test.estimate, ".4g"), d.verdict]
            for d in source.verification.checks]
    rows += [[f"`{cid}`", PENDING, "", "", PENDING] for cid in source.pending if source.claim(cid).kind == "check"]
    return table(["check", "what it checks", "evaluations", "largest excess over the limit", "result"], rows)


def _waiting(source, args, opts) -> str:
    """Per preferred study (the first budget of a preset claim) not completed in the database: its state,
    the study read instead, and the claims that wait for it."""
    rows = [[study, state, instead or "–", ", ".join(f"`{c}`" for c in claims)]
            for study, state, instead, claims in source.waiting()]
    if not rows:
        return "Every claim reads the study of its first budget."
    return table(["preferred study", "in the database", "read instead", "claims waiting for it"], rows)


def _spent(source, args, opts) -> str:
    """Per finding: the studies its claims read, their seeds per configuration, the machine time of those
    studies' trials (StudyData.trial_seconds, summed), and its verdict when only SEEDS seeds per
    configuration are read (mimax decide's first look) beside its verdict on every seed."""
    if not args[0].isdigit() or int(args[0]) < 2:
        raise PlaceholderError(f"spent takes SEEDS, a whole number ≥ 2, not {args[0]!r}")
    def said(f) -> str:  # the finding's verdict and its claims' counts (a claim can move inside one verdict)
        return f"{f['verdict']} ({f['holds']} / {f['fails']} / {f['inconclusive']} / {f['untestable']})"

    before = {f["finding"]: said(f) for f in source.verification_at(int(args[0])).findings()}
    rows = []
    for f in source.verification.findings():
        ds = [d for d in source.verification.claims if d.claim.finding == f["finding"]]
        studies = sorted({d.study for d in ds})
        seeds = sorted({d.seeds for d in ds if d.seeds})
        hours = sum(float(source.data(s).trial_seconds().sum()) for s in studies) / 3600
        rows.append([f["finding"], ", ".join(studies),
                     "–" if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}",
                     number(hours, ".2f"), before.get(f["finding"], "–"), said(f)])
    return table(["finding", "studies read", "seeds per configuration", "machine time (h)",
                  f"verdict at {args[0]} seeds (claims: hold / fail / inconclusive / untestable)", "verdict now"], rows)


def _provenance(source, args, opts) -> str:
    return source.provenance()


FILL = {"summary": _summary, "provenance": _provenance, "claims": _claims, "finding": _finding, "claim": _claim,
        "configs": _configs, "value": _value, "study": _study, "calibration": _calibration,
        "family": _family, "count": _count, "checks": _checks, "waiting": _waiting,
        "spent": _spent}
