"""Three components of one's own, registered with mimax on import:

- critic ``lowrank``: uᵀ A Bᵀ v, a bilinear critic of rank ``rank``;
- estimator ``symmetric-nce``: InfoNCE averaged over both directions (rows: u anchors v; columns: v
  anchors u), as CLIP trains; at most log K;
- dataset ``noisy-copies``: two noisy copies of one Gaussian z, x_i = z + σ ε_i, whose MI is known in
  closed form: −(d/2) log(1 − ρ²) with ρ = 1 / (1 + σ²).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec
from mimax.trainables.critics import Critic
from mimax.trainables.data import Views
from mimax.trainables.estimators import Estimate, Estimator, EstimatorParams
from mimax.trainables.plugins import register


@register("critic")
class LowRank(Critic):
    """uᵀ A Bᵀ v with A (dim_u, rank), B (dim_v, rank)."""

    name = "lowrank"

    class Params(Params):
        rank: int = Field(default=8, gt=0)

    def __init__(self, params: Params, dim_u: int, dim_v: int):
        super().__init__(params, dim_u, dim_v)
        self.a = nn.Parameter(torch.randn(dim_u, params.rank) / math.sqrt(dim_u))
        self.b = nn.Parameter(torch.randn(dim_v, params.rank) / math.sqrt(dim_v))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ self.a) @ (v @ self.b).T


@register("estimator")
class SymmetricNCE(Estimator):
    """log K + ½ (mean_i log softmax_j S_ij + mean_j log softmax_i S_ij) at i = j."""

    name = "symmetric-nce"
    Params = EstimatorParams

    def ceiling(self, k: int) -> float:
        return math.log(k)

    def forward(self, scores: torch.Tensor) -> Estimate:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
            raise ValueError(f"scores must be a (K, K) matrix with K >= 2, got shape {tuple(scores.shape)}")
        k = scores.shape[0]
        rows = (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()
        cols = (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean()
        value = math.log(k) + (rows + cols) / 2
        return Estimate(value, value)


@register("data")
class NoisyCopies(Views):
    """z ~ N(0, I_dim); the views are z + σ ε1 and z + σ ε2, fresh for every batch (no labels)."""

    name = "noisy-copies"
    labelled = False

    class Params(Params):
        dim: int = Field(default=4, ge=1)
        sigma: float = Field(default=0.5, gt=0)

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        return ViewSpec(params.dim)

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        super().__init__(params, device)
        self.spec = self.spec_for(params)
        rho = 1 / (1 + params.sigma**2)
        self.true_mi = -0.5 * params.dim * math.log(1 - rho**2)

    def train_batch(self, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        d, s = self.params.dim, self.params.sigma
        draw = lambda: torch.randn(k, d, generator=gen, device=gen.device).to(self.device)  # noqa: E731
        z = draw()
        return z + s * draw(), z + s * draw()

    def eval_batches(self, split: str, k: int, n: int, gen: torch.Generator):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return [self.train_batch(k, gen) for _ in range(n)]

    def probe_data(self, gen: torch.Generator):
        raise ConfigError("eval.probe", "noisy-copies has no labels (use probe: none)")
