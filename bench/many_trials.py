"""Many short trials: the marginal wall time per trial of mimax with and without worker reuse, beside Ray Tune's
own trivial trainable with and without actor reuse, measured in one run.

Each variant runs a 30-trial and a 90-trial study, 2 trials at a time on 1 CPU each, in a process of its own
(a private Ray cluster each); the marginal wall time per trial is (T90 - T30) / 60, so start-up of the
driver, Ray and the first workers cancels; each variant runs its two studies back to back. mimax: `mimax launch
bench/spaces/many.yaml` (MNIST, 20 steps, the bound on one batch, no probe, random sampler over train.lr),
with `--fresh-workers` for no reuse. Ray Tune: a function trainable that reports once.

Usage: python bench/many_trials.py [--rounds R] [--no-doc]; prints the table and writes docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from perf_doc import machine, stamp, write_section  # noqa: E402

HERE = Path(__file__).parent
SPACE = HERE / "spaces" / "many.yaml"
SIZES = (30, 90)  # the two study sizes (--sizes)
VARIANTS = {  # in the order they run; the two of the target ratio next to each other
    "mimax, workers reused": ("mimax", True),
    "Ray Tune, trivial trainable, no actor reuse": ("ray", False),
    "mimax, a fresh worker per trial (--fresh-workers)": ("mimax", False),
    "Ray Tune, trivial trainable, actor reuse": ("ray", True),
}


def trivial(config):
    from ray import tune

    tune.report({"score": config["x"]})


def ray_study(n: int, reuse: bool) -> None:
    """Ray Tune alone: n trials of ``trivial``, 2 at a time, on a private local cluster."""
    import ray
    from ray import tune

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             num_cpus=2, logging_level="ERROR")
    tuner = tune.Tuner(
        tune.with_resources(trivial, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=2, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == n and not results.errors, results.errors
    ray.shutdown()


def timed(cmd: list, cwd: str) -> float:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
               RAY_AIR_NEW_OUTPUT="0")
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return dt


def run(kind: str, reuse: bool, n: int, tmp: str, tag: str) -> float:
    if kind == "ray":
        return timed([sys.executable, __file__, "--ray-study", str(n), *(["--reuse"] if reuse else [])], tmp)
    name = f"{tag}-{n}"
    return timed([sys.executable, "-m", "mimax.cli", "launch", SPACE, "--name", name, "--budget", f"t{n}",
                  "--db", f"sqlite:///{tmp}/{name}.db", "--results-dir", f"{tmp}/res-{name}",
                  "--max-concurrent", "2", "--pack", "1", "--quiet", *([] if reuse else ["--fresh-workers"])], tmp)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sizes", default="30,90", help="the two study sizes, e.g. 10,30 on a crowded machine")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--ray-study", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ray_study:
        ray_study(args.ray_study, args.reuse)
        return
    global SIZES
    SIZES = tuple(int(n) for n in args.sizes.split(","))

    load0 = os.getloadavg()
    walls: dict[str, dict[int, list[float]]] = {v: {n: [] for n in SIZES} for v in VARIANTS}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, (label, (kind, reuse)) in enumerate(VARIANTS.items()):
                for n in SIZES:  # back to back: a change of the machine's load between them would enter the difference
                    walls[label][n].append(run(kind, reuse, n, tmp, f"r{r}v{i}"))
                    print(f"round {r} {label}: {n} trials {walls[label][n][-1]:.1f} s", flush=True)
    load1 = os.getloadavg()
    total = time.perf_counter() - t_all
    margin = {v: statistics.median((b - a) / (SIZES[1] - SIZES[0]) for a, b in zip(w[SIZES[0]], w[SIZES[1]]))
              for v, w in walls.items()}
    labels = list(VARIANTS)
    mimax_reuse, ray_fresh, mimax_fresh, ray_reuse = (margin[v] for v in labels)
    rows = [(v, statistics.median(walls[v][SIZES[0]]), statistics.median(walls[v][SIZES[1]]), margin[v])
            for v in labels]
    table = [f"| variant | {SIZES[0]} trials (s) | {SIZES[1]} trials (s) | marginal s / trial |", "|---|---:|---:|---:|",
             *[f"| {v} | {a:.1f} | {b:.1f} | {m:.3f} |" for v, a, b, m in rows]]
    ratios = [
        f"| mimax reused: marginal s / trial (target ≤ 0.3) | **{mimax_reuse:.3f}** |",
        f"| mimax reused / mimax fresh workers | {mimax_reuse / mimax_fresh:.3f} ({mimax_fresh / mimax_reuse:.1f}× faster) |",
        f"| mimax reused / Ray Tune trivial, no reuse (target ≤ 0.15) | **{mimax_reuse / ray_fresh:.3f}** |",
        f"| mimax reused / Ray Tune trivial, reuse | {mimax_reuse / ray_reuse:.2f} |",
    ]
    out = "\n".join([*table, "", "| ratio | value |", "|---|---:|", *ratios])
    print(out)
    if args.no_doc:
        return
    body = "\n".join([
        f"Measured by `bench/many_trials.py --rounds {args.rounds} --sizes {args.sizes}` on {stamp()}; {machine()}; load average "
        f"{load0[0]:.2f} / {load0[1]:.2f} (1 / 5 min) before and {load1[0]:.2f} / {load1[1]:.2f} after; "
        f"{total:.0f} s in all; one run, every figure from it"
        + ("" if args.rounds == 1 else f" (medians over {args.rounds} rounds)") + ".",
        "",
        f"Each variant runs a {SIZES[0]}-trial and a {SIZES[1]}-trial study, 2 trials at a time on 1 CPU each, in a "
        f"process of its own with a private Ray cluster; the marginal wall time per trial is (T{SIZES[1]} − "
        f"T{SIZES[0]}) / {SIZES[1] - SIZES[0]}, so the "
        "start-up of the driver, of Ray and of the first workers cancels. Each variant runs its two studies back "
        "to back, and the variants one after another (mimax reused, then Ray Tune without reuse). mimax: "
        "`mimax launch bench/spaces/many.yaml` (MNIST, MLP × bilinear × InfoNCE, 20 steps, the bound on one "
        "batch, no probe, random sampler over `train.lr`, SQLite), with `--fresh-workers` for a new worker "
        "process per trial (mimax before issue 24). Ray Tune: a function trainable that reports once.",
        "",
        out,
    ])
    write_section("Many short trials: worker reuse", body)


if __name__ == "__main__":
    main()
