"""The linear probes on learned features: the paper's probe, the converged optimum, and mimax's fast probe.

For each encoder × critic × estimator × init: train g1, g2 and the critic on MNIST (K = 128, Adam 1e-4, by
default in TF1's form as the paper's presets) for ``--steps`` steps, take g1's features of all 60,000 (or
``--train-size``) training and 10,000 test top halves, and fit

- ``paper``: the paper's probe, MinMax + LogisticRegression(saga, tol 0.1, C 10, max_iter 100) (mimax's
  ``sklearn`` probe);
- ``optimum``: the converged optimum of the same objective, MinMax + LogisticRegression(newton-cg, tol 1e-8,
  C 10) in float64 (the oracle; ``--optimum newton-cholesky`` for the exact-Hessian Newton). Newton's method
  converges in a few dozen iterations whatever the conditioning; lbfgs at tol 1e-6 needs thousands on
  learned features (6,352 iterations and 888 s on one). newton-cholesky forms the (10·d)² Hessian: ~100
  CPU seconds per fit on 392-wide features even on 3,000 images, where newton-cg takes ~7 s on 5,000 and
  reaches lbfgs-at-tol-1e-10's objective to 10 digits. ``--lbfgs`` adds ``optimum-lbfgs`` (tol 1e-6,
  max_iter 100,000) as a cross-check;
- ``torch-N``: mimax's fast ``torch`` probe with max_iter N (``--fast``; its default is 10);
  ``torch-N-prescaled``: the same on features MinMax-scaled beforehand in float64 (``--prescaled``), the
  numerically stable form (see docs/diagnostics/fig1c-plateau.md).

Each probe reports its test accuracy, its seconds and the objective it reached (scikit-learn's, divided by
C·n: mean log-loss + ‖W‖²/(2Cn) on the scaled training features, float64). Raw rows go to
docs/diagnostics/probe-learned.jsonl (appended), the table to PERFORMANCE.md ("## Linear probes on learned
features"). Everything runs on one thread (``--threads``), so the times compare like with like.

    .venv/bin/python bench/probe_learned.py [--encoders mlp convnet] [--critics ...] [--estimators nce nwj]
        [--inits tf torch] [--steps 1500] [--fast 10 20 50] [--no-write]
    .venv/bin/python bench/probe_learned.py --table-only   # the table from the JSONL alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mimax.trainables.encoders import ENCODERS  # noqa: E402
from mimax.trainables.probes import PROBES  # noqa: E402

OUT = ROOT / "docs" / "diagnostics" / "probe-learned.jsonl"
TITLE = "Linear probes on learned features"


def train_features(encoder: str, critic: str, estimator: str, init: str, steps: int, seed: int, adam: str = "tf1",
                   train_size: int | None = None):
    """g1's features (the first ``train_size`` training images, their labels, test, test labels) after
    ``steps`` steps, and the last record.

    The trainer is mimax's own (``loop.Trainer``) with the paper's protocol as config keys: ``init`` and
    ``train.adam``; the encoder, critic and estimator take their defaults (the paper's sizes).
    """
    from mimax.trainables.loop import Trainer

    cfg = {"data": {"name": "mnist"}, "encoder": {"name": encoder}, "critic": {"name": critic},
           "estimator": {"name": estimator}, "init": init,
           "train": {"steps": steps, "batch_size": 128, "lr": 1e-4, "adam": adam},
           "eval": {"every": max(steps, 1), "probe": "none"}, "seed": seed}
    trainer = Trainer(cfg)
    last = None
    for records in trainer.run():
        last = records[0] or last
    x_tr, y_tr, x_te, y_te = trainer.data.probe_data(torch.Generator().manual_seed(0))
    x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    return (trainer.features([x_tr])[0], y_tr, trainer.features([x_te])[0], y_te), last


def objective(xs: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray, c: float) -> float:
    """scikit-learn's L2 multinomial objective divided by C·n, on the scaled features, float64."""
    z = xs @ weight + bias
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
    return float((lse - z[np.arange(len(y)), y]).mean() + (weight**2).sum() / (2 * c * len(y)))


def sklearn_fit(x_tr, y_tr, x_te, y_te, dtype, **kw) -> dict:
    """MinMax + LogisticRegression(**kw): accuracy, seconds (scaling included), objective, iterations."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MinMaxScaler

    a_tr, a_te = x_tr.numpy().astype(dtype), x_te.numpy().astype(dtype)
    t = time.perf_counter()
    scaler = MinMaxScaler().fit(a_tr)
    clf = LogisticRegression(C=10.0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(a_tr), y_tr.numpy())
    acc = float(clf.score(scaler.transform(a_te), y_te.numpy()))
    seconds = time.perf_counter() - t
    xs = scaler.transform(x_tr.numpy().astype(np.float64))
    return {"accuracy": acc, "seconds": seconds, "n_iter": int(np.max(clf.n_iter_)),
            "objective": objective(xs, y_tr.numpy(), clf.coef_.T.astype(np.float64), clf.intercept_, 10.0)}


def prescale(x_tr: torch.Tensor, x_te: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MinMax in float64, before the probe (whose own MinMax is then the identity)."""
    lo, hi = x_tr.double().amin(0), x_tr.double().amax(0)
    scale = torch.where(hi > lo, 1 / (hi - lo), torch.ones_like(hi))
    return ((x_tr.double() - lo) * scale).float(), ((x_te.double() - lo) * scale).float()


def torch_fit(x_tr, y_tr, x_te, y_te, max_iter: int, prescaled: bool = False) -> dict:
    from sklearn.preprocessing import MinMaxScaler

    probe = PROBES["torch"](PROBES["torch"].Params(max_iter=max_iter))
    t = time.perf_counter()
    a_tr, a_te = prescale(x_tr, x_te) if prescaled else (x_tr, x_te)
    fit = probe.fit(a_tr, y_tr)
    acc = fit.score(a_te, y_te)
    seconds = time.perf_counter() - t
    xs = MinMaxScaler().fit_transform(a_tr.numpy().astype(np.float64))
    obj = objective(xs, y_tr.numpy(), fit.weight.double().numpy(), fit.bias.double().numpy(), 10.0)
    return {"accuracy": acc, "seconds": seconds, "n_iter": fit.n_evals, "objective": obj,
            "settings": {**probe.settings(), "prescaled": prescaled}}


def probes(arrays, fast: list[int], prescaled: list[int], lbfgs: bool, optimum: str = "newton-cg") -> dict[str, dict]:
    out = {"paper": sklearn_fit(*arrays, np.float32, solver="saga", tol=0.1, max_iter=100, random_state=0),
           "optimum": sklearn_fit(*arrays, np.float64, solver=optimum, tol=1e-8, max_iter=1000)}
    out["paper"]["settings"] = PROBES["sklearn"](PROBES["sklearn"].Params()).settings()
    out["optimum"]["settings"] = {"name": f"sklearn-{optimum}", "C": 10.0, "tol": 1e-8, "max_iter": 1000,
                                  "scaler": "minmax", "dtype": "float64"}
    if lbfgs:
        out["optimum-lbfgs"] = sklearn_fit(*arrays, np.float64, solver="lbfgs", tol=1e-6, max_iter=100_000)
        out["optimum-lbfgs"]["settings"] = {"name": "sklearn-lbfgs", "C": 10.0, "tol": 1e-6, "max_iter": 100_000,
                                            "scaler": "minmax", "dtype": "float64"}
    for n in fast:
        out[f"torch-{n}"] = torch_fit(*arrays, n)
    for n in prescaled:
        out[f"torch-{n}-prescaled"] = torch_fit(*arrays, n, prescaled=True)
    return out


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def table(rows: list[dict]) -> str:
    """One line per trained configuration (the last run of each): accuracies, shortfalls and times."""
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r["encoder"], r["critic"], r["estimator"], r["init"], r["steps"], r.get("train_size", 60_000),
                r["seed"])] = r
    fast_labels = sorted({k for r in latest.values() for k in r["probes"] if k.startswith("torch-")},
                         key=lambda k: (int(k.split("-")[1]), k))
    head = ["encoder", "critic", "est.", "init", "steps", "probe n", "test bound", "paper acc", "optimum acc",
            "paper − opt. (pts)", *[f"{k} − opt." for k in fast_labels], "paper s", "optimum s (iters)",
            *[f"{k} s" for k in fast_labels]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(latest):
        r = latest[key]
        p = r["probes"]
        opt = p["optimum"]["accuracy"]
        cells = [*map(str, key[:6]), f"{r['bound_test']:.2f}", f"{p['paper']['accuracy']:.4f}", f"{opt:.4f}",
                 f"{100 * (p['paper']['accuracy'] - opt):+.2f}",
                 *[f"{100 * (p[k]['accuracy'] - opt):+.2f}" if k in p else "" for k in fast_labels],
                 f"{p['paper']['seconds']:.1f}", f"{p['optimum']['seconds']:.0f} ({p['optimum']['n_iter']})",
                 *[f"{p[k]['seconds']:.2f}" if k in p else "" for k in fast_labels]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=list(ENCODERS), help="default: every encoder family")
    ap.add_argument("--critics", nargs="+", default=["bilinear", "separable", "concat"])
    ap.add_argument("--estimators", nargs="+", default=["nce", "nwj"])
    ap.add_argument("--inits", nargs="+", default=["tf"])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--encoder-steps", nargs="*", default=[], metavar="ENCODER=STEPS",
                    help="steps for one encoder instead of --steps (e.g. realnvp=300: its steps cost ~50× an MLP's)")
    ap.add_argument("--adam", default="tf1", choices=["torch", "tf1"], help="train.adam (the paper's: tf1)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--train-size", type=int, default=None, metavar="N",
                    help="fit the probes on the first N training images (default: all 60,000; Newton's method "
                         "costs n·(d·10)² per iteration, minutes on 60k × 392 features)")
    ap.add_argument("--fast", type=int, nargs="+", default=[10, 100], help="max_iter of the torch probes (100: the presets')")
    ap.add_argument("--prescaled", type=int, nargs="*", default=[], help="max_iter of prescaled torch probes")
    ap.add_argument("--lbfgs", action="store_true", help="also the lbfgs optimum (slow: minutes per fit)")
    ap.add_argument("--optimum", default="newton-cg", choices=["newton-cg", "newton-cholesky"],
                    help="scikit-learn's Newton solver for the oracle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-write", action="store_true", help="print only; write neither the JSONL nor the doc")
    ap.add_argument("--table-only", action="store_true", help="rebuild the doc's table from --out")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    steps_of = {name: int(n) for name, n in (item.split("=", 1) for item in args.encoder_steps)}
    if not args.table_only:
        for encoder in args.encoders:
            steps = steps_of.get(encoder, args.steps)
            for critic in args.critics:
                for estimator in args.estimators:
                    for init in args.inits:
                        load = os.getloadavg()[0]
                        t = time.perf_counter()
                        arrays, last = train_features(encoder, critic, estimator, init, steps, args.seed,
                                                      args.adam, args.train_size)
                        train_s = time.perf_counter() - t
                        row = {"encoder": encoder, "critic": critic, "estimator": estimator, "init": init,
                               "adam": args.adam, "steps": steps,
                               "train_size": len(arrays[1]), "width": arrays[0].shape[1], "seed": args.seed, "bound_test": last["bound_test"],
                               "bound_train": last["bound_train"], "train_s": train_s,
                               "probes": probes(arrays, args.fast, args.prescaled, args.lbfgs, args.optimum), "load_before": load,
                               "load_after": os.getloadavg()[0], "threads": args.threads,
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                        print(json.dumps(row), flush=True)
                        if not args.no_write:
                            args.out.parent.mkdir(parents=True, exist_ok=True)
                            with args.out.open("a") as fh:
                                fh.write(json.dumps(row) + "\n")
    rows = rows_of(args.out)
    if not rows:
        return
    print(table(rows))
    if not args.no_write:
        write_doc(rows)


def write_doc(rows: list[dict]) -> None:
    from perf_doc import machine, write_section

    loads = [r[k] for r in rows for k in ("load_before", "load_after")]
    dates = sorted(r["date"] for r in rows)
    body = f"""Measured by `bench/probe_learned.py` from {dates[0]} to {dates[-1]}; {machine()}, one thread per
process; Python {platform.python_version()}, torch {torch.__version__}, scikit-learn
{__import__("sklearn").__version__}; load average {min(loads):.1f}–{max(loads):.1f} during the runs (other
jobs shared the machine: read the seconds as ratios within a row). Raw rows:
`docs/diagnostics/probe-learned.jsonl`.

Each row trains one configuration on MNIST (K = 128, Adam 1e-4 in TF1's form, Keras' init, the encoder's,
critic's and estimator's default sizes; seed as in the JSONL; `steps` 0: at initialisation) and fits three
kinds of probe on g1's features of the first `probe n` training images, scored on all 10,000 test images
(`probe n` < 60,000 only where the features are 392 wide, to keep the oracle's cost down): the paper's
(MinMax + saga, tol 0.1, C 10, max_iter 100), the converged optimum of the same objective (MinMax +
Newton's method, scikit-learn's newton-cg at tol 1e-8, float64: the oracle) and mimax's fast `torch`
probe at max_iter N (`torch-N`; `-prescaled`: on features MinMax-scaled in float64 first).
Differences are in accuracy points (1 point = 100 test images). On 5,000 images the 392-wide optimum
overfits, and the paper's early-stopped saga can read above it (identity: +3.1 points): there, "paper − opt."
says how far saga is from the optimum, not that it is worse.

{table(rows)}
"""
    write_section(TITLE, body)


if __name__ == "__main__":
    main()
