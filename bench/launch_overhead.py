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


def timed(cmd, cwd) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
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


def main() -> None:
    space = yaml.safe_load(SPACE.read_text())
    config = dict(space["base"], seed=0)
    steps = config["train"]["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "trial.yaml"
        cfg.write_text(yaml.safe_dump(config))
        bare_total, r = timed([*MIMAX, "train", cfg, "--json"], tmp)
        records = [json.loads(line) for line in r.stdout.splitlines()]
        bare_wall = [x for x in records if x["event"] == "eval"][-1]["wall_s"]

        db1 = f"sqlite:///{tmp}/one.db"
        one_total, _ = timed([*MIMAX, "launch", SPACE, "--name", "one", "--budget", "one", "--db", db1,
                              "--results-dir", f"{tmp}/res", "--pack", "1", "--cpus-per-trial", "2", "--quiet"], tmp)
        (one_wall,) = trial_walls(db1)
        db4 = f"sqlite:///{tmp}/four.db"
        four_total, _ = timed([*MIMAX, "launch", SPACE, "--name", "four", "--budget", "four", "--db", db4,
                               "--results-dir", f"{tmp}/res", "--max-concurrent", "1", "--pack", "1",
                               "--cpus-per-trial", "2", "--quiet"], tmp)
        four_walls = trial_walls(db4)

    ratio = bare_wall / one_wall  # steps/s under launch over steps/s bare
    per_trial = (four_total - sum(four_walls) - (one_total - one_wall)) / 3
    per_study = (one_total - one_wall) - per_trial
    bare_startup = bare_total - bare_wall
    rows = [
        ("bare `mimax train`: training steps/s", f"{steps / bare_wall:.1f}"),
        ("under `mimax launch`: training steps/s", f"{steps / one_wall:.1f}"),
        ("ratio launch / bare (target ≥ 0.95)", f"{ratio:.3f}"),
        ("under launch, 4 sequential seeds: mean steps/s", f"{steps * len(four_walls) / sum(four_walls):.1f}"),
        ("bare: process start-up + data load + teardown (s)", f"{bare_startup:.1f}"),
        ("launch: fixed cost per study (s)", f"{per_study:.1f}"),
        ("launch: fixed cost per trial (s)", f"{per_trial:.1f}"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    body = "\n".join([
        f"Measured by `bench/launch_overhead.py` on {stamp()}; {machine()}; one run, all numbers from it.",
        f"The trial: MNIST, MLP × bilinear × InfoNCE, K = 128, {steps} steps, bound on 5 batches every 500 steps, "
        "no probe. Steps/s are in-trial (training and evaluation, from the trial's own `wall_s`); costs per "
        "study and per trial are what the whole command takes beyond that (Ray start-up, scheduling, "
        "checkpoints, database writes), from a 1-trial study and a 4-seed study run one trial at a time "
        "(`--pack 1`). Each launched trial gets `--cpus-per-trial 2`, the two cores the bare run uses "
        "(Ray sets a trial's thread count to its CPUs).",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
    ])
    write_section("Study engine: launch overhead", body)


if __name__ == "__main__":
    main()
