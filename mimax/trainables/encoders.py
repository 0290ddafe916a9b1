"""Encoders g1, g2: a flat view (B, dim) -> features (B, out_dim). Registry: ENCODERS."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec
from mimax.trainables.init import keep_init

PosInt = Annotated[int, Field(gt=0)]


class Encoder(nn.Module):
    """Base of every encoder.

    Subclasses set ``name`` and ``Params``, build their layers in ``__init__(params, view)`` from the
    current torch RNG (the trainer seeds it) and implement ``forward``. ``check`` rejects impossible
    combinations and ``output_dim`` gives the feature dim, both before anything is built;
    ``self.out_dim`` is set from ``output_dim``.
    """

    name: ClassVar[str]
    has_parameters: ClassVar[bool] = True  # False: nothing here for an optimiser
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params, view: ViewSpec):
        super().__init__()
        type(self).check(params, view)  # also when built directly, not only through the trainer
        self.params = params
        self.view = view
        self.out_dim: int = type(self).output_dim(params, view)

    @classmethod
    def check(cls, params: Params, view: ViewSpec) -> None:
        """Raise ConfigError (path ``encoder...``) if this encoder cannot take this view."""

    @classmethod
    def output_dim(cls, params: Params, view: ViewSpec) -> int:
        """Feature dim of this encoder on this view (default: the view's dim)."""
        return view.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _trunc_normal_(linear: nn.Linear, std: float) -> nn.Linear:
    """The paper's near-zero init: truncated normal (at 2 std) weights, zero bias. The notebook sets it
    explicitly on these layers, so every ``init`` scheme keeps it (``keep_init``)."""
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(linear.bias)
    return keep_init(linear)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ReLU in between; the last layer is linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class Identity(Encoder):
    """Raw pixels: the probe's pixel baseline. No parameters."""

    name = "identity"
    has_parameters = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLP(Encoder):
    """dim -> hidden... -> out_dim, ReLU, last layer linear (paper: 238,300 params). Built with PyTorch's
    default init; ``apply_init(…, "tf")`` gives the notebook's Glorot-uniform weights and zero biases."""

    name = "mlp"

    class Params(Params):
        hidden: list[PosInt] = [300, 300]
        out_dim: PosInt = 100

    def __init__(self, params: Params, view: ViewSpec):
        super().__init__(params, view)
        self.net = _mlp([view.dim, *params.hidden, params.out_dim])

    @classmethod
    def output_dim(cls, params: Params, view: ViewSpec) -> int:
        return params.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after): output ceil(size / stride), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvNet(Encoder):
    """The paper's ConvNet: [conv k×k stride 2 'same', ReLU] per channel count, GroupNorm(1 group),
    global average pool, linear out_dim (paper: 219,748 params on 1×14×28 halves).

    Padding copies TensorFlow's 'same' exactly (asymmetric for even sizes: one pixel before, two
    after for 5×5 stride 2), so windows line up with the notebook's, not just the output sizes.
    """

    name = "convnet"
    stride: ClassVar[int] = 2

    class Params(Params):
        channels: list[PosInt] = Field(default=[64, 128], min_length=1)
        kernel: PosInt = 5
        out_dim: PosInt = 100

    @classmethod
    def check(cls, params: Params, view: ViewSpec) -> None:
        if view.image_shape is None:
            raise ConfigError(
                "encoder.name", f"convnet needs image views; data with dim {view.dim} gives flat vectors"
            )
        if math.prod(view.image_shape) != view.dim:
            raise ConfigError(
                "encoder.name", f"image shape {view.image_shape} does not match view dim {view.dim}"
            )

    def __init__(self, params: Params, view: ViewSpec):
        super().__init__(params, view)
        c, h, w = view.image_shape
        layers: list[nn.Module] = []
        for ch in params.channels:
            top, bottom = _same_pads(h, params.kernel, self.stride)
            left, right = _same_pads(w, params.kernel, self.stride)
            layers += [
                nn.ZeroPad2d((left, right, top, bottom)),
                nn.Conv2d(c, ch, params.kernel, stride=self.stride),
                nn.ReLU(),
            ]
            c, h, w = ch, -(-h // self.stride), -(-w // self.stride)
        self.convs = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(1, c, eps=1e-6, affine=True)
        self.head = nn.Linear(c, params.out_dim)

    @classmethod
    def output_dim(cls, params: Params, view: ViewSpec) -> int:
        return params.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.convs(x.reshape(x.shape[0], *self.view.image_shape)))
        return self.head(h.mean(dim=(2, 3)))


