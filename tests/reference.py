"""The oracle of the trainer: one trial of the paper's protocol, written plainly, one seed at a time.

Plain modules built from the registries in the trainer's order under the seed; the paper's step
(a batch of K pairs, the critic's K × K scores, the estimator's loss, backward, an unfused
``torch.optim.Adam``), its loss read after every step; and each evaluation one replicate at a time: the
bounds on the evaluation batches, the probe on g1's features (the ``torch`` probe by a plain single
L-BFGS, below; the ``sklearn`` probe, the paper's solver, as it is), the Jacobian diagnostic by
autograd's per-example Jacobian and numpy's percentiles, and the adversarial game of Fig. 1c. No replicate
axis, no vmap, no checkpoints, no speed switches. The ``init: tf`` scheme and TF1's Adam ε come from their
modules (``init.apply_init``, ``optim.tf1_epsilon``), each tested against its own oracle.

``Trainer`` at R = 1, and every replicate of a pack, must give the records ``reference_records`` gives
for its seed, up to float rounding (tests/trainables/test_packed.py, test_loop.py).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from mimax.trainables.config import resolve
from mimax.trainables.init import apply_init
from mimax.trainables.optim import tf1_epsilon


@contextmanager
def seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------ the torch probe


class ProbeFit:
    """A fitted linear softmax probe on MinMax-scaled features."""

    def __init__(self, lo, scale, weight, bias, classes, n_evals):
        self.lo, self.scale, self.weight, self.bias, self.classes, self.n_evals = lo, scale, weight, bias, classes, n_evals

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.lo) * self.scale) @ self.weight + self.bias

    def score(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.classes[self.logits(x).argmax(1)] == y).float().mean())


def lbfgs(fg, theta: torch.Tensor, max_iter: int, gamma0: float, tol: float, history: int = 10):
    """Minimise ``fg(theta) -> (loss: float, grad)`` by L-BFGS with Armijo backtracking from the unit step;
    stop after ``max_iter`` iterations, on a relative change of the loss ≤ ``tol``, or when no step
    decreases it. Returns (theta, evaluations)."""
    f, g = fg(theta)
    n_evals = 1
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / sᵀy)
    gamma = gamma0
    for _ in range(max_iter):
        q = g.clone()  # two-loop recursion: d = −H g
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * float((s * q).sum())
            q.sub_(y, alpha=a)
            alphas.append(a)
        r = q.mul_(gamma)
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            r.add_(s, alpha=a - rho * float((y * r).sum()))
        d = r.neg_()
        slope = float((g * d).sum())
        if not slope < 0:
            pairs.clear()
            d, slope = -gamma * g, -gamma * float((g * g).sum())
        t = 1.0
        while True:
            f_new, g_new = fg(theta + t * d)
            n_evals += 1
            if f_new <= f + 1e-4 * t * slope:
                break
            if t < 1e-10:
                return theta, n_evals
            if f_new == f_new and f_new != float("inf"):
                t_min = -slope * t * t / (2.0 * (f_new - f - slope * t))
                t = min(max(t_min, 0.1 * t), 0.5 * t)
            else:
                t *= 0.1
        s = d.mul_(t)
        y = g_new - g
        sy = float((s * y).sum())
        if sy > 1e-12 * float((y * y).sum()) ** 0.5 * float((s * s).sum()) ** 0.5:
            pairs.append((s, y, 1.0 / sy))
            del pairs[:-history]
            gamma = sy / float((y * y).sum())
        theta = theta + s
        done = abs(f - f_new) <= tol * max(1.0, abs(f))
        f, g = f_new, g_new
        if done:
            break
    return theta, n_evals


@torch.no_grad()
def torch_probe_fit(params, x: torch.Tensor, y: torch.Tensor) -> ProbeFit:
    """``TorchProbe``'s objective and solver on one feature matrix: MinMax scaling, whitened
    coordinates W = M V, intercept from log π, first step 1 / mean(π(1 − π)), then L-BFGS."""
    x = x.detach().float().contiguous()
    classes, y_idx = torch.unique(y, return_inverse=True)
    n, d = x.shape
    k = len(classes)
    lo, hi = x.amin(0), x.amax(0)
    scale = torch.where(hi - lo > 0, 1.0 / (hi - lo), torch.ones_like(lo))
    scaled = (x - lo) * scale  # scikit-learn's MinMaxScaler
    mu = scaled.mean(0)
    xs = scaled - mu  # centred
    sub = xs[:: max(1, n // (params.precond_rows or 8192))]
    m = None
    if params.precond_rows > 0:
        cov = (sub.T @ sub).double() / len(sub)
        cov.diagonal().add_(1e-3 * float(cov.diagonal().mean()) + 1e-12)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) == 0:
            m = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=cov.dtype), upper=False).T.float()
    if m is None:
        std = sub.pow(2).mean(0).sqrt()
        m = torch.diag(torch.where(std > 1e-6, 1.0 / std, torch.ones_like(std)))
    lam = 1.0 / (params.C * n)
    prior = torch.bincount(y_idx, minlength=k).double() / n
    rows = torch.arange(n)

    def fg(theta):
        w = m @ theta[:d]
        z = xs @ w + theta[d]
        zmax = z.amax(1, keepdim=True)
        e = torch.exp(z - zmax)
        s = e.sum(1, keepdim=True)
        loss = (torch.log(s) + zmax).sum() / n - z[rows, y_idx].sum() / n + 0.5 * lam * (w * w).sum()
        g = e / s
        g[rows, y_idx] -= 1.0
        g_w = xs.T @ g / n + lam * w
        return float(loss), torch.cat([m.T @ g_w, g.sum(0)[None] / n])

    theta = torch.zeros(d + 1, k)
    theta[d] = torch.log(prior).float()
    theta, n_evals = lbfgs(fg, theta, params.max_iter, 1.0 / float((prior * (1 - prior)).mean()), params.tol)
    w = m @ theta[:d]
    return ProbeFit(lo, scale, w, theta[d] - mu @ w, classes, n_evals)


# ------------------------------------------------------------------------------------ the trial


def log_condition_numbers(encoder: nn.Module, x: torch.Tensor) -> list[float]:
    """log(σ_max / σ_min) of the encoder's Jacobian at each example, one example at a time."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: encoder(v[None])[0], xi)
        s = torch.linalg.svdvals(jac.double())
        out.append(float(torch.log(s[0] / s[-1])))
    return out


