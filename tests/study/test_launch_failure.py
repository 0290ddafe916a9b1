"""When Ray Tune fails under a launch (here: the file system refuses its run folder, as a 300-character
study name once made it), the driver stops its store writer before it gives the lease up: the writer used
to go on beating the released lease and log a LeaseLost traceback every few seconds."""

from __future__ import annotations

import errno
import logging
import threading
import time

import pytest
from engine_helpers import SPACES


def test_a_failure_under_tune_stops_the_writer_before_the_lease_goes(sqlite_url, tmp_path, monkeypatch, caplog):
    from ray import tune

    from mimax.study import callback, cluster, engine
    from mimax.storage.store import Store

    class FastWriter(callback.StoreWriter):  # beats every 10 ms, so a writer left running shows at once
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "heartbeat_s": 0.01, "interval_s": 0.01})

    class FailingTuner:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(cluster, "connect", lambda address, scrub=None: {"CPU": 2.0})
    monkeypatch.setattr(cluster, "check_resources", lambda cpus, gpus: None)
    monkeypatch.setattr(callback, "StoreWriter", FastWriter)
    monkeypatch.setattr(tune, "Tuner", FailingTuner)
    others = set(threading.enumerate())  # writers of earlier tests in this process are not this launch's
    with caplog.at_level(logging.ERROR), pytest.raises(OSError):
        engine.launch(str(SPACES / "tiny-grid.yaml"), "fails", budget=None, db=sqlite_url,
                      results_dir=str(tmp_path / "res"), opts=engine.RunOptions(quiet=True))
    time.sleep(0.2)  # twenty heartbeats' time
    assert not [t for t in set(threading.enumerate()) - others if t.name == "mimax-store-writer" and t.is_alive()]
    assert "LeaseLost" not in caplog.text and "writing to the results store failed" not in caplog.text
    with Store(sqlite_url, read_only=True) as store:
        study = store.require_study("fails")
    assert study["status"] == "interrupted" and study["driver_owner"] is None
