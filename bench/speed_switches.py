"""The speed switches (train.precision, train.compile) against the default, on one device, in one run.

A pack of R seeds of MLP x bilinear x NCE (K = 128) on MNIST trains ``--steps`` steps in each variant
(fp32 eager, bf16, compiled; on CUDA also compiled with CUDA graphs) from the same seeds. For each: the
final test bound and probe accuracy (mean ± sd over the seeds, torch probe on all 60k images), the
steady training rate (steps/s after the first ``WARM`` steps, so compilation is left out) and its ratio
to fp32 eager, and the seconds spent before the first step was done (compilation included).

    .venv/bin/python bench/speed_switches.py [--device cpu|cuda] [--steps 2000] [--seeds 3] [--no-write]

Writes the section "Speed switches on <device>" of docs/PERFORMANCE.md unless ``--no-write``, and
``--json FILE`` keeps the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

WARM = 20


def config(steps: int, **train) -> dict:
    return {"data": {"name": "mnist"}, "encoder": {"name": "mlp"}, "critic": {"name": "bilinear"},
            "estimator": {"name": "nce"}, "train": {"steps": steps, "batch_size": 128, "lr": 1e-4, **train},
            "eval": {"every": steps, "probe": "torch"}}


def variants(device: str) -> dict[str, dict]:
    out = {"fp32": {}, "bf16": {"precision": "bf16"}, "compile": {"compile": "default"},
           "bf16 + compile": {"precision": "bf16", "compile": "default"}}
    if device.startswith("cuda"):
        out["compile reduce-overhead"] = {"compile": "reduce-overhead"}
    return out


def measure(device: str, steps: int, seeds: int, train: dict) -> dict:
    import torch

    from mimax.trainables.loop import Trainer

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    pack = Trainer(config(steps, **train), list(range(seeds)), device=device)
    t0 = time.perf_counter()
    records = []
    first = warm_at = None
    for recs in pack.run():  # step 0, then the last step
        records = recs
        if first is None:  # the step-0 evaluation: time the steps from here
            first = time.perf_counter()
    total = time.perf_counter() - first
    # The steady rate: a second short pack run timed step by step after its warm-up.
    pack2 = Trainer(config(10**6, **train), list(range(seeds)), device=device)
    for _ in range(WARM):
        pack2.train_step()
    sync()
    warm_at = time.perf_counter()
    n = max(50, min(steps, 500))
    for _ in range(n):
        pack2.train_step()
    sync()
    rate = n / (time.perf_counter() - warm_at)
    bounds = [r["bound_test"] for r in records]
    probes = [r["probe_accuracy"] for r in records]
    return {"bound_mean": statistics.mean(bounds), "bound_sd": statistics.stdev(bounds) if seeds > 1 else 0.0,
            "probe_mean": statistics.mean(probes), "probe_sd": statistics.stdev(probes) if seeds > 1 else 0.0,
            "steps_per_s": rate, "train_s": total, "start_s": first - t0}


def table(results: dict, device: str, steps: int, seeds: int, where: str) -> str:
    base = results["fp32"]["steps_per_s"]
    lines = [f"Measured {where}: a pack of {seeds} seeds of MLP x bilinear x NCE, K = 128, MNIST, {steps} steps "
             f"on `{device}`, torch probe on all 60k images; `python3 bench/speed_switches.py --device {device} "
             f"--steps {steps} --seeds {seeds}`. Evaluation is float32 and uncompiled in every variant.", "",
             "| variant | test bound (nats) | probe accuracy | steps/s (steady) | vs fp32 | s after step 0 (compile, training, last evaluation) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['bound_mean']:.3f} ± {r['bound_sd']:.3f} | {r['probe_mean']:.4f} ± "
                     f"{r['probe_sd']:.4f} | {r['steps_per_s']:.1f} | {r['steps_per_s'] / base:.2f}x | "
                     f"{r['train_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = {}
    for name, train in variants(args.device).items():
        results[name] = measure(args.device, args.steps, args.seeds, train)
        print(name, json.dumps({k: round(v, 4) for k, v in results[name].items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "steps": args.steps, "seeds": args.seeds,
                                               "results": results}, indent=1))
    import perf_doc

    where = f"{perf_doc.stamp()} on {perf_doc.machine()}"
    if args.device.startswith("cuda"):
        import torch

        where = f"{perf_doc.stamp()} on {torch.cuda.get_device_name()}"
    text = table(results, args.device, args.steps, args.seeds, where)
    print(text)
    if not args.no_write:
        perf_doc.write_section(f"Speed switches on {args.device.split(':')[0]}", text)


if __name__ == "__main__":
    main()
