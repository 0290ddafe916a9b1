"""Verdicts as text (the terminal), JSON, Markdown, and the tables of report.html / report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from mimax.analysis.claims.verify import Verification
from mimax.analysis.tables import md_table
from mimax.contract import json_safe

__all__ = ["as_json", "estimate_and_ci", "lines", "markdown", "report_tables", "summary_sentence", "write"]


def as_json(v: Verification) -> dict:
    """``Verification.as_dict()`` made strict-JSON safe: NaN and ±inf become null."""
    return json_safe(v.as_dict())


def _num(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return (f"{x:+.4g}" if signed else f"{x:.4g}").replace("-", "−")


def _decimals(ci) -> int:
    """Enough decimals to show the interval's width with two digits (3 to 6)."""
    width = abs(ci[1] - ci[0])
    return 3 if not width > 0 else min(6, max(3, 1 - math.floor(math.log10(width))))


def _ci(ci, decimals: int | None = None) -> str:
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    d = _decimals(ci) if decimals is None else decimals
    return f"[{lo:.{d}f}, {hi:.{d}f}]".replace("-", "−")


def estimate_and_ci(t) -> tuple[str, str]:
    """(``+0.060``, ``[0.054, 0.066]``): the estimate and its interval with the same decimals, enough to
    show the interval's width; without an interval (a census) the estimate to 4 digits and ``–``."""
    if not math.isfinite(t.ci[0]):
        return _num(t.estimate, True), "–"
    d = _decimals(t.ci)
    return f"{t.estimate:+.{d}f}".replace("-", "−"), _ci(t.ci, d)


def _estimate(t) -> str:
    """``+0.060 [0.054, 0.066]``."""
    estimate, ci = estimate_and_ci(t)
    return estimate if ci == "–" else f"{estimate} {ci}"


def p_text(d) -> str:
    if d.kind == "check":
        return "census"
    if d.verdict == "untestable":
        return "not tested"
    holm = d.p_holds_holm is not None
    ph, pf = (d.p_holds_holm, d.p_fails_holm) if holm else (d.p_holds, d.p_fails)
    return f"p_holds {ph:.2g}, p_fails {pf:.2g}{' (Holm)' if holm else ' (exempt)'}".replace("-", "−")


def family_text(v: Verification) -> str:
    fams = [f for f in v.families() if f["size"]]
    sizes = ", ".join(str(f["size"]) for f in fams)
    return (f"alpha {v.alpha:g}: Holm within each of {len(fams)} famil{'y' if len(fams) == 1 else 'ies'} "
            f"(sizes {sizes or 'none'}) at {v.alpha / 2:g} per side; {v.n_boot:,} resamples, seed {v.seed}")


def counts_text(v: Verification) -> str:
    c, k = v.counts(), v.check_counts()
    return (f"{c['holds']} hold, {c['fails']} fail, {c['inconclusive']} inconclusive, {c['untestable']} untestable "
            f"at this budget; checks: {k['passed']} passed, {k['failed']} failed")


def summary_sentence(v: Verification) -> str:
    scope = v.scope or f"the {len(v.claims)} findings' claims of {v.source}"
    return f"Claims ({scope}; {family_text(v)}): {counts_text(v)}."


def _needed(d) -> str:
    if d.verdict != "inconclusive":
        return ""
    return f"  n needed {d.n_needed}" if d.n_needed else "  n needed –"


