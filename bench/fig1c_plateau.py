"""Fig. 1c diagnostic: does the adversarial game move the encoder, and what does each probe see?

Plays the `fig1c-adversarial` game (affine RealNVP g1, 30 couplings × 512; linear classifier 392 -> 10,
lr 1e-3; encoder lr 1e-5; warm-up, then rounds of 10 classifier steps + 1 encoder step) and records,
every ``--every`` rounds:

- ``perm_residual``: how far g1 is from a per-coordinate-scaled permutation of the pixels. Output j of the
  RealNVP holds input pixel idx[j] (the composition of its permutations); the residual is the fraction of
  Var(g1(x)_j) that an affine function of that one pixel leaves unexplained, over 2,000 training images
  (median, 99th percentile, max over the outputs whose pixel varies). A MinMax-scaled linear probe is
  invariant to exactly that map, so residual ≈ 0 means the probe sees the pixels;
- ``grads``: the encoder gradient of the last encoder step, per coupling-net layer (first, middle, last
  Linear of every coupling, pooled): RMS, median |g| and the fraction of entries above Adam's ε = 1e-8;
  Adam's moments: the uncorrected √v (TF1 adds ε̂ to it) and the corrected √v̂, and the step Adam takes
  in units of lr with ε (``step_rms``) and without (``step_no_eps_rms``); ``update_rms_over_lr``: the RMS
  change of those weights over the round, in units of the learning rate; their RMS value;
- ``classifier_accuracy``: the adversary's classifier on the 10,000 test images;
- ``round_s`` / ``round_cpu_s``: wall and CPU seconds of the last round (10 classifier steps + 1 encoder step).

Every ``--probe-every`` rounds it also fits probes on g1's features, all scored on the 10,000 test images:
the ``torch`` probe as budget `cpu` ran it before (max_iter 10 on the first 10,000 training images) and as
the presets run it now (max_iter 100 on all 60,000), each also without the outputs that come from pixels
constant over the training images (``*_varying``); ``--probe-every 0``: no probes; ``--paper`` adds the paper's saga probe at the last round; ``--pixels`` first fits the
same probes on the raw pixels (round −1). It counts the outputs from constant pixels that vary (the
couplings' shifts move them; MinMax scales any range to [0, 1]).

    .venv/bin/python bench/fig1c_plateau.py --seed 0 --rounds 201 --warmup 300 --out docs/diagnostics/x.jsonl
        [--adam tf1|torch] [--init tf|torch] [--every 10] [--probe-every 40] [--pixels] [--paper]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mimax.trainables.probes import PROBES  # noqa: E402

EPS = 1e-8


def game(seed: int, warmup: int, init: str, adam: str, layers: int, hidden: int):
    """The fig1c game on mimax's trainer (one seed): (trainer, g1, classifier, the encoder's Adam, play a round)."""
    from mimax.trainables.loop import Trainer

    cfg = {"data": {"name": "mnist"}, "encoder": {"name": "realnvp", "coupling": "affine", "layers": layers,
                                                  "hidden": hidden},
           "init": init, "train": {"mode": "adversarial", "steps": 10**6, "batch_size": 128, "adam": adam},
           "adversarial": {"warmup": warmup, "classifier_steps": 10, "classifier_lr": 1e-3, "encoder_lr": 1e-5},
           "eval": {"every": 10**6, "probe": "none"}, "seed": seed}
    trainer = Trainer(cfg)
    g1, classifier = (trainer.stacks[n].module for n in ("g1", "classifier"))  # one seed: the plain modules
    return trainer, g1, classifier, trainer.mode.opt, lambda: float(trainer.train_step()[0])


def composed_permutation(g1) -> torch.Tensor:
    """idx with g1(x)[:, j] built from x[:, idx[j]] (couplings keep positions; each layer then permutes)."""
    idx = torch.arange(g1.view.dim)
    for perm in g1.perms:
        idx = idx[perm.cpu()]
    return idx


@torch.no_grad()
def perm_residual(g1, x: torch.Tensor, idx: torch.Tensor) -> dict:
    f = g1(x).double()
    p = x[:, idx].double()
    keep = p.std(0) > 0
    f, p = f[:, keep], p[:, keep]
    fc, pc = f - f.mean(0), p - p.mean(0)
    slope = (fc * pc).sum(0) / (pc * pc).sum(0)
    resid = ((fc - slope * pc) ** 2).sum(0) / (fc * fc).sum(0).clamp_min(1e-300)
    q = torch.quantile(resid, torch.tensor([0.5, 0.99], dtype=resid.dtype))
    return {"median": float(q[0]), "p99": float(q[1]), "max": float(resid.max()), "n_outputs": int(keep.sum()),
            "slope_log_median": float(slope.abs().log().median())}


def layer_stats(g1, opt, before: dict[str, torch.Tensor] | None, lr: float) -> dict:
    """Gradient, Adam moments, update and weight sizes, pooled over each position (Linear 0, 1, 2) of the
    couplings. ``step_rms``: RMS of the step Adam took, m̂ / (√v̂ + ε_t), in units of lr; ``step_no_eps_rms``:
    the same without ε (≈ 1 when the gradients are consistent): their ratio is what ε costs."""
    out = {}
    params = dict(g1.named_parameters())
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    for pos in (0, 2, 4):  # nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)
        names = [f"nets.{i}.{pos}.weight" for i in range(len(g1.nets))]
        g = torch.cat([params[n].grad.flatten() for n in names]).double()
        w = torch.cat([params[n].detach().flatten() for n in names]).double()
        row = {"grad_rms": float(g.pow(2).mean().sqrt()), "grad_median_abs": float(g.abs().median()),
               "frac_grad_above_eps": float((g.abs() > EPS).double().mean()), "weight_rms": float(w.pow(2).mean().sqrt())}
        states = [opt.state[params[n]] for n in names]
        if states[0]:
            t = float(states[0]["step"])
            v = torch.cat([s["exp_avg_sq"].flatten() for s in states]).double()
            m_hat = torch.cat([s["exp_avg"].flatten() for s in states]).double() / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            row.update({
                "adam_t": t, "eps_t": group["eps"],
                "sqrt_v_rms": float(v.mean().sqrt()),  # uncorrected: TF1 adds ε̂ to this
                "frac_sqrt_v_above_eps": float((v.sqrt() > EPS).double().mean()),
                "sqrt_vhat_rms": float(v_hat.mean().sqrt()),
                "step_rms": float((m_hat / (v_hat.sqrt() + group["eps"])).pow(2).mean().sqrt()),
                # where v is non-zero (float32 underflows it for the smallest gradients)
                "step_no_eps_rms": float((m_hat / v_hat.sqrt())[v > 0].pow(2).mean().sqrt()),
            })
        if before is not None:
            d = torch.cat([(params[n].detach() - before[n]).flatten() for n in names]).double()
            row["update_rms_over_lr"] = float(d.pow(2).mean().sqrt()) / lr
        out[["first", "middle", "last"][pos // 2]] = row
    return out


@torch.no_grad()
def features(g1, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([g1(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def probes(f_tr, y_tr, f_te, y_te, from_constant: torch.Tensor, paper: bool) -> dict:
    """Accuracies on the 10,000 test images of the torch probe as the old budget `cpu` ran it (max_iter 10,
    the first 10,000 training images) and as the presets run it now (max_iter 100, all 60,000); ``*_varying``:
    without the outputs that come from pixels constant over the training images (``from_constant``); with
    ``paper``, the paper's saga probe on 60,000."""
    out = {}
    runs = [("torch10_10k", 10, 10_000, False), ("torch10_10k_varying", 10, 10_000, True),
            ("torch100_60k", 100, None, False), ("torch100_60k_varying", 100, None, True)]
    for label, max_iter, n, varying in runs:
        keep = ~from_constant if varying else slice(None)
        probe = PROBES["torch"](PROBES["torch"].Params(max_iter=max_iter))
        t = time.perf_counter()
        acc = probe.fit_score(f_tr[:n, keep], y_tr[:n], f_te[:, keep], y_te)
        out[label] = {"accuracy": acc, "seconds": time.perf_counter() - t}
    if paper:
        t = time.perf_counter()
        acc = PROBES["sklearn"](PROBES["sklearn"].Params()).fit_score(f_tr, y_tr, f_te, y_te)
        out["paper_60k"] = {"accuracy": acc, "seconds": time.perf_counter() - t}
    # The outputs from constant pixels: constant in the pixels, but the couplings' shifts (functions of
    # other pixels) make them vary a little, and MinMax scales whatever varies to [0, 1].
    rng = f_tr.amax(0) - f_tr.amin(0)
    out["features"] = {"constant": int((rng == 0).sum()), "from_constant_pixels": int(from_constant.sum()),
                       "from_constant_pixels_varying": int((rng[from_constant] > 0).sum()),
                       "from_constant_pixels_range_max": float(rng[from_constant].max()),
                       "other_range_median": float(rng[~from_constant].median())}
    return out


