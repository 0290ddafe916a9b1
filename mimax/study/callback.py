"""Write what Ray Tune reports into the store, from the driver, batched off Tune's event loop."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune
from sqlalchemy import exc as sa_exc

from mimax.contract import TRIAL_FLOATS, EvalRecord, PackResult
from mimax.storage.db import DatabaseError
from mimax.storage.models import utcnow
from mimax.study.outcome import final_state
from mimax.storage.store import HEARTBEAT_S
from mimax.trainables.tune_adapter import read_meta, records_of

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 3  # per trial (Tune's num_to_keep): the store names one of them even while it lags one behind
OUTAGE_S = 300.0  # how long the writer keeps writing again into an unreachable database before it gives up


class StoreWriter:
    """A thread that drains a queue of writes into the store in batches, and keeps the driver lease."""

    def __init__(self, store, study_name: str, owner: str, interval_s: float = 0.25, heartbeat_s: float = HEARTBEAT_S,
                 outage_s: float = OUTAGE_S):
        self.store, self.study_name, self.owner = store, study_name, owner
        self.interval_s, self.heartbeat_s, self.outage_s = interval_s, heartbeat_s, outage_s
        self.q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="mimax-store-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, kind: str, payload: Any) -> None:
        self._idle.clear()
        self.q.put((kind, payload))

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is in the database (through an outage of up to outage_s)."""
        done = threading.Event()
        self.q.put(("barrier", done))
        if not done.wait(self.outage_s + 60 if timeout is None else timeout):
            raise TimeoutError("the store writer did not drain in time")
        if self.error:
            raise self.error

    def stop(self) -> None:
        self.flush()
        self._stop.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        last_beat = 0.0
        items: list = []  # a batch is taken off the queue only once the database has it
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                if not items:
                    items.append(self.q.get(timeout=self.interval_s))
                while True:
                    items.append(self.q.get_nowait())
            except queue.Empty:
                pass
            try:
                self._write(items)
                items = []
                if time.monotonic() - last_beat > self.heartbeat_s:
                    self.store.heartbeat(self.study_name, self.owner)
                    last_beat = time.monotonic()
                down_since = None
            except BaseException as exc:  # keep the thread alive; surface on flush
                if _connection_lost(exc) and self.error is None:
                    if down_since is None:  # once per outage
                        down_since = time.monotonic()
                        log.warning("the results database is unreachable; writing again: %s", exc)
                    if time.monotonic() - down_since < self.outage_s:
                        self._stop.wait(min(2.0, self.interval_s * 4))
                        continue
                    exc = DatabaseError(f"the results database was unreachable for {self.outage_s:.0f} s, the "
                                        f"driver stops (`mimax resume {self.study_name}` finishes the study): {exc}")
                log.exception("writing to the results store failed")
                self.error = exc
                for kind, payload in items:  # a flush waiting on this batch returns, and raises the error
                    if kind == "barrier":
                        payload.set()
                items = []

    def _write(self, items: list) -> None:
        evals: list[dict] = []
        for kind, payload in items:
            if kind == "eval":
                evals.append(payload)
                continue
            if evals:
                self.store.write_evaluations(self.study_name, evals)
                evals = []
            if kind == "trial":
                key, fields = payload
                self.store.update_trial(self.study_name, key, **fields)
            elif kind == "barrier":
                payload.set()
        if evals:
            self.store.write_evaluations(self.study_name, evals)


