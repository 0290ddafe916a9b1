"""Fig. 1c diagnostic: does the adversarial game move the encoder, and what does each probe see?

Plays the `fig1c-adversarial` game (affine RealNVP g1, 30 couplings × 512; linear classifier 392 -> 10,
lr 1e-3; encoder lr 1e-5; warm-up, then rounds of 10 classifier steps + 1 encoder step) and records,
every ``--every`` rounds:

- ``perm_residual``: how far g1 is from a per-coordinate-scaled permutation of the pixels. Output j of the
  RealNVP holds input pixel idx[j] (the composition of its permutations); the residual is the fraction of
  Var(g1(x)_j) that an affine function of that one pixel leaves unexplained, over 2,000 training images
  (median, 99th percentile, max over the outputs whose pixel varies). A MinMax-scaled linear probe is
  invariant to exactly that map, so residual ≈ 0 means the probe sees the pixels;
- ``grad``: the encoder gradient of the last encoder step, per coupling-net layer (first, middle, last
  Linear of every coupling, pooled): RMS, median |g| and the fraction of entries above Adam's ε = 1e-8;
  the RMS of Adam's √v̂ likewise; ``update``: the RMS change of those weights over the round, in units of
  the learning rate (Adam's update is ≈ lr when √v̂ ≫ ε, ≈ lr·|g|/ε when √v̂ ≪ ε), and their RMS value;
- ``classifier_accuracy``: the adversary's classifier on the 10,000 test images;
- ``round_s``: seconds of the last round (10 classifier steps + 1 encoder step), measured alone.

Every ``--probe-every`` rounds it also fits probes on g1's features, all scored on the 10,000 test images:
the fast ``torch`` probe (10 iterations) on the first 10,000 and on all 60,000 training images and the same
probe run to convergence (max_iter 500, tol 0) on 60,000, each once on the features as they are and once on
features MinMax-scaled beforehand in float64 (``_prescaled``); the paper's saga probe on 60,000; with
``--oracle``, at the last round, the lbfgs optimum (tol 1e-6, float64) on 10,000 and 60,000. It counts the
features whose offset dwarfs their range (max |f| / (max f − min f) > 1e3), which MinMax blows up.

    .venv/bin/python bench/fig1c_plateau.py --seed 0 --rounds 201 --warmup 300 --out docs/diagnostics/x.jsonl
        [--tf1-eps] [--init tf|torch] [--every 10] [--probe-every 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mimax.trainables.init import apply_init  # noqa: E402
from mimax.trainables.optim import tf1_epsilon  # noqa: E402
from mimax.trainables.probes import PROBES  # noqa: E402

EPS = 1e-8


def game(seed: int, warmup: int, init: str, tf1_eps: bool, layers: int, hidden: int):
    """The one use of today's trainer: build the fig1c game; returns (trainer, play one round).

    ``trainer`` exposes g1, classifier, opt (the encoder's Adam) and the labelled arrays. The single
    trainer will take ``init`` and the Adam ε as config keys instead of these re-initialisations.
    """
    from mimax.trainables.loop import Trainer

    cfg = {"data": {"name": "mnist"}, "encoder": {"name": "realnvp", "coupling": "affine", "layers": layers,
                                                  "hidden": hidden},
           "train": {"mode": "adversarial", "steps": 10**6, "batch_size": 128},
           "adversarial": {"warmup": warmup, "classifier_steps": 10, "classifier_lr": 1e-3, "encoder_lr": 1e-5},
           "eval": {"every": 10**6, "probe": "none"}, "seed": seed}
    trainer = Trainer(cfg)
    torch.manual_seed(seed)
    apply_init(trainer.classifier, init)  # the encoder's layers are truncated normal under either init
    if tf1_eps:
        tf1_epsilon(trainer.opt)
        tf1_epsilon(trainer.cls_opt)
    return trainer, trainer.train_step


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
    """Gradient, Adam √v̂, update and weight sizes, pooled over each position (Linear 0, 1, 2) of the couplings."""
    out = {}
    for pos in (0, 2, 4):  # nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)
        names = [f"nets.{i}.{pos}.weight" for i in range(len(g1.nets))]
        params = dict(g1.named_parameters())
        g = torch.cat([params[n].grad.flatten() for n in names]).double()
        w = torch.cat([params[n].detach().flatten() for n in names]).double()
        row = {"grad_rms": float(g.pow(2).mean().sqrt()), "grad_median_abs": float(g.abs().median()),
               "frac_grad_above_eps": float((g.abs() > EPS).double().mean()), "weight_rms": float(w.pow(2).mean().sqrt())}
        states = [opt.state[params[n]] for n in names]
        if states[0]:
            t = float(states[0]["step"])
            beta2 = opt.param_groups[0]["betas"][1]
            v_hat = torch.cat([s["exp_avg_sq"].flatten() for s in states]).double() / (1 - beta2**t)
            row["sqrt_vhat_rms"] = float(v_hat.mean().sqrt())
            row["frac_sqrt_vhat_above_eps"] = float((v_hat.sqrt() > EPS).double().mean())
        if before is not None:
            d = torch.cat([(params[n].detach() - before[n]).flatten() for n in names]).double()
            row["update_rms_over_lr"] = float(d.pow(2).mean().sqrt()) / lr
        out[["first", "middle", "last"][pos // 2]] = row
    return out


def prescaled(f_tr: torch.Tensor, f_te: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MinMax applied in float64 before the probe sees the features (the probe's own MinMax is then the identity)."""
    lo, hi = f_tr.double().amin(0), f_tr.double().amax(0)
    scale = torch.where(hi > lo, 1 / (hi - lo), torch.ones_like(hi))
    return ((f_tr.double() - lo) * scale).float(), ((f_te.double() - lo) * scale).float()


def oracle(f_tr, y_tr, f_te, y_te) -> dict:
    """The converged optimum: MinMax + LogisticRegression(lbfgs, tol 1e-6, C 10), float64."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MinMaxScaler

    t = time.perf_counter()
    scaler = MinMaxScaler().fit(f_tr.double().numpy())
    clf = LogisticRegression(solver="lbfgs", tol=1e-6, C=10.0, max_iter=100_000)
    clf.fit(scaler.transform(f_tr.double().numpy()), y_tr.numpy())
    acc = float(clf.score(scaler.transform(f_te.double().numpy()), y_te.numpy()))
    return {"accuracy": acc, "seconds": time.perf_counter() - t, "n_iter": int(clf.n_iter_.max())}


@torch.no_grad()
def probes(trainer, x_tr, y_tr, x_te, y_te, with_oracle: bool) -> dict:
    f_tr, f_te = trainer.features(x_tr), trainer.features(x_te)
    s_tr, s_te = prescaled(f_tr, f_te)
    out = {}
    fast = PROBES["torch"](PROBES["torch"].Params())
    conv = PROBES["torch"](PROBES["torch"].Params(max_iter=500, tol=0.0))
    paper = PROBES["sklearn"](PROBES["sklearn"].Params())
    runs = [("torch10_10k", fast, 10_000, False), ("torch10_60k", fast, None, False),
            ("torch500_60k", conv, None, False), ("torch10_10k_prescaled", fast, 10_000, True),
            ("torch10_60k_prescaled", fast, None, True), ("torch500_60k_prescaled", conv, None, True),
            ("paper_60k", paper, None, False)]
    for label, probe, n, pre in runs:
        a_tr, a_te = (s_tr, s_te) if pre else (f_tr, f_te)
        t = time.perf_counter()
        acc = probe.fit_score(a_tr[:n], y_tr[:n], a_te, y_te)
        out[label] = {"accuracy": acc, "seconds": time.perf_counter() - t}
    if with_oracle:
        out["oracle_10k"] = oracle(f_tr[:10_000], y_tr[:10_000], f_te, y_te)
        out["oracle_60k"] = oracle(f_tr, y_tr, f_te, y_te)
    # Features a MinMax scaler blows up: their offset dwarfs their range (a constant pixel plus the
    # coupling nets' tiny shifts), so (x − min)·scale needs care; pixels have none.
    rng = f_tr.amax(0) - f_tr.amin(0)
    ratio = f_tr.abs().amax(0) / rng.clamp_min(1e-38)
    out["features"] = {"constant": int((rng == 0).sum()), "offset_over_range_gt_1e3": int(((ratio > 1e3) & (rng > 0)).sum()),
                       "offset_over_range_max": float(ratio[rng > 0].max())}
    return out


def time_rounds(args) -> None:
    """Seconds per round, wall and CPU (the process's, all threads): CPU time is what a quiet machine's
    wall time would be with one thread, and it is far less disturbed by other jobs than wall time."""
    _, play = game(args.seed, 10, args.init, args.tf1_eps, args.layers, args.hidden)
    for _ in range(5):
        play()
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.timing):
        float(play())
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
    ap.add_argument("--init", default="tf")
    ap.add_argument("--tf1-eps", action="store_true")
    ap.add_argument("--oracle", action="store_true", help="also fit the lbfgs oracle (10k and 60k) at the last round")
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

    trainer, play = game(args.seed, args.warmup, args.init, args.tf1_eps, args.layers, args.hidden)
    g1, opt = trainer.g1, trainer.opt
    x_tr, y_tr, x_te, y_te = trainer.data.probe_data(torch.Generator().manual_seed(0))
    idx = composed_permutation(g1)
    sample = x_tr[torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(1))[:2000]]
    lr = opt.param_groups[0]["lr"]
    meta = {"seed": args.seed, "warmup": args.warmup, "init": args.init, "tf1_eps": args.tf1_eps,
            "couplings": args.layers, "hidden": args.hidden, "threads": args.threads}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:

        def emit(rec: dict) -> None:
            fh.write(json.dumps({**meta, **rec}) + "\n")
            fh.flush()
            print(json.dumps(rec), flush=True)

        rec = {"round": 0, "perm_residual": perm_residual(g1, sample, idx)}
        rec.update(probes(trainer, x_tr, y_tr, x_te, y_te, False))
        emit(rec)
        for r in range(1, args.rounds + 1):
            before = {n: p.detach().clone() for n, p in g1.named_parameters()} if r % args.every == 0 else None
            t = time.perf_counter()
            loss = float(play())
            round_s = time.perf_counter() - t
            if r == 1:
                emit({"round": 1, "first_round_s_with_warmup": round_s})
            if r % args.every and r != args.rounds:
                continue
            g1.eval()
            with torch.no_grad():
                acc = float((trainer.classifier(trainer.features(x_te)).argmax(1) == y_te).float().mean())
            rec = {"round": r, "round_s": round_s, "encoder_loss": loss, "classifier_accuracy": acc,
                   "perm_residual": perm_residual(g1, sample, idx), "grads": layer_stats(g1, opt, before, lr)}
            if r % args.probe_every == 0 or r == args.rounds:
                rec.update(probes(trainer, x_tr, y_tr, x_te, y_te, args.oracle and r == args.rounds))
            emit(rec)


if __name__ == "__main__":
    main()
