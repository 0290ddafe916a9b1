"""Results store write cost: evaluation rows per 1,000, on SQLite and PostgreSQL, in the same run.

Each evaluation row is a realistic record (~15 metrics) with the trial updates the driver's callback
sends along (last_step, node), written through ``Store.write_evaluations``. Three ways:
batches of 100 new rows (the baseline of each backend), single-row batches of new rows (what an
unbatched writer would pay), and batches of 100 re-writes of existing (trial, step) rows (the upsert
path taken after a restore). Median of ``--repeats`` rounds. PostgreSQL is a fresh database on the
server of ``--pg`` (dropped afterwards); it is left out, with a note, when the server cannot be reached.

Prints a table and writes the section "## Results store: write cost" of docs/PERFORMANCE.md (other
sections are kept).

    .venv/bin/python bench/store_write.py [--repeats 3] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy  # noqa: E402

from mimax.storage.store import Store  # noqa: E402
from perf_doc import machine  # noqa: E402

DOC = ROOT / "docs" / "PERFORMANCE.md"
HEADING = "## Results store: write cost"
ROWS = 1000
TRIALS = 10


def record(step: int, trial: int) -> dict:
    x = step / 1000 + trial
    return {
        "step": step, "bound_train": 2.0 + x, "bound_test": 1.9 + x, "probe_accuracy": 0.8 + x / 1e4,
        "loss": -2.0 - x, "wall_s": 0.5 * step, "log_cond_p50": 3.1, "log_cond_p90": 5.2,
        "classifier_accuracy": 0.97, "jacobian_fro": 12.5, "bound_batch": "test[0:3]", "units": "nats",
        "probe": {"name": "torch", "C": 10.0, "max_iter": 10}, "params": {"encoder": 51_000, "critic": 10_000},
    }


def rows_for(steps: range) -> list[dict]:
    return [{"trial_key": f"t{i % TRIALS}", "step": s, "record": record(s, i % TRIALS),
             "trial": {"last_step": s, "node": "node-1"}} for i, s in enumerate(steps)]


def timed_write(store: Store, rows: list[dict], batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.write_evaluations("bench", rows[i:i + batch])
    return time.perf_counter() - t


def measure(url: str, repeats: int) -> dict[str, float]:
    """Median seconds per 1,000 rows for each way of writing."""
    store = Store(url)
    store.create_study("bench", space_source="bench", space_json={}, space_fingerprint="-", budget="bench",
                       sampler="tpe", directions=["maximize"], metrics=["bound_test"], seeds=1,
                       n_configs_requested=None, optuna_study_name="bench", results_dir="-")
    store.add_trials("bench", [{"trial_key": f"t{i}", "config": {"i": i}, "seed": 0} for i in range(TRIALS)])
    store.write_evaluations("bench", rows_for(range(-TRIALS, 0)))  # warm-up: pool, statement caches
    times: dict[str, list[float]] = {"batch100": [], "single": [], "rewrite100": []}
    next_step = 0
    for _ in range(repeats):
        fresh = rows_for(range(next_step, next_step + ROWS))
        times["batch100"].append(timed_write(store, fresh, 100))
        times["rewrite100"].append(timed_write(store, fresh, 100))  # same (trial, step) again: updates
        next_step += ROWS
        times["single"].append(timed_write(store, rows_for(range(next_step, next_step + ROWS)), 1))
        next_step += ROWS
    n = len(store.evaluations("bench"))
    assert n == TRIALS + 2 * repeats * ROWS, n  # every row landed exactly once
    store.close()
    return {k: statistics.median(v) for k, v in times.items()}


def pg_database(admin_url: str):
    """(url of a fresh database, drop function) or (None, reason)."""
    import psycopg
    from psycopg import sql

    u = sqlalchemy.engine.make_url(admin_url)
    kw = dict(host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database,
              connect_timeout=5, autocommit=True)
    try:
        admin = psycopg.connect(**{k: v for k, v in kw.items() if v is not None})
    except psycopg.Error as e:
        return None, f"PostgreSQL not measured: {str(e).strip().splitlines()[0]}"
    name = f"mimax_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = {s: admin.execute(f"SHOW {s}").fetchone()[0] for s in ("server_version", "fsync", "synchronous_commit")}

    def drop():
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()

    return (u.set(database=name).render_as_string(hide_password=False), drop, info), None


def write_section(text: str) -> None:
    """Replace only this benchmark's section of docs/PERFORMANCE.md (``text`` starts with its heading)."""
    from perf_doc import write_section as replace_section

    heading, _, body = text.partition("\n")
    replace_section(heading.removeprefix("## ").strip(), body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds per way of writing (median)")
    ap.add_argument("--pg", default=os.environ.get("MIMAX_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
                    help="an admin URL of a PostgreSQL server to make a scratch database on")
    ap.add_argument("--no-write", action="store_true", help=f"print only; leave {DOC.relative_to(ROOT)} alone")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    results, notes = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = measure(f"sqlite:///{tmp}/bench.db", args.repeats)
    notes.append(f"SQLite {sqlite3.sqlite_version}: a file in a temporary directory, WAL, synchronous=NORMAL, "
                 "BEGIN IMMEDIATE per write")
    pg, why = pg_database(args.pg)
    if pg is None:
        notes.append(why)
    else:
        url, drop, info = pg
        try:
            results["PostgreSQL"] = measure(url, args.repeats)
        finally:
            drop()
        notes.append(f"PostgreSQL {info['server_version'].split()[0]} on the same machine over TCP loopback "
                     f"(psycopg {__import__('psycopg').__version__}), fsync={info['fsync']}, "
                     f"synchronous_commit={info['synchronous_commit']}")
    load_after = os.getloadavg()[0]

    header = ("| backend | batches of 100: ms / 1,000 rows | rows/s | single-row batches: ms / 1,000 rows "
              "| × batched | re-writes, batches of 100: ms / 1,000 rows | × batched |")
    lines = [header, "|" + "---|" * 7]
    for name, r in results.items():
        b, s, w = (r[k] * 1000 for k in ("batch100", "single", "rewrite100"))  # each timing is 1,000 rows
        lines.append(f"| {name} | {b:.0f} | {ROWS / r['batch100']:,.0f} | {s:.0f} | {s / b:.1f}× | {w:.0f} | {w / b:.1f}× |")
    if len(results) == 2:
        sq, pgr = results["SQLite"], results["PostgreSQL"]
        lines.append(f"| PostgreSQL / SQLite | {pgr['batch100'] / sq['batch100']:.1f}× | | "
                     f"{pgr['single'] / sq['single']:.1f}× | | {pgr['rewrite100'] / sq['rewrite100']:.1f}× | |")
    table = "\n".join(lines)
    print(table)
    for n in notes:
        print("-", n)

    section = f"""{HEADING}

Measured by `bench/store_write.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()};
Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}; load average {load_before:.2f} before
and {load_after:.2f} after. Each row is one evaluation record (~15 metrics, stored whole as JSON plus five
float columns) with the trial update the driver sends with it (last_step, node), written by
`Store.write_evaluations` as one transaction per call over {TRIALS} trials. Median of {args.repeats} rounds
of {ROWS:,} rows. "× batched" is against batches of 100 on the same backend.

{table}

""" + "\n".join(f"- {n}" for n in notes) + """
- The driver's store writer batches what arrives between flushes, so a busy study pays the batched figure;
  single-row batches are the worst case (a transaction and a commit per row).
"""
    if not args.no_write:
        write_section(section)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
