"""The GPU figures of docs/PERFORMANCE.md, measured in one short run on a lent GPU machine.

Stages, each under its own time limit; results go to OUT/gpu.json as they come, with the study database
(OUT/gpu.db, for `mimax analyze` afterwards) and nvidia-smi samples (OUT/smi.csv, one per second):

1. sanity: a pack of 4 trains 60 steps on CUDA, and one replicate matches the same seed alone.
2. in-process training steps/s on CUDA, MLP x bilinear x NCE: a lone Trainer vs a Trainer of 20 seeds.
3. fig3-critics at budget paper through `mimax launch` (6 configurations x 20 seeds x 21,000 steps) with
   the torch probe (bench/spaces/fig3-paper-gpu.yaml): packed (auto), 1/6 GPU per trial: wall time,
   trials/hour, GPU utilisation.
4. bench/spaces/fig3-short.yaml (the same grid, 1,000 steps, torch probe) packed (auto, 1/6 GPU) vs one
   trial per seed (--pack 1, 1/8 GPU): trials/hour of each; a run past its limit counts its finished trials.
5. (--steps-only) steps/s of one trial and of a pack of 20, NCE and NWJ, and of the pack with the per-step
   device waits it used to have (one loss per replicate, NWJ's negatives by boolean mask).
6. (--switches) bench/speed_switches.py on CUDA, a pack of 20 x 1,000 steps: fp32, bf16, torch.compile
   (default and reduce-overhead): steps/s and the final bound and probe of each.
7. dispatches (with 2): operator dispatches per training step from torch.profiler, one trial and a pack of
   20 (top-level aten calls, all aten calls, CUDA kernel launches): fewer operators, fewer launches.

The sanity stage also runs 30 training steps of the pack under ``torch.cuda.set_sync_debug_mode("error")``:
the step must not wait for the device. The spaces use the paper's protocol (``init: tf``, TF1's Adam) and
the torch probe at max_iter 100, the setting the protocol issue validated against the converged optimum.

Rehearse everything on the CPU first (tiny steps, the spaces' ``rehearse`` budget, no nvidia-smi):

    python3 bench/gpu.py --out /tmp/gpu-rehearse --device cpu --rehearse

    python3 bench/gpu.py --out DIR [--e2e-limit 330] [--short-limit 100]
    python3 bench/gpu.py --out DIR --steps-only   # stage 5 alone
    python3 bench/gpu.py --out DIR --switches     # stage 6 alone
    python3 bench/gpu.py --write A/gpu.json [B/gpu.json]  # here, afterwards: the PERFORMANCE.md section
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

MIMAX = [sys.executable, "-m", "mimax.cli"]
DEVICE = "cuda"  # --device
REHEARSE = False  # --rehearse: tiny steps and the spaces' rehearse budget, to debug the script off the GPU
TITLE = "GPU: packed replicates and fig3-critics at budget paper"


class Run:
    def __init__(self, out: Path):
        self.out, self.res = out, {"stages": {}}
        self.db = Path("/tmp/mimax-gpu/gpu.db")
        self.db.parent.mkdir(parents=True, exist_ok=True)
        (out / "smi.csv").write_text("")
        self.smi = None if not shutil.which("nvidia-smi") else subprocess.Popen(
            ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-l", "1"], stdout=open(out / "smi.csv", "w"), stderr=subprocess.DEVNULL)

    def save(self) -> None:
        (self.out / "gpu.json").write_text(json.dumps(self.res, indent=1))
        if self.db.exists():
            shutil.copy(self.db, self.out / "gpu.db")

    def close(self) -> None:
        if self.smi:
            self.smi.terminate()
        self.save()

    def stage(self, name, fn, *args):
        t0, u0 = time.time(), _util_mark(self.out)
        print(f"== {name}", flush=True)
        try:
            r = fn(*args)
        except Exception as exc:  # keep going: the next stage may still work
            r = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        r["wall_s"] = round(time.time() - t0, 1)
        r["gpu_util_mean"] = _util_since(self.out, u0)
        self.res["stages"][name] = r
        print(json.dumps(r), flush=True)
        self.save()
        return r


def _util_mark(out: Path) -> int:
    return sum(1 for _ in open(out / "smi.csv"))


def _util_since(out: Path, mark: int) -> float | None:
    rows = [line.split(",") for line in open(out / "smi.csv").read().splitlines()[mark:]]
    vals = [float(r[1]) for r in rows if len(r) == 3 and r[1].strip().replace(".", "").isdigit()]
    return round(sum(vals) / len(vals), 1) if vals else None


def environment() -> dict:
    import torch

    smi = "no nvidia-smi (rehearsal on " + DEVICE + ")" if not shutil.which("nvidia-smi") else subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True).stdout.strip()
    return {"gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "python": sys.version.split()[0]}


def trial(critic: str = "bilinear", steps: int = 60, every: int = 30, probe="none") -> dict:
    return {"data": {"name": "mnist"}, "encoder": {"name": "mlp"}, "critic": {"name": critic},
            "estimator": {"name": "nce"}, "init": "tf",
            "train": {"steps": steps, "batch_size": 128, "lr": 1e-4, "adam": "tf1"},
            "eval": {"every": every, "probe": probe, "bound_batches": 5}}


def sync() -> None:
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def no_host_syncs(trainer, steps: int = 30) -> str:
    """'none' when ``steps`` training steps run under the sync debug mode "error", else what waited."""
    import torch

    if not DEVICE.startswith("cuda"):
        return "not checked (no CUDA)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            trainer.train_step()
        return "none"
    except RuntimeError as exc:
        return str(exc).splitlines()[0][:300]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sanity() -> dict:
    import torch

    from mimax.trainables.loop import Trainer

    assert DEVICE != "cuda" or torch.cuda.is_available(), "no CUDA device"
    cfg = trial(probe={"name": "torch", "max_iter": 100})
    packed = list(Trainer(cfg, [0, 1, 2, 3], device=DEVICE).run())
    alone = [rec for (rec,) in Trainer(dict(cfg, seed=2), device=DEVICE).run()]
    syncs = no_host_syncs(Trainer(trial(steps=10**6, every=10**6), list(range(20)), device=DEVICE))
    last_pack, last_alone = packed[-1][2], alone[-1]
    return {"pack_bound_test": last_pack["bound_test"], "alone_bound_test": last_alone["bound_test"],
            "pack_probe": last_pack["probe_accuracy"], "alone_probe": last_alone["probe_accuracy"],
            "bound_diff": abs(last_pack["bound_test"] - last_alone["bound_test"]), "host_syncs_in_step": syncs}


def steps_per_s(make, steps: int = 300) -> float:
    steps = 10 if REHEARSE else steps
    t = make()
    for _ in range(3 if REHEARSE else 20):
        t.train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        t.train_step()
    sync()
    return steps / (time.perf_counter() - t0)


def dispatches(steps: int = 5) -> dict:
    """Operators per training step (torch.profiler), one trial and a pack of 20: the launch-bound proxy."""
    from torch.profiler import ProfilerActivity, profile

    from mimax.trainables.loop import Trainer

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.startswith("cuda") else [])
    out = {}
    for label, seeds in (("one", None), ("pack20", list(range(20)))):
        t = Trainer(trial(steps=10**6, every=10**6), seeds, device=DEVICE)
        for _ in range(3):
            t.train_step()
        sync()
        with profile(activities=acts) as prof:
            for _ in range(steps):
                t.train_step()
            sync()
        events = prof.events()
        aten = [e for e in events if e.name.startswith("aten::")]
        out[label] = {"aten_top_per_step": round(sum(e.cpu_parent is None for e in aten) / steps, 1),
                      "aten_all_per_step": round(len(aten) / steps, 1),
                      "kernel_launches_per_step": round(sum(e.name in ("cudaLaunchKernel", "cuLaunchKernel")
                                                            for e in events) / steps, 1)}
    return out


def in_process() -> dict:
    from mimax.trainables.loop import Trainer

    out = {}
    for critic in ("bilinear", "concat"):
        cfg = trial(critic, steps=10**6, every=10**6)  # train_step alone: no evaluation
        one = steps_per_s(lambda: Trainer(dict(cfg, seed=0), device=DEVICE))
        pack = steps_per_s(lambda: Trainer(cfg, list(range(20)), device=DEVICE))
        out[critic] = {"one_steps_s": round(one, 1), "pack20_steps_s": round(pack, 1),
                       "replicate_steps_s_ratio": round(20 * pack / one, 2)}
    return out


def step_paths() -> dict:
    """Steps/s of a pack of 20 on CUDA as built, and with the two per-step waits it used to have: one
    loss per replicate (no vmap) and NWJ's negatives picked by a boolean mask (a device sync per call)."""
    import mimax.trainables.estimators as est_mod
    import mimax.trainables.modes as modes
    from mimax.trainables.loop import Trainer

    import torch

    def masked(scores):
        k = scores.shape[0]
        return scores[~torch.eye(k, dtype=torch.bool, device=scores.device)]

    out = {}
    for estimator in ("nce", "nwj"):
        cfg = dict(trial(steps=10**6, every=10**6), estimator={"name": estimator})
        out[estimator] = {"one": round(steps_per_s(lambda: Trainer(dict(cfg, seed=0), device=DEVICE)), 1),
                          "pack20": round(steps_per_s(lambda: Trainer(cfg, list(range(20)), device=DEVICE)), 1)}

        def old_pack():
            stateless, modes.stateless = modes.stateless, lambda estimator: False  # one loss per replicate
            try:
                return Trainer(cfg, list(range(20)), device=DEVICE)
            finally:
                modes.stateless = stateless

        fresh = est_mod._off_diagonal
        est_mod._off_diagonal = masked
        try:
            out[estimator]["pack20_unvmapped_masked"] = round(steps_per_s(old_pack), 1)
        finally:
            est_mod._off_diagonal = fresh
    return out


