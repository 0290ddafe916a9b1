"""Initialisation schemes: under ``tf`` every dense, conv and bilinear layer of every encoder, critic and the
Fig. 1c classifier is Glorot-uniform with zero biases (fans counted from the layers' own sizes, not their
tensors' layout), norms are 1 / 0, the truncated-normal layers are untouched, and the draw comes from the
global torch RNG only; ``torch`` changes and draws nothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.base import ViewSpec, parse_params
from mimax.trainables.critics import CRITICS, Bilinear
from mimax.trainables.encoders import ENCODERS
from mimax.trainables.init import apply_init, glorot_uniform_, keep_init

MNIST = ViewSpec(392, (1, 14, 28))
SMALL_NVP = {"layers": 3, "hidden": 64}  # the paper's 30 × 512 only makes the test slower


def encoder(name: str, **params) -> nn.Module:
    cls = ENCODERS[name]
    return cls(parse_params(cls, {**(SMALL_NVP if name == "realnvp" else {}), **params}, "encoder"), MNIST)


def critic(name: str, dim_u: int = 100, dim_v: int = 100) -> nn.Module:
    cls = CRITICS[name]
    return cls(cls.Params(), dim_u, dim_v)


def classifier() -> nn.Module:
    return nn.Linear(392, 10)  # Fig. 1c's linear softmax classifier, as the trainer builds it


BUILDERS = (
    [(f"encoder-{n}", lambda n=n: encoder(n)) for n in ENCODERS]
    + [("encoder-realnvp-affine", lambda: encoder("realnvp", coupling="affine"))]
    + [(f"critic-{n}", lambda n=n: critic(n)) for n in CRITICS]
    + [("critic-bilinear-unequal", lambda: critic("bilinear", 100, 50)), ("classifier", classifier)]
)


def fans(layer: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras counts them, from the layer's sizes."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.Conv2d):
        k = math.prod(layer.kernel_size)
        return layer.in_channels * k, layer.out_channels * k
    if isinstance(layer, Bilinear):  # the notebook's Dense(dim_u, use_bias=False) applied to v
        return layer.dim_v, layer.dim_u
    raise AssertionError(f"no fan rule for {type(layer).__name__}")


def assert_glorot(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    weight = weight.detach()
    bound = math.sqrt(6 / (fan_in + fan_out))
    n = weight.numel()
    assert float(weight.abs().max()) <= bound * (1 + 1e-6)
    # The draw fills the range: each end is reached to within 8/n of it (fails with probability ≈ e⁻⁸).
    assert float(weight.max()) >= bound * (1 - 8 / n) and float(weight.min()) <= -bound * (1 - 8 / n)
    if n >= 5000:  # uniform: sd = bound / √3
        assert abs(float(weight.std()) / (bound / math.sqrt(3)) - 1) < 0.05


def kept(module: nn.Module) -> set[str]:
    """Names of the parameters inside layers marked keep_init."""
    return {f"{m_name}.{p_name}".lstrip(".") for m_name, m in module.named_modules() if getattr(m, "keeps_init", False)
            for p_name, _ in m.named_parameters()}


@pytest.mark.parametrize("label, build", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_tf_gives_every_layer_keras_defaults(label, build):
    torch.manual_seed(0)
    module = build()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert apply_init(module, "tf") is module
    checked: set[str] = set()
    for m_name, m in module.named_modules():
        if getattr(m, "keeps_init", False):
            continue
        prefix = f"{m_name}." if m_name else ""
        if isinstance(m, (nn.Linear, nn.Conv2d, Bilinear)):
            assert_glorot(m.weight, *fans(m))
            checked.add(prefix + "weight")
            if getattr(m, "bias", None) is not None:
                assert torch.count_nonzero(m.bias) == 0
                checked.add(prefix + "bias")
        elif isinstance(m, nn.GroupNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.count_nonzero(m.bias) == 0
            checked |= {prefix + "weight", prefix + "bias"}
    own = kept(module)
    state = module.state_dict()
    for name in own:
        assert torch.equal(state[name], before[name]), f"{name} is the paper's truncated normal and must stay"
    for name, buf in module.named_buffers():  # e.g. RealNVP's permutations
        assert torch.equal(buf, before[name])
    # Every parameter was either checked above or kept: nothing this test does not understand.
    assert checked | own == {n for n, _ in module.named_parameters()}


def test_truncated_normal_encoders_are_kept_entirely():
    for name in ("realnvp", "residual-mlp"):
        module = encoder(name)
        assert kept(module) == {n for n, _ in module.named_parameters()} != set()


@pytest.mark.parametrize("label, build", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_torch_changes_and_draws_nothing(label, build):
    torch.manual_seed(0)
    module = build()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    apply_init(module, "torch")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_tf_draws_from_the_global_rng_like_xavier_uniform():
    """The oracle: PyTorch's own xavier_uniform_ on each weight in module order, from the same seed."""
    module = nn.Sequential(encoder("convnet"), critic("concat"), critic("bilinear", 100, 50), classifier())
    torch.manual_seed(5)
    apply_init(module, "tf")
    got = [p.clone() for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    torch.manual_seed(5)
    for n, p in module.named_parameters():
        if n.endswith("weight") and p.dim() >= 2:
            with torch.no_grad():
                nn.init.xavier_uniform_(p)
    want = [p for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    assert len(got) == len(want) == 7  # 2 convs + head, 2 concat layers, W, classifier
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    # Reproducible, and nothing but the global RNG moves: a second seeded application gives the same weights.
    torch.manual_seed(5)
    apply_init(module, "tf")
    assert all(torch.equal(a, p) for a, (n, p) in zip(got, [(n, p) for n, p in module.named_parameters()
                                                              if n.endswith("weight") and p.dim() >= 2]))


def test_conv_fans_count_the_kernel():
    conv = nn.Conv2d(64, 128, 5)  # Keras Conv2D kernel (5, 5, 64, 128): fans 1600 and 3200
    glorot_uniform_(conv.weight)
    assert_glorot(conv.weight, 64 * 25, 128 * 25)
    assert float(conv.weight.detach().abs().max()) > 0.99 * math.sqrt(6 / (1600 + 3200))


def test_unknown_scheme_names_init():
    with pytest.raises(ConfigError, match=r"^init: unknown init 'keras' \(choose from torch, tf\)$"):
        apply_init(nn.Linear(2, 2), "keras")


def test_unknown_parameterised_module_is_an_error_not_a_skip():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

    with pytest.raises(TypeError, match=r"Scale \(parameters s\)"):
        apply_init(nn.Sequential(nn.Linear(3, 3), Scale()), "tf")
    apply_init(keep_init(Scale()), "tf")  # marked: left alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf_gives_the_same_weights_on_cuda():
    torch.manual_seed(3)
    cpu = apply_init(nn.Linear(300, 100), "tf").weight
    torch.manual_seed(3)
    gpu = apply_init(nn.Linear(300, 100).cuda(), "tf").weight
    assert torch.equal(cpu, gpu.cpu())
