"""Several processes writing to one store at once: no lock errors, every row there, values right.

Each worker process opens its own Store on the shared database, adds its own trials, then writes 50
batches of evaluations (its own trials at step b, a re-write of step b-1, and rows of two trials
that every worker writes at the same steps). The expected table is computed here from that plan.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import traceback
from pathlib import Path

import pytest
import sqlalchemy as sa

from mimax.storage.db import head_revision
from mimax.storage.store import Store

BATCHES = 50
OWN = 3  # trials per worker
SHARED = ("shared-0", "shared-1")


def own_record(worker: int, k: int, step: int, final: bool) -> dict:
    value = worker * 1000 + k * 100 + step
    return {"bound_train": float(value if final else -value), "step": step, "units": "nats"}


def worker(url: str, study: str, w: int, barrier, out: str) -> None:
    try:
        store = Store(url)
        keys = [f"w{w}-{k}" for k in range(OWN)]
        store.add_trials(study, [{"trial_key": key, "config": {"w": w, "k": k}, "seed": w} for k, key in enumerate(keys)])
        store.add_trials(study, [{"trial_key": key, "config": {"shared": key}, "seed": 0} for key in SHARED])
        barrier.wait(timeout=60)
        for b in range(BATCHES):
            rows = [{"trial_key": key, "step": b, "record": own_record(w, k, b, final=False),
                     "trial": {"last_step": b, "node": f"w{w}"}} for k, key in enumerate(keys)]
            if b:  # re-report the previous step with its final values (as after a restore)
                rows += [{"trial_key": key, "step": b - 1, "record": own_record(w, k, b - 1, final=True)}
                         for k, key in enumerate(keys)]
            # every worker writes the same (trial, step) of the shared trials: overlapping upserts
            rows += [{"trial_key": key, "step": b, "record": {"bound_train": float(w), "writer": w}}
                     for key in SHARED]
            assert store.write_evaluations(study, rows) == len(rows)
        # the last step gets its final values too
        store.write_evaluations(study, [{"trial_key": key, "step": BATCHES - 1,
                                         "record": own_record(w, k, BATCHES - 1, final=True)}
                                        for k, key in enumerate(keys)])
        store.close()
        Path(out).write_text("ok")
    except BaseException:
        Path(out).write_text(traceback.format_exc())
        raise


def run_workers(url: str, n: int, tmp_path) -> None:
    store = Store(url)
    store.create_study("s", space_source="x", space_json={}, space_fingerprint="f", budget="smoke", sampler="tpe",
                       directions=["maximize"], metrics=["bound_train"], seeds=1, n_configs_requested=None,
                       optuna_study_name="o", results_dir=str(tmp_path))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    outs = [tmp_path / f"worker{w}.txt" for w in range(n)]
    procs = [ctx.Process(target=worker, args=(url, "s", w, barrier, str(outs[w]))) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    reports = [o.read_text() if o.exists() else "no report" for o in outs]
    failed = [(w, p.exitcode, r) for w, (p, r) in enumerate(zip(procs, reports)) if p.exitcode != 0 or r != "ok"]
    assert not failed, "\n".join(f"worker {w} exit {code}:\n{r}" for w, code, r in failed)

    # Oracle: read every row with plain SQL and compare with the plan.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT t.trial_key, e.step, e.bound_train, e.metrics FROM mimax_evaluations e "
            "JOIN mimax_trials t ON t.id = e.trial_id")).all()
        trials = dict(conn.execute(sa.text("SELECT trial_key, last_step FROM mimax_trials")).all())
    engine.dispose()
    assert len(rows) == n * OWN * BATCHES + len(SHARED) * BATCHES
    assert len({(r[0], r[1]) for r in rows}) == len(rows)
    expected_own = {(f"w{w}-{k}", s): own_record(w, k, s, final=True)
                    for w in range(n) for k in range(OWN) for s in range(BATCHES)}
    for key, step, bound, metrics in rows:
        metrics = json.loads(metrics)
        if key in SHARED:  # one of the writers won, and the row is that writer's whole record
            assert metrics["writer"] in range(n) and bound == float(metrics["writer"])
        else:
            assert metrics == expected_own[(key, step)] and bound == metrics["bound_train"]
    assert len(trials) == n * OWN + len(SHARED)
    assert all(trials[f"w{w}-{k}"] == BATCHES - 1 for w in range(n) for k in range(OWN))
    store.close()


@pytest.mark.slow
def test_eight_processes_on_one_sqlite_file(sqlite_url, tmp_path):
    run_workers(sqlite_url, 8, tmp_path)


@pytest.mark.slow
def test_four_processes_on_postgresql(postgres_url, tmp_path):
    run_workers(postgres_url, 4, tmp_path)


def _open(url: str, barrier, out: str) -> None:
    try:
        barrier.wait(timeout=60)
        Store(url).close()
        Path(out).write_text("ok")
    except BaseException:
        Path(out).write_text(traceback.format_exc())
        raise


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_racing_to_create_the_schema(backend, request, tmp_path):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    outs = [tmp_path / f"open{i}.txt" for i in range(4)]
    procs = [ctx.Process(target=_open, args=(url, barrier, str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [o.read_text() if o.exists() else "no report" for o in outs] == ["ok"] * 4
    store = Store(url, create=False)
    assert store.schema_version() == head_revision()
    store.close()


def test_a_peer_committing_between_the_revision_and_the_table_reads_is_no_foreign_database(sqlite_url, monkeypatch):
    """The PostgreSQL race of test_processes_racing_to_create_the_schema, made deterministic: the first read
    of the revision misses it (a peer's migration had not committed yet), the table list then shows the
    peer's tables. That is a mimax database at head, not 'mimax tables with no revision' (an error before)."""
    from alembic.runtime.migration import MigrationContext

    Store(sqlite_url).close()  # the peer's migration, committed
    real = MigrationContext.get_current_revision
    calls = []

    def first_misses(self):
        calls.append(1)
        return None if len(calls) == 1 else real(self)

    monkeypatch.setattr(MigrationContext, "get_current_revision", first_misses)
    store = Store(sqlite_url, create=False)
    try:
        assert store.schema_version() == head_revision() and len(calls) >= 2
    finally:
        store.close()
