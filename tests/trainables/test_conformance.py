"""Every built-in encoder, critic, estimator and dataset passes the public conformance suite,
``mimax.testing`` (the one users run on their own components), check by check; and a deliberately
broken component fails it with a message that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from requires import require
from test_data import FASHION_DIR, write_cifar

import mimax.testing as mt
from mimax.trainables.critics import CRITICS, Critic
from mimax.trainables.data import DATASETS
from mimax.trainables.encoders import ENCODERS
from mimax.trainables.estimators import ESTIMATORS, Estimate, Estimator

# Smaller settings than the defaults where those are slow; the rest run with their defaults.
FAST = {
    ("encoder", "mlp"): {"hidden": [32], "out_dim": 8},
    ("encoder", "convnet"): {"channels": [8], "kernel": 3, "out_dim": 8},
    ("encoder", "residual-mlp"): {"layers": 2},
    ("encoder", "realnvp"): {"layers": 2, "hidden": 16},
    ("critic", "separable"): {"hidden": 16, "out": 16},
    ("critic", "concat"): {"hidden": 16},
}
REGISTRIES = {"encoder": ENCODERS, "critic": CRITICS, "estimator": ESTIMATORS, "data": DATASETS}


def write_arrays(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x1, x2 = (y[:, None] + rng.normal(size=(n, 6)) for _ in range(2))
    np.savez(path, x1=x1, x2=x2, labels=y, split=np.where(np.arange(n) < 30, "train", "test"))
    return path


@pytest.fixture(scope="module")
def data_params(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root / "cifar")

    def needed(name: str) -> dict:
        if name == "fashion-mnist":
            require(FASHION_DIR.is_dir(), f"Fashion-MNIST at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
        return {"cifar10": {"root": str(root / "cifar")},
                "arrays": {"path": str(write_arrays(root / "views.npz"))}}.get(name, {})

    return needed


CASES = [(family, name, check) for family, registry in REGISTRIES.items() for name in sorted(registry)
         for check in mt.checks_for(registry[name], FAST.get((family, name)) if family != "data" else None)]


def test_every_entry_and_family_is_covered():
    assert {(f, n) for f, n, _ in CASES} == {(f, n) for f, r in REGISTRIES.items() for n in r}
    # the checks the issue asks for are all there, each family with what applies to it
    assert set(mt.CHECKS["critic"]) == {"declares", "shapes", "pairs", "ceiling", "calibration", "pack", "checkpoint"}
    assert set(mt.CHECKS["estimator"]) == {"declares", "shapes", "ceiling", "calibration", "pack", "checkpoint"}
    # only an encoder that needs images goes without calibration (its data, digits, has no known MI)
    assert {(f, n) for f, n, c in CASES if c == "calibration"} == {
        *(("critic", n) for n in CRITICS), *(("estimator", n) for n in ESTIMATORS),
        *(("encoder", n) for n in ENCODERS if n != "convnet")}


@pytest.mark.parametrize("family, name, check", CASES)
def test_builtin_passes(family, name, check, data_params):
    params = data_params(name) if family == "data" else FAST.get((family, name))
    mt.check(REGISTRIES[family][name], params, only=[check])


# ---- broken components: each fails with a message naming what is wrong -----------------------------

class Centred(Critic):
    """Centres u over the batch before scoring: S[i, j] depends on the other anchors too."""

    name = "centred"

    def __init__(self, params, dim_u, dim_v):
        super().__init__(params, dim_u, dim_v)
        self.weight = torch.nn.Parameter(torch.randn(dim_u, dim_v))

    def forward(self, u, v):
        return ((u - u.mean(dim=0)) @ self.weight) @ v.T


class RowSummed(Critic):
    name = "row-summed"

    def __init__(self, params, dim_u, dim_v):
        super().__init__(params, dim_u, dim_v)
        self.weight = torch.nn.Parameter(torch.randn(dim_u, dim_v))

    def forward(self, u, v):
        return ((u @ self.weight) @ v.T).sum(dim=1)


class Overshooting(Estimator):
    """InfoNCE plus one nat: above log K, and above the true MI."""

    name = "overshooting"

    def ceiling(self, k):
        return float(np.log(k))

    def forward(self, scores):
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
            raise ValueError("square")
        k = scores.shape[0]
        value = np.log(k) + 1.0 + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()
        return Estimate(value, value)


class Forgetful(Estimator):
    """Keeps a running mean as a plain attribute, not a buffer: a checkpoint loses it."""

    name = "forgetful"

    def __init__(self, params):
        super().__init__(params)
        self.mean = 0.0
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, scores):
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
            raise ValueError("square")
        if self.training:
            self.mean = 0.9 * self.mean + 0.1 * float(scores.mean())
        value = (scores.diagonal() * self.scale).mean() - torch.logsumexp(scores, dim=(0, 1)) + self.mean
        return Estimate(value, value)


class Undeclared(Overshooting):
    """Learns a scale, but keeps the default has_parameters = False: no optimiser would train it."""

    name = "undeclared"

    def __init__(self, params):
        super().__init__(params)
        self.scale = torch.nn.Parameter(torch.ones(()))


@pytest.mark.parametrize("cls, check, message", [
    (Undeclared, "declares", r"estimator 'undeclared' .* fails declares: has_parameters is False but it holds 1 "
                             r"parameters"),
    (Centred, "pairs", r"critic 'centred' .* fails pairs: S\[i, j\] differs from the critic applied to "
                          r"\(u_i, v_j\) alone"),
    (RowSummed, "shapes", r"critic 'row-summed' .* fails shapes: scores of shape \(4,\) for u \(4, 5\) and "
                          r"v \(5, 7\); expected \(4, 5\)"),
    (Overshooting, "ceiling", r"estimator 'overshooting' .* fails ceiling: estimate .* above its ceiling"),
    (Forgetful, "checkpoint", r"fails checkpoint: a copy loaded from its state_dict computes something else"),
])
def test_a_broken_component_fails_saying_what_is_wrong(cls, check, message):
    with pytest.raises(mt.ConformanceError, match=message):
        mt.check(cls, only=[check])
    assert cls.name not in CRITICS and cls.name not in ESTIMATORS  # registered only while checked


def test_calibration_catches_an_estimator_above_the_truth():
    class Inflated(Overshooting):
        name = "inflated"

        def ceiling(self, k):
            return None

    with pytest.raises(mt.ConformanceError, match=r"fails calibration: fed the optimal critic's scores .* it estimates [\d.]+ nats; "
                                                   r"expected between 1 and 2.3"):
        mt.check(Inflated, only=["calibration"])


def test_a_class_without_forward_fails_declares():
    class NoForward(Critic):
        name = "no-forward"

    with pytest.raises(mt.ConformanceError, match="fails declares: critic 'no-forward' .* lacks the method forward"):
        mt.check(NoForward, only=["pack"])
