"""Linear probes: the paper's pixel baseline on MNIST, torch vs sklearn agreement, and the torch solver
against a brute-force scikit-learn fit of the same objective. A conformance suite runs over PROBES."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler

from mimax.errors import ConfigError
from mimax.trainables.base import parse_params
from mimax.trainables.data import DATASETS
from mimax.trainables.probes import PROBES, TorchProbe
from reference import torch_probe_fit


def make(name: str, **params):
    cls = PROBES[name]
    return cls(parse_params(cls, params, "eval.probe"))


def blobs(n_per: int, centers, spread: float, seed: int = 0, labels=None):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor(centers, dtype=torch.float32)
    labels = list(range(len(centers))) if labels is None else labels
    x = torch.cat([c + spread * torch.randn(n_per, centers.shape[1], generator=g) for c in centers])
    y = torch.tensor(labels).repeat_interleave(n_per)
    return x, y


def objective(weight: np.ndarray, bias: np.ndarray, xs: np.ndarray, y: np.ndarray, c: float) -> float:
    """scikit-learn's objective divided by C·n, in float64: mean logloss + ‖W‖² / (2 C n)."""
    z = xs @ weight + bias
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
    n = len(y)
    return float((lse - z[np.arange(n), y]).mean() + (weight**2).sum() / (2 * c * n))


# ------------------------------------------------------------------------------- conformance suite


@pytest.mark.parametrize("name", sorted(PROBES))
def test_conformance(name):
    cls = PROBES[name]
    assert cls.name == name
    with pytest.raises(ConfigError, match=r"^eval\.probe\.bogus: unknown key"):
        parse_params(cls, {"bogus": 1}, "eval.probe")
    with pytest.raises(ConfigError, match=r"^eval\.probe\.C: "):
        parse_params(cls, {"C": 0}, "eval.probe")
    probe = make(name)
    settings = probe.settings()
    assert settings["name"] == name and settings["C"] == 10
    json.dumps(settings)  # recorded with every accuracy

    # Separable clusters with labels that are not 0..K-1, features far from [0, 1], float64 input.
    x, y = blobs(30, [[0, 0], [10, 0], [0, 10]], 1.0, labels=[3, 7, 9])
    x = (x * 100 + 1000).double()
    x_te, y_te = blobs(20, [[0, 0], [10, 0], [0, 10]], 1.0, seed=1, labels=[3, 7, 9])
    acc = probe.fit_score(x, y, (x_te * 100 + 1000).double(), y_te)
    assert isinstance(acc, float) and acc == 1.0

    # Chance-level data stays near chance (the score is not always 1).
    g = torch.Generator().manual_seed(2)
    acc = probe.fit_score(torch.randn(400, 5, generator=g), torch.randint(0, 2, (400,), generator=g),
                          torch.randn(2000, 5, generator=g), torch.randint(0, 2, (2000,), generator=g))
    assert 0.4 < acc < 0.6


# ------------------------------------------------------------------------------------------ MNIST


@pytest.fixture(scope="module")
def mnist_top():
    data = DATASETS["mnist"](DATASETS["mnist"].Params())
    return data.probe_data(torch.Generator().manual_seed(0))


def relu_projection(x: torch.Tensor) -> torch.Tensor:
    w = torch.randn(x.shape[1], 100, generator=torch.Generator().manual_seed(0)) / math.sqrt(x.shape[1])
    return torch.relu(x @ w)


def test_pixel_baseline_and_torch_agreement(mnist_top):
    x_tr, y_tr, x_te, y_te = mnist_top
    pixels = make("sklearn").fit_score(x_tr, y_tr, x_te, y_te)
    assert 0.82 <= pixels <= 0.87  # the paper: ≈0.85 on raw top halves without noise
    assert abs(make("torch").fit_score(x_tr, y_tr, x_te, y_te) - pixels) <= 0.01
    # Width 100 (features of the size the encoders produce).
    f_tr, f_te = relu_projection(x_tr), relu_projection(x_te)
    sk = make("sklearn").fit_score(f_tr, y_tr, f_te, y_te)
    assert abs(make("torch").fit_score(f_tr, y_tr, f_te, y_te) - sk) <= 0.01


