"""Run the real `mimax` command line as a user would, and read what it left in the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text

SPACES = Path(__file__).parent / "spaces"
MIMAX = [sys.executable, "-m", "mimax.cli"]


def env() -> dict:
    e = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    e.pop("PYTEST_XDIST_WORKER", None)
    return e


def run(*args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*MIMAX, *map(str, args)], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def start(*args, cwd, log) -> subprocess.Popen:
    """Start a driver in its own process group (so a kill takes Ray's processes with it)."""
    fh = open(log, "w")
    return subprocess.Popen([*MIMAX, *map(str, args)], cwd=cwd, env=env(), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1.0)  # let Ray's processes notice their driver is gone


def query(url: str, sql: str, **params) -> list[tuple]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    except Exception:
        return []  # tables not created yet
    finally:
        eng.dispose()


def trials(url: str, study: str) -> dict[str, dict]:
    rows = query(url, """
        SELECT t.trial_key, t.state, t.checkpoint_step, t.last_step, t.ended_at, t.ray_trial_id, t.node
        FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = :n""", n=study)
    keys = ("state", "checkpoint_step", "last_step", "ended_at", "ray_trial_id", "node")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


def evaluations(url: str, study: str) -> dict[tuple[str, int], str]:
    rows = query(url, """
        SELECT t.trial_key, e.step, e.recorded_at FROM mimax_evaluations e
        JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON s.id = t.study_id
        WHERE s.name = :n""", n=study)
    return {(k, s): str(at) for k, s, at in rows}


def optuna_trials(url: str, study: str):
    return optuna.load_study(study_name=f"mimax:{study}", storage=url).get_trials(deepcopy=False)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited with {proc.returncode} before the moment came")
        time.sleep(every)
    raise AssertionError("timed out waiting for the moment to kill")


def marked_trial_pids(mark: str) -> list[int]:
    """PIDs of the Ray trial actors (``ray::ImplicitFunc``) whose environment holds ``MIMAX_TEST_MARK=mark``:
    the workers of one test's own cluster, never another Ray cluster's on this machine."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                continue
            if f"MIMAX_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def ray_trials(experiment_dir: Path) -> dict[str, dict]:
    """Ray's own view of each trial of a session, by trial folder (from Tune's experiment state file)."""
    import json

    (path,) = Path(experiment_dir).glob("experiment_state-*.json")
    out = {}
    for trial_json, meta_json in json.loads(path.read_text())["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["relative_logdir"]] = {"status": trial["status"], **meta}
    return out