def lines(v: Verification) -> list[str]:
    """The terminal output: the findings' claims family by family, then the checks, then a line per
    finding and the totals."""
    out = [f"claims {v.source} ({family_text(v)})"]
    if v.diverged:
        out.append(f"diverged runs: {v.diverged}")
    if v.passed_over:
        out.append(f"not finished: {v.passed_over}")
    width = max((len(d.claim.id) for d in v.verdicts), default=0)

    def claim_lines(d) -> list[str]:
        t = d.test
        seeds = f" ({d.seeds} seeds/config)" if d.seeds and d.kind == "finding" else ""
        if d.kind == "finding" and t.se == 0:
            seeds = seeds[:-1] + ", all equal: one deterministic measurement)"
        rows = [f"  {d.verdict:<12} {d.claim.id:<{width}}  {_estimate(t)}  n={t.n}{seeds}  {p_text(d)}{_needed(d)}",
                f"  {'':<12} {'':<{width}}  {d.study}: {d.statement}"]
        if d.excluded:
            rows.append(f"  {'':<12} {'':<{width}}  {d.excluded} trial{'s' * (d.excluded != 1)} excluded as diverged")
        if d.verdict not in ("holds", "passed"):
            rows.append(f"  {'':<12} {'':<{width}}  {d.reason}")
        if d.verdict == "inconclusive" and d.n_needed_note:
            rows.append(f"  {'':<12} {'':<{width}}  n needed: {d.n_needed_note}")
        return rows

    for fam in v.families():
        out.append(f"family {fam['family']} (Holm over {fam['size']})")
        for d in v.claims:
            if d.family == fam["family"]:
                out += claim_lines(d)
    k = v.check_counts()
    if v.checks:
        out.append(f"checks (true by construction; a failure is a bug report): {k['passed']} passed, "
                   f"{k['failed']} failed")
        for d in v.checks:
            out += claim_lines(d)
    out.append("findings:")
    for f in v.findings():
        counts = (f"{f['holds']} hold, {f['fails']} fail, {f['inconclusive']} inconclusive, "
                  f"{f['untestable']} untestable")
        out.append(f"  {f['finding']:<24} {f['verdict']:<17} {counts}{'; ' + f['note'] if f['note'] else ''}")
    out.append(counts_text(v))
    return out


def _frames(v: Verification) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    level = f"{100 * (1 - v.alpha):g}% CI"
    findings = pd.DataFrame([{"finding": f["finding"], "verdict": f["verdict"], "holds": f["holds"],
                              "fails": f["fails"], "inconclusive": f["inconclusive"], "untestable": f["untestable"],
                              "by probe": f["note"]} for f in v.findings()])

    def row(d) -> dict:
        return {"family": d.family, "claim": d.claim.id, "verdict": d.verdict, "study": d.study,
                "test": d.statement, "estimate": d.test.estimate, level: _ci(d.test.ci), "n": d.test.n,
                "seeds": d.seeds, "n needed": d.n_needed if d.verdict == "inconclusive" else None,
                "p_holds": d.p_holds_holm if d.p_holds_holm is not None else (
                    math.nan if d.kind == "check" or d.verdict == "untestable" else d.p_holds),
                "p_fails": d.p_fails_holm if d.p_fails_holm is not None else (
                    math.nan if d.kind == "check" or d.verdict == "untestable" else d.p_fails),
                "reason": d.reason, "paper": d.claim.paper or ""}

    claims = pd.DataFrame([row(d) for d in v.claims])
    checks = pd.DataFrame([{"check": d.claim.id, "result": d.verdict, "study": d.study, "test": d.statement,
                            "largest excess": d.test.estimate, "evaluations": d.test.n, "detail": d.reason}
                           for d in v.checks])
    return findings, claims, checks


def report_tables(v: Verification) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(anchor, title, explanation, frame) for the report: the findings, their claims by family, the checks."""
    findings, claims, checks = _frames(v)
    expl = ("A finding holds when every claim of it holds, fails when any fails, is untestable when none "
            "could be read at its endpoint, else is inconclusive; 'by probe' says when its verdict differs "
            "between the probes its claims read. ")
    out = [
        ("claims-findings", "Findings checked", expl + summary_sentence(v), findings),
        ("claims", "Claims, by family", "Each claim's estimate, interval, n and seeds per configuration; "
         "p_holds / p_fails are Holm-adjusted within the claim's family (raw for an exempt claim, none for "
         "an untestable one); 'n needed' is the seeds per configuration that would give 80 % power at the "
         "observed effect. docs/VERIFY.md defines them.", claims),
    ]
    if len(checks):
        out.append(("claims-checks", "Checks", "Statements true by construction (a bound below its ceiling, a "
                    "log condition number ≥ 0): not findings; a failed check is a bug report about the run.",
                    checks))
    return out


def markdown(v: Verification) -> str:
    parts = [f"# Claims: {v.source}", "", summary_sentence(v), ""]
    for _anchor, title, _expl, frame in report_tables(v):
        parts += [f"## {title}", "", md_table(frame), ""]
    return "\n".join(parts)


def write(v: Verification, out_dir) -> dict[str, Path]:
    """verdicts.json (what --json prints) and verdicts.md under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "verdicts.json", "md": out / "verdicts.md"}
    paths["json"].write_text(json.dumps(as_json(v), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(v), encoding="utf-8")
    return paths
