"""Critics against their closed forms one pair at a time, the paper's parameter counts and chunking; the
conformance suite over every CRITICS entry is mimax.testing's (test_conformance.py)."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.base import parse_params
from mimax.trainables.critics import CRITICS, Critic

# float32: the critic and its oracle sum the same products in another order, ≤ d·eps32 ≈ 1e-5 apart
F32 = {"rtol": 1e-5, "atol": 1e-5}

K = 6


def build(name: str, dim_u: int, dim_v: int, seed: int = 0, **params) -> Critic:
    cls = CRITICS[name]
    torch.manual_seed(seed)
    return cls(parse_params(cls, params, "critic"), dim_u, dim_v)


def inputs(dim_u: int, dim_v: int, ku: int = K, kv: int = K, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(ku, dim_u, generator=gen), torch.randn(kv, dim_v, generator=gen) + 0.5


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the paper's parameter counts ------------------------------------------------------------------


@pytest.mark.parametrize("name, count", [("separable", 40_400), ("concat", 40_401), ("bilinear", 10_000),
                                         ("inner", 0), ("cosine", 0)])
def test_paper_parameter_counts_at_d100(name, count):
    assert n_params(build(name, 100, 100)) == count


def test_bilinear_weight_is_du_by_dv():
    assert build("bilinear", 100, 392).weight.shape == (100, 392)


# --- each critic against its closed form, one pair at a time ---------------------------------------


@torch.no_grad()
def brute(f, u, v) -> torch.Tensor:
    return torch.tensor([[float(f(u[i], v[j])) for j in range(len(v))] for i in range(len(u))])


def test_bilinear_closed_form():
    critic = build("bilinear", 5, 7)
    u, v = inputs(5, 7)
    w = critic.weight.detach()
    expected = brute(lambda a, b: sum(a[p] * w[p, q] * b[q] for p in range(5) for q in range(7)), u, v)
    torch.testing.assert_close(critic(u, v), expected, **F32)


def test_bilinear_init_like_pytorch_linear_on_v():
    w = build("bilinear", 100, 400).weight
    bound = 1 / 400**0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.std().item() - bound / 3**0.5) < 0.05 * bound  # U(-b, b) has std b / sqrt(3)


def test_separable_closed_form():
    critic = build("separable", 5, 7, hidden=8, out=4)
    u, v = inputs(5, 7)

    def phi(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        first, last = seq[0], seq[-1]
        return last.weight @ torch.relu(first.weight @ x + first.bias) + last.bias

    expected = brute(lambda a, b: phi(critic.phi_u, a) @ phi(critic.phi_v, b), u, v)
    torch.testing.assert_close(critic(u, v), expected, **F32)


def concat_oracle(critic: Critic, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """φ([u_i; v_j]) with the whole first layer applied to the concatenated pair, one pair at a time."""
    return brute(lambda a, b: critic.net(torch.cat([a, b])[None])[0, 0], u, v)


@pytest.mark.parametrize("layers", [1, 3])
def test_concat_closed_form(layers):
    critic = build("concat", 5, 7, hidden=9, layers=layers)
    assert critic.net[0].in_features == 12
    u, v = inputs(5, 7)
    torch.testing.assert_close(critic(u, v), concat_oracle(critic, u, v), **F32)


@pytest.mark.parametrize("chunk", [1, 7, 20, 10**9])
def test_concat_chunking_changes_nothing(chunk):
    # K = 9 rows: chunk 7 -> one row per chunk; 20 -> two rows with a remainder; 10**9 -> all at once.
    critic = build("concat", 5, 7, hidden=9, chunk=chunk)
    u, v = inputs(5, 7, ku=9, kv=9)
    torch.testing.assert_close(critic(u, v), concat_oracle(critic, u, v), **F32)


def test_concat_fig4c_shape():
    critic = build("concat", 1, 1, hidden=10, layers=5)
    linears = [m for m in critic.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 10)] + [(10, 10)] * 4 + [(10, 1)]


def test_inner_closed_form():
    u, v = inputs(6, 6)
    expected = brute(lambda a, b: sum(a[p] * b[p] for p in range(6)), u, v)
    torch.testing.assert_close(build("inner", 6, 6)(u, v), expected, **F32)


@pytest.mark.parametrize("temperature", [0.1, 2.0])
def test_cosine_closed_form(temperature):
    u, v = inputs(6, 6)

    def cos(a, b):
        return sum(a[p] * b[p] for p in range(6)) / (a.pow(2).sum().sqrt() * b.pow(2).sum().sqrt())

    expected = brute(lambda a, b: cos(a, b) / temperature, u, v)
    torch.testing.assert_close(build("cosine", 6, 6, temperature=temperature)(u, v), expected)


# --- check and params ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["inner", "cosine"])
def test_unequal_dims_are_rejected(name):
    cls = CRITICS[name]
    with pytest.raises(ConfigError, match="equal dim, got 5 and 7") as err:
        cls.check(cls.Params(), 5, 7)
    assert err.value.path == "critic.name"
    with pytest.raises(ConfigError):
        cls(cls.Params(), 5, 7)


@pytest.mark.parametrize(
    "name, section, path",
    [("cosine", {"temperature": 0.0}, "critic.temperature"), ("concat", {"chunk": 0}, "critic.chunk"),
     ("separable", {"hidden": -1}, "critic.hidden"), ("bilinear", {"hidden": 3}, "critic.hidden")],
)
def test_bad_params_name_their_key(name, section, path):
    with pytest.raises(ConfigError) as err:
        parse_params(CRITICS[name], section, "critic")
    assert err.value.path == path
