"""Linear probe benchmark: the ``torch`` probe against the paper's ``sklearn`` probe, in the same run.

Features: MNIST top halves, raw (392 wide), and a fixed random ReLU projection of them to 100 wide
(the width of the paper's encoders; weights N(0, 1/392), seed 0). Both probes fit all 60,000 training
rows and score the 10,000 test rows. Prints a table and writes the section
"## Linear probe: torch vs sklearn" of docs/PERFORMANCE.md (other sections are kept).

    .venv/bin/python bench/probe.py [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mimax.trainables.data import DATASETS  # noqa: E402
from mimax.trainables.probes import PROBES  # noqa: E402

DOC = ROOT / "docs" / "PERFORMANCE.md"
HEADING = "## Linear probe: torch vs sklearn"


def features() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    data = DATASETS["mnist"](DATASETS["mnist"].Params())
    x_tr, y_tr, x_te, y_te = data.probe_data(torch.Generator().manual_seed(0))
    w = torch.randn(392, 100, generator=torch.Generator().manual_seed(0)) / 392**0.5
    return {
        "raw top halves": (x_tr, y_tr, x_te, y_te),
        "ReLU projection": (torch.relu(x_tr @ w), y_tr, torch.relu(x_te @ w), y_te),
    }


def timed(probe, arrays, repeats: int) -> tuple[float, float]:
    """(median seconds, accuracy) over ``repeats`` fits; the accuracy of every fit is the same."""
    times, acc = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        acc = probe.fit_score(*arrays)
        times.append(time.perf_counter() - t)
    return statistics.median(times), acc


def machine() -> str:
    from perf_doc import machine as cores

    return f"{cores()}, torch {torch.get_num_threads()} threads"


def write_section(text: str) -> None:
    """Replace only this benchmark's section of docs/PERFORMANCE.md (``text`` starts with its heading)."""
    from perf_doc import write_section as replace_section

    heading, _, body = text.partition("\n")
    replace_section(heading.removeprefix("## ").strip(), body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="fits per probe and feature set (median time)")
    ap.add_argument("--no-write", action="store_true", help=f"print only; leave {DOC.relative_to(ROOT)} alone")
    args = ap.parse_args()

    sk = PROBES["sklearn"](PROBES["sklearn"].Params())
    th = PROBES["torch"](PROBES["torch"].Params())
    sets = features()
    load_before = os.getloadavg()[0]
    th.fit_score(*sets["ReLU projection"])  # warm-up (first-call allocations)
    rows = []
    for label, arrays in sets.items():
        t_sk, a_sk = timed(sk, arrays, args.repeats)
        t_th, a_th = timed(th, arrays, args.repeats)
        rows.append((label, arrays[0].shape[1], t_sk, t_th, t_sk / t_th, a_sk, a_th, 100 * (a_th - a_sk)))
    load_after = os.getloadavg()[0]

    header = "| features | width | sklearn s | torch s | speed-up | sklearn acc | torch acc | diff (points) |"
    lines = [header, "|" + "---|" * 8]
    for label, width, t_sk, t_th, ratio, a_sk, a_th, diff in rows:
        cells = [label, width, f"{t_sk:.2f}", f"{t_th:.3f}", f"{ratio:.1f}×", f"{a_sk:.4f}", f"{a_th:.4f}", f"{diff:+.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines)
    print(table)

    settings = lambda p: ", ".join(f"{k}={v}" for k, v in p.settings().items())  # noqa: E731
    section = f"""{HEADING}

Measured by `bench/probe.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()};
Python {platform.python_version()}, torch {torch.__version__}, scikit-learn {__import__("sklearn").__version__};
load average {load_before:.2f} before and {load_after:.2f} after (other jobs on the machine slow both probes,
the multi-threaded torch one more). Median of {args.repeats} fits; fit on all 60,000 MNIST training rows,
accuracy on the 10,000 test rows. "ReLU projection" is relu(x @ W), W ~ N(0, 1/392) (seed 0), 392 -> 100.

{table}

- sklearn: {settings(sk)}
- torch: {settings(th)}
"""
    if not args.no_write:
        write_section(section)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