class ResidualMLP(Encoder):
    """``layers`` residual steps x <- x + relu(W x + b), the last step linear; near-zero init, so it
    starts ≈ identity (paper Fig. 2: 770,280 params on 392 dims)."""

    name = "residual-mlp"

    class Params(Params):
        layers: PosInt = 5
        init_std: float = Field(default=1e-4, ge=0)

    def __init__(self, params: Params, view: ViewSpec):
        super().__init__(params, view)
        self.branches = nn.ModuleList(
            _trunc_normal_(nn.Linear(view.dim, view.dim), params.init_std) for _ in range(params.layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.branches) - 1
        for i, branch in enumerate(self.branches):
            h = branch(x)
            x = x + (h if i == last else torch.relu(h))
        return x


class RealNVP(Encoder):
    """A bijection: ``layers`` couplings, each transforming the second half of the values from the
    first (y_b = x_b * scale + shift), followed by a fixed random permutation (a buffer, drawn from
    the torch RNG at construction). Additive: scale = 1; affine: scale = 1e-7 + softplus(raw).
    Near-zero init, so it starts ≈ a permutation (paper Fig. 1: 13,922,040 / 16,938,480 params).
    """

    name = "realnvp"
    min_scale: ClassVar[float] = 1e-7

    class Params(Params):
        coupling: Literal["additive", "affine"] = "additive"
        layers: PosInt = 30
        hidden: PosInt = 512
        init_std: float = Field(default=1e-4, ge=0)

    @classmethod
    def check(cls, params: Params, view: ViewSpec) -> None:
        if view.dim % 2 or view.dim < 2:
            raise ConfigError(
                "encoder.name", f"realnvp splits the view in halves and needs an even dim, got dim {view.dim}"
            )

    def __init__(self, params: Params, view: ViewSpec):
        super().__init__(params, view)
        half = view.dim // 2
        out = half if params.coupling == "additive" else 2 * half
        nets, perms = [], []
        for _ in range(params.layers):
            net = _mlp([half, params.hidden, params.hidden, out])
            for m in net:
                if isinstance(m, nn.Linear):
                    _trunc_normal_(m, params.init_std)
            nets.append(net)
            perms.append(torch.randperm(view.dim))
        self.nets = nn.ModuleList(nets)
        self.register_buffer("perms", torch.stack(perms))  # (layers, dim), saved with the weights

    def _shift_scale(self, net: nn.Module, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = net(xa)
        if self.params.coupling == "additive":
            return h, None
        half = xa.shape[1]
        return h[:, :half], self.min_scale + nn.functional.softplus(h[:, half:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def log_det(self, x: torch.Tensor) -> torch.Tensor:
        """log |det dy/dx| per example, (B,); zero for additive couplings."""
        return self._forward(x)[1]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.view.dim // 2
        log_det = x.new_zeros(x.shape[0])
        for net, perm in zip(self.nets, self.perms):
            xa, xb = x[:, :half], x[:, half:]
            shift, scale = self._shift_scale(net, xa)
            if scale is not None:
                xb = xb * scale
                log_det = log_det + scale.log().sum(dim=1)
            x = torch.cat([xa, xb + shift], dim=1)[:, perm]
        return x, log_det

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x with forward(x) = y."""
        half = self.view.dim // 2
        for net, perm in zip(reversed(self.nets), reversed(self.perms)):
            y = y[:, torch.argsort(perm)]
            ya, yb = y[:, :half], y[:, half:]
            shift, scale = self._shift_scale(net, ya)
            yb = yb - shift
            y = torch.cat([ya, yb if scale is None else yb / scale], dim=1)
        return y


ENCODERS: dict[str, type[Encoder]] = {c.name: c for c in (Identity, MLP, ConvNet, ResidualMLP, RealNVP)}