# --------------------------------------------------------------------------------- torch solver


def sklearn_oracle(x: np.ndarray, y: np.ndarray, c: float):
    """A brute-force fit of the same objective: lbfgs run to a tiny tolerance, in float64."""
    xs = MinMaxScaler().fit_transform(x)
    clf = LogisticRegression(solver="lbfgs", C=c, tol=1e-12, max_iter=100_000).fit(xs, y)
    return xs, clf.coef_.T, clf.intercept_


def test_torch_solves_sklearns_objective():
    x, y = blobs(150, [[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0]], 0.8)
    x = x * torch.tensor([1.0, 5.0, 0.1, 2.0, 1.0, 30.0]) + 3  # unequal scales: MinMax must handle them
    c = 10.0
    xs, w_ref, b_ref = sklearn_oracle(x.double().numpy(), y.numpy(), c)
    fit = make("torch", C=c, max_iter=500, tol=0).fit(x, y)
    w, b = fit.weight.double().numpy(), fit.bias.double().numpy()
    yn = y.numpy()
    assert objective(w, b, xs, yn, c) <= objective(w_ref, b_ref, xs, yn, c) + 1e-6
    np.testing.assert_allclose(w, w_ref, atol=2e-3 * np.abs(w_ref).max())
    # The intercept is unpenalised, so only its differences between classes are determined.
    np.testing.assert_allclose(b - b.mean(), b_ref - b_ref.mean(), atol=2e-3 * np.abs(b_ref).max())


def test_torch_on_digits_matches_the_oracle():
    data = DATASETS["digits"](DATASETS["digits"].Params())
    x_tr, y_tr, x_te, y_te = data.probe_data(torch.Generator())
    c = 10.0
    xs, w_ref, b_ref = sklearn_oracle(x_tr.double().numpy(), y_tr.numpy(), c)
    fit = make("torch", C=c, max_iter=300, tol=0).fit(x_tr, y_tr)
    ref_loss = objective(w_ref, b_ref, xs, y_tr.numpy(), c)
    loss = objective(fit.weight.double().numpy(), fit.bias.double().numpy(), xs, y_tr.numpy(), c)
    assert loss <= ref_loss * (1 + 1e-4)
    scaler = MinMaxScaler().fit(x_tr.double().numpy())
    ref_acc = float(((scaler.transform(x_te.double().numpy()) @ w_ref + b_ref).argmax(1) == y_te.numpy()).mean())
    assert abs(fit.score(x_te, y_te) - ref_acc) <= 2 / 450
    # The default (few-iteration) probe is close to the optimum too.
    assert abs(make("torch").fit_score(x_tr, y_tr, x_te, y_te) - ref_acc) <= 0.02


def test_torch_probe_ignores_feature_scale():
    x, y = blobs(100, [[0, 0, 0], [1, 1, 0], [0, 1, 1]], 0.7)
    probe = make("torch", max_iter=200, tol=0)
    a, b = probe.fit(x, y), probe.fit(x * 1e3 - 7, y)  # MinMax maps both to the same features
    torch.testing.assert_close(a.weight, b.weight, atol=1e-2 * float(a.weight.abs().max()), rtol=0)


