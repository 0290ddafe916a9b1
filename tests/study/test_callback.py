"""StoreCallback turns a pack's Ray results into rows (no Ray cluster: a trial is what the callback reads of
it): each member's evaluation record, and with it the trial's ceiling and true MI. StoreWriter writes a
batch again through a lost connection, and only through that (tests/faults restarts a real server)."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import exc as sa_exc

from mimax.storage.db import DatabaseError
from mimax.study.callback import StoreCallback, StoreWriter
from mimax.storage.store import Store


def test_results_store_each_members_record_and_the_trials_ceiling_and_true_mi(sqlite_url, study_fields):
    store = Store(sqlite_url)
    store.create_study("s", **study_fields)
    store.add_trials("s", [{"trial_key": k, "config": {"x": 1, "seed": i}} for i, k in enumerate(("a", "b"))])
    store.claim_driver("s", "me")
    writer = StoreWriter(store, "s", "me")
    writer.start()
    callback = StoreCallback(writer)
    trial = SimpleNamespace(trial_id="t1", config={"members": [{"trial_key": "a", "seed": 0},
                                                               {"trial_key": "b", "seed": 1}]})
    rec = {"event": "eval", "step": 0, "loss": 1.0, "bound_train": -1.0, "bound_test": -1.1,
           "probe_accuracy": 0.5, "wall_s": 0.0}
    callback.on_trial_result(0, [], trial, {
        "step": 0, "records": {"a": rec, "b": dict(rec, loss=2.0)}, "pack_size": 2, "replayed": False,
        "params.g1": 10, "ceiling": math.log(64), "true_mi": 0.25})
    # A later result without them (an adapter that reports them once) leaves them as they are.
    callback.on_trial_result(0, [], trial, {"step": 5, "records": {"a": dict(rec, step=5)}, "pack_size": 2})
    writer.stop()
    try:
        rows = {t["trial_key"]: t for t in store.trials("s")}
        assert [(rows[k]["ceiling"], rows[k]["true_mi"]) for k in "ab"] == [(math.log(64), 0.25)] * 2
        assert (rows["a"]["last_step"], rows["b"]["last_step"]) == (5, 0)
        evals = {(e["trial_key"], e["step"]): e["record"] for e in store.evaluations("s")}
        assert sorted(evals) == [("a", 0), ("a", 5), ("b", 0)]
        assert evals[("b", 0)] == dict(rec, loss=2.0, pack_size=2, replayed=False)
        assert "ceiling" not in evals[("a", 0)]  # a trial's, not an evaluation's
    finally:
        store.close()


def _lost_connection() -> Exception:
    """What Store raises when the server went away (a restart, a cut link): a DatabaseError from
    SQLAlchemy's OperationalError."""
    try:
        raise sa_exc.OperationalError("INSERT ...", {}, Exception("server closed the connection unexpectedly"))
    except sa_exc.OperationalError as cause:
        try:
            raise DatabaseError("database error in postgresql+psycopg://x@h/db: server closed the connection") from cause
        except DatabaseError as err:
            return err


def _writer_on(store_url: str, study_fields: dict, **kw):
    store = Store(store_url)
    store.create_study("s", **study_fields)
    store.add_trials("s", [{"trial_key": "a", "config": {"x": 1, "seed": 0}}])
    store.claim_driver("s", "me")
    writer = StoreWriter(store, "s", "me", **kw)
    writer.start()
    return store, writer


def test_the_writer_keeps_a_batch_through_a_lost_connection(sqlite_url, study_fields, monkeypatch):
    store, writer = _writer_on(sqlite_url, study_fields, interval_s=0.01)
    real, failures = store.write_evaluations, []

    def flaky(name, rows):  # the database is away for the first three writes
        if len(failures) < 3:
            failures.append(len(rows))
            raise _lost_connection()
        return real(name, rows)

    monkeypatch.setattr(store, "write_evaluations", flaky)
    try:
        for step in range(5):
            writer.put("eval", {"trial_key": "a", "step": step, "record": {"event": "eval", "step": step}})
        writer.stop()
        assert len(failures) == 3 and writer.error is None
        assert [e["step"] for e in store.evaluations("s")] == [0, 1, 2, 3, 4]  # not one row dropped
    finally:
        store.close()


def test_the_writer_gives_up_after_its_outage_limit_with_one_line(sqlite_url, study_fields, monkeypatch):
    store, writer = _writer_on(sqlite_url, study_fields, interval_s=0.01, outage_s=0.5)
    monkeypatch.setattr(store, "write_evaluations", lambda name, rows: (_ for _ in ()).throw(_lost_connection()))
    try:
        writer.put("eval", {"trial_key": "a", "step": 0, "record": {"event": "eval", "step": 0}})
        t0 = time.monotonic()
        with pytest.raises(DatabaseError) as err:
            writer.flush(timeout=30)
        assert time.monotonic() - t0 < 10  # the flush ends with the error, not at its own timeout
        msg = str(err.value)
        assert "unreachable" in msg and "mimax resume s" in msg and "\n" not in msg, msg
    finally:
        store.close()


def test_a_bad_row_is_not_written_again(sqlite_url, study_fields):
    store, writer = _writer_on(sqlite_url, study_fields, interval_s=0.01)
    try:
        writer.put("eval", {"trial_key": "nope", "step": 0, "record": {"event": "eval", "step": 0}})
        t0 = time.monotonic()
        with pytest.raises(DatabaseError, match="has no trial nope"):
            writer.flush(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        store.close()
