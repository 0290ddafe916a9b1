"""Synthetic Gaussian views with known mutual information (unlabelled; fresh samples for every batch)."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec
from mimax.trainables.data.base import Views, check_split


class _Synthetic(Views):
    """Train and test splits are the same distribution; every batch is a fresh draw from ``gen``."""

    labelled = False

    def eval_batches(self, split: str, k: int, n: int, gen: torch.Generator):
        check_split(split)
        return [self.train_batch(k, gen) for _ in range(n)]

    def probe_data(self, gen: torch.Generator):
        raise ConfigError("eval.probe", f"data {self.name!r} has no labels; it cannot be probed (use probe: none)")


class CorrelatedGaussian(_Synthetic):
    """x ~ N(0, I_d), y = ρx + √(1−ρ²) ε: I(x; y) = −(d/2) log(1 − ρ²) nats, set to ``mi``."""

    name = "gaussian"

    class Params(Params):
        dim: int = Field(default=2, ge=1)
        mi: float = Field(default=1.0, gt=0)

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        return ViewSpec(params.dim)

    @staticmethod
    def rho_for(mi: float, dim: int) -> float:
        """The per-coordinate correlation that gives ``mi`` nats over ``dim`` coordinates."""
        return math.sqrt(-math.expm1(-2.0 * mi / dim))

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        super().__init__(params, device)
        self.rho = self.rho_for(params.mi, params.dim)
        self.true_mi = float(params.mi)

    def train_batch(self, k: int, gen: torch.Generator):
        d = self.params.dim
        x = self._randn((k, d), gen)
        eps = self._randn((k, d), gen)
        # √(1−ρ²) = exp(−mi/d), exact even when ρ is close to 1.
        return x, self.rho * x + math.exp(-self.params.mi / d) * eps


# The paper's Fig. 4c: Z ~ N(0, SIGMA_Z) once per batch, each pair Z + ε_i with ε_i ~ N(0, SIGMA_EPS).
SIGMA_Z = ((1.0, -0.5), (-0.5, 1.0))
SIGMA_EPS = ((1.0, 0.9), (0.9, 1.0))
# The i.i.d. comparison has the marginal covariance of one pair: SIGMA_Z + SIGMA_EPS.
SIGMA_IID = ((2.0, 0.4), (0.4, 2.0))


class NonIIDGaussian(_Synthetic):
    """Fig. 4c of the paper: 1-D views x_i, y_i whose pairs share one latent Z per batch (non-i.i.d.),
    or with ``iid: true`` i.i.d. pairs from N(0, [[2, .4], [.4, 2]]). In both cases each pair's marginal
    is N(0, [[2, .4], [.4, 2]]), correlation 0.2, so I(x; y) = −½ log(1 − 0.04) nats."""

    name = "noniid-gaussian"
    true_mi = -0.5 * math.log(1 - 0.2**2)

    class Params(Params):
        iid: bool = False

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        return ViewSpec(1)

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        super().__init__(params, device)
        chol = lambda s: torch.linalg.cholesky(torch.tensor(s, dtype=torch.float64)).float()  # noqa: E731
        self._l_z, self._l_eps, self._l_iid = chol(SIGMA_Z), chol(SIGMA_EPS), chol(SIGMA_IID)

    def _draw(self, k: int, chol: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self._randn((k, 2), gen) @ chol.to(self.device).T

    def train_batch(self, k: int, gen: torch.Generator):
        if self.params.iid:
            pairs = self._draw(k, self._l_iid, gen)
        else:
            pairs = self._draw(1, self._l_z, gen) + self._draw(k, self._l_eps, gen)  # one Z for the batch
        return pairs[:, :1].contiguous(), pairs[:, 1:].contiguous()