def switches() -> dict:
    import speed_switches as sw

    return {name: sw.measure(DEVICE, 20 if REHEARSE else 1000, 20, train) for name, train in sw.variants(DEVICE).items()}


def launch(space: str, name: str, limit: float, *extra: str) -> dict:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log = Path(f"/tmp/mimax-gpu/{name}.log")
    t0 = time.perf_counter()
    with open(log, "w") as fh:  # a file, not a pipe: Ray's daemons inherit it and outlive a killed driver
        p = subprocess.Popen([*MIMAX, "launch", space, "--name", name, "--db", f"sqlite:///{Run.db_path}",
                              "--results-dir", "/tmp/mimax-gpu/res", "--quiet", *extra],
                             env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        wall = time.perf_counter() - t0
    if timed_out:  # the study stays resumable; its Ray daemons must not load the next stage. Only this
        # launch's session: `ray stop` would also stop every other Ray on the machine
        subprocess.run(["pkill", "-KILL", "-s", str(p.pid)], capture_output=True, timeout=60)
    text = log.read_text(errors="replace")
    st = subprocess.run([*MIMAX, "status", name, "--db", f"sqlite:///{Run.db_path}", "--json"],
                        capture_output=True, text=True)
    status = json.loads(st.stdout) if st.returncode == 0 else {"error": st.stderr[-500:]}
    done = (status.get("states") or {}).get("completed", 0)
    return {"name": name, "args": list(extra), "rc": p.returncode, "timed_out": timed_out, "launch_wall_s": round(wall, 1),
            "completed": done, "total": status.get("total"), "trials_per_hour": round(done * 3600 / wall),
            "tail": (text or "")[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--e2e-limit", type=float, default=330)
    ap.add_argument("--short-limit", type=float, default=100)
    ap.add_argument("--steps-only", action="store_true", help="only the step_paths stage")
    ap.add_argument("--switches", action="store_true", help="only the speed switches stage")
    ap.add_argument("--write", nargs="+", help="gpu.json of earlier runs (on one kind of GPU): write the section")
    ap.add_argument("--device", default="cuda", help="cpu to rehearse the script without a GPU")
    ap.add_argument("--rehearse", action="store_true", help="tiny steps, the spaces' rehearse budget, short limits")
    args = ap.parse_args()
    global DEVICE, REHEARSE
    DEVICE, REHEARSE = args.device, args.rehearse
    if args.write:
        runs = [json.loads(Path(p).read_text()) for p in args.write]
        return write({"environment": runs[0]["environment"],
                      "stages": {k: v for r in runs for k, v in r["stages"].items()}}, args.write)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out)
    Run.db_path = run.db
    run.res["environment"] = environment()
    run.save()
    if args.steps_only or args.switches:
        run.stage(*(("step_paths", step_paths) if args.steps_only else ("switches", switches)))
        return run.close()
    if "error" in run.stage("sanity", sanity):
        return
    run.stage("in_process", in_process)
    run.stage("dispatches", dispatches)
    short = str(ROOT / "bench" / "spaces" / "fig3-short.yaml")
    cpus = ["--cpus-per-trial", "2"] + (["--budget", "rehearse"] if REHEARSE else [])

    def gpus(share: str) -> list[str]:  # no GPU resource to ask Ray for in a CPU rehearsal
        return ["--gpus-per-trial", share] if DEVICE.startswith("cuda") else []

    paper = str(ROOT / "bench" / "spaces" / "fig3-paper-gpu.yaml")
    run.stage("fig3_paper_packed", launch, paper, "fig3-paper", args.e2e_limit,
              "--pack", "auto", *gpus("0.16"), *cpus)
    run.stage("short_packed", launch, short, "short-packed", args.short_limit,
              "--pack", "auto", *gpus("0.16"), *cpus)
    run.stage("short_unpacked", launch, short, "short-unpacked", args.short_limit,
              "--pack", "1", *gpus("0.125"), *cpus)
    run.close()


def write(res: dict, sources: list[str]) -> None:
    from perf_doc import write_section

    s, env = res["stages"], res["environment"]
    rows = []
    ip = s.get("in_process", {})
    for critic in ("bilinear", "concat"):
        if critic in ip:
            r = ip[critic]
            rows.append((f"stage 2, MLP × {critic} × NCE: steps/s, one trial / pack of 20 (replicate-steps ratio)",
                         f"{r['one_steps_s']} / {r['pack20_steps_s']} ({r['replicate_steps_s_ratio']}×)"))
    sp = s.get("step_paths", {})
    for est in ("nce", "nwj"):
        if est in sp:
            r = sp[est]
            rows.append((f"stage 5, MLP × bilinear × {est.upper()}: steps/s, one trial / pack of 20 / pack of 20 "
                         "with the old per-step waits", f"{r['one']} / {r['pack20']} / {r['pack20_unvmapped_masked']} "
                         f"(replicate-steps {20 * r['pack20'] / r['one']:.1f}×; the fix {r['pack20'] / r['pack20_unvmapped_masked']:.2f}×)"))
    for name, r in s.get("switches", {}).items():
        if isinstance(r, dict) and "steps_per_s" in r:
            rows.append((f"stage 6, pack of 20 × 1,000 steps, {name}: steps/s; test bound; probe",
                         f"{r['steps_per_s']:.1f}; {r['bound_mean']:.3f} ± {r['bound_sd']:.3f}; "
                         f"{r['probe_mean']:.4f} ± {r['probe_sd']:.4f}"))
    e2e = s.get("fig3_paper_packed", {})
    if "completed" in e2e:
        rows.append(("stage 3, fig3-critics at the paper's scale, torch probe (120 trials × 21,000 steps), packed: "
                     "wall (s), trials completed, GPU util %",
                     f"{e2e['launch_wall_s']} s{' (limit reached)' if e2e['timed_out'] else ''}, "
                     f"{e2e['completed']}/{e2e['total']}, {e2e['gpu_util_mean']}"))
    spk, su = s.get("short_packed", {}), s.get("short_unpacked", {})
    if "completed" in spk and "completed" in su:
        for label, r in (("packed (auto, 1/6 GPU)", spk), ("one trial per seed (1/8 GPU)", su)):
            rows.append((f"stage 4, fig3-short (120 trials × 1,000 steps), {label}: wall (s), completed, trials/hour, "
                         "GPU util %", f"{r['launch_wall_s']} s{' (limit reached)' if r['timed_out'] else ''}, "
                         f"{r['completed']}/{r['total']}, {r['trials_per_hour']}, {r['gpu_util_mean']}"))
        if su["trials_per_hour"]:
            rows.append(("stage 4 speed-up, packed / one trial per seed (target ≥ 10×)",
                         f"{spk['trials_per_hour'] / su['trials_per_hour']:.1f}×"))
    body = "\n".join([
        f"Measured by `bench/gpu.py` on {env['gpu']}, {env['cpus']} CPUs, torch {env['torch']} (CUDA {env['cuda']}), "
        f"Python {env['python']}; raw results: {', '.join(f'`{p}`' for p in sources)}. Each run's numbers come "
        "from that run; GPU utilisation is the mean of nvidia-smi's one-second samples over the stage. Stages 3 "
        "and 4 are whole `mimax launch` commands with 2 CPUs per trial.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
    ])
    write_section(TITLE, body)
    print(body)


if __name__ == "__main__":
    main()
