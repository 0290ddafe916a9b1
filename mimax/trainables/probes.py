"""Linear probes on g1's features: fit on the training split, accuracy on the test split.

Registry: PROBES.

Both probes fit the paper's model: multinomial logistic regression with an intercept on MinMax-scaled
features (min and max from the training features), L2 penalty C·Σ logloss + ½‖W‖², intercept unpenalised.
``sklearn`` is the paper's exact solver (saga, tol 0.1, 100 epochs at most); ``torch`` solves the same
objective with a preconditioned L-BFGS on the features' device, several times faster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from mimax.trainables.base import Params


class Probe:
    """Base of every probe: ``__init__(params)``; ``fit_score(...) -> accuracy`` in [0, 1];
    ``settings()`` -> every setting that defines the protocol (recorded with each accuracy)."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params):
        self.params = params

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump()}

    def fit_score(
        self, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
    ) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


def _numpy(t: torch.Tensor, dtype) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(dtype, copy=False)


class SklearnProbe(Probe):
    """The paper's probe: MinMaxScaler, then LogisticRegression(solver="saga", tol=0.1, C=10,
    max_iter=100) (multinomial, scikit-learn's default) on all training features, float32 as the paper's
    features were. saga is stochastic: ``random_state`` fixes its order."""

    name = "sklearn"

    class Params(Params):
        C: float = Field(default=10.0, gt=0)
        tol: float = Field(default=0.1, gt=0)
        max_iter: int = Field(default=100, ge=1)
        random_state: int = 0

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "solver": "saga", "scaler": "minmax", "dtype": "float32"}

    def fit_score(self, x_train, y_train, x_test, y_test) -> float:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import MinMaxScaler

        p = self.params
        x_tr, x_te = _numpy(x_train, np.float32), _numpy(x_test, np.float32)
        y_tr, y_te = _numpy(y_train, np.int64), _numpy(y_test, np.int64)
        scaler = MinMaxScaler().fit(x_tr)
        clf = LogisticRegression(solver="saga", C=p.C, tol=p.tol, max_iter=p.max_iter, random_state=p.random_state)
        with warnings.catch_warnings():
            # tol 0.1 usually stops saga in a few epochs; when it does not, the protocol still says 100.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x_tr), y_tr)
        return float(clf.score(scaler.transform(x_te), y_te))


@dataclass
class LinearSoftmax:
    """Fitted probes: logits = ((x − lo) · scale) @ weight + bias; ``classes[argmax]`` is the label.

    One probe (lo, scale (d,), weight (d, K), bias (K,)) or R of them, each field with a leading
    replicate dimension (x then (R, n, d)).
    """

    lo: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor  # on the MinMax-scaled features
    bias: torch.Tensor
    classes: torch.Tensor  # (K,) the training labels, sorted
    n_evals: torch.Tensor | int  # loss evaluations of each fit

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(self.lo) - self.lo[..., None, :]) * self.scale[..., None, :]) @ self.weight + self.bias[..., None, :]

    def score(self, x: torch.Tensor, y: torch.Tensor) -> float | list[float]:
        """Accuracy on (x, y): a float, or one per replicate."""
        return (self.classes[self.logits(x).argmax(-1)] == y.to(self.classes.device)).float().mean(-1).tolist()


