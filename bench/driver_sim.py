"""The driver's limit, by simulation: studies whose trials do no training (`--trainable null`) through the real
driver (`mimax launch`: Ray Tune, the Optuna searcher, the store callback and its writer thread) on SQLite and
on PostgreSQL. Per run: trials/s, results/s, database rows/s, the driver process's CPU (all its threads) and
cProfile's top functions of its main thread. From a run of one-evaluation trials (the cost of a trial) and
one of the paper's length (22 evaluations, each with a checkpoint: the cost of a result), how many GPU workers
with 20-s trials one driver keeps busy.

Usage: python bench/driver_sim.py [--trials N] [--paper-trials M] [--backends sqlite,postgresql] [--no-doc]
(PostgreSQL at 127.0.0.1:5432, user postgres, trust auth; the database mimax_bench24 is made anew.)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from perf_doc import machine, stamp, write_section  # noqa: E402

HERE = Path(__file__).parent
SPACE = HERE / "spaces" / "driver-sim.yaml"
PG_DB = "mimax_bench24"
PAPER_TRIAL_S = 20.0  # a 21,000-step trial on a GPU (docs/PERFORMANCE.md)
PAPER_EVALS = 22  # steps 0, 1000, ..., 21000
CONCURRENCY = ["--cpus-per-trial", "0.25", "--max-concurrent", "8"]  # 8 null trials at once on 2 CPUs


def driver(args: list[str], out: str) -> None:
    """Run `mimax launch ARGS` in this process under cProfile; write wall, CPU and the top functions to OUT."""
    from ray import tune

    from mimax import cli

    fit, marks = tune.Tuner.fit, {}

    def timed_fit(self, *a, **k):  # the Tune loop alone: without start-up (imports, Ray) and teardown
        marks["start"] = (time.perf_counter(), cpu())
        try:
            return fit(self, *a, **k)
        finally:
            marks["end"] = (time.perf_counter(), cpu())

    tune.Tuner.fit = timed_fit
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        code = cli.main(["launch", *args])
    finally:
        prof.disable()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = pstats.Stats(prof)
    top = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in stats.stats.items()), reverse=True)
    idle = sum(t for t, name in top if "(wait)" in name and "worker.py" in name)
    (w0, c0), (w1, c1) = marks["start"], marks["end"]
    Path(out).write_text(json.dumps({"code": code, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                                     "loop_wall": w1 - w0, "loop_cpu": c1 - c0, "idle_wait": idle,
                                     "top": top[:40]}))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def rows(url: str) -> int:
    from sqlalchemy import create_engine, inspect, text

    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return sum(c.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar() for t in inspect(c).get_table_names())
    finally:
        eng.dispose()


def fresh_url(backend: str, tmp: str, tag: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp}/{tag}.db"
    pg = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *pg, "--if-exists", PG_DB], check=True)
    subprocess.run(["createdb", *pg, PG_DB], check=True)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"


def run(backend: str, budget: str, trials: int, tmp: str) -> dict:
    tag = f"{backend}-{budget}"
    url = fresh_url(backend, tmp, tag)
    out = f"{tmp}/{tag}.json"
    space = yaml.safe_load(SPACE.read_text())
    space["budgets"][budget]["trials"] = trials
    path = Path(tmp) / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(space))
    args = [str(path), "--name", tag, "--budget", budget, "--db", url, "--results-dir", f"{tmp}/res-{tag}",
            "--trainable", "null", "--pack", "1", "--quiet", *CONCURRENCY]
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    load0 = os.getloadavg()[0]
    r = subprocess.run([sys.executable, __file__, "--driver", out, "--", *args], env=env, cwd=tmp,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{tag} failed: {r.stderr[-3000:]}")
    got = json.loads(Path(out).read_text())
    evals = PAPER_EVALS if budget.startswith("paper") else 1
    got.update(backend=backend, budget=budget, trials=trials, results=trials * evals, rows=rows(url),
               load=(load0, os.getloadavg()[0]))
    return got


def fmt_top(top: list, n: int = 8) -> str:
    """The main thread's own time, largest first, without Ray's wait for results (the driver idle)."""
    busy = [(t, name) for t, name in top if not ("(wait)" in name and "worker.py" in name)]
    return "; ".join(f"{name} {t:.0f} s" for t, name in busy[:n])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--paper-trials", type=int, default=300)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.driver:
        driver([a for a in rest if a != "--"], args.driver)
        return
    budgets = {"one-eval": args.trials, "paper-length-few": args.paper_trials}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            for budget, n in budgets.items():
                res = run(backend, budget, n, tmp)
                results.append(res)
                print(json.dumps({k: v for k, v in res.items() if k != "top"}), flush=True)
                print("  top:", fmt_top(res["top"]), flush=True)
    table = ["| backend | trials × evaluations | Tune loop wall s | trials/s | results/s | rows | rows/s | "
             "driver CPU s in the loop (share of wall) | main thread idle in ray.wait | load before / after |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in results:
        w = r["loop_wall"]
        table.append(f"| {r['backend']} | {r['trials']:,} × {r['results'] // r['trials']} | {w:.0f} | "
                     f"{r['trials'] / w:.2f} | {r['results'] / w:.1f} | {r['rows']:,} | {r['rows'] / w:.0f} | "
                     f"{r['loop_cpu']:.0f} ({r['loop_cpu'] / w:.0%}) | {r['idle_wait'] / r['wall']:.0%} | "
                     f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    model = ["| backend | measure | per trial (1 result) | per further result (+ checkpoint) | per paper-length "
             "trial (22 results) | paper-length trials/s | GPU workers kept busy at 20 s / trial |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for backend in args.backends.split(","):
        one = next(r for r in results if r["backend"] == backend and r["budget"] == "one-eval")
        paper = next(r for r in results if r["backend"] == backend and r["budget"] == "paper-length-few")
        for what, key in (("wall, this machine", "loop_wall"), ("driver CPU (one core)", "loop_cpu")):
            per_trial = one[key] / one["trials"]
            per_result = max(0.0, (paper[key] / paper["trials"] - per_trial) / (PAPER_EVALS - 1))
            full = per_trial + (PAPER_EVALS - 1) * per_result
            model.append(f"| {backend} | {what} | {per_trial * 1e3:.0f} ms | {per_result * 1e3:.1f} ms | "
                         f"{full:.2f} s | {1 / full:.2f} | **{PAPER_TRIAL_S / full:.0f}** |")
    out = "\n".join([*table, "", *model])
    print(out)
    for r in results:
        print(f"top, {r['backend']} {r['budget']}:", fmt_top(r["top"], 12))
    if args.no_doc:
        return
    body = "\n".join([
        f"Measured by `bench/driver_sim.py --trials {args.trials} --paper-trials {args.paper_trials}` on "
        f"{stamp()}; {machine()}; one run of each; the load average beside each run says how busy the machine "
        "was (other jobs shared it: the figures are lower bounds for a driver on a machine of its own).",
        "",
        "The trainable is `--trainable null` (tune_adapter.null_trial): it reports what a real trial reports (a "
        "record per evaluation, each with a checkpoint) without building or training anything, so the driver — "
        "Ray Tune's loop, the Optuna searcher (random sampler, `bench/spaces/driver-sim.yaml`: lr × critic × "
        "estimator), the store callback and its writer thread — is what is measured. 8 null trials run at once "
        "(`--cpus-per-trial 0.25`). Driver CPU is the launch process's, all threads; rows are all rows in the "
        "database at the end (mimax's and Optuna's tables).",
        "",
        out,
        "",
        "Where the driver's main thread spends its time (cProfile, own time, without `ray.wait`):",
        "",
        *[f"- {r['backend']}, {r['budget']}: {fmt_top(r['top'], 10)}" for r in results],
    ])
    write_section("Driver limit: simulated trials", body)


if __name__ == "__main__":
    main()
