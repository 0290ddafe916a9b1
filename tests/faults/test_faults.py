"""Faults at cluster scale (issue 17): a study runs on a Ray cluster of separate hosts (network
namespaces, tests/faults/harness.py) with its record in PostgreSQL reached over that network, and each
test breaks something mid-study: (a) a worker host dies with all its processes, (b) a worker's link is
down for 20 s, (c) PostgreSQL restarts (down for 4 s), (d) the driver is SIGKILLed while PostgreSQL is down.

After each fault the study must end as if nothing happened, and the test checks it against the
database: every replicate completed; every replicate has every evaluation step; a replicate that had a
checkpoint when the fault came did not start again from step 0 (its evaluations before that checkpoint
were never written again); no Optuna trial is left RUNNING. It records what it measured (recovery time:
from the fault to the first evaluation written again by a replicate the fault stopped) as the user
property ``fault``; tests/conftest.py prints those lines at the end of the run, and docs/STUDIES.md
("Faults") reports them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pytest

from harness import Host
from mimax.storage.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]

SPACE = Path(__file__).with_name("faults.yaml")
STEPS, EVERY, TOTAL = 2000, 200, 2  # tests/faults/faults.yaml: 2 configurations x 1 seed
EVAL_STEPS = set(range(0, STEPS + 1, EVERY))
DEADLINE_S = 240  # a study takes about a minute here; a stuck one fails the test instead of hanging CI


class Driver:
    """``mimax launch|resume`` on the head host, as its own process group."""

    def __init__(self, cluster, tmp_path: Path, *args):
        self.log = tmp_path / f"driver-{time.monotonic_ns()}.log"
        cmd = cluster.head.cmd(sys.executable, "-m", "mimax.cli", *args, "--address", cluster.address,
                               "--results-dir", tmp_path / "results", "--max-concurrent", "2", "--pack", "1",
                               "--quiet")
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, env=cluster.env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the driver did not finish in {timeout} s:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def now() -> datetime:
    return datetime.now(timezone.utc)


def read(url: str, name: str) -> tuple[dict, dict] | None:
    """(trial rows by key, {(key, step): recorded_at}); None while the database cannot be read."""
    try:
        with Store(url, read_only=True) as store:
            trials = {t["trial_key"]: t for t in store.trials(name)}
            evals = {(e["trial_key"], e["step"]): e["recorded_at"] for e in store.evaluations(name)}
    except Exception:  # not created yet, or down: the caller polls again
        return None
    return trials, evals


def wait_for(predicate, driver: Driver, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if driver.proc.poll() is not None:
            raise AssertionError(f"the driver exited {driver.proc.returncode} first:\n{driver.output()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no moment to strike within {timeout} s:\n{driver.output()[-3000:]}")


def host_of(trial: dict) -> str | None:
    """The IP of the host a replicate last reported from (its ``node`` is "ip/node id")."""
    return trial["node"].split("/")[0] if trial["node"] else None


def running_on(before: tuple[dict, dict], hosts: dict, key: str):
    """The host of replicate ``key``, and every replicate running there."""
    host = hosts[host_of(before[0][key])]
    return host, [k for k, t in before[0].items() if t["state"] == "running" and host_of(t) == host.ip]


def mid_trial(url: str, name: str, on: set[str] | None = None):
    """A moment when some replicate (on a host in ``on``, if given) is running, has a checkpoint past its
    second evaluation, and is far from its end; returns the database's view then, and those replicates."""

    def check():
        got = read(url, name)
        if not got:
            return None
        trials, _ = got
        hit = [k for k, t in trials.items() if t["state"] == "running" and (t["checkpoint_step"] or 0) >= 2 * EVERY
               and (t["last_step"] or 0) <= STEPS - 4 * EVERY
               and (on is None or host_of(t) in on)]
        return (got, hit) if hit else None

    return check


def check_study(url: str, name: str, before: tuple[dict, dict], victims: list[str], fault_at: datetime) -> dict:
    """Every promise, asserted against the database; returns the figures for the report."""
    trials, evals = read(url, name)
    states = sorted(t["state"] for t in trials.values())
    assert states == ["completed"] * TOTAL, states
    missing = {k: sorted(EVAL_STEPS - {s for (kk, s) in evals if kk == k}) for k in trials}
    extra = sorted((k, s) for (k, s) in evals if s not in EVAL_STEPS)
    lost = sum(len(v) for v in missing.values())
    assert lost == 0 and not extra, (missing, extra)
    # A replicate with a checkpoint when the fault came went on from a checkpoint: every evaluation before
    # the one it had was written once, before the fault (from step 0 they would all be written again).
    b_trials, b_evals = before
    from_zero = []
    for key, t in b_trials.items():
        ck = t["checkpoint_step"] or 0
        if ck and t["state"] != "completed":
            rewritten = [s for (k, s), at in evals.items() if k == key and s < ck and at != b_evals.get((k, s))]
            if rewritten:
                from_zero.append((key, ck, rewritten))
    assert not from_zero, from_zero
    ots = optuna.load_study(study_name=f"mimax:{name}", storage=url).get_trials(deepcopy=False)
    running = [t.number for t in ots if t.state == optuna.trial.TrialState.RUNNING]
    assert not running and [t.state.name for t in ots] == ["COMPLETE", "COMPLETE"], [t.state for t in ots]
    with Store(url, read_only=True) as store:
        assert store.require_study(name)["status"] == "completed"
    again = [at for (k, s), at in evals.items() if k in victims and at > fault_at]
    assert again, f"no evaluation of {victims} was written after the fault"
    return {"completed": f"{states.count('completed')}/{TOTAL}", "rows_lost": lost,
            "restarts_from_step_0": len(from_zero), "optuna_running": len(running),
            "recovery_s": round((min(again) - fault_at).total_seconds(), 1), "victims": len(victims)}


