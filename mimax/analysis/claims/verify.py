"""Test the claims of a claims file against a results database: ``verify(...)`` → :class:`Verification`.

Each claim is resolved against its study (unknown study, factor, level or metric: ConfigError naming the
claim and the key), its numbers are computed (mimax.analysis.claims.evidence), and the verdicts are
decided together: the file's statistical claims form one family for Holm's adjustment. docs/VERIFY.md
gives the semantics; this module follows it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mimax.analysis.claims import evidence as E
from mimax.analysis.claims.spec import Claim, ClaimsFile, Versus, claim_error
from mimax.analysis.load import SHORT_FACTORS, AnalysisError, StudyData, list_studies, load
from mimax.analysis.stats import final_metrics
from mimax.contract import ceiling
from mimax.errors import ConfigError
from mimax.search_spaces.spec import show

__all__ = ["CEILING_NOTE", "Stratum", "Verdict", "Verification", "ceilings", "values", "verify", "yaml_equal"]

VERDICTS = ("holds", "fails", "inconclusive")
CENSUS = "a census: every selected evaluation is checked, there is no sampling error to bound"
CEILING_NOTE = "log K for NCE and K-pair (K = train.batch_size), log 2 for the soft triplet"
NO_TEST = E.Test(math.nan, (math.nan, math.nan), 1.0, 1.0, 0)


def ceilings(trials: pd.DataFrame) -> pd.Series:
    """Each trial's ceiling in nats (NaN where its estimator has none): the stored ``ceiling`` column, or
    in a database from before revision 0003 the rule that revision backfills with (``contract.ceiling``)."""
    if "ceiling" in trials.columns:
        return pd.to_numeric(trials["ceiling"], errors="coerce")
    k = trials.get("train.batch_size", pd.Series(np.nan, index=trials.index))
    configs = [{"estimator": e, "train": {} if pd.isna(b) else {"batch_size": b}}
               for e, b in zip(trials.get("estimator", [None] * len(trials)), k)]
    return pd.Series([ceiling(c) for c in configs], index=trials.index, dtype=float)


@dataclass
class Stratum:
    label: str  # "all", or "estimator=nce" for a claim with per: [estimator]
    test: E.Test
    detail: str = ""  # how many trials and configurations entered each side
    note: str = ""  # why no decision is possible, when so


@dataclass
class Verdict:
    claim: Claim
    study: str
    statement: str  # the test in words
    verdict: str = "inconclusive"
    test: E.Test = NO_TEST  # the claim's numbers: its least favourable stratum's
    p_holds: float = 1.0  # the claim's p-values before Holm (strata combined)
    p_fails: float = 1.0
    p_holds_holm: float | None = None  # None: exempt from the family
    p_fails_holm: float | None = None
    exempt: str | None = None
    reason: str = ""
    strata: list[Stratum] = field(default_factory=list)

    @property
    def census(self) -> bool:
        return self.claim.bound is not None

    def as_dict(self) -> dict:
        c = self.claim
        return {
            "id": c.id, "finding": c.finding, "verdict": self.verdict, "estimate": self.test.estimate,
            "ci": list(self.test.ci), "n": self.test.n, "study": self.study, "metric": c.metric,
            "at": c.when if isinstance(c.when, str) else {"step": c.when}, "test": self.statement,
            "paper": c.paper, "p_holds": None if self.census else self.p_holds,
            "p_fails": None if self.census else self.p_fails, "p_holds_holm": self.p_holds_holm,
            "p_fails_holm": self.p_fails_holm, "exempt": self.exempt, "reason": self.reason,
            "probe": probe_label(c),
            "strata": [{"stratum": s.label, "estimate": s.test.estimate, "ci": list(s.test.ci), "n": s.test.n,
                        "p_holds": s.test.p_holds, "p_fails": s.test.p_fails, "se": s.test.se, "df": s.test.df,
                        "detail": s.detail, "note": s.note} for s in self.strata],
        }


@dataclass
class Verification:
    source: str
    alpha: float
    n_boot: int
    seed: int
    verdicts: list[Verdict]
    scope: str = ""  # "" for a whole file; else which claims were taken (mimax analyze --claims)

    def counts(self) -> dict[str, int]:
        return {v: sum(d.verdict == v for d in self.verdicts) for v in VERDICTS}

    @property
    def holm_size(self) -> int:
        """How many claims Holm's adjustment ran over (the others are exempt)."""
        return sum(d.p_holds_holm is not None for d in self.verdicts)

    @property
    def all_hold(self) -> bool:
        return all(d.verdict == "holds" for d in self.verdicts)

    def findings(self) -> list[dict]:
        """Per finding (in file order): its verdict (holds if every claim holds, fails if any fails) and,
        when its claims use several probes, the verdict under each probe."""
        out = []
        for finding in dict.fromkeys(d.claim.finding for d in self.verdicts):
            mine = [d for d in self.verdicts if d.claim.finding == finding]
            labels = sorted({probe_label(d.claim) for d in mine} - {None})
            probes = {lab: _overall([d for d in mine if probe_label(d.claim) in (lab, None)]) for lab in labels}
            out.append({"finding": finding, "verdict": _overall(mine), "claims": [d.claim.id for d in mine],
                        **{v: sum(d.verdict == v for d in mine) for v in VERDICTS},
                        "probes": probes, "note": _probe_note(probes)})
        return out

    def as_dict(self) -> dict:
        return {"source": self.source, "alpha": self.alpha, "n_boot": self.n_boot, "seed": self.seed,
                "scope": self.scope, "claims": [d.as_dict() for d in self.verdicts],
                "findings": self.findings(), **self.counts()}


