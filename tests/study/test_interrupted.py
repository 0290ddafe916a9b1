"""A trial that Ray's infrastructure failed under (its worker killed, its node gone, the cluster stopped)
is run again from its last checkpoint, in the same session and on resume; a trial whose own code
raised fails once, with its error kept.

``interrupted`` is checked on texts Ray really produces; the searcher and the store callback on a real
store; a real study whose trial actor the test SIGKILLs; and `mimax resume` of a study whose trials were
recorded failed under Ray (the incident: its cluster stopped under it).
"""

from __future__ import annotations

import json
import os
import signal
import types
import uuid

import optuna
import pytest
import ray

from engine_helpers import (SPACES, evaluations, kill_group, marked_trial_pids, optuna_trials, query, ray_trials,
                            run, start, trials, wait_for)
from mimax.search_spaces import load_space
from mimax.study.callback import StoreCallback
from mimax.study.outcome import interrupted
from mimax.study.searcher import MAX_RETRIES, StudySearcher
from mimax.storage.store import Store
from mimax.trainables.tune_adapter import CHECKPOINT_FILE, META_FILE

TS = optuna.trial.TrialState

INCIDENT = """Failure # 1 (occurred at 2026-11-27_22-35-02)
The actor 60e4659d982fbe58115dec0201000000 is unavailable: The actor is temporarily unavailable: RpcError: \
RPC error: Socket closed rpc_code: 14. The task may or may not have been executed on the actor.
"""


# --------------------------------------------------------------------------------- the decision


@pytest.fixture(scope="module")
def ray_texts() -> dict[str, str]:
    """What Ray says, as Tune writes it (``str(exception)``), when an actor's process is SIGKILLed, a
    task's worker is SIGKILLed, an actor method raises, and an actor's ``__init__`` raises."""
    import time

    @ray.remote
    class Worker:
        def pid(self):
            return os.getpid()

        def work(self):
            time.sleep(60)

        def missing(self):
            open("/nonexistent/cifar-10-batches-py/data_batch_1")

    @ray.remote
    class BadInit:
        def __init__(self):
            raise ValueError("data.root: not a directory")

        def f(self):
            return 1

    @ray.remote(max_retries=0)
    def killed_task():
        os.kill(os.getpid(), signal.SIGKILL)

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             num_cpus=2)
    texts = {}
    try:
        actor = Worker.remote()
        pid = ray.get(actor.pid.remote())
        running = actor.work.remote()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        calls = {"actor killed while running": lambda: ray.get(running),
                 "call to a killed actor": lambda: ray.get(actor.pid.remote()),
                 "task's worker killed": lambda: ray.get(killed_task.remote()),
                 "actor method raised": lambda: ray.get(Worker.remote().missing.remote()),
                 "actor __init__ raised": lambda: ray.get(BadInit.remote().f.remote())}
        for what, call in calls.items():
            with pytest.raises(ray.exceptions.RayError) as exc:
                call()
            texts[what] = str(exc.value)
    finally:
        ray.shutdown()
    return texts


def test_the_incident_is_an_interruption():
    assert interrupted(INCIDENT)
    assert interrupted(INCIDENT.split("\n", 1)[1])  # without Tune's header too


@pytest.mark.slow
def test_killed_workers_are_interruptions_and_raised_exceptions_are_not(ray_texts):
    assert "The actor died unexpectedly" in ray_texts["actor killed while running"]
    for what in ("actor killed while running", "call to a killed actor", "task's worker killed"):
        assert interrupted(ray_texts[what]), (what, ray_texts[what])
        assert interrupted(f"Failure # 1 (occurred at 2026-11-27_22-35-02)\n{ray_texts[what]}\n")
    assert "FileNotFoundError" in ray_texts["actor method raised"]
    for what in ("actor method raised", "actor __init__ raised"):
        assert not interrupted(ray_texts[what]), (what, ray_texts[what])