class StoreCallback(tune.Callback):
    """One Ray trial is a pack of replicates (often of one); each member is its own row in the store.

    Given the study's searcher, it settles the packs that errored: Ray tells the searcher first, but only
    the callback can read the error text, which says whether Ray's infrastructure failed under the pack
    (then the searcher runs it again from its last checkpoint, and its members stay ``pending``)."""

    def __init__(self, writer: StoreWriter, progress=None, searcher=None):
        self.writer = writer
        self.progress = progress
        self.searcher = searcher
        if searcher is not None:
            searcher.deferring = True
        self.last: dict[str, dict] = {}  # trial_key -> last record seen
        self.ended: set[str] = set()  # members that ended inside a running pack (diverged)
        self.checkpoints: dict[str, str] = {}  # Ray trial id -> its last checkpoint directory
        self.named: dict[str, threading.Event] = {}  # Ray trial id -> set once the store names its last checkpoint
        self.interrupted = False  # a Ctrl-C (SIGINT) stopped the run

    def setup(self, **info):
        """Note a Ctrl-C: Tune's own SIGINT handler stops the run gracefully, and fit() then returns as
        if the run had ended. Chained in front of that handler, which Tune installs before it sets up the
        callbacks (tests/study/test_engine.py sends the SIGINT)."""
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def noted(signum, frame):
            self.interrupted = True
            if callable(tune_handler):
                tune_handler(signum, frame)
            elif tune_handler != signal.SIG_IGN:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, noted)

    @staticmethod
    def _keys(trial) -> list[str]:
        return [m["trial_key"] for m in trial.config["members"]]

    def _put_members(self, trial, fields: dict[str, Any], keys: list[str] | None = None) -> None:
        for key in keys if keys is not None else self._keys(trial):
            self.writer.put("trial", (key, dict(fields)))

    def on_trial_start(self, iteration, trials, trial, **info):
        # Members whose outcome an earlier session stored ride along in a resumed pack: leave them be.
        self.ended.update(m["trial_key"] for m in trial.config["members"] if m.get("ended"))
        res = trial.placement_group_factory.required_resources if trial.placement_group_factory else None
        keys = [k for k in self._keys(trial) if k not in self.ended]
        self._put_members(trial, {"state": "running", "resources": res, "ray_trial_id": trial.trial_id}, keys)

    def on_trial_result(self, iteration, trials, trial, result: PackResult, **info):
        node = f"{result.get('node_ip')}/{result.get('node_id')}" if result.get("node_id") else None
        once = {k: result[k] for k in TRIAL_FLOATS if k in result}  # the trial's ceiling and true MI
        for key, rec in records_of(result).items():
            if key in self.ended:  # ended earlier: its records and state are already stored
                continue
            record: EvalRecord = {**rec, "pack_size": result.get("pack_size", 1),
                                  "replayed": bool(result.get("replayed"))}
            fields: dict[str, Any] = {"last_step": rec.get("step"), "node": node, **once}
            if rec.get("event") == "diverged":
                fields.update(state="diverged", ended_at=utcnow(), error=rec.get("reason"))
                self.ended.add(key)
            self.last[key] = rec
            self.writer.put("eval", {"trial_key": key, "step": int(rec["step"]), "record": record, "trial": fields})
        if self.progress:
            self.progress.on_result(trial, result)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        meta = read_meta(checkpoint.path) if Path(checkpoint.path).exists() else None
        if meta and meta.get("trial_keys") == self._keys(trial):
            # Tune keeps a trial's last KEEP_CHECKPOINTS (3) and deletes older ones as new ones come, so the
            # database must never lag two behind: the checkpoint it was told before this one must be written
            # before it is told this one. That write is usually long done; only a writer that fell behind (or
            # a database that is down) holds Tune's loop here, and the trials wait in their next report.
            named = self.named.pop(trial.trial_id, None)
            if named is not None and (not named.is_set() or self.writer.error is not None):
                self.writer.flush()
            self._put_members(trial, {"checkpoint": checkpoint.path, "checkpoint_step": meta["step"]})
            self.checkpoints[trial.trial_id] = checkpoint.path
            self.named[trial.trial_id] = threading.Event()
            self.writer.put("barrier", self.named[trial.trial_id])  # set once the lines above are written

    @staticmethod
    def _split(trial) -> bool:
        """The pack did not fit its device and trained nothing: its members run again in smaller packs."""
        return bool((trial.last_result or {}).get("pack_split"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.named.pop(trial.trial_id, None)
        if self._split(trial):
            self._put_members(trial, {"state": "pending"}, [k for k in self._keys(trial) if k not in self.ended])
            return
        steps = trial.config["trial"]["train"]["steps"]
        for key in self._keys(trial):
            if key in self.ended:
                continue
            state = final_state(self.last.get(key), steps, error=False)
            self.writer.put("trial", (key, {"state": state, "ended_at": utcnow()}))
            if self.progress:
                self.progress.on_end(trial, state)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.named.pop(trial.trial_id, None)
        keys = [k for k in self._keys(trial) if k not in self.ended]
        if self._split(trial):  # the searcher runs its members again
            self._put_members(trial, {"state": "pending"}, keys)
            return
        error = _error_text(trial)
        checkpoint = self.checkpoints.get(trial.trial_id)
        if self.searcher is not None and self.searcher.settle(trial.trial_id, error, checkpoint):
            log.warning("Ray failed under trial %s; it runs again from its last checkpoint: %s",
                        trial.config["pack_key"], error.strip().splitlines()[-1][:200])
            self._put_members(trial, {"state": "pending"}, keys)
            return
        self._put_members(trial, {"state": "failed", "ended_at": utcnow(), "error": error}, keys)
        if self.progress:
            for _ in keys:
                self.progress.on_end(trial, "failed")

    def on_step_end(self, iteration, trials, **info):
        if self.progress:
            self.progress.refresh()

    def on_experiment_end(self, trials, **info):
        self.writer.flush()

    # Ray pickles callbacks into the experiment directory: keep the store (and its URL) out of it.
    def __getstate__(self):
        return {"writer": None, "progress": None, "searcher": None, "last": {}, "ended": set(), "checkpoints": {},
                "named": {}}


def _connection_lost(exc: BaseException) -> bool:
    """The database went away (restarted, unreachable): the same batch can be written again later.
    Not a bad row, nor a lease another driver took."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, (sa_exc.OperationalError, sa_exc.InterfaceError)) or \
        bool(getattr(cause, "connection_invalidated", False))


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    text = text.strip() or (getattr(trial, "error_msg", None) or "trial failed")
    return text[-4000:]
