"""The single trainer against the trainers it replaced and against a bare PyTorch loop, in one run.

The trial: MNIST, MLP × bilinear × InfoNCE, K = 128, lr 1e-4, no probe (the paper's Fig. 3 model).

- (a) a lone trial (R = 1) and (b) a pack of 8 seeds, on the old trainers (commit ``--old``, b524cb7:
  its ``Trainer`` and ``PackedTrainer``, its ``mimax/`` package materialised with ``git archive`` into a
  temporary directory) and on the new ``Trainer(config, seeds)``;
- (c) the new lone trial against a bare PyTorch loop of the same model: two ``nn.Sequential`` MLPs
  392 → 300 → 300 → 100 (ReLU), a bilinear critic u W vᵀ, InfoNCE, ``torch.optim.Adam`` (its default
  implementation), K = 128 pairs drawn by index from the MNIST halves held as tensors, the draw mimax's
  datasets make (``randperm(60000)[:128]``: K distinct examples); training steps only, no evaluation, the
  loss never read.

What is timed, for the trainers: ``run()`` of a freshly built trainer to its end (the modules are built
and MNIST is loaded before the clock starts): ``--steps`` training steps and its evaluations at step 0,
every ``--every`` steps and at the end, each with the default bound evaluations (20 batches of K from
the training split and 20 from the test split), no probe; the host reads the losses every 100 steps.
That is ``mimax train``'s loop without the process start, the data load and the printing. For the bare
loop: its ``--steps`` steps. Steps/s = steps / wall time (for a pack: pack steps, each one step of
all 8 replicates); the process CPU time is recorded too, as a check that is less sensitive to other
jobs on the machine.

Each variant runs in its own long-lived process (PYTHONPATH = the old package or this checkout; the
same ``--threads`` torch threads for all), started once, warmed up with a short run, then asked for
one measurement at a time, in turn, over ``--rounds`` rounds: the variants interleave, so other load
on the machine spreads over all of them. Ratios are of the medians over rounds.

Prints the table and writes the section "Single trainer: old vs new vs bare" of docs/PERFORMANCE.md.

    .venv/bin/python bench/trainer_compare.py [--rounds 5] [--threads 1] [--steps 2000] [--every 1000]
        [--pack 8] [--pack-steps 200] [--old b524cb7] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
TITLE = "Single trainer: old vs new vs bare"
K = 128


def trial_config(steps: int, every: int) -> dict:
    return {
        "data": {"name": "mnist"},
        "encoder": {"name": "mlp"},
        "critic": {"name": "bilinear"},
        "estimator": {"name": "nce"},
        "train": {"steps": steps, "batch_size": K, "lr": 1e-4},
        "eval": {"every": every, "probe": "none"},
        "seed": 0,
    }


# ------------------------------------------------------------------------------ workers


def trainer_run(seeds: list[int], steps: int, every: int) -> dict:
    """Whichever mimax is on the path: the old trainers (a PackedTrainer for packs) or the new one."""
    import mimax
    from mimax.trainables.loop import Trainer

    cfg = trial_config(steps, every)
    try:
        from mimax.trainables.packed import PackedTrainer  # the old trainers
    except ImportError:
        trainer = Trainer(cfg, seeds)
    else:
        trainer = Trainer(dict(cfg, seed=seeds[0])) if len(seeds) == 1 else PackedTrainer(cfg, seeds)
    t0, c0 = time.perf_counter(), time.process_time()
    outputs = list(trainer.run())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    last = outputs[-1] if isinstance(outputs[-1], list) else [outputs[-1]]
    return {"wall": wall, "cpu": cpu, "steps": steps, "bound_test": [r["bound_test"] for r in last],
            "package": str(Path(mimax.__file__).parent)}


def load_mnist_halves():
    """The MNIST training images as two tensors of halves (top, bottom), pixels / 255."""
    import gzip

    import numpy as np
    import torch

    raw = gzip.open(ROOT / "mimax" / "trainables" / "data" / "mnist" / "train-images-idx3-ubyte.gz").read()
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    x = torch.from_numpy(images.copy()).float() / 255
    return x[:, :14].reshape(len(x), -1).contiguous(), x[:, 14:].reshape(len(x), -1).contiguous()


def bare_run(steps: int, halves) -> dict:
    import torch
    from torch import nn

    top, bottom = halves
    n = len(top)
    torch.manual_seed(0)

    def mlp():
        return nn.Sequential(nn.Linear(392, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 100))

    g1, g2 = mlp(), mlp()
    w = nn.Parameter(torch.empty(100, 100).uniform_(-0.1, 0.1))
    opt = torch.optim.Adam([*g1.parameters(), *g2.parameters(), w], lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:K]
        scores = (g1(top[idx]) @ w) @ g2(bottom[idx]).T
        loss = -(math.log(K) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "steps": steps, "loss": float(loss.detach())}


def worker(kind: str, threads: int) -> None:
    """Answer one JSON request per line of stdin with one JSON line: a warm-up, then measurements."""
    import torch

    torch.set_num_threads(threads)
    halves = load_mnist_halves() if kind == "bare" else None
    for line in sys.stdin:
        req = json.loads(line)
        if kind == "bare":
            out = bare_run(req["steps"], halves)
        else:
            out = trainer_run(req["seeds"], req["steps"], req["every"])
        print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------ driver


class Variant:
    def __init__(self, name: str, kind: str, path: Path, request: dict, threads: int):
        env = dict(os.environ, PYTHONPATH=str(path), MIMAX_DATA=str(ROOT / "mimax" / "trainables" / "data"), OMP_NUM_THREADS=str(threads))
        env.pop("PYTEST_XDIST_WORKER", None)
        self.name, self.request, self.results = name, request, []
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"{self.name}: the worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def measure(self) -> None:
        self.results.append(self.ask(self.request))

    def rate(self, key: str = "wall") -> float:
        return statistics.median(r["steps"] / r[key] for r in self.results)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000, help="lone trial and bare loop steps")
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--pack", type=int, default=8)
    ap.add_argument("--pack-steps", type=int, default=200)
    ap.add_argument("--old", default="b524cb7")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.threads)

    from perf_doc import machine, stamp, write_section

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "archive", args.old, "mimax"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        lone = {"seeds": [0], "steps": args.steps, "every": args.every}
        pack = {"seeds": list(range(args.pack)), "steps": args.pack_steps, "every": max(1, args.pack_steps // 2)}
        variants = [
            Variant("old lone", "trainer", Path(old), lone, args.threads),
            Variant("new lone", "trainer", ROOT, lone, args.threads),
            Variant("bare loop", "bare", ROOT, {"steps": args.steps}, args.threads),
            Variant(f"old pack of {args.pack}", "trainer", Path(old), pack, args.threads),
            Variant(f"new pack of {args.pack}", "trainer", ROOT, pack, args.threads),
        ]
        try:
            for v in variants:  # warm-up: first calls, allocator, caches
                got = v.ask({**v.request, "steps": 30, "every": 10})
                print(f"{v.name}: warm ({got.get('package', 'bare PyTorch')})", flush=True)
            for i in range(args.rounds):
                for v in variants:
                    v.measure()
                print(f"round {i + 1}: " + ", ".join(f"{v.name} {v.results[-1]['steps'] / v.results[-1]['wall']:.1f}"
                                                    for v in variants) + " steps/s", flush=True)
        finally:
            for v in variants:
                v.close()
    load_after = os.getloadavg()
    total = time.perf_counter() - t_start

    old_lone, new_lone, bare, old_pack, new_pack = variants
    ratios = {
        "new / old, lone trial (target ≥ 0.97)": (new_lone.rate() / old_lone.rate(),
                                                   new_lone.rate("cpu") / old_lone.rate("cpu")),
        f"new / old, pack of {args.pack} (target ≥ 0.97)": (new_pack.rate() / old_pack.rate(),
                                                            new_pack.rate("cpu") / old_pack.rate("cpu")),
        "new lone trial / bare loop (target ≥ 0.95)": (new_lone.rate() / bare.rate(),
                                                       new_lone.rate("cpu") / bare.rate("cpu")),
        "old lone trial / bare loop": (old_lone.rate() / bare.rate(), old_lone.rate("cpu") / bare.rate("cpu")),
    }
    rows = [(v.name, v.rate(), 1000 / v.rate(), v.rate("cpu"), ", ".join(f"{r['steps'] / r['wall']:.1f}" for r in v.results))
            for v in variants]
    for name, rate, ms, cpu_rate, each in rows:
        print(f"{name:<16} {rate:8.1f} steps/s {ms:7.2f} ms/step  (per CPU second {cpu_rate:.1f}; rounds: {each})")
    for name, (wall, cpu) in ratios.items():
        print(f"{name}: {wall:.3f} (CPU time: {cpu:.3f})")
    drift = max(abs(a - b) for a, b in zip(old_lone.results[-1]["bound_test"], new_lone.results[-1]["bound_test"]))
    print(f"lone trial's last test bound, old vs new: within {drift:.1e} nats; load {load_before[0]:.2f} -> "
          f"{load_after[0]:.2f}; {total:.0f} s in all")
    if args.no_write:
        return

    import torch

    busy = max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1)
    body = "\n".join([
        f"Measured by `bench/trainer_compare.py` on {stamp()}; {machine()}, torch {args.threads} thread(s) in "
        f"every variant; Python {platform.python_version()}, torch {torch.__version__}; load average "
        f"{load_before[0]:.2f} before and {load_after[0]:.2f} after; {args.rounds} rounds, {total:.0f} s in all.",
        "",
        *([
            "Other jobs shared the CPU (see the load average): the rates are low and noisy; the ratios, from "
            "variants that take turns, less so. Re-run on a quiet machine for figures to quote.",
            "",
        ] if busy else []),
        f"The trial: MNIST, MLP × bilinear × InfoNCE, K = {K}, lr 1e-4, no probe. Old: the `Trainer` and "
        f"`PackedTrainer` of commit `{args.old}`; new: `Trainer(config, seeds)`. A trainer's time is its "
        f"`run()` from a built trainer to the end: {args.steps} steps (a pack: {args.pack_steps}) with "
        f"evaluations at step 0, every {args.every} steps (a pack: {pack['every']}) and at the end, each the "
        "default bound evaluations (20 batches of K from each split), no probe. The bare loop: the same model "
        "in plain PyTorch (two `nn.Sequential` MLPs 392 → 300 → 300 → 100, u W vᵀ, InfoNCE, `torch.optim.Adam`, "
        f"`randperm(60000)[:{K}]` index draws from the halves held as tensors), {args.steps} training steps, no "
        "evaluation. Each variant lives in its own process; they take turns, one measurement each per round; "
        "the medians over rounds are shown.",
        "",
        "| variant | steps/s | ms/step | steps per CPU second |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {rate:.1f} | {ms:.2f} | {cpu_rate:.1f} |" for name, rate, ms, cpu_rate, _ in rows],
        "",
        "| ratio | wall time | CPU time |",
        "|---|---:|---:|",
        *[f"| {name} | **{wall:.3f}** | {cpu:.3f} |" for name, (wall, cpu) in ratios.items()],
        "",
        f"The old and the new lone trial end {drift:.0e} nats apart in their last test bound (the new trainer's "
        "fused Adam rounds within an ulp of the old unfused one, and Adam amplifies rounding over the steps).",
        "",
        "Where a lone trial's step goes (torch.profiler and per-step CPU time, one thread, measured on 2026-11-30 "
        "on this 2-core machine under load, so roughly): the matrix products are about three quarters; "
        "`torch.optim.Adam`'s default CPU implementation (a loop over the parameters) costs about 0.7 ms a step "
        "more than the fused one; running R = 1 through vmap and `functional_call` costs about 0.5 ms a step "
        "more than calling the plain modules; switching the modules to training mode at every step about "
        "25 µs. So a stack of one holds its plain modules, every trainer uses fused Adam, and the modes are "
        "switched only when they change. The index draw (`randperm` over the 60,000 training images, the "
        "datasets' protocol) is 0.2–0.3 ms a step in every variant, the bare loop's included.",
    ])
    write_section(TITLE, body)


if __name__ == "__main__":
    main()
