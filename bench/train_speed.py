"""Training speed benchmark: steps per second and peak memory of each encoder × critic at K = 128.

Every combination trains on real MNIST views (top / bottom halves) with the InfoNCE estimator, through
``mimax.trainables.loop.Trainer``: build the trainer, take a few warm-up steps, then time
``trainer.train_step()`` in ``--windows`` windows of at least ``--min-time`` seconds and ``--min-steps``
steps each, and report the median rate.
Each combination runs in its own fresh Python process, so its peak resident set size (``ru_maxrss``)
is its own; a baseline process that only imports torch and loads MNIST gives the floor to subtract.
Speeds are also given as a ratio to MLP × bilinear (the paper's Fig. 3 default) measured in the same run.

Prints a table and writes the section "## Training steps per second (K = 128)" of docs/PERFORMANCE.md
(other sections are kept).

    .venv/bin/python bench/train_speed.py [--quick] [--threads N] [--windows 3] [--min-time 1] [--min-steps 5]
        [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/perf_doc.py
DOC = ROOT / "docs" / "PERFORMANCE.md"
HEADING = "## Training steps per second (K = 128)"
K = 128
WARMUP = 2

# label -> encoder section; the RealNVPs are the paper's (30 couplings, hidden 512).
ENCODERS = {
    "identity": {"name": "identity"},
    "mlp": {"name": "mlp"},
    "convnet": {"name": "convnet"},
    "residual-mlp": {"name": "residual-mlp"},
    "realnvp additive": {"name": "realnvp", "coupling": "additive", "layers": 30},
    "realnvp affine": {"name": "realnvp", "coupling": "affine", "layers": 30},
}
CRITICS = ["bilinear", "separable", "concat", "inner", "cosine"]
REFERENCE = ("mlp", "bilinear")
# --quick: every encoder and every critic at least once.
QUICK = [("mlp", c) for c in CRITICS] + [(e, "bilinear") for e in ENCODERS if e != "mlp"]


def trial_config(encoder: str, critic: str) -> dict:
    return {
        "data": {"name": "mnist"},
        "encoder": ENCODERS[encoder],
        "critic": {"name": critic},
        "estimator": {"name": "nce"},
        "train": {"steps": 1_000_000, "batch_size": K, "lr": 1e-4},
        "eval": {"every": 1_000_000, "probe": "none"},
        "seed": 0,
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------ child
def child(encoder: str | None, critic: str | None, threads: int | None, windows: int, min_time: float,
          min_steps: int) -> dict:
    """Runs in a fresh process; returns one JSON-able result. ``encoder`` None: the baseline."""
    import torch

    sys.path.insert(0, str(ROOT))
    if threads:
        torch.set_num_threads(threads)
    if encoder is None:  # what every combination pays before building a model
        from mimax.trainables.data import DATASETS

        DATASETS["mnist"](DATASETS["mnist"].Params())
        return {"rss_mib": peak_rss_mib(), "threads": torch.get_num_threads()}

    from mimax.trainables.loop import Trainer

    try:
        trainer = Trainer(trial_config(encoder, critic))
    except ValueError as exc:  # a ConfigError, or Adam's empty parameter list (identity × inner)
        return {"skip": "nothing to train" if "empty parameter list" in str(exc) else str(exc)}
    for _ in range(WARMUP):
        trainer.train_step()
    rates = []
    for _ in range(windows):
        steps, t0 = 0, time.perf_counter()
        while True:
            trainer.train_step()
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time and steps >= min_steps:
                break
        rates.append(steps / elapsed)
    return {
        "params": sum(trainer.start_record()["params"].values()),
        "rates": rates,
        "rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


def run_child(encoder: str | None, critic: str | None, args) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([encoder, critic]),
           "--windows", str(args.windows), "--min-time", str(args.min_time), "--min-steps", str(args.min_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skip": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- report
def speed_of(result: dict) -> float:
    """Median steps/s over the windows: a burst from another job spoils one window, not the figure."""
    return statistics.median(result["rates"])


def write_section(text: str) -> None:
    """Replace only this benchmark's section of docs/PERFORMANCE.md (``text`` starts with its heading)."""
    from perf_doc import write_section as replace_section

    heading, _, body = text.partition("\n")
    replace_section(heading.removeprefix("## ").strip(), body)


