"""TF1's AdamOptimizer on ``torch.optim.Adam``.

TF1 adds ε̂ to the *uncorrected* √v:  θ ← θ − lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε̂).
PyTorch adds ε to the bias-corrected one: θ ← θ − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε).
Multiplying PyTorch's numerator and denominator by √(1−β2ᵗ) shows the two agree exactly when
ε = ε̂ / √(1−β2ᵗ) at step t. So TF1's Adam is PyTorch's with each group's ``eps`` set before every step:
nothing else changes, and it works for every Adam implementation (single-tensor, foreach, fused), since each
reads ``group["eps"]`` at every step. The two differ only early (ε_t is √1000 ≈ 32× ε̂ at t = 1 with
β2 = 0.999) and where √v is not ≫ ε̂, i.e. for parameters whose gradients are ~1e-8 or smaller.
"""

from __future__ import annotations

import math

import torch


def tf1_epsilon(optimizer: torch.optim.Optimizer, eps: float = 1e-8):
    """Make ``optimizer`` (an ``Adam``) take TF1 AdamOptimizer's steps with ε̂ = ``eps``.

    Registers a step pre-hook that sets each group's ``eps`` to ε̂ / √(1 − β2ᵗ) for the step t about to be
    taken. t and ε̂ are kept in the group itself (``tf1_step``, ``tf1_eps``), so they are saved and restored
    with ``optimizer.state_dict()``; call this once per optimizer object, before or after its
    ``load_state_dict`` (a loaded count wins). Like TF1, t counts the optimizer's steps, which equals
    PyTorch's per-parameter step when every parameter gets a gradient at every step. Returns the hook's
    handle.
    """
    for group in optimizer.param_groups:
        group.setdefault("tf1_eps", eps)
        group.setdefault("tf1_step", 0)

    def before_step(opt: torch.optim.Optimizer, args, kwargs) -> None:
        for group in opt.param_groups:
            group["tf1_step"] = t = group.get("tf1_step", 0) + 1
            group["eps"] = group.setdefault("tf1_eps", eps) / math.sqrt(1.0 - group["betas"][1] ** t)

    return optimizer.register_step_pre_hook(before_step)