def _overall(verdicts: list[Verdict]) -> str:
    if all(d.verdict == "holds" for d in verdicts):
        return "holds"
    return "fails" if any(d.verdict == "fails" for d in verdicts) else "inconclusive"


def _probe_note(probes: dict[str, str]) -> str:
    if len(probes) < 2 or len(set(probes.values())) == 1:
        return ""
    held = [lab for lab, v in probes.items() if v == "holds"]
    if len(held) == 1:
        return f"holds under probe {held[0]} only"
    return "; ".join(f"probe {lab}: {v}" for lab, v in probes.items())


def probe_label(claim: Claim) -> str | None:
    """The probe a claim reads (``probe_accuracy.<label>`` as its metric, correlate or reference metric)."""
    names = [claim.metric, claim.correlation.with_ if claim.correlation else None,
             claim.versus.metric if claim.versus else None]
    labels = {n.split(".", 1)[1] for n in names if n and n.startswith("probe_accuracy.")}
    return labels.pop() if len(labels) == 1 else None


# ---- resolving a claim against its study -----------------------------------------------------------


def _text(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def yaml_equal(a, b) -> bool:
    """Config values equal as YAML would mean them: 2 == 2.0, but true is not 1."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return float(a) == float(b)
    return a == b


class _Claim:
    """One claim being resolved: raises ConfigError naming it and the key."""

    def __init__(self, claim: Claim, source: str):
        self.claim, self.source = claim, source

    def error(self, key: str, message: str) -> Exception:
        return claim_error(self.source, self.claim.id, key, message)

    def column(self, data: StudyData, key: str, where: str) -> str:
        cols = data.trials.columns
        if key in cols and (key in SHORT_FACTORS or "." in key):
            return key
        shown = ", ".join(data.factors) or "none varies"
        raise self.error(where, f"unknown factor {key!r} in study {data.name} (factors: {shown}; "
                                f"any config key such as train.lr also works)")

    def levels(self, data: StudyData, col: str, values: list, mask: pd.Series, where: str) -> pd.Series:
        """Rows of data.trials (within ``mask``) whose ``col`` is one of ``values``; each must occur."""
        series = data.trials[col]
        present = list(dict.fromkeys(v for v in series[mask] if v is not None and not pd.isna(v)))
        hit = pd.Series(False, index=series.index)
        for value in values:
            if not any(yaml_equal(value, p) for p in present):
                raise self.error(where, f"unknown level {show(value)} of {col} in study {data.name} "
                                        f"(levels: {', '.join(sorted(map(_text, present))) or 'none'})")
            hit |= series.map(lambda v, value=value: yaml_equal(v, value))
        return hit & mask

    def select(self, data: StudyData, where: dict, prefix: str) -> pd.Series:
        mask = pd.Series(True, index=data.trials.index)
        for key, values in where.items():
            mask = self.levels(data, self.column(data, key, f"{prefix}where.{key}"), values, mask,
                               f"{prefix}where.{key}")
        if not mask.any():
            raise self.error(f"{prefix}where", f"no trial of study {data.name} matches it")
        return mask

    def metric(self, data: StudyData, metric: str, key: str) -> None:
        names = final_metrics(data)
        if metric not in names:
            raise self.error(key, f"unknown metric {metric!r} in study {data.name} (choose from {', '.join(names)})")

    def step(self, data: StudyData, when, key: str) -> None:
        steps = sorted(set(data.evaluations["step"].astype(int)))
        if isinstance(when, int) and when not in steps:
            shown = ", ".join(map(str, steps[:12])) + (" ..." if len(steps) > 12 else "")
            raise self.error(key, f"no evaluation at step {when} in study {data.name} (steps: {shown})")


def values(data: StudyData, metric: str, when, mask: pd.Series) -> pd.DataFrame:
    """One row per value read from the trials in ``mask``: for "final" each completed trial's last
    evaluation that has ``metric``; for a step N each trial's evaluation at N, whatever the trial's
    state; for "every" every evaluation. Columns trial_key, config_id, step, value and the trial's."""
    trials = data.trials[mask]
    if when == "final":
        trials = trials[trials["state"] == "completed"]
    ev = data.evaluations[["trial_key", "step", metric]].dropna(subset=[metric])
    ev = ev[ev["trial_key"].isin(trials["trial_key"])]
    if when == "final":
        ev = ev.sort_values(["trial_key", "step"], kind="stable").drop_duplicates("trial_key", keep="last")
    elif isinstance(when, int):
        ev = ev[ev["step"] == when]
    ev = ev.rename(columns={metric: "value"})
    return ev.merge(trials.drop(columns=["step"], errors="ignore"), on="trial_key", how="inner")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _configs(rows: pd.DataFrame, sign: float, label: Callable[[str], str]) -> tuple[list, str, str]:
    """(weighted groups for a contrast, detail, note): one group per configuration, weight ±1 / #configs."""
    groups = [(cid, g["value"].to_numpy(dtype=float)) for cid, g in rows.groupby("config_id", sort=True)]
    detail = f"{_count(len(rows), 'trial')} in {_count(len(groups), 'configuration')}"
    if not groups:
        return [], detail, "no trial with a value"
    lone = [cid for cid, x in groups if len(x) < 2]
    if lone:
        return [], detail, (f"configuration {label(lone[0])} has 1 value; an interval needs ≥ 2 seeds "
                            f"per configuration")
    return [(sign / len(groups), x) for _, x in groups], detail, ""


# ---- the four tests -------------------------------------------------------------------------------


class _Run:
    """Computes the strata of one claim."""

    def __init__(self, ctx: _Claim, studies: _Studies, data: StudyData, alpha: float, n_boot: int, seed: int):
        self.ctx, self.studies, self.data = ctx, studies, data
        self.claim, self.alpha, self.n_boot = ctx.claim, alpha, n_boot
        self.seed = [seed, zlib.crc32(ctx.claim.id.encode())]

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([*self.seed, i])

    def label(self, data: StudyData) -> Callable[[str], str]:
        first = data.trials.drop_duplicates("config_id").set_index("config_id")
        cols = [c for c in data.factors if c in first.columns]
        return lambda cid: " ".join(f"{c}={_text(first.at[cid, c])}" for c in cols) or str(cid)

    def strata(self, mask: pd.Series) -> list[tuple[str, pd.Series]]:
        cols = [self.ctx.column(self.data, key, "per") for key in self.claim.per]
        if not cols:
            return [("all", mask)]
        text = self.data.trials[cols].astype(str)
        out = []
        for combo in sorted(set(map(tuple, text[mask].to_numpy()))):
            label = ", ".join(f"{c}={v}" for c, v in zip(cols, combo))
            out.append((label, mask & (text == list(combo)).all(axis=1)))
        return out

    def contrast(self, groups: list, offset: float, i: int) -> E.Test:
        c = E.contrast(groups, self.n_boot, self.rng(i), offset)
        t = getattr(self.claim, self.claim.test)
        return E.compare(c, t.op, self.alpha, t.margin, t.tol)

    def order(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        o, data, ctx = self.claim.order, self.data, self.ctx
        col = ctx.column(data, o.factor, "order.factor")
        ctx.levels(data, col, [o.a], mask, "order.a")
        ctx.levels(data, col, [o.b], mask, "order.b")
        out, label = [], self.label(data)
        for i, (name, smask) in enumerate(self.strata(mask)):
            sides = []
            for side, level, sign in (("a", o.a, 1.0), ("b", o.b, -1.0)):
                at_level = smask & data.trials[col].map(lambda v, level=level: yaml_equal(v, level))
                if not at_level.any():
                    raise ctx.error("per", f"stratum {name} has no trial at {col}={_text(level)}")
                sides.append(_configs(values(data, self.claim.metric, self.claim.when, at_level), sign, label))
            detail = f"a: {sides[0][1]}; b: {sides[1][1]}"
            note = sides[0][2] or sides[1][2]
            test = NO_TEST if note else self.contrast(sides[0][0] + sides[1][0], 0.0, i)
            out.append(Stratum(name, test, detail, note and f"{'a' if sides[0][2] else 'b'}: {note}"))
        return f"{self.claim.metric}: {col}={_text(o.a)} {_OPS[o.op]} {col}={_text(o.b)}{o.slack()}", out

    def versus(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        v, claim = self.claim.versus, self.claim
        label = self.label(self.data)
        ref_groups, ref_detail, ref_note, paired = [], "", "", v.paired
        if v.value is not None:
            text = f"{claim.metric} {_OPS[v.op]} {v.value:g}"
        elif paired:
            self.ctx.step(self.data, v.at, "versus.at")
            ref_metric = v.metric or claim.metric
            self.ctx.metric(self.data, ref_metric, "versus.metric")
            if v.at == claim.when and ref_metric == claim.metric:
                raise self.ctx.error("versus.at", "the same evaluation as the claim's: nothing to compare")
            other = "" if ref_metric == claim.metric else f"{ref_metric} "
            text = f"{claim.metric} at {_when_text(claim.when)} {_OPS[v.op]} {other}at {_when_text(v.at)} (same trials)"
        else:
            ref_groups, ref_text, ref_detail, ref_note = self.reference(v)
            text = f"{claim.metric} {_OPS[v.op]} {ref_text}"
        out = []
        for i, (name, smask) in enumerate(self.strata(mask)):
            rows = values(self.data, claim.metric, claim.when, smask)
            if paired:
                ref = values(self.data, v.metric or claim.metric, v.at, smask)[["trial_key", "value"]]
                rows = rows.merge(ref, on="trial_key", suffixes=("", "_ref"))
                rows = rows.assign(value=rows["value"] - rows["value_ref"])
            groups, detail, note = _configs(rows, 1.0, label)
            detail += f"; reference: {ref_detail}" if ref_detail else ""
            note = note or ref_note
            offset = -v.value if v.value is not None else 0.0
            test = NO_TEST if note else self.contrast(groups + ref_groups, offset, i)
            out.append(Stratum(name, test, detail, note))
        return text + v.slack(), out

    def reference(self, v: Versus) -> tuple[list, str, str, str]:
        """The reference study's groups (weight −1 / #configs), its text, its detail and the note saying
        why it cannot be used (then no groups)."""
        name = self.studies.name(self.ctx, v, "versus.")
        data = self.studies.get(self.ctx, name, "versus.study" if v.study else "versus.preset")
        metric = v.metric or self.claim.metric
        self.ctx.metric(data, metric, "versus.metric")
        when = v.at or "final"
        self.ctx.step(data, when, "versus.at")
        mask = self.ctx.select(data, v.where, "versus.")
        groups, detail, note = _configs(values(data, metric, when, mask), -1.0, self.label(data))
        where = _where_text(v.where)
        text = (f"{name}{f' ({where})' if where else ''}{'' if metric == self.claim.metric else ' ' + metric}"
                f"{'' if when == 'final' else ' at ' + _when_text(when)}")
        return ([], text, detail, f"reference: {note}") if note else (groups, text, detail, "")

    def correlation(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        c, claim = self.claim.correlation, self.claim
        self.ctx.metric(self.data, c.with_, "correlation.with")
        out = []
        for i, (name, smask) in enumerate(self.strata(mask)):
            y = values(self.data, claim.metric, claim.when, smask)[["trial_key", "value"]]
            x = values(self.data, c.with_, claim.when, smask)[["trial_key", "value"]]
            both = y.merge(x, on="trial_key", suffixes=("", "_with"))
            test = E.spearman_sign(both["value_with"].to_numpy(), both["value"].to_numpy(), c.sign, self.alpha,
                                   self.n_boot, self.rng(i))
            note = "" if math.isfinite(test.estimate) else (
                f"ρ is undefined for {len(both)} trials" + (" (fewer than 3)" if len(both) < 3 else " (a constant)"))
            out.append(Stratum(name, test, _count(len(both), "trial"), note))
        return f"Spearman ρ({claim.metric}, {c.with_}) {'>' if c.sign == 'positive' else '<'} 0", out

    def bound(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        b, claim = self.claim.bound, self.claim
        rows = values(self.data, claim.metric, claim.when, mask)
        if b.at_most == "ceiling":
            limit = ceilings(self.data.trials).set_axis(self.data.trials["trial_key"]).reindex(rows["trial_key"])
            missing = rows.loc[limit.isna().to_numpy(), "trial_key"]
            if len(missing):
                est = self.data.trials.set_index("trial_key").get("estimator")
                which = f" (estimator {est[missing.iloc[0]]})" if est is not None else ""
                raise self.ctx.error("bound.at_most", f"trial {missing.iloc[0]}{which} has no ceiling ({CEILING_NOTE}); "
                                                      f"narrow the claim with where")
            excess = rows["value"].to_numpy() - limit.to_numpy(dtype=float)
            text = f"{claim.metric} ≤ ceiling"
        elif b.at_most is not None:
            excess, text = rows["value"].to_numpy() - float(b.at_most), f"{claim.metric} ≤ {float(b.at_most):g}"
        else:
            excess, text = float(b.at_least) - rows["value"].to_numpy(), f"{claim.metric} ≥ {b.at_least:g}"
        text += f" (tol {b.tol:g})" if b.tol else ""
        n = len(excess)
        if n == 0:
            return text, [Stratum("all", NO_TEST, "0 evaluations", "no evaluation with a value")]
        worst = int(np.argmax(excess))
        over = int((excess > b.tol).sum())
        p = 0.0 if over == 0 else 1.0  # a census: decided, not estimated
        test = E.Test(float(excess[worst]), (math.nan, math.nan), p, 1.0 - p, n)
        where = f"trial {rows['trial_key'].iloc[worst]} at step {int(rows['step'].iloc[worst])}"
        detail = (f"{n} evaluations of {rows['trial_key'].nunique()} trials; {over} beyond the limit; "
                  f"nearest to it or furthest past it: {where}")
        return text, [Stratum("all", test, detail)]


_OPS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "~": "≈"}


def _when_text(when) -> str:
    return f"step {when}" if isinstance(when, int) else when


def _where_text(where: dict) -> str:
    return ", ".join(f"{k}={'|'.join(map(_text, v))}" for k, v in where.items())


class _Studies:
    """Studies read once per run; an unknown one is bad input naming the claim."""

    def __init__(self, db_url: str, budget: str | None, default_budget: str | None, preloaded: StudyData | None):
        self.db_url, self.budget, self.default_budget = db_url, budget, default_budget
        self.cache: dict[str, StudyData] = {preloaded.name: preloaded} if preloaded is not None else {}
        self._known: list[str] | None = None

    def name(self, ctx: _Claim, ref, prefix: str = "") -> str:
        if ref.study is not None:
            return ref.study
        from mimax.search_spaces.spec import load_spec, preset_names

        if ref.preset not in preset_names():
            raise ctx.error(f"{prefix}preset", f"unknown preset {ref.preset!r} (choose from {', '.join(preset_names())})")
        budget = ref.budget or self.budget or self.default_budget
        if budget is None:
            raise ctx.error(f"{prefix}budget", "missing: a preset needs a budget (here, at the top of the file, "
                                               "or --budget)")
        budgets = load_spec(ref.preset).budgets
        if budget not in budgets:
            raise ctx.error(f"{prefix}budget", f"unknown budget {budget!r} of preset {ref.preset} "
                                               f"(choose from {', '.join(budgets)})")
        return f"{ref.preset}-{budget}"

    def get(self, ctx: _Claim, name: str, key: str) -> StudyData:
        if name in self.cache:
            return self.cache[name]
        if self._known is None:
            self._known = [s["name"] for s in list_studies(self.db_url)]
        if name not in self._known:
            raise ctx.error(key, f"unknown study {name!r} (known: {', '.join(self._known) or 'none'})")
        try:
            self.cache[name] = load(self.db_url, name)
        except ConfigError as e:  # an empty study (AnalysisError), an unreadable database (DatabaseError)
            raise ctx.error(key, str(e)) from None
        return self.cache[name]


# ---- the file ---------------------------------------------------------------------------------------


def verify(claims: ClaimsFile, source: str, db_url: str, *, n_boot: int = 10_000, seed: int = 0,
           budget: str | None = None, data: StudyData | None = None) -> Verification:
    """Verdicts for every claim of ``claims`` (``source`` names the file in errors) against the database
    at ``db_url``. ``budget`` replaces the file's default budget for preset claims. With ``data`` (a
    loaded study), only the claims about that study are taken, as one family (``mimax analyze
    --claims``): those naming it, and the preset claims without a budget of their own whose preset
    and the study's recorded budget make its name. Raises ConfigError for bad input."""
    if n_boot < 100 or seed < 0:
        raise AnalysisError(f"verify needs n_boot ≥ 100 and seed ≥ 0, got n_boot {n_boot} and seed {seed}")
    studies = _Studies(db_url, budget, claims.budget, data)
    verdicts = []
    for claim in claims.claims:
        ctx = _Claim(claim, source)
        studies.budget = budget
        name = studies.name(ctx, claim)
        if data is not None and name != data.name:
            # A preset claim is also about PRESET-B analysed at its own recorded budget B.
            own = data.study.get("budget")
            if claim.preset is None or claim.budget is not None or f"{claim.preset}-{own}" != data.name:
                continue
            studies.budget, name = own, data.name
        verdicts.append(_evaluate(ctx, studies, name, claims.alpha, n_boot, seed))
    _decide(verdicts, claims.alpha)
    scope = "" if data is None else f"the {len(verdicts)} claims of {source} about study {data.name}"
    return Verification(source, claims.alpha, n_boot, seed, verdicts, scope)


def _evaluate(ctx: _Claim, studies: _Studies, name: str, alpha: float, n_boot: int, seed: int) -> Verdict:
    claim = ctx.claim
    data = studies.get(ctx, name, "study" if claim.study is not None else "preset")
    ctx.metric(data, claim.metric, "metric")
    ctx.step(data, claim.when, "at")
    mask = ctx.select(data, claim.where, "")
    statement, strata = getattr(_Run(ctx, studies, data, alpha, n_boot, seed), claim.test)(mask)
    if claim.where:
        statement += f" where {_where_text(claim.where)}"
    if claim.per:
        statement += f", in every stratum of {', '.join(claim.per)}"
    if claim.when != "final" and not (claim.versus is not None and claim.versus.paired):
        statement += f", at {_when_text(claim.when)}" + (" evaluation" if claim.when == "every" else "")
    tests = [s.test for s in strata]
    p_holds, p_fails, worst = E.combine(tests)
    return Verdict(claim, name, statement, test=tests[worst], p_holds=p_holds, p_fails=p_fails,
                   exempt=claim.exempt or (CENSUS if claim.bound is not None else None), strata=strata)


def _decide(verdicts: list[Verdict], alpha: float) -> None:
    """Holm over the non-exempt claims, on each side at alpha / 2; exempt ones at alpha / 2 alone."""
    level = alpha / 2
    family = [d for d in verdicts if d.exempt is None]
    for d, ph, pf in zip(family, E.holm([d.p_holds for d in family]), E.holm([d.p_fails for d in family])):
        d.p_holds_holm, d.p_fails_holm = ph, pf
    for d in verdicts:
        ph = d.p_holds if d.p_holds_holm is None else d.p_holds_holm
        pf = d.p_fails if d.p_fails_holm is None else d.p_fails_holm
        d.verdict = "holds" if ph <= level else "fails" if pf <= level else "inconclusive"
        d.reason = _reason(d, ph, pf, level)


def _reason(d: Verdict, ph: float, pf: float, level: float) -> str:
    notes = "; ".join(f"{s.label}: {s.note}" if len(d.strata) > 1 else s.note for s in d.strata if s.note)
    if d.census:
        s = d.strata[0]
        return notes or (f"{s.detail.split(';')[0]}, all within the limit (largest excess {d.test.estimate:.4g})"
                         if d.verdict == "holds" else f"{s.detail}; the largest excess {d.test.estimate:.4g}")
    adj = "" if d.p_holds_holm is None else " after Holm"
    ex = f" (exempt from Holm: {d.exempt})" if d.p_holds_holm is None else ""
    if d.verdict == "holds":
        return f"p_holds {ph:.2g}{adj} ≤ {level:g}{ex}"
    if d.verdict == "fails":
        return f"p_fails {pf:.2g}{adj} ≤ {level:g}{ex}"
    return notes or f"neither p_holds ({ph:.2g}) nor p_fails ({pf:.2g}){adj} ≤ {level:g}{ex}"
