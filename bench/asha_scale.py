"""ASHA at scale: a 1,000-trial `--scheduler asha` study (bench/spaces/asha-1000.yaml), its driver killed
part-way and the study finished by `mimax resume`; then checked against its database: every configuration
once, every trial ended, pruned ones PRUNED with their last evaluation, no (trial, step) missing.

Usage: python bench/asha_scale.py [--kill-at N] [--out docs/perf/asha-1000.db] [--no-doc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parent))
from perf_doc import machine, stamp, write_section  # noqa: E402

HERE = Path(__file__).parent
SPACE = HERE / "spaces" / "asha-1000.yaml"
NAME, STEPS, EVERY, CONFIGS = "asha-1000", 40, 10, 1000
OPTS = ["--scheduler", "asha", "--max-concurrent", "2", "--pack", "1", "--quiet"]


def env() -> dict:
    return dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")


def query(url: str, sql: str) -> list[tuple]:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql))]
    except Exception:  # noqa: BLE001 - the tables are not there yet
        return []
    finally:
        eng.dispose()


def ended(url: str) -> int:
    rows = query(url, "SELECT COUNT(*) FROM mimax_trials WHERE state IN ('completed','pruned','failed','diverged')")
    return rows[0][0] if rows else 0


def check(url: str) -> dict:
    """What the finished study holds, and every guarantee checked (an AssertionError names the broken one)."""
    trials = query(url, "SELECT trial_key, optuna_trial_number, state, last_step FROM mimax_trials")
    evals = query(url, "SELECT t.trial_key, e.step FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id")
    steps: dict[str, list[int]] = {}
    for key, step in evals:
        steps.setdefault(key, []).append(step)
    keys = [t[0] for t in trials]
    assert len(keys) == len(set(keys)) == CONFIGS, (len(keys), len(set(keys)))
    assert sorted(t[1] for t in trials) == list(range(CONFIGS)), "an Optuna trial number missing or twice"
    states = Counter(t[2] for t in trials)
    assert set(states) <= {"completed", "pruned", "diverged"}, states
    study = optuna.load_study(study_name=f"mimax:{NAME}", storage=url)
    ot = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert sorted(ot) == list(range(CONFIGS))
    want_state = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                  "diverged": optuna.trial.TrialState.FAIL}  # one seed: the configuration's state is its trial's
    for key, number, state, last in trials:
        # every evaluation step up to the last (a diverged trial's last record is at the step it diverged)
        want = sorted({*range(0, last + 1, EVERY), last})
        assert sorted(steps.get(key, [])) == want, (key, state, last, sorted(steps.get(key, [])))
        assert (last == STEPS) == (state == "completed"), (key, state, last)
        t = ot[number]
        assert t.state == want_state[state], (key, state, t.state)
        if state == "pruned":  # with its last evaluation: Optuna's intermediate values end there
            assert max(t.intermediate_values) == last, (key, t.intermediate_values)
    return {"states": states, "evaluations": len(evals),
            "pruned_at": Counter(last for _, _, state, last in trials if state == "pruned")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kill-at", type=int, default=400, help="SIGKILL the driver once this many trials ended")
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "perf" / "asha-1000.db"))
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--check", metavar="DB", help="only check a finished run's database, its times read from it")
    args = ap.parse_args()
    if args.check:
        return from_database(args)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "asha.db"
        url = f"sqlite:///{db}"
        where = ["--db", url, "--results-dir", f"{tmp}/res", *OPTS]
        t0 = time.perf_counter()
        log = open(Path(tmp) / "launch.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "mimax.cli", "launch", SPACE, "--name", NAME, *where],
                                cwd=tmp, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while ended(url) < args.kill_at:
            if proc.poll() is not None:
                sys.exit(f"the launch ended before the kill: {(Path(tmp) / 'launch.log').read_text()[-3000:]}")
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
        proc.wait()
        killed = time.perf_counter() - t0
        at_kill = dict(Counter(s for (s,) in query(url, "SELECT state FROM mimax_trials")))
        time.sleep(2)
        t1 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mimax.cli", "resume", NAME, *where], cwd=tmp, env=env(),
                           capture_output=True, text=True)
        resumed = time.perf_counter() - t1
        if r.returncode != 0:
            sys.exit(f"resume failed ({r.returncode}): {r.stderr[-3000:]}")
        found = check(url)
        load1 = os.getloadavg()
        size = db.stat().st_size
        out = Path(args.out)
        if size < 5 * 2**20:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(db, out)
    lines = [
        f"launch until SIGKILL at {args.kill_at} ended trials: {killed:.0f} s (states then: {at_kill})",
        f"mimax resume to the end: {resumed:.0f} s",
        f"wall time, both sessions: {killed + resumed:.0f} s ({CONFIGS / (killed + resumed) * 3600:.0f} trials/h)",
        *found_lines(found, size, out)]
    report(args, lines, load1, "")


def from_database(args) -> None:
    """The figures of a finished run from its database alone (the run's own process could not report them)."""
    from datetime import datetime

    url = f"sqlite:///{Path(args.check).resolve()}"
    found = check(url)
    (s1,) = [r[0] for r in query(url, "SELECT recorded_at FROM mimax_environment WHERE session = 1")]
    first, last = query(url, "SELECT MIN(started_at), MAX(ended_at) FROM mimax_trials")[0]
    t = lambda v: v if isinstance(v, datetime) else datetime.fromisoformat(v)  # noqa: E731
    before = query(url, f"SELECT COUNT(*) FROM mimax_trials WHERE ended_at < '{s1}'")[0][0]
    wall = (t(last) - t(first)).total_seconds()
    size = Path(args.check).stat().st_size
    out = Path(args.out)
    if size < 5 * 2**20 and Path(args.check).resolve() != out.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.check, out)
    lines = [f"trials ended before the driver was killed (before `mimax resume` began): {before}",
             f"wall time, first trial's start to last trial's end, both sessions and the gap between them: "
             f"{wall:.0f} s ({CONFIGS / wall * 3600:.0f} trials/h)",
             *found_lines(found, size, out)]
    report(args, lines, os.getloadavg(), " Its times are read from its database (the first trial's start, the "
           "last trial's end, the resumed session's start).")


