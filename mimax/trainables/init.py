"""Initialisation schemes for the layers mimax builds.

``torch``: the layers as PyTorch builds them (U(±1/√fan_in) weights, non-zero biases).
``tf``: Keras' defaults, which the paper's notebook uses: Glorot-uniform weights U(±√(6/(fan_in+fan_out)))
and zero biases for dense and conv layers, scale 1 / bias 0 for norms. Layers built on purpose with an
init of their own (the truncated-normal RealNVP couplings and residual branches) are marked with
``keep_init`` and left alone. A module with parameters of its own that is none of these either defines
``init_tf()`` (the bilinear critic's W) or makes ``apply_init(…, "tf")`` raise: nothing is skipped silently.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mimax.contract import INITS
from mimax.errors import ConfigError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def keep_init(module: nn.Module) -> nn.Module:
    """Mark ``module`` (with everything inside it) as initialised on purpose: ``apply_init`` leaves it alone."""
    module.keeps_init = True
    return module


@torch.no_grad()
def glorot_uniform_(weight: torch.Tensor) -> torch.Tensor:
    """Keras' glorot_uniform on PyTorch's layout (out, in, *kernel): fan_in = in · kernel size, fan_out =
    out · kernel size, as Keras counts them on its (in, out) and (*kernel, in, out) layouts.

    Drawn on the CPU from the global torch RNG and copied, so a seed gives the same weights on every device.
    """
    receptive = math.prod(weight.shape[2:])
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return weight.copy_(torch.empty(weight.shape).uniform_(-bound, bound))


def apply_init(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every layer of ``module`` under ``scheme`` (in place; returns ``module``).

    ``torch`` changes nothing and draws nothing. ``tf`` draws from the current global torch RNG only,
    layer by layer in ``module.modules()`` order, so a seeded build stays reproducible.
    """
    if scheme not in INITS:
        raise ConfigError("init", f"unknown init {scheme!r} (choose from {', '.join(INITS)})")
    if scheme == "tf":
        with torch.no_grad():
            _keras_defaults(module)
    return module


def _keras_defaults(module: nn.Module) -> None:
    if getattr(module, "keeps_init", False):
        return
    if hasattr(module, "init_tf"):
        module.init_tf()
    elif isinstance(module, (nn.Linear, *CONVS)):
        glorot_uniform_(module.weight)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, NORMS):
        if module.weight is not None:
            module.weight.fill_(1.0)
            module.bias.zero_()
    elif any(True for _ in module.parameters(recurse=False)):
        names = ", ".join(n for n, _ in module.named_parameters(recurse=False))
        raise TypeError(f"init 'tf' does not know how to initialise {type(module).__name__} (parameters {names}); "
                        f"give it an init_tf() method or mark it with keep_init")
    for child in module.children():
        _keras_defaults(child)
