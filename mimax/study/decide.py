"""``mimax decide``: add seeds where a claim is still open, look again, stop when it is decided.

Each pass reads the database and computes everything afresh, so decide holds no state of its own and
can be killed at any moment (docs/VERIFY.md, "mimax decide"):

1. ``mimax verify`` on the whole database gives each claim its numbers and ``n_needed``; the same
   verification at every look of the ladder (the trials of seeds below n_k only) gives the p-values the
   sequential design decides on (mimax.analysis.claims.sequential).
2. The plan: for each open claim, the configurations to give the next ladder point's seeds, or the study
   of a budget that reaches the claim's endpoint to launch; a claim whose ``n_needed`` exceeds
   ``--max-seeds`` is futile and gets nothing. Times come from the seconds each trial took.
3. Unless ``--dry-run``: one batch through the study engine (``extend``, ``launch``), then again from 1.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from mimax.storage.db import TERMINAL, DB_HELP, choose_url
from mimax.errors import ConfigError

__all__ = ["Action", "ClaimState", "Plan", "decide", "evaluate", "register"]


@dataclass
class Action:
    kind: str  # "extend" (more seeds for some configurations) or "launch" (a study of another budget)
    study: str
    seeds: int  # seeds per configuration after it
    configs: list[str] | None = field(default_factory=list)  # replicate groups (extend; None: every one)
    preset: str | None = None  # launch
    budget: str | None = None
    trials: int = 0  # new trials
    seconds: float | None = None  # machine time, one trial at a time


@dataclass
class ClaimState:
    id: str
    family: str
    study: str
    verdict: str  # the sequential verdict: holds, fails, open; or untestable, check
    status: str  # decided, open, futile, at the maximum, untestable, waiting
    seeds: int  # seeds per configuration now (the fewest of its configurations)
    looks: list[int] = field(default_factory=list)  # seeds at each look taken
    decided_at: int | None = None
    n_needed: int | None = None
    note: str = ""
    action: Action | None = None

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("id", "family", "study", "verdict", "status", "seeds", "looks",
                                          "decided_at", "n_needed", "note")}
        d["action"] = None if self.action is None else dict(vars(self.action))
        return d


@dataclass
class Plan:
    claims: list[ClaimState]
    actions: list[Action]
    ladder: list[int]

    @property
    def seconds(self) -> float:
        return sum(a.seconds or 0.0 for a in self.actions)

    def as_dict(self) -> dict:
        return {"ladder": self.ladder, "claims": [c.as_dict() for c in self.claims],
                "actions": [dict(vars(a)) for a in self.actions], "seconds": self.seconds}


# ---- reading the database ---------------------------------------------------------------------------


def _run_seeds(data, configs: list[str], below: int | None = None) -> int:
    """The seeds 0..n−1 every one of ``configs`` has run to an end (the fewest over them)."""
    t = data.trials
    out = math.inf
    for cid in configs:
        ended = set(t.loc[(t["config_id"].astype(str) == cid) & t["state"].isin(TERMINAL), "seed"])
        n = 0
        while n in ended and (below is None or n < below):
            n += 1
        out = min(out, n)
    return 0 if out == math.inf else int(out)


def _per_trial_seconds(data) -> float | None:
    """Median seconds of one trial of the study, one at a time (StudyData.trial_seconds)."""
    per = data.trial_seconds()
    return float(statistics.median(per)) if len(per) else None


def _driven(study: dict) -> bool:
    """Another driver holds the study now (engine.driver_gone says when one went away)."""
    from mimax.study.engine import driver_gone

    return bool(study.get("driver_owner")) and driver_gone(study) is None


def evaluate(claims, source: str, db_url: str, design, *, budget: str | None = None, n_boot: int = 10_000,
             seed: int = 0):
    """Every claim's sequential state and the actions that would move the open ones: (Plan, the
    verification of the whole database)."""
    from mimax.analysis.claims import sequential as S
    from mimax.analysis.claims.verify import verify
    from mimax.analysis.load import list_studies, load

    final = verify(claims, source, db_url, n_boot=n_boot, seed=seed, budget=budget)
    rows = list_studies(db_url)
    status = {s["name"]: s["status"] for s in rows}
    busy = {s["name"] for s in rows if _driven(s)}
    studies = {name: load(db_url, name) for name in dict.fromkeys(d.study for d in final.verdicts)}
    most = max((int(d.trials["seed"].max()) + 1 for d in studies.values()), default=0)
    looks: dict[str, list] = {}
    by_id = {d.claim.id: d for d in final.claims}
    for n in design.ladder:
        if n > most:
            break
        grown = any(int(d.trials["seed"].max()) >= n for d in studies.values())
        at = final if not grown else verify(claims, source, db_url, n_boot=n_boot, seed=seed, budget=budget,
                                            studies=list(studies.values()), seeds=n)
        for d in at.claims:
            if d.verdict == "untestable" or d.claim.exempt:
                continue
            full = by_id[d.claim.id]
            if _run_seeds(studies[d.study], full.configs, below=n) >= n:
                looks.setdefault(d.claim.id, []).append(S.Look(n, d.p_holds, d.p_fails))
    outcomes = {}
    for family in dict.fromkeys(d.family for d in final.claims):
        members = {d.claim.id: looks.get(d.claim.id, []) for d in final.claims if d.family == family and d.claim.id in looks}
        outcomes.update(S.run_family(design, members))
    states = [_state(d, studies, status, looks, outcomes, design, claims, budget) for d in final.claims]
    for st in states:  # another driver runs that study now: wait for it rather than fight for its lease
        if st.action is not None and st.action.study in busy:
            st.status, st.note, st.action = "waiting", f"study {st.action.study} is running under another driver", None
    return Plan(states, _merge([s.action for s in states if s.action], studies), design.ladder), final


def _state(d, studies, status, looks, outcomes, design, claims, budget) -> ClaimState:
    seeds = _run_seeds(studies[d.study], d.configs) if d.study in studies else 0
    mine = looks.get(d.claim.id, [])
    st = ClaimState(d.claim.id, d.family, d.study, "open", "open", seeds, [x.seeds for x in mine],
                    n_needed=d.n_needed)
    if d.verdict == "untestable":
        st.verdict = "untestable"
        return _endpoint_action(st, d, studies, status, claims, budget)
    out = outcomes.get(d.claim.id)
    if out is not None and out.verdict != "open":
        st.verdict, st.status, st.decided_at = out.verdict, "decided", mine[out.look].seeds
        return st
    if d.verdict in ("holds", "fails") and d.n_needed is None:
        d_needed = seeds  # decided by a fixed-level test, open sequentially: the next look decides
    else:
        d_needed = d.n_needed
    if d_needed is None and d.n_needed_note and "more than" in d.n_needed_note:
        st.status, st.note = "futile", d.n_needed_note
        return st
    if d_needed is not None and d_needed > design.most:
        st.status, st.note = "futile", f"needs {d_needed} seeds per configuration, beyond --max-seeds {design.most}"
        return st
    nxt = next((n for n in design.ladder if n > seeds), None)
    if nxt is None:
        st.status, st.note = "at the maximum", f"open at {seeds} seeds, the ladder's last point: inconclusive"
        return st
    data = studies[d.study]
    new = sum(max(0, nxt - _run_seeds(data, [c])) for c in d.configs)
    per = _per_trial_seconds(data)
    st.action = Action("extend", d.study, nxt, list(d.configs), trials=new,
                       seconds=None if per is None else per * new)
    return st


def _endpoint_action(st, d, studies, status, claims, budget) -> ClaimState:
    """An untestable claim: launch the study of a budget of its preset that reaches its endpoint, when
    the claims file prefers one that is not in the database yet."""
    from mimax.search_spaces.spec import load_spec

    c = d.claim
    if c.preset is None:
        st.status, st.note = "untestable", f"study {d.study} stops at step {d.read_at}, before step {d.endpoint}"
        return st
    spec = load_spec(c.preset)
    prefs = [budget] if budget else ([c.budget] if c.budget else list(claims.budget or []))
    reach = [b for b in prefs if b in spec.budgets and (spec.fixed_value("train.steps", b) or 0) >= d.endpoint]
    if not reach:
        st.status = "untestable"
        st.note = f"no budget {'/'.join(prefs)} reaches step {d.endpoint}: budget paper's (a GPU's) work"
        return st
    name = f"{c.preset}-{reach[0]}"
    if name in status:  # launched, not finished (a decide or a launch was stopped): finish it
        st.status, st.note = "untestable", f"study {name} is {status[name]}: it is finished first"
        st.action = Action("extend", name, spec.budget(reach[0]).seeds or spec.seeds, None)
        return st
    seeds = spec.budget(reach[0]).seeds or spec.seeds
    ref = studies.get(d.study)
    per = _per_trial_seconds(ref) if ref is not None else None
    steps_now = d.read_at or 0
    steps_new = spec.fixed_value("train.steps", reach[0]) or 0
    scaled = per * steps_new / steps_now if per and steps_now else None
    n_configs = ref.trials["config_id"].nunique() if ref is not None else 0
    trials = seeds * n_configs
    st.status = "untestable"
    st.note = f"at budget {reach[0]} ({steps_new} steps) it is testable"
    st.action = Action("launch", name, seeds, preset=c.preset, budget=reach[0], trials=trials,
                       seconds=None if scaled is None else scaled * trials)
    return st


def _merge(actions: list[Action], studies: dict) -> list[Action]:
    """One action per study: the most seeds any claim asks for, over the union of their configurations,
    with its trials and time counted again over that union."""
    launched = {a.preset for a in actions if a.kind == "launch"}
    # a preset whose preferred budget is about to be launched: its claims will read that study next
    # (an extend of a study no claim reads yet is an unfinished launch: it stays)
    actions = [a for a in actions if a.kind == "launch" or a.study not in studies
               or studies[a.study].study.get("space_source") not in launched]
    out: dict[str, Action] = {}
    for a in actions:
        m = out.setdefault(a.study, Action(a.kind, a.study, a.seeds, [], a.preset, a.budget, a.trials, a.seconds))
        m.seeds = max(m.seeds, a.seeds)
        m.configs = sorted(set(m.configs or []) | set(a.configs or []))
    for m in out.values():
        data = studies.get(m.study)
        if m.kind == "extend" and data is None:  # a study no claim reads yet: finish what it has
            m.configs = None
        elif m.kind == "extend":
            per = _per_trial_seconds(data)
            m.trials = sum(max(0, m.seeds - _run_seeds(data, [c])) for c in m.configs)
            m.seconds = None if per is None else per * m.trials
    return list(out.values())


# ---- the command -------------------------------------------------------------------------------------


def _table(plan: Plan, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("claim", "family", "verdict", "seeds", "looks", "n needed", "next"):
        table.add_column(col, overflow="fold")
    for c in plan.claims:
        nxt = c.note
        if c.action is not None:
            a = c.action
            if a.kind == "launch":
                nxt = f"launch {a.study} ({a.seeds} seeds)"
            elif a.configs is None:
                nxt = f"finish {a.study}"
            else:
                nxt = f"{a.study}: seeds → {a.seeds} for {len(a.configs)} configuration{'s' * (len(a.configs) != 1)}"
        verdict = c.verdict if c.status in ("decided", "open", "untestable") else f"{c.verdict} ({c.status})"
        table.add_row(c.id, c.family, verdict, str(c.seeds), ",".join(map(str, c.looks)) or "–",
                      "–" if c.n_needed is None else str(c.n_needed), nxt)
    return table


def _hours(s: float | None) -> str:
    return "unknown" if s is None else f"{s / 3600:.2f} h"


def decide(claims_ref: str, *, db: str | None, budget: str | None, max_seeds: int, looks: int, first: int,
           hours: float | None, batches: int | None, dry_run: bool, as_json: bool, opts, n_boot: int = 10_000,
           results_dir: str | None = None, spending: str = "pocock") -> int:
    import json

    from rich.console import Console

    from mimax.analysis.claims import sequential as S
    from mimax.analysis.claims.spec import load_claims
    from mimax.study import engine

    if not 2 <= first <= max_seeds:
        raise ConfigError("--first", f"expected 2 ≤ --first ≤ --max-seeds ({max_seeds}), got {first}")
    if looks < 1:
        raise ConfigError("--looks", f"expected a whole number ≥ 1, got {looks}")
    if hours is not None and not hours > 0:
        raise ConfigError("--hours", f"expected a number of hours > 0, got {hours:g}")
    parsed, source = load_claims(claims_ref)
    url = choose_url(db)
    design = S.Design(S.ladder(first, max_seeds, looks), parsed.alpha, spending)
    console = Console(stderr=as_json, width=None if Console().is_terminal else 120)
    start, done = time.monotonic(), 0
    while True:
        plan, _ = evaluate(parsed, source, url, design, budget=budget, n_boot=n_boot)
        spent = time.monotonic() - start
        if as_json:
            print(json.dumps({**plan.as_dict(), "batches_run": done, "elapsed_s": spent}), flush=True)
        else:
            console.print(_table(plan, f"mimax decide {source}: looks at {design.ladder} seeds per configuration"))
            console.print(f"next batch: {len(plan.actions)} stud{'y' if len(plan.actions) == 1 else 'ies'}, "
                          f"{sum(a.trials for a in plan.actions)} trials, about {_hours(plan.seconds)} of "
                          f"machine time one trial at a time")
        if dry_run or not plan.actions:
            return 0
        if batches is not None and done >= batches:
            console.print(f"stopped after {done} batch{'es' * (done != 1)} (--batches)")
            return 0
        if hours is not None and spent + plan.seconds > hours * 3600:
            console.print(f"stopped: the next batch (about {_hours(plan.seconds)}) would pass --hours {hours:g} "
                          f"({_hours(spent)} spent)")
            return 0
        for a in plan.actions:
            if a.kind == "launch":
                engine.launch(a.preset, a.study, budget=a.budget, db=url, results_dir=results_dir, opts=opts)
            else:
                engine.extend(a.study, db=url, seeds=a.seeds, configs=a.configs, results_dir=results_dir, opts=opts)
        done += 1


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return value


def register(sub) -> None:
    from mimax.study.cli import _run_options

    p = sub.add_parser("decide", help="add seeds where a claim is still open, with error control across looks "
                                      "(docs/VERIFY.md)")
    p.add_argument("claims", metavar="CLAIMS", help="claims file (YAML), or a shipped one by name: paper")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--budget", help="read every preset claim at this budget (default: the claims file's)")
    p.add_argument("--max-seeds", type=_positive_int, default=20, metavar="N",
                   help="seeds per configuration at the last look (default 20, the paper's)")
    p.add_argument("--looks", type=_positive_int, default=5, metavar="K",
                   help="looks from --first to --max-seeds seeds, spaced geometrically (default 5)")
    p.add_argument("--first", type=_positive_int, default=3, metavar="N", help="seeds at the first look (default 3)")
    p.add_argument("--spending", choices=["pocock", "obf"], default="pocock",
                   help="how each claim spends its error over the looks: Pocock-type (stops early when clear; "
                        "the default) or O'Brien–Fleming-type (keeps it for the last look)")
    p.add_argument("--hours", type=float, metavar="H", help="stop before a batch that would pass H hours")
    p.add_argument("--batches", type=_positive_int, metavar="B", help="stop after B batches")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--json", action="store_true", help="print each plan as one JSON object")
    _run_options(p)
    p.set_defaults(func=_decide)


def _decide(args) -> int:
    from mimax.study.cli import _opts

    return decide(args.claims, db=args.db, budget=args.budget, max_seeds=args.max_seeds, looks=args.looks,
                  first=args.first, hours=args.hours, batches=args.batches, dry_run=args.dry_run,
                  as_json=args.json, opts=_opts(args), results_dir=args.results_dir, spending=args.spending)