def found_lines(found: dict, size: int, out: Path) -> list[str]:
    states = found["states"]
    return [
        f"trials: {CONFIGS}, each configuration once: completed {states['completed']}, pruned {states['pruned']} "
        f"(pruned at step: {dict(sorted(found['pruned_at'].items()))}), diverged {states['diverged']}; "
        f"evaluations {found['evaluations']}, none missing, none twice",
        f"database: {size / 2**20:.2f} MB" + (f", copied to {out.relative_to(HERE.parent)}" if size < 5 * 2**20 else ""),
    ]


def report(args, lines: list[str], load: tuple, note: str) -> None:
    print("\n".join(lines))
    if args.no_doc:
        return
    body = "\n".join([
        f"Measured by `bench/asha_scale.py` on {stamp()}; {machine()}; load average {load[0]:.2f} / {load[1]:.2f} "
        f"(1 / 5 min) at the end; one run.{note}",
        "",
        "The study: `bench/spaces/asha-1000.yaml`, 1,000 configurations (TPE over a log-uniform learning rate "
        "1e-6 to 0.1 × critic {bilinear, separable, concat, inner} × estimator {nce, nwj, js}), one seed each, on "
        f"digits, {STEPS} steps with an evaluation every {EVERY} (ASHA's rungs: steps 10, 20, 40), "
        "`--scheduler asha --max-concurrent 2 --pack 1`, SQLite, workers reused. The driver (and its Ray "
        f"cluster) was SIGKILLed once {args.kill_at} trials had ended, and `mimax resume` finished the study. "
        "Then the database was checked: every Optuna trial number 0–999 once; every trial ended; each trial's "
        "evaluations are exactly steps 0, 10, … up to its last step; the completed ones reached step 40 and are "
        "COMPLETE in Optuna; the pruned ones stopped earlier and are PRUNED in Optuna, with intermediate values up "
        "to that step; a diverged one (its loss not finite) ends at the step it diverged and is FAIL in Optuna.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {line.split(':', 1)[0]} | {line.split(':', 1)[1].strip()} |" for line in lines],
    ])
    write_section("ASHA at scale: 1,000 trials, killed and resumed", body)


if __name__ == "__main__":
    main()
