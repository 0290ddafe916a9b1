"""Test the claims of a claims file against a results database: ``verify(...)`` → :class:`Verification`.

Each claim is resolved against its study (unknown study, factor, level or metric: ConfigError naming the
claim and the key), read at its endpoint (a study that stops before it leaves the claim *untestable at
this budget*), its numbers computed from one linear model of its configurations
(mimax.analysis.claims.evidence), and the verdicts decided family by family: Holm's adjustment within
each finding × probe (or a declared family). A bound test is a *check*, reported apart. docs/VERIFY.md
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
from mimax.analysis.load import SHORT_FACTORS, AnalysisError, StudyData, ceilings, list_studies, load
from mimax.analysis.stats import final_metrics
from mimax.errors import ConfigError
from mimax.search_spaces.spec import show

__all__ = ["CEILING_NOTE", "FINDING_VERDICTS", "Stratum", "Verdict", "Verification", "values", "verify",
           "yaml_equal"]

FINDING_VERDICTS = ("holds", "fails", "inconclusive", "untestable")  # a claim's; a finding may be partly untestable
CHECK_VERDICTS = ("passed", "failed")
CEILING_NOTE = "log K for NCE and K-pair (K = train.batch_size), log 2 for the soft triplet"
NO_TEST = E.Test(math.nan, (math.nan, math.nan), 1.0, 1.0, 0)
POWER = 0.8  # the power n_needed aims at


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
    family: str = ""
    verdict: str = "inconclusive"
    test: E.Test = NO_TEST  # the claim's numbers: its least favourable stratum's
    p_holds: float = 1.0  # the claim's p-values before Holm (strata combined)
    p_fails: float = 1.0
    p_holds_holm: float | None = None  # None: a check, an untestable or an exempt claim
    p_fails_holm: float | None = None
    reason: str = ""
    strata: list[Stratum] = field(default_factory=list)
    endpoint: int | None = None  # the training step the claim is about (None: the study's last)
    read_at: int | None = None  # the last training step of the trials read
    excluded: int = 0  # trials left out by the claims file's diverged rule
    seeds: int = 0  # the fewest seeds of a configuration the claim weighs
    configs: list[str] = field(default_factory=list)  # those configurations (config_ids in the study)
    n_needed: int | None = None  # seeds per configuration for 80 % power at the observed effect
    n_needed_note: str = ""  # why there is no n_needed for an open claim
    df_at: Callable[[int], float] | None = None  # the residual df at n seeds per configuration
    fixed_se: float = 0.0  # the part of the se more seeds of this study do not shrink (a reference study)
    level: float = math.nan  # the one-sided level n_needed plans with: alpha / 2 / the family's size

    def power(self, effect: float, seeds: int) -> float:
        """P(the claim's one-sided test rejects at ``level``) with ``seeds`` seeds per configuration when
        θ lies ``effect`` pooled sds beyond the claim's threshold (the design's power, as n_needed plans
        it: the se in sds is the contrast's weights' alone)."""
        sd = self.test.sd
        se = math.sqrt((self.test.unit / sd) ** 2 / seeds + (self.fixed_se / sd) ** 2)
        return E.power(effect, se, max(1.0, self.df_at(seeds)), self.level)

    @property
    def kind(self) -> str:
        return self.claim.kind

    @property
    def tested(self) -> bool:
        """In its family's Holm adjustment: a finding read at its endpoint, not exempt."""
        return self.kind == "finding" and self.verdict != "untestable" and self.claim.exempt is None

    def as_dict(self) -> dict:
        c = self.claim
        check = self.kind == "check"
        return {
            "id": c.id, "finding": c.finding, "kind": self.kind, "family": self.family, "verdict": self.verdict,
            "estimate": self.test.estimate, "ci": list(self.test.ci), "n": self.test.n, "seeds": self.seeds,
            "n_needed": self.n_needed, "n_needed_note": self.n_needed_note or None, "study": self.study,
            "configs": self.configs, "metric": c.metric, "minus": c.minus,
            "at": c.when if isinstance(c.when, str) else {"step": c.when},
            "endpoint": self.endpoint, "read_at": self.read_at, "excluded": self.excluded, "test": self.statement,
            "paper": c.paper, "p_holds": None if check else self.p_holds, "p_fails": None if check else self.p_fails,
            "p_holds_holm": self.p_holds_holm, "p_fails_holm": self.p_fails_holm, "exempt": c.exempt,
            "reason": self.reason, "probe": probe_label(c), "se": self.test.se, "df": self.test.df,
            "sd": self.test.sd,
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
    diverged: str = ""  # the declared rule, in words
    passed_over: str = ""  # preferred studies not finished yet, and what was read instead

    @property
    def claims(self) -> list[Verdict]:
        """The findings (not the checks)."""
        return [d for d in self.verdicts if d.kind == "finding"]

    @property
    def checks(self) -> list[Verdict]:
        return [d for d in self.verdicts if d.kind == "check"]

    def counts(self) -> dict[str, int]:
        """Verdicts of the findings; checks are counted apart (:meth:`check_counts`)."""
        return {v: sum(d.verdict == v for d in self.claims) for v in FINDING_VERDICTS}

    def check_counts(self) -> dict[str, int]:
        return {v: sum(d.verdict == v for d in self.checks) for v in CHECK_VERDICTS}

    def families(self) -> list[dict]:
        """Each Holm family in file order: its name, claims, and how many Holm ran over."""
        out = {}
        for d in self.claims:
            f = out.setdefault(d.family, {"family": d.family, "claims": [], "size": 0})
            f["claims"].append(d.claim.id)
            f["size"] += d.tested
        return list(out.values())

    @property
    def all_hold(self) -> bool:
        return all(d.verdict == "holds" for d in self.claims) and all(d.verdict == "passed" for d in self.checks)

    def findings(self) -> list[dict]:
        """Per finding (in file order): its verdict over its claims (holds if every one holds, fails if
        any fails, untestable if none was testable) and, when its claims use several probes, the verdict
        under each probe."""
        out = []
        for finding in dict.fromkeys(d.claim.finding for d in self.claims):
            mine = [d for d in self.claims if d.claim.finding == finding]
            labels = sorted({probe_label(d.claim) for d in mine} - {None})
            probes = {lab: _overall([d for d in mine if probe_label(d.claim) in (lab, None)]) for lab in labels}
            out.append({"finding": finding, "verdict": _overall(mine), "claims": [d.claim.id for d in mine],
                        **{v: sum(d.verdict == v for d in mine) for v in FINDING_VERDICTS},
                        "probes": probes, "note": _probe_note(probes)})
        return out

    def as_dict(self) -> dict:
        return {"source": self.source, "alpha": self.alpha, "n_boot": self.n_boot, "seed": self.seed,
                "scope": self.scope, "diverged": self.diverged or None, "passed_over": self.passed_over or None,
                "claims": [d.as_dict() for d in self.verdicts], "findings": self.findings(),
                "families": self.families(), **self.counts(), "checks": self.check_counts()}


def _overall(verdicts: list[Verdict]) -> str:
    """holds (every claim), fails (any), inconclusive (any open), untestable (none testable), or partly
    untestable (the testable ones hold)."""
    got = {d.verdict for d in verdicts}
    for verdict in ("fails", "inconclusive"):
        if verdict in got:
            return verdict
    if got <= {"holds"} and got:
        return "holds"
    return "untestable" if got <= {"untestable"} else "partly untestable"


def _probe_note(probes: dict[str, str]) -> str:
    if len(probes) < 2 or len(set(probes.values())) == 1:
        return ""
    held = [lab for lab, v in probes.items() if v == "holds"]
    if len(held) == 1:
        return f"holds under probe {held[0]} only"
    return "; ".join(f"probe {lab}: {v}" for lab, v in probes.items())


def probe_label(claim: Claim) -> str | None:
    """The probe a claim reads (``probe_accuracy.<label>`` as its metric, correlate or reference metric)."""
    names = [claim.metric, claim.minus, claim.correlation.with_ if claim.correlation else None,
             claim.versus.metric if claim.versus else None]
    labels = {n.split(".", 1)[1] for n in names if n and n.startswith("probe_accuracy.")}
    return labels.pop() if len(labels) == 1 else None


def family_of(claim: Claim, primary: str | None) -> str:
    """The claim's Holm family: declared, else its finding, with the probe when it is not the primary
    one (a sensitivity family)."""
    if claim.family:
        return claim.family
    probe = probe_label(claim)
    return claim.finding if probe is None or probe == primary else f"{claim.finding} · probe {probe}"


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


def values(data: StudyData, metric: str, when, mask: pd.Series, minus: str | None = None,
           columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per value read from the trials in ``mask``: for "final" each completed trial's last
    evaluation that has ``metric``; for a step N each trial's evaluation at N, whatever the trial's
    state; for "every" every evaluation. ``minus``: a metric of the same evaluation subtracted. Columns
    trial_key, step, value and the trial's (``columns`` of them only: the claims need config_id and seed,
    and a merge of every config column is most of the time a claim takes)."""
    trials = data.trials[mask]
    if when == "final":
        trials = trials[trials["state"] == "completed"]
    cols = ["trial_key", "step", metric] + ([minus] if minus else [])
    ev = data.evaluations[cols].dropna(subset=cols[2:])
    ev = ev[ev["trial_key"].isin(trials["trial_key"])]
    if minus:
        ev = ev.assign(**{metric: ev[metric] - ev[minus]}).drop(columns=[minus])
    if when == "final":
        ev = ev.sort_values(["trial_key", "step"], kind="stable").drop_duplicates("trial_key", keep="last")
    elif isinstance(when, int):
        ev = ev[ev["step"] == when]
    ev = ev.rename(columns={metric: "value"})
    if columns is not None:
        by_key = trials.set_index("trial_key")
        return ev.assign(**{c: ev["trial_key"].map(by_key[c]).to_numpy() for c in columns})
    return ev.merge(trials.drop(columns=["step"], errors="ignore"), on="trial_key", how="inner")


_KEYS = ("config_id", "seed")  # what the claims read of a trial


def diverged_trials(data: StudyData, metric: str, below: float) -> set[str]:
    """Trials that stopped diverged, or whose ``metric`` at their last evaluation is non-finite or below
    ``below``."""
    out = set(data.trials.loc[data.trials["state"] == "diverged", "trial_key"])
    if metric in data.evaluations.columns:  # a trial that never records it (adversarial mode) is not judged
        ev = data.evaluations
        recording = set(ev.loc[ev[metric].notna(), "trial_key"])
        last = ev.sort_values(["trial_key", "step"], kind="stable").drop_duplicates("trial_key", keep="last")
        value = last[metric].to_numpy(dtype=float)
        bad = (~np.isfinite(value) | (value < below)) & last["trial_key"].isin(recording).to_numpy()
        out |= set(last.loc[bad, "trial_key"])
    return out


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


# ---- the tests -------------------------------------------------------------------------------------


class _Run:
    """Computes the strata of one claim from one model of its selected trials."""

    def __init__(self, ctx: _Claim, studies: _Studies, data: StudyData, alpha: float, n_boot: int, seed: int):
        self.ctx, self.studies, self.data = ctx, studies, data
        self.claim, self.alpha, self.n_boot = ctx.claim, alpha, n_boot
        self.seed = [seed, zlib.crc32(ctx.claim.id.encode())]
        self.model: E.Model | None = None
        self.used: dict[str, int] = {}  # config_id -> seeds, over the configurations the contrasts weigh
        self.fixed_se = 0.0

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

    def fit(self, rows: pd.DataFrame, mask: pd.Series | None = None, what: tuple = ()) -> tuple[E.Model | None, str]:
        """The claim's model over ``rows`` (config_id, seed, value), or None and why not; ``mask`` and
        ``what`` (what the values are) key the shared cache (None: not cached, derived values)."""
        claim = self.claim
        if rows.empty:
            return None, "no trial with a value"
        counts = rows.groupby("config_id").size()
        if claim.pool == "none" and (counts < 2).any():
            return None, (f"configuration {self.label(self.data)(counts.idxmin())} has 1 value; with pool none "
                          f"an interval needs ≥ 2 seeds per configuration")
        pool, pair = claim.pool == "selection", claim.pair == "seed"
        model = (E.fit(rows, pool=pool, pair=pair) if mask is None else
                 self.studies.model(self.data.name, rows, mask, what, pool, pair))
        if model.pooled and not model.df_resid > 0:
            return None, (f"{_count(len(rows), 'value')} in {_count(len(counts), 'configuration')} leave no "
                          f"degrees of freedom for the seed-to-seed variance")
        return model, ""

    def test(self, contrast: E.Contrast) -> E.Test:
        t = getattr(self.claim, self.claim.test)
        return E.compare(contrast, t.op, self.alpha, t.margin, t.tol, t.by)

    def weights(self, rows: pd.DataFrame, sign: float, configs: set[str] | None = None) -> tuple[dict[str, float], str]:
        """±1 / #configurations over the configurations of ``rows`` (those in ``configs``, if given)."""
        counts = rows["config_id"].astype(str).value_counts()
        ids = sorted(c for c in counts.index if configs is None or c in configs)
        self.used.update({cid: int(counts[cid]) for cid in ids})
        n = int(sum(counts[c] for c in ids))
        return {cid: sign / len(ids) for cid in ids}, f"{_count(n, 'trial')} in {_count(len(ids), 'configuration')}"

    def order(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        o, data, ctx, claim = self.claim.order, self.data, self.ctx, self.claim
        col = ctx.column(data, o.factor, "order.factor")
        ctx.levels(data, col, [o.a], mask, "order.a")
        ctx.levels(data, col, [o.b], mask, "order.b")
        rows = self.studies.values(data, claim.metric, claim.when, mask, claim.minus)
        model, why = self.fit(rows, mask, (claim.metric, claim.when, claim.minus))
        self.model = model
        # a configuration has one level of every factor: sides and strata are sets of configurations
        level = dict(zip(data.trials["config_id"].astype(str), data.trials[col]))
        out = []
        for name, smask in self.strata(mask):
            in_stratum = set(data.trials.loc[smask, "config_id"].astype(str))
            sides, details = {}, []
            for side, want, sign in (("a", o.a, 1.0), ("b", o.b, -1.0)):
                at_level = {c for c in in_stratum if yaml_equal(level[c], want)}
                if not at_level:
                    raise ctx.error("per", f"stratum {name} has no trial at {col}={_text(want)}")
                w, detail = self.weights(rows, sign, at_level)
                sides.update(w)
                details.append(f"{side}: {detail}")
            empty = not any(v > 0 for v in sides.values()) or not any(v < 0 for v in sides.values())
            note = why or ("a side has no trial with a value" if empty else "")
            test = NO_TEST if note else self.test(model.contrast(sides))
            out.append(Stratum(name, test, "; ".join(details), note))
        what = claim.metric + (f" − {claim.minus}" if claim.minus else "")
        return f"{what}: {col}={_text(o.a)} {_OPS[o.op]} {col}={_text(o.b)}{o.slack()}", out

    def versus(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        v, claim = self.claim.versus, self.claim
        ref, ref_text, ref_detail, ref_note = None, "", "", ""
        what = claim.metric + (f" − {claim.minus}" if claim.minus else "")
        if v.value is not None:
            text = f"{what} {_OPS[v.op]} {v.value:g}"
        elif v.paired:
            self.ctx.step(self.data, v.at, "versus.at")
            ref_metric = v.metric or claim.metric
            self.ctx.metric(self.data, ref_metric, "versus.metric")
            if v.at == claim.when and ref_metric == claim.metric:
                raise self.ctx.error("versus.at", "the same evaluation as the claim's: nothing to compare")
            other = "" if ref_metric == claim.metric else f"{ref_metric} "
            text = f"{what} at {_when_text(claim.when)} {_OPS[v.op]} {other}at {_when_text(v.at)} (same trials)"
        else:
            ref, ref_text, ref_detail, ref_note = self.reference(v)
            text = f"{what} {_OPS[v.op]} {ref_text}"
        rows = self.studies.values(self.data, claim.metric, claim.when, mask, claim.minus)
        if v.paired:
            base = values(self.data, v.metric or claim.metric, v.at, mask, columns=())[["trial_key", "value"]]
            rows = rows.merge(base, on="trial_key", suffixes=("", "_ref"))
            rows = rows.assign(value=rows["value"] - rows["value_ref"])
        model, why = self.fit(rows, None if v.paired else mask, (claim.metric, claim.when, claim.minus))
        self.model = model
        out = []
        for name, smask in self.strata(mask):
            w, detail = self.weights(rows, 1.0, set(self.data.trials.loc[smask, "config_id"].astype(str)))
            detail += f"; reference: {ref_detail}" if ref_detail else ""
            note = why or ref_note or ("" if w else "no trial with a value")
            if note:
                test = NO_TEST
            else:
                c = model.contrast(w, -v.value if v.value is not None else 0.0)
                test = self.test(E.sum_of([c, ref]) if ref is not None else c)
            out.append(Stratum(name, test, detail, note))
        return text + v.slack(), out

    def reference(self, v: Versus) -> tuple[E.Contrast | None, str, str, str]:
        """The reference study's mean (its own model, weight −1 / #configs) as a contrast, its text, its
        detail and the note saying why it cannot be used (then None)."""
        name = self.studies.name(self.ctx, v, "versus.")
        data = self.studies.get(self.ctx, name, "versus.study" if v.study else "versus.preset")
        metric = v.metric or self.claim.metric
        self.ctx.metric(data, metric, "versus.metric")
        when = v.at or "final"
        self.ctx.step(data, when, "versus.at")
        mask = self.ctx.select(data, v.where, "versus.")
        rows = values(data, metric, when, mask, columns=_KEYS)
        where = _where_text(v.where)
        text = (f"{name}{f' ({where})' if where else ''}{'' if metric == self.claim.metric else ' ' + metric}"
                f"{'' if when == 'final' else ' at ' + _when_text(when)}")
        ids = sorted(rows["config_id"].astype(str).unique())
        detail = f"{_count(len(rows), 'trial')} in {_count(len(ids), 'configuration')}"
        if not ids:
            return None, text, detail, "reference: no trial with a value"
        model = E.fit(rows, pool=self.claim.pool == "selection")
        if model.pooled and not model.df_resid > 0:
            return None, text, detail, "reference: no degrees of freedom for its seed-to-seed variance"
        c = model.contrast({cid: -1.0 / len(ids) for cid in ids})
        self.fixed_se = c.se
        return c, text, detail, ""

    def correlation(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        c, claim = self.claim.correlation, self.claim
        self.ctx.metric(self.data, c.with_, "correlation.with")
        out = []
        for i, (name, smask) in enumerate(self.strata(mask)):
            y = values(self.data, claim.metric, claim.when, smask, claim.minus, _KEYS)[["trial_key", "config_id", "value"]]
            x = values(self.data, c.with_, claim.when, smask, columns=())[["trial_key", "value"]]
            both = y.merge(x, on="trial_key", suffixes=("", "_with"))
            for cid, n in both.groupby("config_id").size().items():
                self.used[str(cid)] = int(n)
            test = E.spearman_sign(both["value_with"].to_numpy(), both["value"].to_numpy(), c.sign, self.alpha,
                                   self.n_boot, self.rng(i))
            note = "" if math.isfinite(test.estimate) else (
                f"ρ is undefined for {len(both)} trials" + (" (fewer than 3)" if len(both) < 3 else " (a constant)"))
            out.append(Stratum(name, test, _count(len(both), "trial"), note))
        return f"Spearman ρ({claim.metric}, {c.with_}) {'>' if c.sign == 'positive' else '<'} 0", out

    def bound(self, mask: pd.Series) -> tuple[str, list[Stratum]]:
        b, claim = self.claim.bound, self.claim
        rows = values(self.data, claim.metric, claim.when, mask, columns=())
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

    def __init__(self, db_url: str | None, budget: str | None, default_budgets: list[str] | None,
                 preloaded: list[StudyData] = (), seeds: int | None = None):
        self.db_url, self.budget, self.default_budgets = db_url, budget, default_budgets or []
        self.seeds = seeds
        self.cache: dict[str, StudyData] = {d.name: seeds_below(d, seeds) for d in preloaded}
        self._status: dict[str, str] | None = None if db_url else {d.name: "completed" for d in preloaded}
        self.passed_over: dict[str, str] = {}  # a preferred study not yet finished -> the one read instead
        self._values: dict[tuple, pd.DataFrame] = {}
        self._models: dict[tuple, E.Model] = {}

    def values(self, data: StudyData, metric: str, when, mask: pd.Series, minus: str | None = None) -> pd.DataFrame:
        """``values`` with the claims' columns, once per (study, metric, evaluation, trials): a file's
        claims often read the same values (probe twins, several contrasts of one study)."""
        key = (data.name, metric, when, minus, mask.to_numpy().tobytes())
        if key not in self._values:
            self._values[key] = values(data, metric, when, mask, minus, _KEYS)
        return self._values[key]

    def model(self, name: str, rows: pd.DataFrame, mask: pd.Series, what: tuple, pool: bool, pair: bool) -> E.Model:
        """The linear model of ``rows``, once per (study, values, pooling)."""
        key = (name, what, mask.to_numpy().tobytes(), pool, pair)
        if key not in self._models:
            self._models[key] = E.fit(rows, pool=pool, pair=pair)
        return self._models[key]

    @property
    def status(self) -> dict[str, str]:
        if self._status is None:
            listed = {s["name"]: s["status"] for s in list_studies(self.db_url)}
            self._status = {**{d: "completed" for d in self.cache}, **listed}
        return self._status

    @property
    def known(self) -> list[str]:
        return list(self.status)

    def name(self, ctx: _Claim, ref, prefix: str = "") -> str:
        """The study a claim (or its reference) reads: its own, or <preset>-<budget> for the first budget
        of the preference list (--budget, the claim's, the file's) whose study is in the database."""
        if ref.study is not None:
            return ref.study
        from mimax.search_spaces.spec import load_spec, preset_names

        if ref.preset not in preset_names():
            raise ctx.error(f"{prefix}preset", f"unknown preset {ref.preset!r} (choose from {', '.join(preset_names())})")
        wanted = [self.budget] if self.budget else [ref.budget] if ref.budget else self.default_budgets
        if not wanted:
            raise ctx.error(f"{prefix}budget", "missing: a preset needs a budget (here, at the top of the file, "
                                               "or --budget)")
        budgets = load_spec(ref.preset).budgets
        candidates = [b for b in wanted if b in budgets]
        if not candidates:
            raise ctx.error(f"{prefix}budget", f"unknown budget {wanted[0]!r} of preset {ref.preset} "
                                               f"(choose from {', '.join(budgets)})")
        names = [f"{ref.preset}-{b}" for b in candidates]
        present = [n for n in names if n in self.status]
        done = [n for n in present if self.status[n] == "completed"]
        chosen = (done or present or names[-1:])[0]
        for n in present[:present.index(chosen) if chosen in present else 0]:  # preferred, still running
            self.passed_over[n] = chosen
        return chosen

    def get(self, ctx: _Claim, name: str, key: str) -> StudyData:
        if name in self.cache:
            return self.cache[name]
        if name not in self.known:
            raise ctx.error(key, f"unknown study {name!r} (known: {', '.join(self.known) or 'none'})")
        try:
            self.cache[name] = seeds_below(load(self.db_url, name), self.seeds)
        except ConfigError as e:  # an empty study (AnalysisError), an unreadable database (DatabaseError)
            raise ctx.error(key, str(e)) from None
        return self.cache[name]


def seeds_below(data: StudyData, seeds: int | None) -> StudyData:
    """The study as it was when its configurations had at most ``seeds`` seeds (0..seeds−1): the trials
    of higher seeds and their evaluations left out (mimax decide's looks). None: the whole study."""
    if seeds is None:
        return data
    keep = data.trials["seed"] < seeds
    keys = set(data.trials.loc[keep, "trial_key"])
    return StudyData(study=data.study, trials=data.trials[keep].reset_index(drop=True),
                     evaluations=data.evaluations[data.evaluations["trial_key"].isin(keys)].reset_index(drop=True),
                     factors=data.factors, url=data.url, environment=data.environment)


def paper_steps(preset: str) -> int | None:
    """The training length of a preset's ``paper`` budget (its train.steps)."""
    from mimax.search_spaces.spec import load_spec

    spec = load_spec(preset)
    if "paper" not in spec.budgets:
        return None
    steps = spec.fixed_value("train.steps", "paper")
    return int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else None


# ---- the file ---------------------------------------------------------------------------------------


def verify(claims: ClaimsFile, source: str, db_url: str | None, *, n_boot: int = 10_000, seed: int = 0,
           budget: str | None = None, data: StudyData | None = None,
           studies: list[StudyData] = (), seeds: int | None = None) -> Verification:
    """Verdicts for every claim of ``claims`` (``source`` names the file in errors) against the database
    at ``db_url`` (and the preloaded ``studies``). ``budget`` replaces the file's budgets for preset
    claims. With ``data`` (a loaded study), only the claims about that study are taken (``mimax analyze
    --claims``): those naming it, and the preset claims without a budget of their own whose preset and
    the study's recorded budget make its name. ``seeds``: read only the trials of seeds below it (a
    look of mimax decide). Raises ConfigError for bad input."""
    if n_boot < 100 or seed < 0:
        raise AnalysisError(f"verify needs n_boot ≥ 100 and seed ≥ 0, got n_boot {n_boot} and seed {seed}")
    pool = _Studies(db_url, budget, claims.budget, [*studies, *([data] if data is not None else [])], seeds)
    verdicts = []
    for claim in claims.claims:
        ctx = _Claim(claim, source)
        pool.budget = budget
        name = pool.name(ctx, claim)
        if data is not None and name != data.name:
            # A preset claim is also about PRESET-B analysed at its own recorded budget B.
            own = data.study.get("budget")
            if claim.preset is None or claim.budget is not None or f"{claim.preset}-{own}" != data.name:
                continue
            pool.budget, name = own, data.name
        verdicts.append(_evaluate(ctx, pool, name, claims, n_boot, seed))
    _decide(verdicts, claims.alpha)
    scope = "" if data is None else f"the {len(verdicts)} claims of {source} about study {data.name}"
    waiting = "; ".join(f"{a} is {pool.status[a]}, so {b} was read" for a, b in pool.passed_over.items())
    rule = claims.diverged
    diverged = (f"a trial whose {rule.metric} at its last evaluation is non-finite or below {rule.below:g}, "
                f"or that stopped diverged, is excluded") if rule else ""
    return Verification(source, claims.alpha, n_boot, seed, verdicts, scope, diverged, waiting)


def _endpoint(claim: Claim) -> int | None:
    if isinstance(claim.at, int):
        return claim.at
    point = claim.endpoint or ("paper" if claim.preset is not None else "study")
    if isinstance(point, int):
        return point
    return paper_steps(claim.preset) if point == "paper" and claim.preset is not None else None


def _evaluate(ctx: _Claim, studies: _Studies, name: str, claims: ClaimsFile, n_boot: int, seed: int) -> Verdict:
    claim = ctx.claim
    data = studies.get(ctx, name, "study" if claim.study is not None else "preset")
    ctx.metric(data, claim.metric, "metric")
    if claim.minus:
        ctx.metric(data, claim.minus, "minus")
    ctx.step(data, claim.when, "at")
    mask = ctx.select(data, claim.where, "")
    excluded = 0
    if claims.diverged is not None and claim.kind == "finding":
        gone = diverged_trials(data, claims.diverged.metric, claims.diverged.below)
        hit = data.trials["trial_key"].isin(gone) & mask
        excluded, mask = int(hit.sum()), mask & ~hit
    run = _Run(ctx, studies, data, claims.alpha, n_boot, seed)
    statement, strata = getattr(run, claim.test)(mask)
    if claim.where:
        statement += f" where {_where_text(claim.where)}"
    if claim.per:
        statement += f", in every stratum of {', '.join(claim.per)}"
    if claim.when != "final" and not (claim.versus is not None and claim.versus.paired):
        statement += f", at {_when_text(claim.when)}" + (" evaluation" if claim.when == "every" else "")
    tests = [s.test for s in strata]
    p_holds, p_fails, worst = E.combine(tests)
    steps = pd.to_numeric(data.trials.loc[mask, "train.steps"], errors="coerce") \
        if "train.steps" in data.trials.columns else pd.Series(dtype=float)
    read_at = claim.when if isinstance(claim.when, int) else (int(steps.max()) if steps.notna().any() else None)
    d = Verdict(claim, name, statement, family=family_of(claim, claims.primary_probe), test=tests[worst],
                p_holds=p_holds, p_fails=p_fails, strata=strata, endpoint=_endpoint(claim), read_at=read_at,
                excluded=excluded, seeds=min(run.used.values(), default=0), configs=sorted(run.used),
                fixed_se=run.fixed_se)
    if run.model is not None:
        d.df_at = run.model.df_at
    if claim.kind == "finding" and d.endpoint is not None and read_at is not None and read_at < d.endpoint:
        d.verdict = "untestable"
    return d


def _decide(verdicts: list[Verdict], alpha: float) -> None:
    """Checks by their census; findings by Holm within their family, on each side at alpha / 2 (an
    exempt claim at alpha / 2 alone); then n_needed for the open ones."""
    level = alpha / 2
    for d in verdicts:
        if d.kind == "check":
            d.verdict = "passed" if d.p_holds == 0.0 else "failed"
            d.reason = _check_reason(d)
    families: dict[str, list[Verdict]] = {}
    for d in verdicts:
        if d.tested:
            families.setdefault(d.family, []).append(d)
    for family in families.values():
        for d, ph, pf in zip(family, E.holm([d.p_holds for d in family]), E.holm([d.p_fails for d in family])):
            d.p_holds_holm, d.p_fails_holm = ph, pf
    for d in verdicts:
        if d.kind == "check":
            continue
        if d.verdict == "untestable":
            t = d.test
            d.reason = (f"the study stops at step {d.read_at}, before the claim's endpoint {d.endpoint}; at "
                        f"step {d.read_at} the estimate is {t.estimate:+.4g}" +
                        (f" [{t.ci[0]:.4g}, {t.ci[1]:.4g}]" if math.isfinite(t.ci[0]) else ""))
            continue
        ph = d.p_holds if d.p_holds_holm is None else d.p_holds_holm
        pf = d.p_fails if d.p_fails_holm is None else d.p_fails_holm
        d.verdict = "holds" if ph <= level else "fails" if pf <= level else "inconclusive"
        d.reason = _reason(d, ph, pf, level)
        d.level = level / max(1, len(families.get(d.family, [])))  # Holm's strictest step
        if d.verdict == "inconclusive":
            d.n_needed, d.n_needed_note = _n_needed(d, d.level)


def _n_needed(d: Verdict, level: float) -> tuple[int | None, str]:
    """Seeds per configuration at which the claim's test reaches 80 % power at level ``level`` (Holm's
    strictest step), taking the observed effect and the pooled sd as true, toward the side the estimate
    leans to."""
    claim, t = d.claim, d.test
    if not math.isfinite(t.estimate):
        return None, "no estimate"
    if claim.correlation is not None:
        n = E.spearman_trials_needed(t.estimate, level, POWER)
        per = math.ceil(n / max(1, len(d.configs))) if n else None
        return per, "" if per else "ρ is 0 at the data: no number of seeds decides its sign"
    if d.df_at is None or not t.unit > 0:
        return None, "no seed-to-seed variance to plan with"
    op = getattr(claim, claim.test)
    low, high = E.thresholds(op.op, op.margin, op.by, op.tol)
    strata = max(1, len(d.strata))
    if op.op == "~":
        if low < t.estimate < high:
            n = E.seeds_needed(t.estimate - low, t.unit, d.df_at, level, POWER, band=high - low, se_fixed=d.fixed_se)
        else:  # toward "fails": outside the band
            n = E.seeds_needed(max(low - t.estimate, t.estimate - high), t.unit, d.df_at, level / (2 * strata),
                               POWER, se_fixed=d.fixed_se)
    else:
        edge = low if op.op in (">", ">=") else high
        toward = (t.estimate - edge) * (1 if op.op in (">", ">=") else -1)
        lvl = level if toward > 0 else level / strata
        n = E.seeds_needed(abs(toward), t.unit, d.df_at, lvl, POWER, se_fixed=d.fixed_se)
    if n is None:
        return None, (f"more than {E.MAX_SEEDS:,} seeds: the effect is too small against the seed-to-seed sd; "
                      f"an equivalence claim (op ~) can decide it")
    return n, ""


def _check_reason(d: Verdict) -> str:
    s = d.strata[0]
    if s.note:
        return s.note
    if d.verdict == "passed":
        return f"{s.detail.split(';')[0]}, all within the limit (largest excess {d.test.estimate:.4g})"
    return f"a bug report about the run: {s.detail}; the largest excess {d.test.estimate:.4g}"


def _reason(d: Verdict, ph: float, pf: float, level: float) -> str:
    notes = "; ".join(f"{s.label}: {s.note}" if len(d.strata) > 1 else s.note for s in d.strata if s.note)
    adj = "" if d.p_holds_holm is None else " after Holm"
    ex = f" (exempt from Holm: {d.claim.exempt})" if d.claim.exempt else ""
    if d.verdict == "holds":
        return f"p_holds {ph:.2g}{adj} ≤ {level:g}{ex}"
    if d.verdict == "fails":
        return f"p_fails {pf:.2g}{adj} ≤ {level:g}{ex}"
    return notes or f"neither p_holds ({ph:.2g}) nor p_fails ({pf:.2g}){adj} ≤ {level:g}{ex}"