def report(record_property, fault: str, figures: dict, **extra) -> None:
    figures = {**figures, **extra}
    line = f"{fault}: " + ", ".join(f"{k} {v}" for k, v in figures.items())
    print(line)
    record_property("fault", line)


def test_c_database_restarts_mid_study(cluster, postgres, database, tmp_path, record_property):
    name = "c-restart"
    driver = Driver(cluster, tmp_path, "launch", SPACE, "--name", name, "--db", database)
    try:
        before, victims = wait_for(mid_trial(database, name), driver)
        fault_at = now()
        t0 = time.monotonic()
        # A plain restart is down for about a second, which the driver's writes may all miss: 4 s down
        # makes sure that some fall into it.
        postgres.restart(down_s=4)
        down_s = time.monotonic() - t0
        rc = driver.wait()
        resumed = rc != 0
        if resumed:  # allowed: a clear one-line stop, then `mimax resume` finishes the study
            last = driver.output().strip().splitlines()[-1]
            assert last.startswith("mimax: error:") and "Traceback" not in driver.output(), driver.output()[-3000:]
            again = Driver(cluster, tmp_path, "resume", name, "--db", database)
            assert again.wait() == 0, again.output()[-3000:]
    finally:
        driver.kill()
    assert "the results database is unreachable; writing again" in driver.output(), driver.output()[-3000:]
    figures = check_study(database, name, before, victims, fault_at)
    report(record_property, "(c) PostgreSQL restart", figures, db_restart_s=round(down_s, 1),
           needed_resume=resumed)


def test_d_driver_killed_while_the_database_is_down(cluster, postgres, database, tmp_path, record_property):
    name = "d-driver"
    driver = Driver(cluster, tmp_path, "launch", SPACE, "--name", name, "--db", database)
    try:
        before, victims = wait_for(mid_trial(database, name), driver)
        fault_at = now()
        postgres.stop()
        time.sleep(2.0)  # the driver goes on meanwhile: its writes queue up and fail
        driver.kill()
    finally:
        driver.kill()
        postgres.ensure_running()
    t0, resume_at = time.monotonic(), now()
    again = Driver(cluster, tmp_path, "resume", name, "--db", database)
    assert again.wait() == 0, again.output()[-3000:]
    resume_s = time.monotonic() - t0
    victims = [k for k, t in before[0].items() if t["state"] != "completed"]
    figures = check_study(database, name, before, victims, fault_at)
    with Store(database, read_only=True) as store:
        evals = store.evaluations(name)
    progress = min(e["recorded_at"] for e in evals if e["recorded_at"] > resume_at)
    report(record_property, "(d) driver SIGKILLed while PostgreSQL is down", figures,
           resume_to_progress_s=round((progress - resume_at).total_seconds(), 1), resume_s=round(resume_s, 1))


def break_a_worker(cluster, database: str, tmp_path: Path, name: str, fault) -> tuple:
    """Launch a study, and once a worker host runs a replicate mid-trial, apply ``fault(host)`` to that
    host; the study must then complete on its own. Returns (view before, victims, fault time, host, fault's value)."""
    driver = Driver(cluster, tmp_path, "launch", SPACE, "--name", name, "--db", database)
    ips = {w.ip: w for w in cluster.workers}
    try:
        before, victims = wait_for(mid_trial(database, name, on=set(ips)), driver)
        host, victims = running_on(before, ips, victims[0])
        fault_at = now()
        cluster.broken.add(host.ns)
        value = fault(host)
        assert driver.wait() == 0, driver.output()[-3000:]
    finally:
        driver.kill()
    return before, victims, fault_at, host, value


def test_a_worker_host_dies_mid_trial(cluster, database, tmp_path, record_property):
    before, victims, fault_at, host, killed = break_a_worker(cluster, database, tmp_path, "a-host", Host.kill)
    figures = check_study(database, "a-host", before, victims, fault_at)
    trials, _ = read(database, "a-host")
    assert all(host_of(trials[k]) != host.ip for k in victims), "victims finished on the dead host"
    report(record_property, "(a) worker host killed", figures, processes_killed=killed)


def cut_link(host: Host, seconds: float = 20) -> None:
    host.link(up=False)
    try:
        time.sleep(seconds)  # the fault itself: the link stays down this long, whatever happens meanwhile
    finally:
        host.link(up=True)


def test_b_worker_link_down_20s(cluster, database, tmp_path, record_property):
    before, victims, fault_at, _, _ = break_a_worker(cluster, database, tmp_path, "b-link", cut_link)
    figures = check_study(database, "b-link", before, victims, fault_at)
    report(record_property, "(b) worker link down 20 s", figures)
