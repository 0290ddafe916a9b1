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
    # A linear map's Jacobian is its float32 weight, exact to eps32 per entry: log cond within
    # eps32 √r cond ≤ 1e-5 (cond ≤ 50 here).
    torch.testing.assert_close(got, torch.full((7,), math.log(max(s) / min(s))), atol=1e-5, rtol=0)


def _saturating_encoder() -> nn.Module:
    """Tanh and softplus saturate: log condition numbers up to ≈ 9.4 (condition numbers ≈ 12,000)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 10), nn.Softplus(), nn.Linear(10, 10))


def _loop_log_conds(enc: nn.Module, x: torch.Tensor) -> np.ndarray:
    """One example at a time: autograd's Jacobian, numpy's SVD."""
    out = []
    for b in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda xi: enc(xi[None])[0], x[b]).numpy().astype(np.float64)
        sv = np.linalg.svd(jac, compute_uv=False)
        out.append(math.log(sv.max() / sv.min()))
    return np.array(out)


# log σ_min moves by |δσ_min| / σ_min ≤ ‖δJ‖₂ / σ_min ≤ γ‖J‖_F / σ_min ≤ γ √10 cond, where γ, the relative
# rounding error of J's entries, is a few units of eps times the depth and width (≤ 16): allow 50 eps cond.
# In float32 (eps 1.2e-7) at cond ≈ 12,000 that is ≈ 0.07, so the comparison that has teeth runs in
# float64 (≈ 1.3e-10); float32 differs by BLAS kernel (issue 27: an Intel Xeon read 1.1e-4 apart).
def _rounding_bound(expected: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    return 50 * torch.finfo(dtype).eps * np.exp(expected)


def test_matches_brute_force_jacobian_loop():
    enc = _saturating_encoder().double()
    x = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = _loop_log_conds(enc, x)
    assert expected.max() > 6  # ill-conditioned: the case where the precision matters
    bound = _rounding_bound(expected, torch.float64)
    for chunk in (32, 2, None):
        got = log_condition_numbers(enc, x, chunk=chunk).numpy()
        assert (np.abs(got - expected) <= bound).all(), (chunk, got - expected, bound)
    assert got.std() > 1e-3  # nonlinear: the Jacobian really differs per example


def test_matches_brute_force_jacobian_loop_in_float32_within_its_rounding_bound():
    enc = _saturating_encoder()
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    expected = _loop_log_conds(enc.double(), x.double())  # the float64 truth
    got = log_condition_numbers(enc.float(), x).numpy()
    assert (np.abs(got - expected) <= _rounding_bound(expected, torch.float32)).all()


def test_brute_force_check_catches_a_jacobian_off_by_one_part_in_a_million(monkeypatch):
    """The test of the test: one Jacobian column scaled by 1 + 1e-6 moves log cond by ~1e-6, far
    beyond the float64 bound, so test_matches_brute_force_jacobian_loop would fail on it."""
    import mimax.trainables.diagnostics as diagnostics

    def wrong_jacrev(f):
        def jac(xi):
            j = torch.func.jacrev(f)(xi)
            return torch.cat([j[..., :1] * (1 + 1e-6), j[..., 1:]], dim=-1)
        return jac

    monkeypatch.setattr(diagnostics, "jacrev", wrong_jacrev)
    with pytest.raises(AssertionError):
        test_matches_brute_force_jacobian_loop()


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
        # central differences in float64: truncation O(eps²) ≈ 1e-12, rounding 1e-16 / eps ≈ 1e-10 per entry
        assert got[b].item() == pytest.approx(math.log(sv[0] / sv[-1]), abs=1e-7)


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
        expected = np.array(reference_log_condition_numbers(m, x[r]))
        # float32 on both sides: each within the rounding bound of the other
        assert (np.abs(got[r].numpy() - expected) <= 2 * _rounding_bound(expected, torch.float32)).all()
    pick = [r_all - 1, 0]
    sub = log_condition_numbers(Stacked(mods), x[pick], idx=torch.tensor(pick))
    torch.testing.assert_close(sub, got[pick], rtol=0, atol=0)  # the same kernels on the same inputs
