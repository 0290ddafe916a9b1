"""The same trial bare (`mimax train`) and under `mimax launch`, measured in one run.

Prints the training steps/s ratio (target >= 0.95), the fixed start-up cost per study and per trial,
and writes them to docs/PERFORMANCE.md. Usage: python bench/launch_overhead.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parent))
from perf_doc import machine, stamp, write_section  # noqa: E402

HERE = Path(__file__).parent
SPACE = HERE / "spaces" / "overhead.yaml"
MIMAX = [sys.executable, "-m", "mimax.cli"]


def timed(cmd, cwd, extra_env=None) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **(extra_env or {}))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return dt, r


def trial_walls(db: str) -> list[float]:
    """Each trial's in-trial training wall time (wall_s of its last evaluation)."""
    eng = create_engine(db)
    with eng.connect() as c:
        rows = c.execute(text("SELECT trial_id, MAX(step), MAX(wall_s) FROM mimax_evaluations GROUP BY trial_id"))
        return [w for _, _, w in rows]


def measure(tmp: str, config: dict, threads: int) -> dict:
    """One bare run and two launches whose trials get the same number of threads (Ray sets a trial's
    thread count to its CPUs; the bare run gets it from OMP_NUM_THREADS)."""
    steps = config["train"]["steps"]
    cfg = Path(tmp) / "trial.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    bare_total, r = timed([*MIMAX, "train", cfg, "--json"], tmp, env_threads)
    records = [json.loads(line) for line in r.stdout.splitlines()]
    bare_wall = [x for x in records if x["event"] == "eval"][-1]["wall_s"]
    opts = ["--results-dir", f"{tmp}/res", "--pack", "1", "--cpus-per-trial", str(threads), "--quiet"]
    db1 = f"sqlite:///{tmp}/one{threads}.db"
    one_total, _ = timed([*MIMAX, "launch", SPACE, "--name", "one", "--budget", "one", "--db", db1, *opts], tmp)
    (one_wall,) = trial_walls(db1)
    db4 = f"sqlite:///{tmp}/four{threads}.db"
    four_total, _ = timed([*MIMAX, "launch", SPACE, "--name", "four", "--budget", "four", "--db", db4,
                           "--max-concurrent", "1", *opts], tmp)
    four_walls = trial_walls(db4)
    per_trial = (four_total - sum(four_walls) - (one_total - one_wall)) / 3
    return {
        "bare": steps / bare_wall, "launch": steps / one_wall, "ratio": bare_wall / one_wall,
        "launch4": steps * len(four_walls) / sum(four_walls),
        "ratio4": (steps * len(four_walls) / sum(four_walls)) / (steps / bare_wall),
        "bare_startup": bare_total - bare_wall, "per_study": (one_total - one_wall) - per_trial,
        "per_trial": per_trial,
    }


def main() -> None:
    space = yaml.safe_load(SPACE.read_text())
    config = dict(space["base"], seed=0)
    steps = config["train"]["steps"]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = {t: measure(tmp, config, t) for t in (1, 2)}
    load1 = os.getloadavg()[0]
    labels = [
        ("bare `mimax train`: training steps/s", "bare", "{:.1f}"),
        ("under `mimax launch` (1 trial): training steps/s", "launch", "{:.1f}"),
        ("ratio launch / bare (target ≥ 0.95)", "ratio", "{:.3f}"),
        ("under launch, 4 seeds one after another: mean steps/s", "launch4", "{:.1f}"),
        ("ratio, 4 seeds / bare", "ratio4", "{:.3f}"),
        ("bare: process start-up + data load + teardown (s)", "bare_startup", "{:.1f}"),
        ("launch: fixed cost per study (s)", "per_study", "{:.1f}"),
        ("launch: fixed cost per trial (s)", "per_trial", "{:.1f}"),
    ]
    rows = [(a, *(fmt.format(results[t][k]) for t in (1, 2))) for a, k, fmt in labels]
    for a, one, two in rows:
        print(f"{a:<58} {one:>8} {two:>8}")
    body = "\n".join([
        f"Measured by `bench/launch_overhead.py` on {stamp()}; {machine()}; load average {load0:.2f} before "
        f"and {load1:.2f} after; one run, all numbers from it.",
        f"The trial: MNIST, MLP × bilinear × InfoNCE, K = 128, {steps} steps, bound on 5 batches every 500 "
        "steps, no probe. Steps/s are in-trial (training, evaluation and the checkpoint at each evaluation, "
        "from the trial's own `wall_s`); costs per study and per trial are what the whole command takes beyond "
        "that (Ray start-up, scheduling, database writes), from a 1-trial study and a 4-seed study run one trial "
        "at a time (`--pack 1`). Both columns give the bare run and the launched trial the same threads: "
        "1 thread (`--cpus-per-trial 1`, the default) and 2 threads (`--cpus-per-trial 2`, every core of this "
        "machine, so Ray's own processes and the driver compete with the trial for them).",
        "",
        "| measure | 1 thread | 2 threads |",
        "|---|---|---|",
        *[f"| {a} | {one} | {two} |" for a, one, two in rows],
    ])
    write_section("Study engine: launch overhead", body)


if __name__ == "__main__":
    main()
