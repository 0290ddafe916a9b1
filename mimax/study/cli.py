"""``mimax launch | resume | status | list``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime

from mimax.storage.db import DB_HELP, TERMINAL, choose_url


def _pack(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join this Ray cluster (HOST:PORT); default: a private local cluster")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                   help="fractions share a GPU between trials, e.g. 0.25")
    p.add_argument("--max-concurrent", type=int, metavar="M")
    p.add_argument("--scheduler", choices=["none", "asha"], default="none")
    p.add_argument("--results-dir", metavar="DIR", help="checkpoints and Ray's files (shared storage on a cluster)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--pack", type=_pack, default="auto", metavar="R|auto",
                   help="seed replicates trained together in one trial (default: as many as fit in memory)")
    p.add_argument("--fresh-workers", dest="reuse_workers", action="store_false",
                   help="a new worker process for every trial (default: a worker runs trial after trial)")
    p.add_argument("--trainable", choices=["mimax", "null"], default="mimax",
                   help="null: a test trainable that reports without training, to measure the driver")


def register(sub) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", help=DB_HELP)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true")

    p = sub.add_parser("launch", parents=[db], help="launch a study of a search space on Ray Tune")
    p.add_argument("space", help="preset name or space YAML file")
    p.add_argument("--name", required=True, help="study name (unique in the database)")
    p.add_argument("--budget", help="smoke, cpu, paper, or another budget of the space")
    _run_options(p)
    p.set_defaults(func=_launch)

    p = sub.add_parser("resume", parents=[db], help="finish (or extend) a study after a crash or an interruption")
    p.add_argument("name")
    p.add_argument("--add-trials", type=int, default=0, metavar="N", help="run N more configurations")
    _run_options(p)
    p.set_defaults(func=_resume)

    p = sub.add_parser("status", parents=[db, as_json], help="progress, counts per state, best so far, ETA")
    p.add_argument("name")
    p.set_defaults(func=_status)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("upgrade", parents=[db], help="migrate the mimax tables of a database to this version's "
                     "schema").set_defaults(func=_db_upgrade)
    sub.add_parser("list", parents=[db, as_json], help="the studies in a database").set_defaults(func=_list)


def _opts(args):
    from mimax.study.engine import RunOptions

    return RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})


def _finish(summary: dict, quiet: bool) -> int:
    """Exit 0 when every requested trial has ended and not all of them failed; 130 after a Ctrl-C, with
    one line naming the resume (--quiet too: it says what to do next)."""
    states = summary["states"]
    if summary.get("interrupted"):
        from mimax.study.engine import interrupted_line

        print(f"mimax: {interrupted_line(summary)}", file=sys.stderr)
        return 130
    if not quiet:
        shown = ", ".join(f"{k} {v}" for k, v in states.items() if v)
        resume = f"; run `mimax resume {summary['name']}` to finish it" if summary["status"] == "interrupted" else ""
        print(f"study {summary['name']}: {summary['status']} ({shown}){resume}", file=sys.stderr)
    all_failed = summary["total"] > 0 and states.get("failed", 0) == summary["total"]
    return 0 if summary["status"] == "completed" and not all_failed else 1


def _launch(args) -> int:
    from mimax.study.engine import launch

    return _finish(launch(args.space, args.name, budget=args.budget, db=args.db, results_dir=args.results_dir,
                          opts=_opts(args)), args.quiet)


def _resume(args) -> int:
    from mimax.study.engine import resume

    return _finish(resume(args.name, db=args.db, add_trials=args.add_trials, results_dir=args.results_dir,
                          opts=_opts(args)), args.quiet)


SHOWN_STATES = ("completed", "running", "pending", "pruned", "failed", "diverged")


def _gone(study: dict) -> str | None:
    """"driver gone since ...; run `mimax resume NAME`" when the study's driver went away, else None."""
    from mimax.study.engine import driver_gone

    since = driver_gone(study)
    if since is None:
        return None
    when = since.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(since, datetime) else "an unknown time"
    return f"driver gone since {when}; run `mimax resume {study['name']}`"


