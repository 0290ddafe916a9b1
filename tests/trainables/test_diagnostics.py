"""Diagnostics: log condition numbers against known singular values and a brute-force Jacobian loop;
percentiles against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mimax.trainables.base import ViewSpec
from mimax.trainables.diagnostics import log_condition_numbers, percentiles
from mimax.trainables.encoders import ENCODERS
from mimax.trainables.functional import Stacked
from reference import log_condition_numbers as reference_log_condition_numbers


def linear_map(singular_values: list[float], out_dim: int, in_dim: int, seed: int = 0) -> nn.Linear:
    """x -> U diag(s) Vᵀ x + b with random orthogonal U, V: singular values known by construction."""
    gen = torch.Generator().manual_seed(seed)
    q_out = torch.linalg.qr(torch.randn(out_dim, out_dim, generator=gen, dtype=torch.float64))[0]
    q_in = torch.linalg.qr(torch.randn(in_dim, in_dim, generator=gen, dtype=torch.float64))[0]
    r = len(singular_values)
    w = q_out[:, :r] @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ q_in[:, :r].T
    lin = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


@pytest.mark.parametrize(
    "s, out_dim, in_dim",
    [([8.0, 3.0, 1.0, 0.25], 4, 4), ([4.0, 2.0, 0.5], 3, 5), ([5.0, 1.0, 0.1], 6, 3)],
)
def test_linear_map_gives_log_of_singular_value_ratio(s, out_dim, in_dim):
    got = log_condition_numbers(linear_map(s, out_dim, in_dim), torch.randn(7, in_dim))
    assert got.shape == (7,)
    torch.testing.assert_close(got, torch.full((7,), math.log(max(s) / min(s))), atol=1e-4, rtol=0)


def test_matches_brute_force_jacobian_loop():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 10), nn.Softplus(), nn.Linear(10, 10))
    x = torch.randn(5, 10)
    expected = []
    for b in range(5):  # one example at a time, autograd's Jacobian, numpy's SVD
        jac = torch.autograd.functional.jacobian(lambda xi: enc(xi[None])[0], x[b]).numpy().astype(np.float64)
        sv = np.linalg.svd(jac, compute_uv=False)
        expected.append(math.log(sv.max() / sv.min()))
    got = log_condition_numbers(enc, x)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    assert got.std() > 1e-3  # nonlinear: the Jacobian really differs per example
    torch.testing.assert_close(log_condition_numbers(enc, x, chunk=2), got, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_condition_numbers(enc, x, chunk=None), got, atol=1e-4, rtol=0)


def test_matches_finite_differences_for_an_encoder():
    torch.manual_seed(0)
    cls = ENCODERS["mlp"]
    enc = cls(cls.Params(hidden=[64], out_dim=12), ViewSpec(12)).double()  # wide: full-rank Jacobians
    x = torch.randn(3, 12, dtype=torch.float64)
    eps = 1e-6
    basis = torch.eye(12, dtype=torch.float64)
    got = log_condition_numbers(enc, x)
    for b in range(3):
        with torch.no_grad():
            cols = [(enc(x[b : b + 1] + eps * e) - enc(x[b : b + 1] - eps * e))[0] / (2 * eps) for e in basis]
        sv = torch.linalg.svdvals(torch.stack(cols, dim=1))
        assert got[b].item() == pytest.approx(math.log(sv[0] / sv[-1]), abs=1e-5)


def test_identity_encoder_is_perfectly_conditioned():
    cls = ENCODERS["identity"]
    got = log_condition_numbers(cls(cls.Params(), ViewSpec(392)), torch.rand(4, 392))
    torch.testing.assert_close(got, torch.zeros(4), atol=1e-6, rtol=0)


def test_residual_mlp_at_init_is_nearly_conditioned_and_grows_when_scaled():
    cls = ENCODERS["residual-mlp"]
    torch.manual_seed(0)
    enc = cls(cls.Params(), ViewSpec(392, (1, 14, 28)))
    x = torch.rand(4, 392)
    assert log_condition_numbers(enc, x).abs().max() < 0.05
    # A fifth (linear) branch of -0.9 on half the coordinates scales them by 0.1 and leaves the rest:
    # singular values ≈ 1 and ≈ 0.1 on top of the near-identity earlier steps, so log cond ≈ log 10.
    with torch.no_grad():
        enc.branches[-1].weight.copy_(-0.9 * torch.diag((torch.arange(392) < 196).double()).float())
    got = log_condition_numbers(enc, x)
    assert got.min() == pytest.approx(math.log(10), abs=0.05)


def test_does_not_touch_parameter_gradients():
    enc = nn.Linear(4, 4)
    log_condition_numbers(enc, torch.randn(3, 4))
    assert enc.weight.grad is None


def test_percentiles_match_numpy():
    values = torch.tensor([3.0, 0.5, 7.25, 1.0, 2.0, 9.0, 4.5])
    got = percentiles(values)
    assert list(got) == [5, 25, 50, 75, 95]
    for q in (5, 25, 50, 75, 95):
        assert got[q] == pytest.approx(np.percentile(values.numpy(), q))
    named = percentiles(values, prefix="log_cond")
    assert named == {f"log_cond_p{q}": v for q, v in got.items()}


def test_percentiles_of_0_to_100_are_q():
    got = percentiles(list(range(101)), qs=(2.5, 50), prefix="x")
    assert got == {"x_p2.5": pytest.approx(2.5), "x_p50": pytest.approx(50.0)}


def test_percentiles_of_nothing_are_nan():
    assert all(math.isnan(v) for v in percentiles([]).values())


@pytest.mark.parametrize("name", ENCODERS)
def test_runs_on_every_encoder(name):
    cls = ENCODERS[name]
    torch.manual_seed(0)
    small = {"realnvp": {"layers": 2, "hidden": 16}}.get(name, {})
    enc = cls(cls.Params(**small), ViewSpec(32, (1, 4, 8)))
    got = log_condition_numbers(enc, torch.rand(3, 32), chunk=2)
    assert got.shape == (3,) and torch.isfinite(got).all() and (got >= 0).all()


def test_additive_realnvp_at_init_is_a_permutation_so_perfectly_conditioned():
    cls = ENCODERS["realnvp"]
    torch.manual_seed(0)
    enc = cls(cls.Params(layers=30, hidden=64), ViewSpec(32))
    assert log_condition_numbers(enc, torch.rand(3, 32)).abs().max() < 1e-2


@pytest.mark.parametrize("r_all", [1, 3])
def test_stacked_encoders_give_each_encoders_own(r_all):
    """R encoders at once (a trainer's replicates) = autograd's per-example Jacobian of each."""
    view = ViewSpec(12)
    cls = ENCODERS["residual-mlp"]
    mods = []
    for seed in range(r_all):
        torch.manual_seed(seed)
        mods.append(cls(cls.Params(layers=3, init_std=0.2), view))
    x = torch.randn(r_all, 40, 12, generator=torch.Generator().manual_seed(1))
    got = log_condition_numbers(Stacked(mods), x, chunk=16)
    assert got.shape == (r_all, 40)
    for r, m in enumerate(mods):
        expected = torch.tensor(reference_log_condition_numbers(m, x[r]))
        torch.testing.assert_close(got[r], expected, rtol=1e-4, atol=1e-5)
    pick = [r_all - 1, 0]
    sub = log_condition_numbers(Stacked(mods), x[pick], idx=torch.tensor(pick))
    torch.testing.assert_close(sub, got[pick], rtol=1e-5, atol=1e-6)
