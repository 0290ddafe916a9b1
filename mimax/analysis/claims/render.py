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
    if d.census:
        return "census"
    holm = d.p_holds_holm is not None
    ph, pf = (d.p_holds_holm, d.p_fails_holm) if holm else (d.p_holds, d.p_fails)
    return f"p_holds {ph:.2g}, p_fails {pf:.2g}{' (Holm)' if holm else ' (exempt)'}".replace("-", "−")


def family_text(v: Verification) -> str:
    stat = v.holm_size
    exempt = len(v.verdicts) - stat
    return (f"alpha {v.alpha:g}: Holm over {stat} claim{'s' * (stat != 1)} at {v.alpha / 2:g} per side"
            f"{f', {exempt} exempt' if exempt else ''}; {v.n_boot:,} resamples, seed {v.seed}")


def summary_sentence(v: Verification) -> str:
    c = v.counts()
    scope = v.scope or f"the {len(v.verdicts)} claims of {v.source}"
    return (f"Claims ({scope}; {family_text(v)}): {c['holds']} hold, {c['fails']} fail, "
            f"{c['inconclusive']} inconclusive.")


def lines(v: Verification) -> list[str]:
    """The terminal output: a line per claim with its numbers, then a line per finding."""
    out = [f"claims {v.source} ({family_text(v)})"]
    width = max((len(d.claim.id) for d in v.verdicts), default=0)
    for d in v.verdicts:
        t = d.test
        out.append(f"  {d.verdict:<12} {d.claim.id:<{width}}  {_estimate(t)}  n={t.n}  {p_text(d)}")
        out.append(f"  {'':<12} {'':<{width}}  {d.study}: {d.statement}")
        if d.verdict != "holds":
            out.append(f"  {'':<12} {'':<{width}}  {d.reason}")
    out.append("findings:")
    for f in v.findings():
        counts = f"{f['holds']} hold, {f['fails']} fail, {f['inconclusive']} inconclusive"
        out.append(f"  {f['finding']:<24} {f['verdict']:<12} {counts}{'; ' + f['note'] if f['note'] else ''}")
    c = v.counts()
    out.append(f"{c['holds']} hold, {c['fails']} fail, {c['inconclusive']} inconclusive")
    return out


def _frames(v: Verification) -> tuple[pd.DataFrame, pd.DataFrame]:
    level = f"{100 * (1 - v.alpha):g}% CI"
    findings = pd.DataFrame([{"finding": f["finding"], "verdict": f["verdict"], "holds": f["holds"],
                              "fails": f["fails"], "inconclusive": f["inconclusive"], "by probe": f["note"]}
                             for f in v.findings()])
    claims = pd.DataFrame([{
        "finding": d.claim.finding, "claim": d.claim.id, "verdict": d.verdict, "study": d.study,
        "test": d.statement, "estimate": d.test.estimate, level: _ci(d.test.ci), "n": d.test.n,
        "p_holds": d.p_holds_holm if d.p_holds_holm is not None else (math.nan if d.census else d.p_holds),
        "p_fails": d.p_fails_holm if d.p_fails_holm is not None else (math.nan if d.census else d.p_fails),
        "reason": d.reason, "paper": d.claim.paper or "",
    } for d in v.verdicts])
    return findings, claims


def report_tables(v: Verification) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(anchor, title, explanation, frame) for the report: the findings, then the claims."""
    findings, claims = _frames(v)
    expl = ("A finding holds when every claim of it holds, fails when any fails, else is inconclusive; "
            "'by probe' says when its verdict differs between the probes its claims read. ")
    return [
        ("claims-findings", "Findings checked", expl + summary_sentence(v), findings),
        ("claims", "Claims", "Each claim's estimate, interval and n; p_holds / p_fails are Holm-adjusted "
         "(raw for an exempt claim, none for a census). docs/VERIFY.md defines them.", claims),
    ]


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
