"""Packed vs unpacked replicates through `mimax launch`, start-up costs included, measured in one run.

1. 8 seeds of MLP x bilinear x NCE on MNIST (bench/spaces/pack8.yaml): `--pack 8` vs `--pack 1`.
2. With --fig3: the fig3-critics preset at budget cpu, `--pack auto` vs `--pack 1`: trials per hour.
Writes the section "Packed replicates through mimax launch" of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from perf_doc import machine, stamp, write_section  # noqa: E402

MIMAX = [sys.executable, "-m", "mimax.cli"]


def launch(space: str, pack: str, tmp: str, *extra: str) -> float:
    # Both runs use both cores: one trial per seed runs two trials of 1 CPU at a time; a pack is one
    # trial, so it gets the 2 CPUs.
    extra = (*extra, "--cpus-per-trial", "1" if pack == "1" else "2")
    name = f"b{pack}{int(time.time() * 1000) % 10**8}"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    t0 = time.perf_counter()
    r = subprocess.run([*MIMAX, "launch", space, "--name", name, "--db", f"sqlite:///{tmp}/{name}.db",
                        "--results-dir", f"{tmp}/res", "--pack", pack, "--quiet", *extra],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fig3", action="store_true", help="also fig3-critics at budget cpu (tens of minutes)")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        space = str(Path(__file__).parent / "spaces" / "pack8.yaml")
        unpacked = launch(space, "1", tmp)
        packed = launch(space, "8", tmp)
        rows.append(("8 seeds, MLP × bilinear × NCE, 600 steps: one trial per seed (s)", f"{unpacked:.1f}"))
        rows.append(("8 seeds: one pack of 8 (s)", f"{packed:.1f}"))
        rows.append(("speed-up, pack / one trial per seed (target ≥ 1.3×)", f"{unpacked / packed:.2f}×"))
        if args.fig3:
            u = launch("fig3-critics", "1", tmp, "--budget", "cpu")
            p = launch("fig3-critics", "auto", tmp, "--budget", "cpu")
            rows.append(("fig3-critics, budget cpu (18 trials): trials/hour, one trial per seed", f"{18 * 3600 / u:.0f}"))
            rows.append(("fig3-critics, budget cpu: trials/hour, packed (auto)", f"{18 * 3600 / p:.0f}"))
            rows.append(("fig3-critics speed-up", f"{u / p:.2f}×"))
    load1 = os.getloadavg()[0]
    for a, b in rows:
        print(f"{a:<75} {b}")
    body = "\n".join([
        f"Measured by `bench/pack_launch.py{' --fig3' if args.fig3 else ''}` on {stamp()}; {machine()}; "
        f"load average {load0:.2f} before and {load1:.2f} after; one run, all numbers from it. "
        "Whole `mimax launch` commands (private Ray cluster start-up, scheduling, checkpoints and database "
        "writes included). One trial per seed: 1 CPU each, 2 at a time; packed: one trial with both CPUs.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
    ])
    write_section("Packed replicates through mimax launch", body)


if __name__ == "__main__":
    main()