def _bsum(t: torch.Tensor) -> torch.Tensor:
    """Per-replicate sum over every dimension but the first, as float64."""
    return t.flatten(1).sum(1).double()


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(R,) -> broadcastable against ``like`` (R, ...), in ``like``'s dtype."""
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def lbfgs(fg, theta: torch.Tensor, max_iter: int, gamma0: float, tol: float, history: int = 10):
    """R independent minimisations by L-BFGS with Armijo backtracking from the unit step, in lockstep:
    theta (R, ...); ``fg(theta_sub, idx)`` -> (loss (R',) float64, grad like theta_sub) for the
    replicates ``idx``.

    ``gamma0`` scales the first step (the inverse curvature at the start); after that the usual
    sᵀy/yᵀy. In well-preconditioned coordinates the unit step is almost always accepted, so an
    iteration costs one evaluation. A replicate stops after ``max_iter`` iterations, when an iteration
    changes its loss by less than ``tol`` relative, or when no step decreases it. Each replicate keeps
    its own history, step length, line search and stopping test, so it takes the steps it would take
    alone. Returns (theta, evaluations (R,)).
    """
    r_all, dev = theta.shape[0], theta.device
    flat = theta.flatten(1).clone()  # (R, P)
    shape = theta.shape

    def fgf(th: torch.Tensor, idx: torch.Tensor):
        f, g = fg(th.view(len(idx), *shape[1:]), idx)
        return f, g.flatten(1)

    every = torch.arange(r_all, device=dev)
    f, g = fgf(flat, every)
    n_evals = torch.ones(r_all, dtype=torch.long, device=dev)
    s_hist = flat.new_zeros(r_all, history, flat.shape[1])
    y_hist = flat.new_zeros(r_all, history, flat.shape[1])
    rho = torch.zeros(r_all, history, dtype=torch.float64, device=dev)
    n_hist = torch.zeros(r_all, dtype=torch.long, device=dev)  # pairs 0..n_hist-1, oldest first
    gamma = torch.full((r_all,), float(gamma0), dtype=torch.float64, device=dev)
    active = torch.ones(r_all, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        # Two-loop recursion d = −H g, masked where a replicate has fewer pairs.
        q = g.clone()
        alphas = []
        for j in reversed(range(history)):
            valid = j < n_hist
            a = torch.where(valid, rho[:, j] * _bsum(s_hist[:, j] * q), 0.0)
            q = q - _col(a, q) * y_hist[:, j]
            alphas.append(a)
        rr = q * _col(gamma, q)
        for j, a in zip(range(history), reversed(alphas)):
            valid = j < n_hist
            b = rho[:, j] * _bsum(y_hist[:, j] * rr)
            rr = rr + _col(torch.where(valid, a - b, 0.0), rr) * s_hist[:, j]
        d = -rr
        slope = _bsum(g * d)
        bad = ~(slope < 0)  # not a descent direction (should not happen): restart from the gradient
        if bool(bad.any()):
            n_hist = torch.where(bad, 0, n_hist)
            d = torch.where(bad[:, None], -_col(gamma, g) * g, d)
            slope = torch.where(bad, -gamma * _bsum(g * g), slope)
        # Armijo backtracking from the unit step, per replicate.
        t = torch.ones(r_all, dtype=torch.float64, device=dev)
        f_new, g_new = f.clone(), g.clone()
        searching, stalled = active.clone(), torch.zeros_like(active)
        while bool(searching.any()):
            idx = searching.nonzero().squeeze(1)
            fi, gi = fgf(flat[idx] + _col(t[idx], flat) * d[idx], idx)
            n_evals[idx] += 1
            f_new[idx], g_new[idx] = fi, gi
            ok = fi <= f[idx] + 1e-4 * t[idx] * slope[idx]  # False for NaN
            ti = t[idx]
            stop = ~ok & (ti < 1e-10)  # no decrease along d: keep the last point, finished
            finite = (fi == fi) & (fi != float("inf"))
            t_min = -slope[idx] * ti * ti / (2.0 * (fi - f[idx] - slope[idx] * ti))  # minimum of the quadratic fit
            shrunk = torch.where(finite, torch.minimum(torch.maximum(t_min, 0.1 * ti), 0.5 * ti), 0.1 * ti)
            t[idx] = torch.where(ok | stop, ti, shrunk)
            stalled[idx] |= stop
            searching[idx] = ~(ok | stop)
        active &= ~stalled
        # Accepted steps: update the history, the point and the stopping test.
        s = d * _col(t, d)
        y = g_new - g
        sy, yy, ss = _bsum(s * y), _bsum(y * y), _bsum(s * s)
        keep = active & (sy > 1e-12 * yy.sqrt() * ss.sqrt())  # keep H positive definite
        if bool(keep.any()):
            full = keep & (n_hist == history)
            if bool(full.any()):  # drop the oldest pair
                s_hist[full] = s_hist[full].roll(-1, dims=1)
                y_hist[full] = y_hist[full].roll(-1, dims=1)
                rho[full] = rho[full].roll(-1, dims=1)
                n_hist = torch.where(full, history - 1, n_hist)
            k = keep.nonzero().squeeze(1)
            slot = n_hist[k]
            s_hist[k, slot], y_hist[k, slot], rho[k, slot] = s[k], y[k], 1.0 / sy[k]
            n_hist = torch.where(keep, n_hist + 1, n_hist)
            gamma = torch.where(keep, sy / yy, gamma)
        flat = torch.where(active[:, None], flat + s, flat)
        done = (f - f_new).abs() <= tol * torch.clamp(f.abs(), min=1.0)
        f = torch.where(active, f_new, f)
        g = torch.where(active[:, None], g_new, g)
        active &= ~done
    return flat.view(shape), n_evals


class TorchProbe(Probe):
    """The paper's probe objective solved in float32, full batch, on the features' device.

    Objective (scikit-learn's divided by C·n): mean logloss + ‖W‖² / (2·C·n), intercept unpenalised.
    Every evaluation of the loss and its gradient costs two passes over the features, so the speed
    comes from needing few of them:

    - the weights are optimised in whitened coordinates, W = M V with M = L⁻ᵀ and L Lᵀ the covariance of
      the scaled, centred features, estimated on ``precond_rows`` evenly spaced rows plus a small ridge.
      This is an exact reparametrisation (same optimum; the penalty stays on W) that makes the problem
      well conditioned: at the start the Hessian in V is ≈ (diag π − ππᵀ) ⊗ I for the class priors π;
    - the intercept starts at log π, the first step is scaled by 1 / mean(π(1 − π)) (the inverse of that
      Hessian's typical eigenvalue), then L-BFGS with unit steps (``lbfgs``): one evaluation per iteration;
    - the scaled, centred features are formed once (an R × n × d float32 copy), so a feature whose offset
      dwarfs its range loses nothing to cancellation.

    ``fit`` takes one feature matrix (n, d) or R of them (R, n, d) with shared labels: R fits solved
    together, each taking the steps it would take alone (a trainer's replicates).

    ``max_iter`` = 10 (11 evaluations) was chosen on MNIST: on raw top halves (392 wide) and 100-wide
    random-ReLU features it lands within 0.15 accuracy points of the converged optimum and of the
    ``sklearn`` probe (within 0.5 points on noisy MNIST, Fashion-MNIST and untrained-MLP features), about
    6× faster than saga on 60k × 392 on a 2-core CPU (bench/probe.py, docs/PERFORMANCE.md). Fewer
    iterations cost accuracy (8: −0.3 points on raw pixels); more buy little.
    """

    name = "torch"

    class Params(Params):
        C: float = Field(default=10.0, gt=0)
        max_iter: int = Field(default=10, ge=1)
        # Stop early when an iteration changes the loss by less than this, relative.
        tol: float = Field(default=1e-6, ge=0)
        precond_rows: int = Field(default=8192, ge=0)  # 0: scale each feature by its std only (diagonal)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "solver": "lbfgs-whitened", "scaler": "minmax", "dtype": "float32"}

    def fit_score(self, x_train, y_train, x_test, y_test) -> float | list[float]:
        return self.fit(x_train, y_train).score(x_test, y_test)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> LinearSoftmax:
        """Fit on features x (n, d), or on each of x (R, n, d), with labels y (n,)."""
        if x.dim() == 2:
            one = self.fit(x[None], y)
            return LinearSoftmax(*(t[0] for t in (one.lo, one.scale, one.weight, one.bias)), one.classes,
                                 int(one.n_evals[0]))
        p = self.params
        x = x.detach().to(torch.float32).contiguous()
        classes, y_idx = torch.unique(y.detach().to(x.device), return_inverse=True)
        r_all, n, d = x.shape
        k = len(classes)
        if k < 2:
            raise ValueError(f"a probe needs at least two classes in its training labels, got {k}")
        # scikit-learn's MinMaxScaler: (x − lo) · scale maps the training range to [0, 1]; constant features
        # get scale 1 (so they become 0). Two reductions are faster than aminmax over dim 1 on CPU.
        lo, hi = x.amin(1), x.amax(1)
        rng = hi - lo
        scale = torch.where(rng > 0, 1.0 / rng, torch.ones_like(rng))
        # The centred, scaled features, formed once: (x − lo)·scale − μ. Fitting on x @ (scale·W) − shift @ W
        # instead saves the copy but cancels in float32 when a feature's offset dwarfs its range (learned
        # RealNVP features reach 5e4×): the probe then read 0.68 where the pixels give 0.82
        # (docs/diagnostics/fig1c-plateau.md).
        xs = (x - lo[:, None]) * scale[:, None]
        mu = xs.mean(1)
        xs -= mu[:, None]
        del x
        m = self._preconditioner(xs)
        lam = 1.0 / (p.C * n)
        prior = torch.bincount(y_idx, minlength=k).double() / n
        rows = torch.arange(n, device=xs.device)
        everyone = torch.arange(r_all, device=xs.device)

        def fg(theta: torch.Tensor, idx: torch.Tensor):
            full = len(idx) == r_all and bool((idx == everyone).all())
            xi = xs if full else xs[idx]
            w = m[idx] @ theta[:, :d]  # (R', d, K)
            z = torch.baddbmm(theta[:, d][:, None, :], xi, w)  # (R', n, K) logits
            zmax = z.amax(2, keepdim=True)
            e = torch.exp(z - zmax)
            s = e.sum(2, keepdim=True)
            loss = (torch.log(s) + zmax).flatten(1).sum(1) / n - z[:, rows, y_idx].sum(1) / n
            loss = loss + 0.5 * lam * (w * w).flatten(1).sum(1)
            g = e.div_(s)  # softmax, in place
            g[:, rows, y_idx] -= 1.0
            g_w = torch.bmm(xi.transpose(1, 2), g) / n + lam * w  # (R', d, K)
            return loss.double(), torch.cat([m[idx].transpose(1, 2) @ g_w, g.sum(1)[:, None, :] / n], dim=1)

        theta = torch.zeros(r_all, d + 1, k, device=xs.device)  # rows: V (d × K), then the intercept
        theta[:, d] = torch.log(prior).float()
        gamma0 = 1.0 / float((prior * (1 - prior)).mean())
        theta, n_evals = lbfgs(fg, theta, p.max_iter, gamma0, p.tol)
        w = m @ theta[:, :d]
        b = theta[:, d] - (mu[:, None, :] @ w).squeeze(1)  # undo the centring
        return LinearSoftmax(lo, scale, w, b, classes, n_evals)

    def _preconditioner(self, xs: torch.Tensor) -> torch.Tensor:
        """M (R, d, d) with W = M V: L⁻ᵀ for the (ridged) covariance L Lᵀ of a row subsample of the centred,
        scaled features ``xs``, else (and where the factorisation fails) diag(1/std)."""
        r_all, n, d = xs.shape
        rows = self.params.precond_rows
        sub = xs[:, :: max(1, n // (rows or 8192))]  # a few thousand rows
        std = sub.pow(2).mean(1).sqrt()
        diag = torch.diag_embed(torch.where(std > 1e-6, 1.0 / std, torch.ones_like(std)))
        if rows == 0:
            return diag
        cov = (sub.transpose(1, 2) @ sub).double() / sub.shape[1]  # float32 products suffice here
        dia = cov.diagonal(dim1=1, dim2=2)
        dia.add_(1e-3 * dia.mean(1, keepdim=True) + 1e-12)
        chol, info = torch.linalg.cholesky_ex(cov)
        ok = info == 0
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device).expand(r_all, d, d)
        chol = torch.where(ok[:, None, None], chol, eye)  # a failed factor holds NaNs or garbage
        m = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(1, 2).float()
        return torch.where(ok[:, None, None], m, diag)


PROBES: dict[str, type[Probe]] = {c.name: c for c in (SklearnProbe, TorchProbe)}