def status_dict(store, name: str) -> dict:
    study = store.require_study(name)
    gone = _gone(study)
    counts = store.state_counts(name)
    trials = store.trials(name)
    # the trials written (configurations can have more seeds than the space's: mimax decide extends
    # them), and the configurations not asked for yet
    asked = len({t["replicate_group"] for t in trials})
    total = len(trials) + max(0, (study["n_configs_requested"] or 0) - asked) * study["seeds"]
    best = store.best(name)
    durations = [(t["ended_at"] - t["started_at"]).total_seconds() for t in trials
                 if t["state"] == "completed" and t.get("started_at") and t.get("ended_at")]
    remaining = total - sum(counts[s] for s in TERMINAL)
    running = max(1, counts.get("running", 0))
    eta = sum(durations) / len(durations) * remaining / running if durations and remaining > 0 and not gone else None
    return {
        "name": name,
        "total": total,
        "states": {s: counts.get(s, 0) for s in SHOWN_STATES if s != "pending"},
        "pending": counts.get("pending", 0) + max(0, total - sum(counts.values())),
        "status": study["status"],
        "driver": "gone" if gone else ("live" if study.get("driver_owner") else None),
        "driver_gone": gone,
        "best": best,
        "eta_s": eta,
        "space": study["space_source"],
        "budget": study["budget"],
    }


def _read(args):
    from mimax.storage.store import Store

    return Store(choose_url(args.db), read_only=True)


def _status(args) -> int:
    with _read(args) as store:
        st = status_dict(store, args.name)
    if args.json:
        print(json.dumps(st))
        return 0
    from rich.console import Console
    from rich.table import Table

    done = sum(st["states"][s] for s in TERMINAL)
    shown = "driver gone" if st["driver_gone"] else st["status"]
    table = Table(title=f"{st['name']}: {shown} — {done}/{st['total']} trials done "
                        f"({st['space']}, budget {st['budget'] or '—'})")
    for col in SHOWN_STATES:
        table.add_column(col, justify="right")
    table.add_row(*(str(st["states"].get(c, st["pending"] if c == "pending" else 0)) for c in SHOWN_STATES))
    console = Console()
    console.print(table)
    if st["best"]:
        b = st["best"]
        console.print(f"best {b['metric']}: {b['value']:.4f} (trial {b['trial_key']}, step {b['step']})")
    if st["eta_s"] is not None:
        console.print(f"ETA: {st['eta_s'] / 60:.1f} min")
    if st["driver_gone"]:
        console.print(st["driver_gone"], markup=False, highlight=False, soft_wrap=True)
    return 0


def _db_upgrade(args) -> int:
    from mimax.storage.store import Store

    with Store(choose_url(args.db), create=True) as store:
        print(f"{store.display_url}: mimax schema at {store.schema_version()}")
    return 0


def _list(args) -> int:
    with _read(args) as store:
        studies = store.list_studies()
    for s in studies:
        s["driver_gone"] = _gone(s)
    if args.json:
        print(json.dumps(studies, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"studies in {store.display_url}")
    for col in ("name", "space", "budget", "status", "trials", "created"):
        table.add_column(col)
    for s in studies:
        counts = s.get("trial_counts") or {}
        done = sum(v for k, v in counts.items() if k in TERMINAL)
        total = (s.get("n_configs_requested") or 0) * s.get("seeds", 1)
        created = s.get("created_at")
        status = "driver gone" if s["driver_gone"] else s["status"]
        table.add_row(s["name"], str(s["space_source"]), str(s["budget"]), status, f"{done}/{total}",
                      created.strftime("%Y-%m-%d %H:%M") if isinstance(created, datetime) else str(created))
    Console().print(table)
    return 0