def table(rows: list[tuple[str, str, dict]], base_rss: float, ref_speed: float | None) -> str:
    lines = [
        "| encoder | critic | parameters | steps/s | ms/step | vs mlp × bilinear | peak RSS MiB | above baseline MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for enc, crit, r in rows:
        if "skip" in r:
            lines.append(f"| {enc} | {crit} | 0 | — | — | — | — | — ({r['skip']}) |")
            continue
        speed = speed_of(r)
        ratio = "—" if ref_speed is None else f"{speed / ref_speed:.2f}×"
        cells = [enc, crit, f"{r['params']:,}", f"{speed:.1f}", f"{1000 / speed:.1f}", ratio,
                 f"{r['rss_mib']:.0f}", f"{r['rss_mib'] - base_rss:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset: mlp × every critic, every encoder × bilinear")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each run (default: torch's)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per combination (median steps/s)")
    ap.add_argument("--min-time", type=float, default=1.0, help="each window lasts at least this many s")
    ap.add_argument("--min-steps", type=int, default=5, help="... and at least this many steps")
    ap.add_argument("--no-write", action="store_true", help=f"print only; leave {DOC.relative_to(ROOT)} alone")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.windows < 1 or args.min_steps < 1 or args.min_time < 0:
        ap.error("--windows and --min-steps must be >= 1, --min-time >= 0")

    if args.child:
        enc, crit = json.loads(args.child)
        print(json.dumps(child(enc, crit, args.threads, args.windows, args.min_time, args.min_steps)))
        return

    combos = QUICK if args.quick else [(e, c) for e in ENCODERS for c in CRITICS]
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    base = run_child(None, None, args)
    if "skip" in base:
        sys.exit(f"baseline run {base['skip']}")
    rows = []
    for enc, crit in combos:
        r = run_child(enc, crit, args)
        rows.append((enc, crit, r))
        speed = "—" if "skip" in r else f"{speed_of(r):.1f} steps/s, {r['rss_mib']:.0f} MiB"
        print(f"{enc:>16} × {crit:<9} {r.get('skip', speed)}", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - t_start
    load_after = os.getloadavg()[0]

    ref = next((r for e, c, r in rows if (e, c) == REFERENCE and "skip" not in r), None)
    ref_speed = None if ref is None else speed_of(ref)
    text = table(rows, base["rss_mib"], ref_speed)
    print(text)

    import torch

    from perf_doc import cpu_model

    model, cores = cpu_model(), os.cpu_count() or 1
    threads = base["threads"]
    # Our own runs keep about `threads` cores busy, so the 1-minute average after includes them.
    others = max(load_before, load_after - threads)
    busy = others > 0.25 * cores
    note = (
        "\n\nThe load average says other jobs shared the CPU: these speeds are low and noisy.\nRe-run on a quiet"
        " machine for figures to quote." if busy else ""
    )
    subset = " (`--quick`: a subset)" if args.quick else ""
    skipped = sorted(f"{e} × {c}" for e, c, r in rows if r.get("skip") == "nothing to train")
    nothing = f" {' and '.join(skipped)}: nothing to train." if skipped else ""
    section = f"""{HEADING}

Measured by `bench/train_speed.py`{subset} on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC;
{model}, {cores} cores, torch {threads} threads; Python {platform.python_version()}, torch {torch.__version__};
load average {load_before:.2f} before and {load_after:.2f} after; {total_s:.0f} s in all.{note}

One training step: draw K = {K} pairs of MNIST halves, g1 and g2, the critic's K × K scores, InfoNCE,
backward, Adam (lr 1e-4). After {WARMUP} warm-up steps each combination is timed in {args.windows} windows of
≥ {args.min_time:g} s and ≥ {args.min_steps} steps; steps/s is the median window. Parameters: g1 + g2 + critic.
Peak RSS: `ru_maxrss` of a fresh process per combination; the baseline (torch imported, MNIST loaded, no
model) is {base['rss_mib']:.0f} MiB. The RealNVPs are the paper's: 30 couplings, hidden 512.{nothing}

{text}
"""
    if not args.no_write:
        write_section(section)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