def test_torch_probe_on_features_whose_offset_dwarfs_their_range():
    """Learned RealNVP features can sit far from zero against their range. The probe once fitted
    x @ (scale·W) − shift @ W, which cancels in float32 there (commit 3d31928; the old fig1c study, see
    docs/diagnostics/fig1c-plateau.md). Features exactly offset keep their MinMax-scaled values, so the
    probe must read what it reads on the features themselves."""
    data = DATASETS["digits"](DATASETS["digits"].Params())
    x_tr, y_tr, x_te, y_te = data.probe_data(torch.Generator())
    offset = 2.0 ** torch.randint(14, 17, (x_tr.shape[1],), generator=torch.Generator().manual_seed(0))
    # pixels in [0, 1], on a grid of 1/16, plus a power of two in 16384..65536: exact in float32
    far_tr, far_te = x_tr + offset, x_te + offset
    assert torch.equal(far_tr - offset, x_tr)
    probe = make("torch")
    near = probe.fit_score(x_tr, y_tr, x_te, y_te)
    assert near > 0.75  # top halves of digits
    assert abs(probe.fit_score(far_tr, y_tr, far_te, y_te) - near) <= 2 / 450


def test_torch_probe_diagonal_preconditioner():
    # precond_rows = 0 scales features by their std only; the optimum is the same.
    x, y = blobs(100, [[0, 0, 0], [1, 1, 0], [0, 1, 1]], 0.7)
    full = make("torch", max_iter=300, tol=0).fit(x, y)
    diag = make("torch", max_iter=300, tol=0, precond_rows=0).fit(x, y)
    torch.testing.assert_close(full.weight, diag.weight, atol=1e-2 * float(full.weight.abs().max()), rtol=0)


def test_fits_of_several_feature_sets_are_the_plain_single_fit_of_each():
    """TorchProbe.fit on R feature sets (R, n, d) and on one (n, d) = the reference's plain single
    L-BFGS on each: the same path (evaluations), weights and accuracy; labels that are not 0..K-1; a
    constant feature; features far from [0, 1]."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 7, 9]).repeat_interleave(200)
    centres = torch.randn(3, 3, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5])[:, None, None]
    x = torch.stack([c[torch.arange(3).repeat_interleave(200)] for c in centres])
    x = x + 1.5 * torch.randn(x.shape, generator=g)
    x[1] = 50 + 10 * x[1]
    x[2, :, 4] = 3.0  # a constant feature
    x_test = x + 0.3 * torch.randn(x.shape, generator=g)
    x_test[2, :, 4] = 3.0  # (its weight is arbitrary: compare logits, not weights)
    # Early iterations (tol 0: no stop on a change at the float32 noise floor): the very same path.
    # Then the protocol's settings, which may stop an iteration apart at that noise floor: near one optimum.
    for params, tol in (({"max_iter": 4, "tol": 0}, 1e-4), ({"max_iter": 4, "tol": 0, "precond_rows": 0}, 1e-4),
                        ({}, 1e-2), ({"max_iter": 30}, 1e-2)):
        probe = make("torch", **params)
        fitted = probe.fit(x, labels)
        scores = fitted.score(x_test, labels)
        for r in range(3):
            one, alone = torch_probe_fit(probe.params, x[r], labels), probe.fit(x[r], labels)
            if params.get("tol") == 0:
                assert int(fitted.n_evals[r]) == one.n_evals == alone.n_evals
            for got in (fitted.logits(x_test)[r], alone.logits(x_test[r])):
                torch.testing.assert_close(got, one.logits(x_test[r]), rtol=tol, atol=tol)
            torch.testing.assert_close(fitted.bias[r], one.bias, rtol=tol, atol=tol)
            assert scores[r] == one.score(x_test[r], labels) == alone.score(x_test[r], labels)
        assert len(set(scores)) > 1  # really three different problems


def test_torch_probe_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        make("torch").fit(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_probe_on_cuda():
    x, y = blobs(50, [[0, 0], [5, 5]], 1.0)
    x_te, y_te = blobs(50, [[0, 0], [5, 5]], 1.0, seed=1)
    fit = TorchProbe(TorchProbe.Params()).fit(x.cuda(), y.cuda())
    assert fit.weight.is_cuda and fit.score(x_te.cuda(), y_te.cuda()) == 1.0
