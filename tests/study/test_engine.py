"""The study engine end to end: the real CLI, a real local Ray cluster, real databases.

Kill tests SIGKILL the driver's whole process group at three moments and check every promise of
`mimax resume` against the database.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time

import optuna
import pytest

from engine_helpers import (SPACES, evaluations, kill_group, optuna_trials, query, run, start, trials,
                                        wait_for)

pytestmark = pytest.mark.slow
TS = optuna.trial.TrialState


def test_launch_records_everything_and_optuna_gets_replicate_means(tmp_path, sqlite_url):
    r = run("launch", SPACES / "tiny-grid.yaml", "--name", "s1", "--db", sqlite_url, "--results-dir",
            tmp_path / "res", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Progress into a pipe: whole plain lines, one per change, no live bar cut to a width ("━━━ 12… 0:…").
    assert "━" not in r.stderr and "…" not in r.stderr and "\r" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("s1: ")]
    done = [int(re.match(r"s1: (\d+)/4 trials · \d\d:\d\d:\d\d · best probe_accuracy ", ln).group(1))
            for ln in lines]
    assert done[0] == 0 and done[-1] == 4 and done == sorted(done) and set(done) == {0, 1, 2, 3, 4}, lines
    assert re.search(r"best probe_accuracy 0\.\d{4} · \d+ trials/h$", lines[-1]), lines[-1]
    assert "study s1: completed (completed 4)" in r.stderr.splitlines()
    ts = trials(sqlite_url, "s1")
    assert sorted(ts) == ["c0000-s0", "c0000-s1", "c0001-s0", "c0001-s1"]
    assert all(t["state"] == "completed" and t["last_step"] == 400 and t["node"] for t in ts.values())
    evs = evaluations(sqlite_url, "s1")
    assert sorted(evs) == sorted((k, s) for k in ts for s in (0, 100, 200, 300, 400))
    # Optuna: one trial per configuration, COMPLETE with the mean over its replicates' final accuracy.
    finals = dict(query(sqlite_url, """SELECT t.trial_key, e.probe_accuracy FROM mimax_evaluations e
                                       JOIN mimax_trials t ON t.id = e.trial_id WHERE e.step = 400"""))
    ots = optuna_trials(sqlite_url, "s1")
    assert [t.state for t in ots] == [TS.COMPLETE, TS.COMPLETE]
    for t in ots:
        mean = (finals[f"c{t.number:04d}-s0"] + finals[f"c{t.number:04d}-s1"]) / 2
        assert t.value == pytest.approx(mean, rel=1e-9)
        assert t.params["estimator.name"] in ("nce", "nwj")
    # Each trial stores what the trainer reported once: NCE's ceiling log K (K = 64), none for NWJ.
    for key, config, ceiling, true_mi in query(sqlite_url, "SELECT trial_key, config_json, ceiling, true_mi "
                                                           "FROM mimax_trials"):
        nce = json.loads(config)["estimator"]["name"] == "nce"
        assert (ceiling, true_mi) == ((pytest.approx(math.log(64)) if nce else None), None), key
    env = query(sqlite_url, "SELECT session, torch, ray, optuna FROM mimax_environment")
    assert len(env) == 1 and env[0][0] == 0 and all(env[0][1:])
    st = run("status", "s1", "--db", sqlite_url, "--json", cwd=tmp_path)
    status = json.loads(st.stdout)
    assert status["name"] == "s1" and status["total"] == 4
    assert status["states"] == {"completed": 4, "running": 0, "pruned": 0, "failed": 0, "diverged": 0}
    assert status["best"]["value"] == pytest.approx(max(finals.values()))
    # A second launch of the same name is refused and changes nothing.
    again = run("launch", SPACES / "tiny-grid.yaml", "--name", "s1", "--db", sqlite_url, "--quiet", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert len(optuna_trials(sqlite_url, "s1")) == 2


def _moment(url, name, moment):
    def check():
        ts = trials(url, name)
        evs = evaluations(url, name)
        states = [t["state"] for t in ts.values()]
        if moment == "before-first-result":
            return "running" in states and not evs
        if moment == "mid-trial":
            return any(t["state"] == "running" and (t["checkpoint_step"] or 0) >= 250 for t in ts.values()) \
                and "completed" not in states
        if moment == "between-trials":
            # Optuna hears of a pack's end before its rows are written, so a row still "running" does not
            # mean its Optuna trial is: wait for one that is.
            return "completed" in states and ("pending" in states or "running" in states) \
                and any(t.state == TS.RUNNING for t in optuna_trials(url, name))
        raise ValueError(moment)
    return check


def _kill_then_resume(tmp_path, url, moment):
    name = f"k-{moment}"
    # Between trials: one pack at a time, so that the second runs for seconds after the first has ended
    # (two concurrent packs of equal length end together, leaving no moment to kill in).
    concurrent = "1" if moment == "between-trials" else "2"
    proc = start("launch", SPACES / "kill-grid.yaml", "--name", name, "--db", url, "--results-dir",
                 tmp_path / "res", "--max-concurrent", concurrent, "--quiet", cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        wait_for(_moment(url, name, moment), timeout=240, proc=proc, every=0.05)
    finally:
        kill_group(proc)
    before_trials = trials(url, name)
    before_evals = evaluations(url, name)
    running_optuna = [t.number for t in optuna_trials(url, name) if t.state == TS.RUNNING]
    assert running_optuna, "the kill should leave Optuna trials RUNNING for resume to reconcile"

    r = run("resume", name, "--db", url, "--quiet", cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr + (tmp_path / "launch.log").read_text()[-2000:]

    after = trials(url, name)
    # The final number of completed trials is exactly what was asked: 2 configurations x 2 seeds.
    assert len(after) == 4 and all(t["state"] == "completed" for t in after.values()), after
    for key, t in before_trials.items():
        if t["state"] == "completed":  # completed trials are never re-run
            assert after[key]["ended_at"] == t["ended_at"] and after[key]["ray_trial_id"] == t["ray_trial_id"]
            assert all(evaluations(url, name)[(key, s)] == before_evals[(key, s)] for s in range(0, 1501, 250))
        elif (t["checkpoint_step"] or 0) > 0:
            # Interrupted trials continue from their last checkpoint, not from step 0: the evaluations
            # before that checkpoint were not written again.
            ck = t["checkpoint_step"]
            for s in range(0, ck, 250):
                assert evaluations(url, name)[(key, s)] == before_evals[(key, s)], (key, s, ck)
    # No (trial, step) is stored twice, and none is missing.
    rows = query(url, """SELECT t.trial_key, e.step FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id
                         JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = :n""", n=name)
    assert sorted(rows) == sorted((k, s) for k in after for s in range(0, 1501, 250))
    # Optuna trials left RUNNING are reconciled: both configurations COMPLETE, none RUNNING.
    ots = optuna_trials(url, name)
    assert sorted(t.state for t in ots) == [TS.COMPLETE, TS.COMPLETE]
    return before_trials


@pytest.mark.parametrize("moment", ["before-first-result", "mid-trial", "between-trials"])
def test_kill_and_resume_sqlite(tmp_path, sqlite_url, moment):
    before = _kill_then_resume(tmp_path, sqlite_url, moment)
    if moment == "mid-trial":
        assert any((t["checkpoint_step"] or 0) >= 250 and t["state"] != "completed" for t in before.values())


def test_kill_and_resume_postgresql(tmp_path, postgres_url):
    _kill_then_resume(tmp_path, postgres_url, "mid-trial")


def test_add_trials_extends_a_finished_study(tmp_path, sqlite_url):
    r = run("launch", SPACES / "tiny-random.yaml", "--name", "r", "--db", sqlite_url, "--results-dir",
            tmp_path / "res", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [t["state"] for t in trials(sqlite_url, "r").values()] == ["completed"]
    r = run("resume", "r", "--db", sqlite_url, "--add-trials", "2", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ts = trials(sqlite_url, "r")
    assert sorted(ts) == ["c0000-s0", "c0001-s0", "c0002-s0"]
    assert all(t["state"] == "completed" for t in ts.values())
    ots = optuna_trials(sqlite_url, "r")
    assert [t.state for t in ots] == [TS.COMPLETE] * 3
    assert len({t.params["train.lr"] for t in ots}) == 3
    assert [s for (s,) in query(sqlite_url, "SELECT session FROM mimax_environment ORDER BY session")] == [0, 1]


def test_diverged_trial_is_recorded_and_the_study_goes_on(tmp_path, sqlite_url):
    r = run("launch", SPACES / "diverge.yaml", "--name", "d", "--db", sqlite_url, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    by_lr = {}
    for key, cfg, state, last in query(sqlite_url, "SELECT trial_key, config_json, state, last_step FROM mimax_trials"):
        by_lr[json.loads(cfg)["train"]["lr"]] = (key, state, last)
    assert by_lr[1e-3][1] == "completed"
    key, state, last = by_lr[1e12]
    assert state == "diverged" and 0 < last < 200
    steps = [s for (k, s) in evaluations(sqlite_url, "d") if k == key]
    assert max(steps) == last  # the step at which it diverged is recorded
    ots = {t.params["train.lr"]: t.state for t in optuna_trials(sqlite_url, "d")}
    assert ots == {1e-3: TS.COMPLETE, 1e12: TS.FAIL}


def test_scheduler_stopped_trials_are_pruned_never_complete(tmp_path, sqlite_url):
    r = run("launch", SPACES / "asha.yaml", "--name", "a", "--db", sqlite_url, "--scheduler", "asha",
            "--max-concurrent", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ts = trials(sqlite_url, "a")
    pruned = [k for k, t in ts.items() if t["state"] == "pruned"]
    assert pruned, ts
    for key, t in ts.items():
        assert (t["state"] == "completed") == (t["last_step"] == 400)
    for t in optuna_trials(sqlite_url, "a"):
        key = f"c{t.number:04d}-s0"
        if key in pruned:
            assert t.state == TS.PRUNED and t.intermediate_values  # with its intermediate values
            assert max(t.intermediate_values) < 400
        else:
            assert t.state == TS.COMPLETE


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, sqlite_url):
    def one_line_error(r, *words):
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mimax: error:"), r.stderr
        for w in words:
            assert w in lines[0], lines[0]

    space = SPACES / "tiny-random.yaml"
    one_line_error(run("launch", space, "--name", "x", "--db", "notaurl", cwd=tmp_path), "database URL")
    one_line_error(run("launch", space, "--name", "x", "--db", "mysql+nope://u@h/d", cwd=tmp_path), "database URL")
    one_line_error(run("launch", space, "--name", "x", "--db", sqlite_url, "--address", "127.0.0.1:1",
                       cwd=tmp_path), "--address", "127.0.0.1:1")
    one_line_error(run("launch", space, "--name", "x", "--db", sqlite_url, "--gpus-per-trial", "1",
                       cwd=tmp_path), "--gpus-per-trial", "wait forever")
    one_line_error(run("launch", "no-such-space", "--name", "x", "--db", sqlite_url, cwd=tmp_path), "no-such-space")
    one_line_error(run("resume", "ghost", "--db", sqlite_url, cwd=tmp_path), "unknown study 'ghost'")
    one_line_error(run("status", "ghost", "--db", sqlite_url, cwd=tmp_path), "unknown study 'ghost'")
    # Nothing half-written: no study row, and no Optuna study.
    assert query(sqlite_url, "SELECT name FROM mimax_studies") == []
    assert query(sqlite_url, "SELECT study_name FROM studies") == []


def test_resume_refuses_a_changed_space_file(tmp_path, sqlite_url):
    space = tmp_path / "space.yaml"
    space.write_text((SPACES / "tiny-random.yaml").read_text())
    r = run("launch", space, "--name", "c", "--db", sqlite_url, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    space.write_text(space.read_text().replace("steps: 60", "steps: 90"))
    r = run("resume", "c", "--db", sqlite_url, "--add-trials", "1", cwd=tmp_path)
    assert r.returncode == 2 and "changed since" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert len(trials(sqlite_url, "c")) == 1


def test_a_second_driver_is_refused_while_one_runs_and_status_says_when_it_is_gone(tmp_path, sqlite_url):
    """While the driver runs, status says so; after a SIGKILL, status says "driver gone" within the lease
    timeout that docs/STUDIES.md states (30 s; on the driver's own host at once) and names the resume."""
    from mimax.storage.store import LEASE_TIMEOUT_S

    proc = start("launch", SPACES / "kill-grid.yaml", "--name", "busy", "--db", sqlite_url, "--quiet",
                 cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        wait_for(lambda: any(t["state"] == "running" for t in trials(sqlite_url, "busy").values()), 120, proc)
        r = run("resume", "busy", "--db", sqlite_url, "--quiet", cwd=tmp_path)
        assert r.returncode == 2 and "is being run by" in r.stderr, r.stderr
        live = json.loads(run("status", "busy", "--db", sqlite_url, "--json", cwd=tmp_path).stdout)
        assert live["status"] == "running" and live["driver"] == "live" and live["driver_gone"] is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=30)

    def gone():
        r = run("status", "busy", "--db", sqlite_url, cwd=tmp_path)
        return r.returncode == 0 and "driver gone since" in r.stdout and r.stdout

    out = wait_for(gone, timeout=LEASE_TIMEOUT_S + 30)
    assert time.monotonic() - killed < LEASE_TIMEOUT_S, out
    assert "run `mimax resume busy`" in out and "ETA" not in out and "busy: driver gone" in out, out
    assert "driver gone" in run("list", "--db", sqlite_url, cwd=tmp_path).stdout


def test_packed_replicates_are_recorded_as_if_run_alone(tmp_path, sqlite_url):
    """--pack 2 trains both seeds of a configuration in one Ray trial; the store still has one row per
    replicate, with the evaluations the same seed gives when run alone (--pack 1)."""
    for name, pack in (("alone", "1"), ("packed", "2")):
        r = run("launch", SPACES / "tiny-grid.yaml", "--name", name, "--db", sqlite_url, "--pack", pack,
                "--results-dir", tmp_path / "res", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    rows = query(sqlite_url, """SELECT s.name, t.trial_key, t.ray_trial_id, e.step, e.bound_test, e.probe_accuracy,
                                       e.metrics
                                FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id
                                JOIN mimax_studies s ON s.id = t.study_id""")
    by = {(n, k, s): (ray, b, a, json.loads(m)) for n, k, ray, s, b, a, m in rows}
    keys = sorted({(k, s) for n, k, s in by if n == "alone"})
    assert len(keys) == 4 * 5 and keys == sorted({(k, s) for n, k, s in by if n == "packed"})
    for k, s in keys:
        _, b1, a1, m1 = by[("alone", k, s)]
        _, b2, a2, m2 = by[("packed", k, s)]
        assert m1["pack_size"] == 1 and m2["pack_size"] == 2
        # Over 400 steps at lr 1e-3 Adam amplifies the pack's different float summation order in
        # directions the loss ignores (tests/trainables/test_packed.py pins short runs to 1e-4).
        assert b2 == pytest.approx(b1, rel=1e-2, abs=1e-2)
        assert abs(a2 - a1) <= 3 / 450  # the digits test split has 450 images
    # Both seeds of a configuration ran in one Ray trial when packed, in two when alone.
    ray_ids = {n: {k: ray for (nn, k, s), (ray, *_) in by.items() if nn == n} for n in ("alone", "packed")}
    assert ray_ids["packed"]["c0000-s0"] == ray_ids["packed"]["c0000-s1"]
    assert ray_ids["alone"]["c0000-s0"] != ray_ids["alone"]["c0000-s1"]
    bad = run("launch", SPACES / "tiny-grid.yaml", "--name", "x", "--db", sqlite_url, "--pack", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--pack" in bad.stderr


def test_failed_trials_keep_their_error_and_optuna_is_told_fail(tmp_path, sqlite_url):
    r = run("launch", SPACES / "fails.yaml", "--name", "f", "--db", sqlite_url, "--quiet", cwd=tmp_path)
    assert r.returncode == 1  # every trial failed
    rows = query(sqlite_url, "SELECT trial_key, state, error FROM mimax_trials")
    assert len(rows) == 2
    for key, state, error in rows:
        assert state == "failed"
        assert "data.root" in error and "/nonexistent/cifar-10-batches-py" in error, error
    assert [t.state for t in optuna_trials(sqlite_url, "f")] == [TS.FAIL, TS.FAIL]
    st = json.loads(run("status", "f", "--db", sqlite_url, "--json", cwd=tmp_path).stdout)
    assert st["states"]["failed"] == 2 and st["total"] == 2


def test_ctrl_c_exits_130_naming_the_resume_and_resume_says_what_it_resumes_from_the_studys_best(tmp_path,
                                                                                                 sqlite_url):
    """SIGINT to `mimax launch --quiet` printed nothing and exited 1; `mimax resume` then printed nothing
    about what it resumed, and its progress showed this session's best instead of the study's."""
    name = "intr"
    proc = start("launch", SPACES / "kill-grid.yaml", "--name", name, "--db", sqlite_url, "--results-dir",
                 tmp_path / "res", "--max-concurrent", "1", "--quiet", cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        wait_for(lambda: {"completed", "running"} <= {t["state"] for t in trials(sqlite_url, name).values()},
                 timeout=240, proc=proc, every=0.05)
        os.kill(proc.pid, signal.SIGINT)  # the driver alone, as `kill -INT` does
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    lines = [ln for ln in (tmp_path / "launch.log").read_text().splitlines() if ln.strip()]
    done = sum(t["state"] in ("completed", "pruned", "failed", "diverged") for t in trials(sqlite_url, name).values())
    assert rc == 130, lines
    assert lines[-1] == (f"mimax: interrupted: study {name} stopped with {done} of 4 trials done; "
                         f"run `mimax resume {name}` to finish it"), lines
    assert 1 <= done < 4
    status = json.loads(run("status", name, "--db", sqlite_url, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "interrupted" and status["driver"] is None
    best = max(v for (v,) in query(sqlite_url, """
        SELECT e.probe_accuracy FROM mimax_evaluations e WHERE e.step =
        (SELECT max(step) FROM mimax_evaluations WHERE trial_id = e.trial_id)"""))  # each replicate's last, by SQL

    r = run("resume", name, "--db", sqlite_url, cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    assert err[0] == f"resuming {name}: {done} of 4 done, {4 - done} to run", err
    assert err[1].startswith(f"{name}: {done}/4 trials · ") and f"best probe_accuracy {best:.4f} · " in err[1], err