def test_other_ray_failures_are_interruptions_by_name_or_message():
    for text in ("ray.exceptions.NodeDiedError: node 1a2b is dead",
                 "Task failed because the node it was running on is dead or unavailable. Node IP: 10.0.0.2",
                 "1 worker(s) were killed due to the node running low on memory.",
                 "Task was killed due to the node running low on memory.",
                 "System error: Failed to connect to the raylet\ntraceback: Traceback (most recent call last):\n"
                 '  File "x.py", line 1, in <module>\nConnectionError: refused',
                 "Failed to retrieve object 00ff. All copies of 00ff have been lost due to node failure.",
                 "ray.exceptions.OwnerDiedError: Failed to retrieve object 00ff.",
                 "The worker died unexpectedly while executing this task."):
        assert interrupted(text), text


def test_a_trainables_own_exception_is_no_interruption_even_if_its_message_names_ray():
    raised = ("Failure # 1 (occurred at 2026-11-27_22-35-02)\n"
              "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=127.0.0.1, actor_id=ab, repr=tune_trial)\n"
              '  File "/work/main/mimax/trainables/loop.py", line 10, in run\n'
              "    raise ConfigError('data.root', 'the actor died')\n"
              "mimax.errors.ConfigError: data.root: The actor died of ActorDiedError\n")
    assert not interrupted(raised)
    # ...but a Ray system error raised through the trainable's code is one.
    assert interrupted(raised.replace("mimax.errors.ConfigError", "ray.exceptions.ActorDiedError"))
    assert not interrupted(None) and not interrupted("") and not interrupted("ValueError: bad lr")


# ------------------------------------------------------------------- the searcher and the store


@pytest.fixture
def tiny_study(sqlite_url):
    """Study "u" of tiny-grid (2 configurations x 2 seeds) in a store, as `mimax launch` makes it."""
    space = load_space(str(SPACES / "tiny-grid.yaml"), None)
    store = Store(sqlite_url)
    optuna.create_study(study_name="mimax:u", storage=store.optuna_storage(), directions=space.directions)
    store.create_study("u", space_source="tiny-grid.yaml", space_json=space.to_dict(),
                       space_fingerprint=space.fingerprint(), budget=space.budget, sampler=space.sampler.name,
                       directions=list(space.directions), metrics=list(space.metrics),
                       seeds=len(space.seed_values()), n_configs_requested=2, optuna_study_name="mimax:u",
                       results_dir="/tmp/unused")
    yield store, store.require_study("u"), space
    store.close()


def searcher(store, study, space, session=0) -> StudySearcher:
    return StudySearcher(store=store, study=study, space=space, target_configs=2, session=session, pack=1)


def checkpoint(tmp_path, keys: list[str], step: int = 200) -> str:
    d = tmp_path / f"ckpt-{'-'.join(keys)}-{step}"
    d.mkdir()
    (d / CHECKPOINT_FILE).write_bytes(b"")
    (d / META_FILE).write_text(json.dumps({"pack_key": keys[0], "trial_keys": keys, "step": step}))
    return str(d)


def result_for(key: str, step: int = 400, accuracy: float = 0.9) -> dict:
    return {"records": {key: {"step": step, "event": "eval", "probe_accuracy": accuracy}}}