def time_rounds(args) -> None:
    """Seconds per round, wall and CPU (the process's, all threads): CPU time is what a quiet machine's
    wall time would be with one thread, and it is far less disturbed by other jobs than wall time."""
    *_, play = game(args.seed, 10, args.init, args.adam, args.layers, args.hidden)
    for _ in range(5):
        play()
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.timing):
        play()
    rec = {"timing_rounds": args.timing, "threads": args.threads, "couplings": args.layers, "hidden": args.hidden,
           "round_wall_s": (time.perf_counter() - wall) / args.timing, "round_cpu_s": (time.process_time() - cpu) / args.timing,
           "load_before": load, "load_after": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(rec))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=201)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--probe-every", type=int, default=40)
    ap.add_argument("--init", default="tf", choices=["tf", "torch"])
    ap.add_argument("--adam", default="tf1", choices=["tf1", "torch"], help="train.adam (the preset's: tf1)")
    ap.add_argument("--paper", action="store_true", help="also the paper's saga probe (60k) at the last round")
    ap.add_argument("--pixels", action="store_true", help="first, the probes on the raw pixels (round -1)")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timing", type=int, default=0, metavar="N",
                    help="only time N rounds after a 10-step warm-up and 5 untimed rounds (wall and CPU seconds)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.timing:
        return time_rounds(args)

    trainer, g1, classifier, opt, play = game(args.seed, args.warmup, args.init, args.adam, args.layers, args.hidden)
    x_tr, y_tr, x_te, y_te = trainer.data.probe_data(torch.Generator().manual_seed(0))
    idx = composed_permutation(g1)
    constant = x_tr.amax(0) == x_tr.amin(0)  # pixels constant over the training images
    from_constant = constant[idx]  # output j comes from a constant pixel
    sample = x_tr[torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(1))[:2000]]
    lr = opt.param_groups[0]["lr"]
    meta = {"seed": args.seed, "warmup": args.warmup, "init": args.init, "adam": args.adam,
            "couplings": args.layers, "hidden": args.hidden, "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:

        def emit(rec: dict) -> None:
            fh.write(json.dumps({**meta, **rec, "load": os.getloadavg()[0]}) + "\n")
            fh.flush()
            print(json.dumps(rec), flush=True)

        if args.pixels:  # the same probes on the pixels themselves (the identity encoder)
            emit({"round": -1, "pixels": True, **probes(x_tr, y_tr, x_te, y_te, constant, False)})
        g1.eval()
        rec = {"round": 0, "perm_residual": perm_residual(g1, sample, idx)}
        if args.probe_every:
            rec.update(probes(features(g1, x_tr), y_tr, features(g1, x_te), y_te, from_constant, False))
        emit(rec)
        for r in range(1, args.rounds + 1):
            before = {n: p.detach().clone() for n, p in g1.named_parameters()} if r % args.every == 0 else None
            t, cpu = time.perf_counter(), time.process_time()
            loss = play()
            round_s, round_cpu_s = time.perf_counter() - t, time.process_time() - cpu
            if r == 1:
                emit({"round": 1, "first_round_s_with_warmup": round_s, "first_round_cpu_s_with_warmup": round_cpu_s})
            if r % args.every and r != args.rounds:
                continue
            g1.eval()
            f_te = features(g1, x_te)
            with torch.no_grad():
                acc = float((classifier(f_te).argmax(1) == y_te).float().mean())
            rec = {"round": r, "round_s": round_s, "round_cpu_s": round_cpu_s, "encoder_loss": loss,
                   "classifier_accuracy": acc, "perm_residual": perm_residual(g1, sample, idx),
                   "grads": layer_stats(g1, opt, before, lr) if before is not None else None}
            if args.probe_every and (r % args.probe_every == 0 or r == args.rounds):
                rec.update(probes(features(g1, x_tr), y_tr, f_te, y_te, from_constant, args.paper and r == args.rounds))
            emit(rec)


if __name__ == "__main__":
    main()
