"""Critics f: scores S (K, K) with S[i, j] = f(u_i, v_j); rows are anchors. Registry: CRITICS."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.base import Params
from mimax.trainables.init import glorot_uniform_

PosInt = Annotated[int, Field(gt=0)]


class Critic(nn.Module):
    """Base of every critic: ``__init__(params, dim_u, dim_v)``, ``forward(u, v) -> S``.

    ``check(params, dim_u, dim_v)`` rejects impossible combinations before anything is built.
    ``u`` (Ku, dim_u) and ``v`` (Kv, dim_v) give S (Ku, Kv); the estimators use Ku = Kv = K.
    """

    name: ClassVar[str]
    has_parameters: ClassVar[bool] = True  # False: nothing here for an optimiser
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params, dim_u: int, dim_v: int):
        super().__init__()
        type(self).check(params, dim_u, dim_v)
        self.params = params
        self.dim_u = dim_u
        self.dim_v = dim_v

    @classmethod
    def check(cls, params: Params, dim_u: int, dim_v: int) -> None:
        """Raise ConfigError (path ``critic...``) if this critic cannot score these feature dims."""

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _same_dims(name: str, dim_u: int, dim_v: int) -> None:
    if dim_u != dim_v:
        raise ConfigError(
            "critic.name", f"{name} needs g1 and g2 features of equal dim, got {dim_u} and {dim_v}"
        )


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*mods)


class Bilinear(Critic):
    """uᵀ W v, W (dim_u, dim_v), no bias.

    Init like ``nn.Linear(dim_v, dim_u, bias=False)`` applied to v, i.e. U(-1/sqrt(dim_v), 1/sqrt(dim_v)).
    Under ``init: tf`` like the notebook's ``Dense(dim_u, use_bias=False)`` applied to v: Glorot-uniform with
    fan_in dim_v and fan_out dim_u (``init_tf``).
    """

    name = "bilinear"

    def __init__(self, params: Params, dim_u: int, dim_v: int):
        super().__init__(params, dim_u, dim_v)
        bound = 1 / math.sqrt(dim_v)
        self.weight = nn.Parameter(torch.empty(dim_u, dim_v).uniform_(-bound, bound))

    def init_tf(self) -> None:
        glorot_uniform_(self.weight)  # (dim_u, dim_v) is (out, in), as for nn.Linear(dim_v, dim_u)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ self.weight) @ v.T


class Separable(Critic):
    """φ1(u)ᵀ φ2(v), each φ an MLP d -> hidden (ReLU) ... -> out (paper: 40,400 params at d = 100)."""

    name = "separable"

    class Params(Params):
        hidden: PosInt = 100
        layers: PosInt = 1  # hidden layers per φ
        out: PosInt = 100

    def __init__(self, params: Params, dim_u: int, dim_v: int):
        super().__init__(params, dim_u, dim_v)
        self.phi_u = _mlp(dim_u, params.hidden, params.layers, params.out)
        self.phi_v = _mlp(dim_v, params.hidden, params.layers, params.out)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.phi_u(u) @ self.phi_v(v).T


class Concat(Critic):
    """φ([u_i; v_j]) on all pairs, φ an MLP (dim_u + dim_v) -> hidden (ReLU) ... -> 1
    (paper: 40,401 params at d = 100; Fig. 4c: layers 5, hidden 10).

    The first layer is linear, so W [u; v] + b = (W_u u + b) + W_v v: both projections are computed
    once (K × hidden each) and only their broadcast sum and the later layers run per pair, in chunks
    of whole anchor rows holding at most ``chunk`` pairs (at least one row), to bound the memory.
    """

    name = "concat"

    class Params(Params):
        hidden: PosInt = 200
        layers: PosInt = 1  # hidden layers
        chunk: PosInt = 4096  # max pairs per chunk

    def __init__(self, params: Params, dim_u: int, dim_v: int):
        super().__init__(params, dim_u, dim_v)
        self.net = _mlp(dim_u + dim_v, params.hidden, params.layers, 1)  # net[0] sees [u; v]

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        first = self.net[0]
        pu = u @ first.weight[:, : self.dim_u].T + first.bias  # (Ku, hidden)
        pv = v @ first.weight[:, self.dim_u :].T  # (Kv, hidden)
        rows = max(1, self.params.chunk // max(1, v.shape[0]))
        out = []
        for start in range(0, u.shape[0], rows):
            h = pu[start : start + rows, None, :] + pv[None, :, :]  # (rows, Kv, hidden)
            out.append(self.net[1:](h).squeeze(-1))
        return torch.cat(out, dim=0) if out else u.new_zeros(0, v.shape[0])


class Inner(Critic):
    """uᵀ v (no parameters)."""

    name = "inner"
    has_parameters = False

    @classmethod
    def check(cls, params: Params, dim_u: int, dim_v: int) -> None:
        _same_dims(cls.name, dim_u, dim_v)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ v.T


class Cosine(Critic):
    """cos(u_i, v_j) / temperature (no parameters)."""

    name = "cosine"
    has_parameters = False

    class Params(Params):
        temperature: float = Field(default=0.1, gt=0)

    @classmethod
    def check(cls, params: Params, dim_u: int, dim_v: int) -> None:
        _same_dims(cls.name, dim_u, dim_v)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        norm = nn.functional.normalize
        return norm(u, dim=1) @ norm(v, dim=1).T / self.params.temperature


CRITICS: dict[str, type[Critic]] = {c.name: c for c in (Bilinear, Separable, Concat, Inner, Cosine)}
