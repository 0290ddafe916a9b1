"""Encoders: the paper's parameter counts, closed-form behaviour, RealNVP invertibility; the conformance
suite over every ENCODERS entry is mimax.testing's (test_conformance.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mimax.errors import ConfigError
from mimax.trainables.base import ViewSpec, parse_params
from mimax.trainables.encoders import ENCODERS, Encoder

MNIST = ViewSpec(392, (1, 14, 28))
SMALL = ViewSpec(32, (1, 4, 8))
FLAT = ViewSpec(32)
# Smaller settings where the defaults are slow; entries not listed here run with their defaults.
FAST = {"realnvp": {"layers": 2, "hidden": 16}}


def build(name: str, view: ViewSpec = SMALL, seed: int = 0, **overrides) -> Encoder:
    cls = ENCODERS[name]
    torch.manual_seed(seed)
    return cls(parse_params(cls, {**FAST.get(name, {}), **overrides}, "encoder"), view)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the paper's parameter counts (paper-protocol.md, "Encoders"), MNIST halves ---------------------


@pytest.mark.parametrize(
    "name, params, count",
    [
        ("identity", {}, 0),
        ("mlp", {}, 238_300),
        ("convnet", {}, 219_748),
        ("residual-mlp", {}, 770_280),
        ("realnvp", {"coupling": "additive"}, 13_922_040),
        ("realnvp", {"coupling": "affine"}, 16_938_480),
    ],
)
def test_paper_parameter_counts(name, params, count):
    cls = ENCODERS[name]
    torch.manual_seed(0)
    enc = cls(parse_params(cls, params, "encoder"), MNIST)  # defaults only: no FAST overrides
    assert n_params(enc) == count


@pytest.mark.parametrize("name, out_dim", [("identity", 392), ("mlp", 100), ("convnet", 100),
                                           ("residual-mlp", 392), ("realnvp", 392)])
def test_paper_output_dims(name, out_dim):
    assert build(name, MNIST).out_dim == out_dim


# --- check ---------------------------------------------------------------------------------------


def test_convnet_rejects_flat_views():
    cls = ENCODERS["convnet"]
    with pytest.raises(ConfigError, match="convnet needs image views") as err:
        cls.check(cls.Params(), FLAT)
    assert err.value.path == "encoder.name"
    with pytest.raises(ConfigError):
        cls(cls.Params(), FLAT)  # building directly checks too


def test_convnet_rejects_image_shape_that_does_not_match_dim():
    cls = ENCODERS["convnet"]
    with pytest.raises(ConfigError, match="does not match"):
        cls.check(cls.Params(), ViewSpec(30, (1, 4, 8)))


def test_realnvp_rejects_odd_dims():
    cls = ENCODERS["realnvp"]
    with pytest.raises(ConfigError, match="even dim, got dim 33") as err:
        cls.check(cls.Params(), ViewSpec(33))
    assert err.value.path == "encoder.name"


@pytest.mark.parametrize(
    "name, section, path",
    [
        ("mlp", {"hidden": [300, 0]}, "encoder.hidden.1"),
        ("mlp", {"width": 3}, "encoder.width"),
        ("realnvp", {"coupling": "spline"}, "encoder.coupling"),
        ("residual-mlp", {"init_std": -1.0}, "encoder.init_std"),
        ("convnet", {"channels": []}, "encoder.channels"),
    ],
)
def test_bad_params_name_their_key(name, section, path):
    with pytest.raises(ConfigError) as err:
        parse_params(ENCODERS[name], section, "encoder")
    assert err.value.path == path


# --- closed-form behaviour -------------------------------------------------------------------------


def test_identity_returns_its_input():
    x = torch.randn(3, 32)
    assert torch.equal(build("identity")(x), x)


def test_mlp_layers_and_linear_last_layer():
    enc = build("mlp", MNIST)
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(392, 300), (300, 300), (300, 100)]
    # Oracle: the same maps written out by hand; no ReLU after the last layer.
    x = torch.rand(5, 392)
    a, b, c = linears
    expected = c(torch.relu(b(torch.relu(a(x)))))
    torch.testing.assert_close(enc(x), expected)
    assert (enc(x) < 0).any()


def test_convnet_same_padding_matches_tensorflow():
    # TF 'same', k=5, s=2: out = ceil(n/2); total pad = (out-1)*2+5-n, the odd pixel goes after.
    # n=14 -> pad 1 before, 2 after, so output i is centred on input 2i+1; n=7 -> pad 2/2, centre 2i.
    enc = build("convnet", ViewSpec(98, (1, 7, 14)))
    conv = enc.convs[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 2, 2] = 1.0  # a centred delta: output = input at the window centre
    x = torch.randn(2, 1, 7, 14)
    out = enc.convs[:2](x)[:, 0]
    assert out.shape == (2, 4, 7)
    rows, cols = torch.arange(4) * 2, torch.arange(7) * 2 + 1
    torch.testing.assert_close(out, x[:, 0][:, rows][:, :, cols])


@pytest.mark.parametrize("shape", [(1, 14, 28), (1, 4, 8), (3, 16, 32), (2, 5, 7)])
def test_convnet_feature_maps_are_ceil_half_each_layer(shape):
    c, h, w = shape
    enc = build("convnet", ViewSpec(c * h * w, shape))
    maps = enc.convs(torch.randn(2, *shape))
    assert maps.shape == (2, 128, math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
    assert enc(torch.randn(2, c * h * w)).shape == (2, 100)


def test_convnet_norm_is_groupnorm_over_chw():
    enc = build("convnet", MNIST)
    # Oracle: normalise each example over (C, H, W) jointly, then per-channel scale and bias.
    with torch.no_grad():
        enc.norm.weight.uniform_(0.5, 2)
        enc.norm.bias.uniform_(-1, 1)
    h = torch.randn(3, 128, 4, 7)
    mean = h.mean(dim=(1, 2, 3), keepdim=True)
    var = h.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    scale, bias = enc.norm.weight[:, None, None], enc.norm.bias[:, None, None]
    expected = (h - mean) / torch.sqrt(var + 1e-6) * scale + bias
    torch.testing.assert_close(enc.norm(h), expected)


def test_residual_mlp_starts_near_identity():
    enc = build("residual-mlp", MNIST)
    x = torch.rand(4, 392)
    assert (enc(x) - x).abs().max() < 1e-2
    weights = torch.cat([b.weight.flatten() for b in enc.branches])
    assert weights.abs().max() <= 2e-4  # truncated at 2 std
    assert 0.8e-4 < weights.std() < 1e-4  # a normal truncated at 2 std has std 0.88 * 1e-4
    assert all(torch.equal(b.bias, torch.zeros(392)) for b in enc.branches)


def test_residual_mlp_relu_in_first_four_branches_only():
    enc = build("residual-mlp")
    with torch.no_grad():
        for b in enc.branches:
            b.weight.copy_(-0.5 * torch.eye(32))
            b.bias.zero_()
    # x > 0: ReLU branches add relu(-x/2) = 0, the linear fifth halves x.
    # x < 0: each ReLU branch adds -x/2, i.e. halves x (x/16 after four), the fifth halves again.
    x = torch.cat([torch.rand(3, 16) + 0.1, -torch.rand(3, 16) - 0.1], dim=1)
    expected = torch.cat([x[:, :16] / 2, x[:, 16:] / 32], dim=1)
    torch.testing.assert_close(enc(x), expected)


# --- RealNVP --------------------------------------------------------------------------------------


def _perturb(enc: Encoder, std: float, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


def _sgd_steps(enc: Encoder, steps: int = 5, lr: float = 1e-2) -> None:
    opt = torch.optim.SGD(enc.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x = torch.rand(16, enc.view.dim, generator=gen)
        loss = enc(x).sin().sum()  # anything that moves every coupling
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_realnvp_inverse_at_init(coupling):
    enc = build("realnvp", layers=30, hidden=64, coupling=coupling)
    x = torch.rand(8, 32)
    # 30 float32 couplings each add and subtract a shift of size ~1: ≤ 30 · 2 · eps32 · |shift| ≈ 1e-5 apart
    torch.testing.assert_close(enc.inverse(enc(x)), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_realnvp_inverse_after_training(coupling):
    enc = build("realnvp", layers=8, hidden=64, coupling=coupling)
    x = torch.rand(8, 32)
    before = enc(x).detach()
    _perturb(enc, 0.05)
    _sgd_steps(enc)
    y = enc(x)
    assert (y - before).abs().max() > 0.1  # the map really changed
    torch.testing.assert_close(enc.inverse(y), x, atol=1e-4, rtol=0)  # the same float32 bound as above


def test_realnvp_additive_starts_as_a_permutation():
    enc = build("realnvp", layers=30, hidden=64)
    x = torch.randn(4, 32)
    y = enc(x)
    # at init the couplings' shifts are N(0, 1e-4²)-sized (init_std 1e-4), not 0: each of 30 layers moves a
    # value by ~1e-4 · √hidden, so the map is a permutation to ~1e-3, far from a real mixing (next line)
    torch.testing.assert_close(y.sort(dim=1).values, x.sort(dim=1).values, atol=1e-3, rtol=0)
    assert not torch.allclose(y, x, atol=1e-2)  # ... and not the identity one


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_realnvp_log_det_matches_jacobian(coupling):
    enc = build("realnvp", layers=3, hidden=16, coupling=coupling)
    _perturb(enc, 0.3)
    x = torch.randn(3, 32)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda xi: enc(xi[None])[0], x[b])
        sign, logabs = torch.linalg.slogdet(jac.double())
        assert sign != 0
        # float32 log-scales summed over the layers (≲ layers · dim · eps32) against a float64 slogdet
        torch.testing.assert_close(enc.log_det(x[b : b + 1])[0].double(), logabs, atol=1e-4, rtol=1e-4)
    if coupling == "additive":
        assert torch.equal(enc.log_det(x), torch.zeros(3))


def test_realnvp_permutations_follow_the_seed():
    a, b, c = build("realnvp", seed=0), build("realnvp", seed=0), build("realnvp", seed=1)
    assert torch.equal(a.perms, b.perms)
    assert not torch.equal(a.perms, c.perms)
    for perm in a.perms:  # each row is a permutation of 0..dim-1
        assert torch.equal(perm.sort().values, torch.arange(32))
    assert "perms" in a.state_dict()