def reference_records(config: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The records of one trial of ``config`` with ``seed`` (without ``wall_s``): an ``eval`` record at
    step 0, every ``eval.every`` steps and at the last step, or a final ``diverged`` record."""
    return reference_run(config, seed)[0]


def reference_run(config: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], nn.Module]:
    """``reference_records`` and the trained g1."""
    res = resolve(dict(config, seed=seed))
    cfg = res.config
    data_cls, data_params = res.data
    data = data_cls(data_params, "cpu")
    enc_cls, enc_params = res.encoder
    infomax = cfg.train.mode == "infomax"
    k = cfg.train.batch_size
    with seeded(seed):
        g1 = enc_cls(enc_params, data.spec)
        if infomax:
            g2 = enc_cls(enc_params, data.spec)
            critic = res.critic[0](res.critic[1], g1.out_dim, g2.out_dim)
            estimator = res.estimator[0](res.estimator[1])
            modules = [g1, g2, critic, estimator]
        else:
            classifier = nn.Linear(g1.out_dim, data.n_classes)
            modules = [g1, classifier]
        for m in modules:  # the init scheme, tested on its own in test_init.py, in build order
            apply_init(m, cfg.init)

    def adam(ms, lr):
        params = [p for m in ms for p in m.parameters()]
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
        if cfg.train.adam == "tf1":  # TF1's ε, tested on its own in test_optim.py
            tf1_epsilon(opt)
        return opt

    if infomax:
        opt = adam(modules, cfg.train.lr)
    else:
        adv = cfg.adversarial
        opt, cls_opt = adam([g1], adv.encoder_lr), adam([classifier], adv.classifier_lr)
        x_game, y_game, x_game_test, y_game_test = data.probe_data(torch.Generator().manual_seed(seed + 7919))
    gen = torch.Generator().manual_seed(seed)

    def eval_gen(step: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1_000_003 + step * 31 + salt)

    def bound(split: str, step: int) -> float:
        batches = data.eval_batches(split, k, cfg.eval.bound_batches, eval_gen(step, 1 + (split == "test")))
        return sum(float(estimator(critic(g1(x1), g2(x2))).value) for x1, x2 in batches) / len(batches)

    @torch.no_grad()
    def evaluate(step: int, loss: float | None) -> dict[str, Any]:
        for m in modules:
            m.eval()
        rec: dict[str, Any] = {"event": "eval", "step": step}
        if infomax:
            rec["bound_train"], rec["bound_test"] = bound("train", step), bound("test", step)
            if loss is None:
                t = estimator.params.target
                loss = -rec["bound_train"] if t is None else abs(rec["bound_train"] - t)
        else:
            rec["bound_train"] = rec["bound_test"] = None
            rec["classifier_accuracy"] = float((classifier(g1(x_game_test)).argmax(1) == y_game_test).float().mean())
        rec["probe_accuracy"] = None
        if res.probes:
            x_tr, y_tr, x_te, y_te = data.probe_data(eval_gen(step, 3))
            n = cfg.eval.probe_train_size or len(y_tr)
            f_tr, f_te = g1(x_tr[:n]), g1(x_te)
            for i, (label, p_cls, p_params) in enumerate(res.probes):
                if p_cls.name == "torch":
                    acc = torch_probe_fit(p_params, f_tr, y_tr[:n]).score(f_te, y_te)
                else:
                    acc = p_cls(p_params).fit_score(f_tr, y_tr[:n], f_te, y_te)
                if i == 0:
                    rec["probe_accuracy"] = acc
                if isinstance(cfg.eval.probe, list):
                    rec[f"probe_accuracy.{label}"] = acc
        rec["loss"] = loss
        if cfg.eval.jacobian:
            x = data.eval_batches("test", cfg.eval.jacobian_batch, 1, eval_gen(step, 4))[0][0]
            with torch.enable_grad():
                logc = log_condition_numbers(g1, x)
            rec.update({f"log_cond_p{q}": float(np.percentile(logc, q)) for q in (5, 25, 50, 75, 95)})
        for m in modules:
            m.train()
        return rec

    def classifier_step() -> None:
        i = torch.randint(len(y_game), (k,), generator=gen)
        with torch.no_grad():
            feats = g1(x_game[i])
        loss = nn.functional.cross_entropy(classifier(feats), y_game[i])
        cls_opt.zero_grad()
        loss.backward()
        cls_opt.step()

    def train_step(step: int) -> float:
        if infomax:
            x1, x2 = data.train_batch(k, gen)
            loss = estimator.loss(estimator(critic(g1(x1), g2(x2))))
        else:
            for _ in range(cfg.adversarial.warmup if step == 0 else 0):
                classifier_step()
            for _ in range(cfg.adversarial.classifier_steps):
                classifier_step()
            i = torch.randint(len(y_game), (k,), generator=gen)
            loss = -torch.log_softmax(classifier(g1(x_game[i])), dim=1).mean()  # cross-entropy to uniform
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    records = [evaluate(0, None)]
    losses: list[float] = []
    for step in range(1, cfg.train.steps + 1):
        loss = train_step(step - 1)
        if not math.isfinite(loss):
            diverged = {"event": "diverged", "step": step, "loss": None, "reason": f"training loss is {loss}"}
            return records + [diverged], g1
        losses.append(loss)
        if step % cfg.eval.every == 0 or step == cfg.train.steps:
            records.append(evaluate(step, sum(losses) / len(losses)))
            losses = []
    return records, g1


@torch.no_grad()
def probe_flips(config: dict[str, Any], seed: int, g1: nn.Module, rel: float, draws: int = 5) -> dict[str, int]:
    """How many test predictions each probe of ``config`` changes when the final evaluation's features
    (g1's, on that evaluation's probe data) move by a relative ``rel``: the most over ``draws``
    multiplicative perturbations x·(1 + rel·ε), ε ~ N(0, 1). A probe stopped long before it converges
    (the torch probe's 10 L-BFGS iterations, the paper's saga at tol 0.1) can flip predictions for
    inputs near its boundary from float rounding alone: this measures by how many, per probe label."""
    res = resolve(dict(config, seed=seed))
    cfg = res.config
    data = res.data[0](res.data[1], "cpu")
    step = cfg.train.steps
    x_tr, y_tr, x_te, y_te = data.probe_data(torch.Generator().manual_seed(seed * 1_000_003 + step * 31 + 3))
    n = cfg.eval.probe_train_size or len(y_tr)
    g1.eval()
    f_tr, f_te = g1(x_tr[:n]), g1(x_te)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for label, p_cls, p_params in res.probes:
        def predict(a, b):
            if p_cls.name == "torch":
                fit = torch_probe_fit(p_params, a, y_tr[:n])
                return fit.classes[fit.logits(b).argmax(1)]
            from sklearn.linear_model import LogisticRegression  # the paper's probe, as SklearnProbe runs it
            from sklearn.preprocessing import MinMaxScaler

            a_np, b_np = a.numpy().astype(np.float32), b.numpy().astype(np.float32)
            scaler = MinMaxScaler().fit(a_np)
            clf = LogisticRegression(solver="saga", C=p_params.C, tol=p_params.tol, max_iter=p_params.max_iter,
                                     random_state=p_params.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # saga stops at tol 0.1 or 100 epochs, as the protocol says
                clf.fit(scaler.transform(a_np), y_tr[:n].numpy())
            return torch.as_tensor(clf.predict(scaler.transform(b_np)))
        base = predict(f_tr, f_te)
        worst = 0
        for _ in range(draws if rel > 0 else 0):
            noisy = [f * (1 + rel * torch.randn(f.shape, generator=gen)) for f in (f_tr, f_te)]
            worst = max(worst, int((predict(*noisy) != base).sum()))
        out[label] = worst
    return out