def test_an_interrupted_pack_runs_again_first_from_its_checkpoint_until_max_retries(tmp_path, sqlite_url,
                                                                                     tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    s.deferring = True  # as the StoreCallback sets it
    assert s.remaining() == 2 * 2 * (1 + MAX_RETRIES)
    first = s.suggest("ray-1")
    assert first["pack_key"] == "c0000-s0" and first["resume_from"] is None
    s.on_trial_result("ray-1", result_for("c0000-s0", step=200))
    s.on_trial_complete("ray-1", error=True)
    assert s.errored and not s.groups[0]  # no outcome until settled
    ck = checkpoint(tmp_path, ["c0000-s0"])
    assert s.settle("ray-1", INCIDENT, ck) is True
    again = s.suggest("ray-2")
    assert again["pack_key"] == "c0000-s0-r1" and again["resume_from"] == ck
    assert [m["trial_key"] for m in again["members"]] == ["c0000-s0"]
    s.on_trial_complete("ray-2", error=True)
    assert s.settle("ray-2", INCIDENT, None) is True  # no new checkpoint: from the same one
    assert s.suggest("ray-3") == dict(again, pack_key="c0000-s0-r2")
    s.on_trial_complete("ray-3", error=True)
    assert s.settle("ray-3", INCIDENT, ck) is False  # MAX_RETRIES used up
    assert s.groups[0] == {0: ("failed", s.last["c0000-s0"])}
    assert optuna_trials(sqlite_url, "u")[0].state == TS.RUNNING  # its other seed still runs


def test_a_raised_exception_fails_at_once_and_optuna_is_told(sqlite_url, tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    s.deferring = True
    for trial_id in ("a", "b"):
        s.suggest(trial_id)
        s.on_trial_complete(trial_id, error=True)
        assert s.settle(trial_id, "Failure # 1 (occurred at x)\nray::ImplicitFunc.train()\n"
                                  '  File "loop.py", line 3, in run\nFileNotFoundError: /nonexistent', None) is False
    assert s.groups[0] == {0: ("failed", None), 1: ("failed", None)}
    assert optuna_trials(sqlite_url, "u")[0].state == TS.FAIL
    assert s.suggest("c")["pack_key"] == "c0001-s0"  # nothing was queued again


def test_without_a_callback_errors_settle_as_failures_at_once(sqlite_url, tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    assert s.remaining() == 2 * 2
    for trial_id in ("a", "b"):
        s.suggest(trial_id)
        s.on_trial_complete(trial_id, error=True)
    assert not s.errored and optuna_trials(sqlite_url, "u")[0].state == TS.FAIL


class FakeWriter:
    def __init__(self):
        self.puts = []

    def put(self, kind, payload):
        self.puts.append((kind, payload))

    def flush(self):  # StoreCallback.on_checkpoint waits for the database; here everything is "written" at once
        pass


def ray_trial(tmp_path, trial_id: str, config: dict, error: str | None = None):
    error_file = None
    if error is not None:
        error_file = tmp_path / f"error-{trial_id}.txt"
        error_file.write_text(error)
    return types.SimpleNamespace(trial_id=trial_id, config=config, last_result={}, error_file=error_file,
                                 error_msg=None)


def test_the_store_callback_settles_errors_with_the_searcher(tmp_path, sqlite_url, tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    writer = FakeWriter()
    cb = StoreCallback(writer, searcher=s)
    assert s.deferring
    config = s.suggest("ray-1")
    ck = checkpoint(tmp_path, ["c0000-s0"])
    trial = ray_trial(tmp_path, "ray-1", config, INCIDENT)
    cb.on_checkpoint(0, [], trial, types.SimpleNamespace(path=ck))
    s.on_trial_complete("ray-1", error=True)  # Ray's order: the searcher, then the callbacks
    cb.on_trial_error(0, [], trial)
    assert writer.puts[-1] == ("trial", ("c0000-s0", {"state": "pending"}))
    assert s.queue[0]["resume_from"] == ck and s.queue[0]["pack_key"] == "c0000-s0"

    config = s.suggest("ray-2")
    trial = ray_trial(tmp_path, "ray-2", config, "Failure # 1 (occurred at x)\nray::ImplicitFunc.train()\n"
                                                 '  File "loop.py", line 3, in run\nValueError: bad lr\n')
    s.on_trial_complete("ray-2", error=True)
    cb.on_trial_error(0, [], trial)
    kind, (key, fields) = writer.puts[-1]
    assert key == "c0000-s0" and fields["state"] == "failed" and fields["error"].endswith("ValueError: bad lr")
    assert s.groups[0][0][0] == "failed"


def test_resume_runs_a_row_failed_by_an_interruption_again_unless_optuna_has_ended(tmp_path, sqlite_url, tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    for trial_id in ("a", "b", "c", "d"):
        s.suggest(trial_id)  # both configurations asked and recorded
    ck = checkpoint(tmp_path, ["c0000-s0"])
    raised = 'ray::ImplicitFunc.train()\n  File "loop.py", line 3, in run\nFileNotFoundError: /nonexistent'
    # What the driver of the incident left: c0000-s0 failed under Ray after a checkpoint, c0000-s1
    # completed; c0001-s0 failed under Ray but its Optuna trial was told FAIL with c0001-s1, which raised.
    store.update_trial("u", "c0000-s0", state="failed", error=INCIDENT, checkpoint=ck, checkpoint_step=200)
    store.update_trial("u", "c0000-s1", state="completed")
    store.update_trial("u", "c0001-s0", state="failed", error=INCIDENT)
    store.update_trial("u", "c0001-s1", state="failed", error=raised)
    s._tell(1, state=TS.FAIL)

    again = searcher(store, study, space, session=1)
    assert [(i["pack_key"], i["resume_from"]) for i in again.queue] == [("c0000-s0", ck)]
    rows = {r["trial_key"]: r for r in store.trials("u")}
    assert rows["c0000-s0"]["state"] == "pending" and rows["c0000-s0"]["error"] is None
    assert rows["c0000-s0"]["ended_at"] is None
    assert rows["c0001-s0"]["state"] == "failed" and rows["c0001-s0"]["error"] == INCIDENT
    assert rows["c0001-s1"]["state"] == "failed"
    assert [t.state for t in optuna_trials(sqlite_url, "u")] == [TS.RUNNING, TS.FAIL]
    # It runs from its checkpoint, and once it completes Optuna gets the configuration's mean.
    config = again.suggest("e")
    assert config["resume_from"] == ck and config["pack_key"] == "c0000-s0"
    again.on_trial_complete("e", result=result_for("c0000-s0", accuracy=0.8))
    assert optuna_trials(sqlite_url, "u")[0].state == TS.COMPLETE


def test_a_retrys_trial_name_is_not_kept_by_a_resume(tmp_path, sqlite_url, tiny_study):
    store, study, space = tiny_study
    s = searcher(store, study, space)
    s.suggest("a")
    ck = checkpoint(tmp_path, ["c0000-s0"])
    meta = json.loads((tmp_path / ck / META_FILE).read_text())
    (tmp_path / ck / META_FILE).write_text(json.dumps(dict(meta, pack_key="c0000-s0-r2")))
    store.update_trial("u", "c0000-s0", state="running", checkpoint=ck, checkpoint_step=200)
    again = searcher(store, study, space, session=1)
    assert again.queue[0]["pack_key"] == "c0000-s0" and again.queue[0]["resume_from"] == ck


# ------------------------------------------------------------------------------ a real study


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_runs_again_from_its_checkpoint(tmp_path, sqlite_url, monkeypatch):
    """SIGKILL the running trial's actor process (as the OOM killer would): the study completes, the
    trial continues from its checkpoint in a Ray trial of its own, and nothing is lost or doubled."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv("MIMAX_TEST_MARK", mark)  # Ray's local workers inherit the driver's environment
    name = "killed-worker"
    proc = start("launch", SPACES / "kill-grid.yaml", "--name", name, "--db", sqlite_url, "--results-dir",
                 tmp_path / "res", "--max-concurrent", "1", "--quiet", cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        def moment():
            ts = trials(sqlite_url, name)
            states = [t["state"] for t in ts.values()]
            if "completed" in states or not any(t["state"] == "running" and (t["checkpoint_step"] or 0) >= 250
                                                for t in ts.values()):
                return None
            pids = marked_trial_pids(mark)
            return (pids, ts) if len(pids) == 1 else None

        (pid,), before = wait_for(moment, timeout=300, proc=proc, every=0.05)
        before_evals = evaluations(sqlite_url, name)
        os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    log = (tmp_path / "launch.log").read_text()
    assert code == 0, log[-3000:]
    assert "runs again from its last checkpoint" in log

    killed = {k: t for k, t in before.items() if t["state"] == "running"}
    after = trials(sqlite_url, name)
    assert len(after) == 4, after
    assert all(t["state"] == "completed" and t["last_step"] == 1500 for t in after.values()), after
    assert not [e for (e,) in query(sqlite_url, "SELECT error FROM mimax_trials") if e]
    # Every (replicate, step) stored exactly once, none missing.
    rows = query(sqlite_url, """SELECT t.trial_key, e.step FROM mimax_evaluations e
                                JOIN mimax_trials t ON t.id = e.trial_id""")
    assert sorted(rows) == sorted((k, s) for k in after for s in range(0, 1501, 250))
    evals = evaluations(sqlite_url, name)
    for key, t in killed.items():
        ck = t["checkpoint_step"]
        # Continued from its checkpoint (that one, or one made in the instant before the kill): the
        # evaluations before it were not written again, and the one at it was replayed from it.
        for s in range(0, ck, 250):
            assert evals[(key, s)] == before_evals[(key, s)], (key, s, ck)
        replayed = query(sqlite_url, """SELECT e.step FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id
                                        WHERE t.trial_key = :k AND e.metrics LIKE :replayed""", k=key,
                         replayed='%"replayed":true%')
        assert len(replayed) == 1 and replayed[0][0] >= ck, replayed
        assert after[key]["ray_trial_id"] != t["ray_trial_id"]
    # In Ray: the killed trial ended in ERROR with Ray's text; its retry, named -r1, ended normally.
    ray_view = ray_trials(tmp_path / "res" / f"{name}-session0")
    errored = [k for k, t in ray_view.items() if t["status"] == "ERROR"]
    assert len(errored) == 1 and f"{errored[0]}-r1" in ray_view, ray_view
    assert ray_view[f"{errored[0]}-r1"]["status"] == "TERMINATED"
    error_text = (tmp_path / "res" / f"{name}-session0" / errored[0] / "error.txt").read_text()
    assert interrupted(error_text), error_text
    assert sorted(t.state for t in optuna_trials(sqlite_url, name)) == [TS.COMPLETE, TS.COMPLETE]


@pytest.mark.slow
def test_resume_runs_trials_failed_under_ray_again_from_their_checkpoint(tmp_path, sqlite_url):
    """The incident across sessions: a driver whose cluster was stopped under it recorded its running
    trials as failed with Ray's error. `mimax resume` runs them again from their checkpoints."""
    name = "cluster-stopped"
    proc = start("launch", SPACES / "kill-grid.yaml", "--name", name, "--db", sqlite_url, "--results-dir",
                 tmp_path / "res", "--max-concurrent", "1", "--quiet", cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        wait_for(lambda: any(t["state"] == "running" and (t["checkpoint_step"] or 0) >= 250
                             for t in trials(sqlite_url, name).values()), timeout=300, proc=proc, every=0.05)
    finally:
        kill_group(proc)
    store = Store(sqlite_url)
    try:
        failed = {k: t for k, t in trials(sqlite_url, name).items() if t["state"] == "running"}
        for key in failed:
            store.update_trial(name, key, state="failed", error=INCIDENT)
    finally:
        store.close()
    before_evals = evaluations(sqlite_url, name)

    r = run("resume", name, "--db", sqlite_url, "--quiet", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = trials(sqlite_url, name)
    assert len(after) == 4 and all(t["state"] == "completed" for t in after.values()), after
    assert not [e for (e,) in query(sqlite_url, "SELECT error FROM mimax_trials") if e]
    evals = evaluations(sqlite_url, name)
    assert sorted(evals) == sorted((k, s) for k in after for s in range(0, 1501, 250))
    for key, t in failed.items():
        ck = t["checkpoint_step"]
        assert ck >= 250 and all(evals[(key, s)] == before_evals[(key, s)] for s in range(0, ck, 250)), (key, ck)
    assert sorted(t.state for t in optuna_trials(sqlite_url, name)) == [TS.COMPLETE, TS.COMPLETE]
