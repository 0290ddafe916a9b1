"""StoreCallback turns a pack's Ray results into rows (no Ray cluster: a trial is what the callback reads of
it): each member's evaluation record, and with it the trial's ceiling and true MI."""

from __future__ import annotations

import math
from types import SimpleNamespace

from mimax.study.callback import StoreCallback, StoreWriter
from mimax.study.store import Store


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
