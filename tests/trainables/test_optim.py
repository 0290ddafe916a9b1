"""TF1's Adam ε on torch.optim.Adam, against a plain-Python transcription of TF1's AdamOptimizer update
(training_ops.apply_adam: lr_t = lr·√(1−β2ᵗ)/(1−β1ᵗ); θ −= lr_t·m/(√v + ε̂)), in float64, over a few hundred
steps with gradients from 1 down to 1e-12 (where the two ε conventions part)."""

from __future__ import annotations

import math

import pytest
import torch

from mimax.trainables.optim import tf1_epsilon

STEPS = 300
# Per coordinate: gradient g = scale · (θ − target) + scale · wiggle(t), so the trajectory depends on the
# update (an error made early shows later) and the gradient sizes span 1 to 1e-12.
SCALES = [1.0, 1e-3, 1e-6, 1e-8, 1e-9, 1e-10, 1e-12]


def grad(theta: list[float], t: int, scales: list[float]) -> list[float]:
    return [s * ((th - 0.5) + math.sin(0.1 * t + i)) for i, (th, s) in enumerate(zip(theta, scales))]


def tf1_adam(theta, scales, lr, beta1, beta2, eps, steps):
    """TF1 AdamOptimizer, scalar by scalar (beta powers start at β and advance after each step)."""
    theta = list(theta)
    m, v = [0.0] * len(theta), [0.0] * len(theta)
    b1p, b2p = beta1, beta2
    for t in range(steps):
        g = grad(theta, t, scales)
        lr_t = lr * math.sqrt(1 - b2p) / (1 - b1p)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            theta[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)
        b1p, b2p = b1p * beta1, b2p * beta2
    return theta


GROUPS = [  # two groups with their own lr and β2, as the trainer's optimisers could have
    {"lr": 1e-3, "betas": (0.9, 0.999), "scales": SCALES},
    {"lr": 1e-5, "betas": (0.8, 0.99), "scales": SCALES[::-1]},
]


def torch_adam(impl: dict, tf1: bool, steps: int = STEPS, resume_at: int | None = None):
    params = [torch.zeros(len(g["scales"]), dtype=torch.float64) for g in GROUPS]
    for p in params:
        p.requires_grad_(True)

    def make():
        opt = torch.optim.Adam([{"params": [p], "lr": g["lr"], "betas": g["betas"]} for p, g in zip(params, GROUPS)],
                               eps=1e-8, **impl)
        if tf1:
            tf1_epsilon(opt)
        return opt

    opt = make()
    for t in range(steps):
        if t == resume_at:  # a checkpoint round trip: a fresh optimizer loads the state and goes on
            state = opt.state_dict()
            opt = make()
            opt.load_state_dict(state)
        for p, g in zip(params, GROUPS):
            p.grad = torch.tensor(grad(p.detach().tolist(), t, g["scales"]), dtype=torch.float64)
        opt.step()
    return [p.detach().tolist() for p in params]


def reference():
    return [tf1_adam([0.0] * len(g["scales"]), g["scales"], g["lr"], *g["betas"], 1e-8, STEPS) for g in GROUPS]


def close(a: list[list[float]], b: list[list[float]], rtol: float) -> bool:
    """Every coordinate's displacement from 0 agrees to rtol."""
    return all(abs(x - y) <= rtol * max(abs(x), abs(y)) for ga, gb in zip(a, b) for x, y in zip(ga, gb))


IMPLS = [{"foreach": False}, {"foreach": True}, {"fused": True}]


@pytest.mark.parametrize("impl", IMPLS, ids=["single-tensor", "foreach", "fused"])
def test_tf1_epsilon_matches_tf1_adam(impl):
    want = reference()
    assert close(torch_adam(impl, tf1=True), want, rtol=1e-9)
    # The oracle separates the two conventions: plain PyTorch Adam moves the tiny-gradient coordinates
    # (gradients ≤ 1e-8) by a clearly different amount, and the large-gradient ones by nearly the same.
    plain = torch_adam(impl, tf1=False)
    for g, got, ref in zip(GROUPS, plain, want):
        for s, x, y in zip(g["scales"], got, ref):
            rel = abs(x - y) / abs(y)
            assert rel > 0.05 if s <= 1e-8 else rel < 0.05, (s, x, y)


def test_tf1_epsilon_survives_a_checkpoint():
    assert close(torch_adam({"foreach": False}, tf1=True, resume_at=137), reference(), rtol=1e-9)


def test_tf1_epsilon_is_per_step():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], betas=(0.9, 0.999))
    tf1_epsilon(opt, eps=1e-8)
    seen = []
    for _ in range(3):
        p.grad = torch.ones(1)
        opt.step()
        seen.append(opt.param_groups[0]["eps"])
    assert seen == pytest.approx([1e-8 / math.sqrt(1 - 0.999**t) for t in (1, 2, 3)], rel=1e-12)
    assert opt.state_dict()["param_groups"][0]["tf1_step"] == 3
