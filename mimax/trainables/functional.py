"""Batched building blocks for training R replicates at once (``mimax.trainables.packed``).

- ``Stacked``: R modules of one architecture as stacked parameters and buffers (a leading replicate
  dimension), called with ``torch.func.functional_call`` under ``torch.vmap``;
- ``batched_lbfgs`` and ``fit_torch_probes``: R independent ``TorchProbe`` fits (the same objective,
  preconditioner, L-BFGS steps and stopping rule as ``mimax.trainables.probes``) solved together;
- ``stacked_log_condition_numbers``: the Jacobian diagnostic of ``mimax.trainables.diagnostics`` for R
  encoders at once.

Every replicate's numbers follow its own single-model computation; only the float rounding of batched
kernels can differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, jacrev, stack_module_state, vmap

from mimax.trainables.probes import TorchProbe

Index = torch.Tensor | None  # replicate indices to use; None: all of them


class Stacked:
    """R modules of one architecture as stacked tensors with a leading replicate dimension.

    ``leaves`` are what an optimiser updates in place (``parameters()``); ``tensors()`` gives them in
    the modules' own layout, as ``functional_call`` fills ``module`` (a copy of the first replicate on
    the meta device) with one replicate's tensors at a time. ``buffers`` are stacked the same way.

    The weights of ``nn.Linear`` layers are stored transposed, (R, in, out): under vmap their gradient
    arrives in that layout, which autograd can then take over as it is instead of copying it into the
    weight's layout (the copy was ~10% of an MLP pack's step on CPU). Fused Adam needs a parameter, its
    gradient and its moments in one layout, and this keeps them all contiguous.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        params, buffers = stack_module_state(list(modules))
        linear = {f"{n}.weight" if n else "weight" for n, m in modules[0].named_modules() if isinstance(m, nn.Linear)}
        self.transposed = frozenset(k for k in params if k in linear)
        self.leaves: dict[str, torch.Tensor] = {
            k: v.detach().transpose(1, 2).contiguous().requires_grad_() if k in self.transposed else v
            for k, v in params.items()
        }
        self.buffers: dict[str, torch.Tensor] = buffers
        self.module = copy.deepcopy(modules[0]).to("meta")
        self.size = len(modules)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.leaves.values())

    def n_params(self) -> int:
        """Parameters of one replicate."""
        return sum(p[0].numel() for p in self.leaves.values())

    def train(self, mode: bool) -> None:
        self.module.train(mode)

    def as_module(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like leaf ``name`` (the leaf itself, its gradient, its Adam moments), in the
        module's layout (a view)."""
        return t.transpose(-1, -2) if name in self.transposed else t

    def tensors(self, idx: Index = None) -> tuple[dict, dict]:
        """(params, buffers) in the modules' layout, for the replicates ``idx`` (None: all)."""
        pick = (lambda t: t) if idx is None else (lambda t: t[idx])  # noqa: E731
        params = {k: self.as_module(k, pick(v)) for k, v in self.leaves.items()}
        return params, {k: pick(v) for k, v in self.buffers.items()}

    def __call__(self, *xs: torch.Tensor, idx: Index = None, shared: bool = False) -> torch.Tensor:
        """Each replicate r applied to ``xs[...][r]`` (or, ``shared``, to the same ``xs``): (R, ...)."""
        params, buffers = self.tensors(idx)
        if shared and not params and not buffers:  # nothing differs between replicates (identity)
            out = functional_call(self.module, ({}, {}), xs)
            return out.expand(self.size if idx is None else len(idx), *out.shape)

        def one(p, b, *x):
            return functional_call(self.module, (p, b), x)

        return vmap(one, in_dims=(0, 0, *([None if shared else 0] * len(xs))))(params, buffers, *xs)

    def replicate_state(self, r: int) -> dict[str, torch.Tensor]:
        """Replicate r's ``state_dict`` as the single module would give it (keys, shapes, contiguous)."""
        params, buffers = self.tensors()
        return {k: v[r].detach().clone(memory_format=torch.contiguous_format) for k, v in (*params.items(),
                                                                                          *buffers.items())}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        params, buffers = self.tensors()  # the modules' layout, whatever the storage
        return {"params": {k: v.detach() for k, v in params.items()}, "buffers": dict(buffers)}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        params, buffers = self.tensors()
        with torch.no_grad():  # in place: the optimiser holds these tensors
            for k, v in params.items():
                v.copy_(state["params"][k])
            for k, v in buffers.items():
                v.copy_(state["buffers"][k])


# ------------------------------------------------------------------------------------ Jacobians


@torch.no_grad()
def stacked_log_condition_numbers(encoder: Stacked, x: torch.Tensor, idx: Index = None, chunk: int = 32):
    """Replicate r's per-example log(σ_max / σ_min) of its Jacobian at x[r] (R', B, in) -> (R', B).

    As ``diagnostics.log_condition_numbers``: ``chunk`` examples at a time, singular values in float64.
    """
    params, buffers = encoder.tensors(idx)

    def jac(p, b, xs):
        def one(xi):
            return functional_call(encoder.module, (p, b), (xi.unsqueeze(0),)).squeeze(0)

        return vmap(jacrev(one))(xs)

    out = []
    for start in range(0, x.shape[1], max(1, chunk)):
        j = vmap(jac)(params, buffers, x[:, start : start + chunk])  # the transforms ignore no_grad
        s = torch.linalg.svdvals(j.double())
        out.append(torch.log(s[..., 0] / s[..., -1]))
    return torch.cat(out, dim=1).to(x.dtype) if out else x.new_zeros(x.shape[0], 0)


# ------------------------------------------------------------------------------------ probes


def _bsum(t: torch.Tensor) -> torch.Tensor:
    """Per-replicate sum over every dimension but the first, as float64 (the single solver's float())."""
    return t.flatten(1).sum(1).double()


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(R,) -> broadcastable against ``like`` (R, ...), in ``like``'s dtype."""
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def batched_lbfgs(fg, theta: torch.Tensor, max_iter: int, gamma0: float, tol: float, history: int = 10):
    """R independent runs of ``probes.lbfgs`` in lockstep: theta (R, ...); ``fg(theta_sub, idx)`` ->
    (loss (R',) float64, grad like theta_sub) for the replicates ``idx``.

    Each replicate keeps its own history, step length, line search and stopping test, so it takes the
    same steps as the single solver would on its own problem. Returns (theta, evaluations (R,)).
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
        # Two-loop recursion, masked where a replicate has fewer pairs.
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
        bad = ~(slope < 0)  # not a descent direction: restart from the gradient
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
            t_min = -slope[idx] * ti * ti / (2.0 * (fi - f[idx] - slope[idx] * ti))
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


@dataclass
class StackedLinearSoftmax:
    """R fitted probes: logits[r] = ((x[r] − lo[r]) · scale[r]) @ weight[r] + bias[r]."""

    lo: torch.Tensor  # (R, d)
    scale: torch.Tensor  # (R, d)
    weight: torch.Tensor  # (R, d, K)
    bias: torch.Tensor  # (R, K)
    classes: torch.Tensor  # (K,)
    n_evals: torch.Tensor  # (R,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.lo)
        return torch.baddbmm(self.bias[:, None, :], (x - self.lo[:, None]) * self.scale[:, None], self.weight)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Accuracy of each replicate on (x[r], y)."""
        pred = self.classes[self.logits(x).argmax(2)]
        return (pred == y.to(self.classes.device)).float().mean(1).tolist()


def _preconditioners(probe: TorchProbe, x, scale, shift) -> torch.Tensor:
    """``TorchProbe._preconditioner`` for each replicate: (R, d, d)."""
    r_all, n, d = x.shape
    rows = probe.params.precond_rows
    step = max(1, n // (rows or 8192))
    sub = x[:, ::step] * scale[:, None] - shift[:, None]
    std = sub.pow(2).mean(1).sqrt()
    diag = torch.diag_embed(torch.where(std > 1e-6, 1.0 / std, torch.ones_like(std)))
    if rows == 0:
        return diag
    cov = (sub.transpose(1, 2) @ sub).double() / sub.shape[1]
    dia = cov.diagonal(dim1=1, dim2=2)
    dia.add_(1e-3 * dia.mean(1, keepdim=True) + 1e-12)
    chol, info = torch.linalg.cholesky_ex(cov)
    ok = info == 0
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device).expand(r_all, d, d)
    # A failed factor holds NaNs or garbage; those replicates take the diagonal instead.
    chol = torch.where(ok[:, None, None], chol, eye)
    m = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(1, 2).float()
    return torch.where(ok[:, None, None], m, diag)


@torch.no_grad()
def fit_torch_probes(probe: TorchProbe, x: torch.Tensor, y: torch.Tensor) -> StackedLinearSoftmax:
    """``probe.fit`` on each replicate's features x[r] (R, n, d) with shared labels y (n,), together."""
    p = probe.params
    x = x.detach().to(torch.float32).contiguous()
    classes, y_idx = torch.unique(y.detach().to(x.device), return_inverse=True)
    r_all, n, d = x.shape
    k = len(classes)
    if k < 2:
        raise ValueError(f"a probe needs at least two classes in its training labels, got {k}")
    lo, hi = x.amin(1), x.amax(1)
    rng = hi - lo
    scale = torch.where(rng > 0, 1.0 / rng, torch.ones_like(rng))
    mu = (x.mean(1) - lo) * scale
    shift = lo * scale + mu
    m = _preconditioners(probe, x, scale, shift)
    lam = 1.0 / (p.C * n)
    prior = torch.bincount(y_idx, minlength=k).double() / n
    rows = torch.arange(n, device=x.device)
    everyone = torch.arange(r_all, device=x.device)

    def fg(theta: torch.Tensor, idx: torch.Tensor):
        full = len(idx) == r_all and bool((idx == everyone).all())
        xi = x if full else x[idx]
        mi, sc, sh = m[idx], scale[idx], shift[idx]
        w = mi @ theta[:, :d]  # (R', d, K)
        b = theta[:, d] - (sh[:, None, :] @ w).squeeze(1)
        z = torch.baddbmm(b[:, None, :], xi, sc[:, :, None] * w)  # (R', n, K)
        zmax = z.amax(2, keepdim=True)
        e = torch.exp(z - zmax)
        s = e.sum(2, keepdim=True)
        loss = (torch.log(s) + zmax).flatten(1).sum(1) / n - z[:, rows, y_idx].sum(1) / n
        loss = loss + 0.5 * lam * (w * w).flatten(1).sum(1)
        g = e.div_(s)
        g[:, rows, y_idx] -= 1.0
        g_sum = g.sum(1)  # (R', K)
        gx = torch.bmm(g.transpose(1, 2), xi).transpose(1, 2)  # (R', d, K)
        g_w = (sc[:, :, None] * gx - sh[:, :, None] * g_sum[:, None, :]) / n + lam * w
        return loss.double(), torch.cat([mi.transpose(1, 2) @ g_w, g_sum[:, None, :] / n], dim=1)

    theta = torch.zeros(r_all, d + 1, k, device=x.device)
    theta[:, d] = torch.log(prior).float()
    gamma0 = 1.0 / float((prior * (1 - prior)).mean())
    theta, n_evals = batched_lbfgs(fg, theta, p.max_iter, gamma0, p.tol)
    w = m @ theta[:, :d]
    b = theta[:, d] - (mu[:, None, :] @ w).squeeze(1)
    return StackedLinearSoftmax(lo, scale, w, b, classes, n_evals)
