"""MI estimators: a score matrix S (K, K), positives on the diagonal -> an estimate in nats.

Registry: ESTIMATORS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mimax.trainables.base import Params


class EstimatorParams(Params):
    """Shared by all estimators. ``target``: train on |Î - t| instead of maximising Î (paper §3.3)."""

    target: float | None = None


@dataclass
class Estimate:
    value: torch.Tensor      # the reported estimate Î in nats (scalar, differentiable)
    objective: torch.Tensor  # what training maximises (scalar); its gradient is the training signal


class Estimator(nn.Module):
    """Base of every estimator. Capability flags are class attributes.

    ``forward(scores)`` returns an Estimate. Stateful estimators (MINE's moving average) keep their
    state in buffers so it is saved and restored with the checkpoint; they update it only in training
    mode.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = EstimatorParams
    is_lower_bound: ClassVar[bool] = True
    has_parameters: ClassVar[bool] = False  # TUBA learns a baseline
    keeps_init: ClassVar[bool] = True  # no layers: every ``init`` leaves TUBA's baseline at 0

    def __init__(self, params: EstimatorParams):
        super().__init__()
        self.params = params

    def ceiling(self, k: int) -> float | None:
        """Largest value the estimate can take at batch size k (log k for NCE), or None."""
        return None

    def forward(self, scores: torch.Tensor) -> Estimate:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, est: Estimate) -> torch.Tensor:
        """Training loss: -objective, or |Î - t| when a target is set."""
        t = self.params.target
        return -est.objective if t is None else (est.value - t).abs()


# ---------------------------------------------------------------- helpers

def _check(scores: torch.Tensor) -> int:
    """K, after checking that ``scores`` is a square (K, K) matrix with K >= 2."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (K, K) matrix, got shape {tuple(scores.shape)}")
    k = scores.shape[0]
    if k < 2:
        raise ValueError(f"need K >= 2 pairs in a batch (negatives are the other pairs), got K = {k}")
    return k


def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """The K(K-1) negative scores S_ij, i != j, as a flat vector in row-major order. Without a boolean
    mask: its output size depends on data, so on a GPU every call would wait for the device. In the flat
    K*K vector the diagonal sits at multiples of K + 1; dropping the first entry and viewing the rest as
    (K - 1) rows of K + 1 puts the remaining diagonal entries in the last column."""
    k = scores.shape[0]
    return scores.reshape(-1)[1:].view(k - 1, k + 1)[:, :-1].reshape(-1)


def _logmeanexp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, dim=0) - math.log(x.numel())


def _dv(scores: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan: mean S_ii - logmeanexp of the negatives."""
    return scores.diagonal().mean() - _logmeanexp(negatives)


def _nwj(scores: torch.Tensor) -> torch.Tensor:
    """1 + mean(S_ii - 1) - exp(logmeanexp_{i!=j}(S_ij - 1)), as in Poole et al.'s tuba_lower_bound(S - 1)."""
    return scores.diagonal().mean() - torch.exp(_logmeanexp(_off_diagonal(scores)) - 1.0)


def _js_fgan(scores: torch.Tensor) -> torch.Tensor:
    """f-GAN Jensen-Shannon bound: -mean softplus(-S_ii) - mean_{i!=j} softplus(S_ij)."""
    f = torch.nn.functional.softplus
    return -f(-scores.diagonal()).mean() - f(_off_diagonal(scores)).mean()


# ---------------------------------------------------------------- estimators

class NCE(Estimator):
    """InfoNCE (van den Oord et al.; Poole et al.'s infonce_lower_bound), row-wise; <= log K."""

    name = "nce"

    def ceiling(self, k: int) -> float | None:
        return math.log(k)

    def forward(self, scores: torch.Tensor) -> Estimate:
        k = _check(scores)
        value = math.log(k) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()
        return Estimate(value, value)


class NWJ(Estimator):
    """Nguyen-Wainwright-Jordan (f-divergence / TUBA with baseline e); unbounded, high variance."""

    name = "nwj"

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        value = _nwj(scores)
        return Estimate(value, value)


class JS(Estimator):
    """Train the f-GAN JS bound (low-variance gradient), report NWJ on the same critic (Poole et al.)."""

    name = "js"

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        return Estimate(_nwj(scores), _js_fgan(scores))


class DV(Estimator):
    """Donsker-Varadhan on the batch. The log of a batch mean is biased, so not a lower bound."""

    name = "dv"
    is_lower_bound = False

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        value = _dv(scores, _off_diagonal(scores))
        return Estimate(value, value)


class MINEParams(EstimatorParams):
    """``ema_rate``: weight of the current batch in the moving average of mean e^{S_ij}."""

    ema_rate: float = Field(0.01, gt=0, le=1)


class MINE(Estimator):
    """MINE (Belghazi et al. 2018): reports DV; its gradient divides by a moving average of the
    denominator instead of the batch mean, which reduces the bias of the mini-batch gradient.

    Buffer ``ema`` holds the moving average of mean_{i!=j} e^{S_ij}; NaN until the first training batch.
    """

    name = "mine"
    Params = MINEParams
    is_lower_bound = False

    def __init__(self, params: MINEParams):
        super().__init__(params)
        self.register_buffer("ema", torch.tensor(float("nan")))

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        negatives = _off_diagonal(scores)
        log_mean = _logmeanexp(negatives)
        value = scores.diagonal().mean() - log_mean

        batch = torch.exp(log_mean.detach()).to(self.ema.dtype)
        fresh = torch.isnan(self.ema)
        rate = self.params.ema_rate
        updated = torch.where(fresh, batch, (1 - rate) * self.ema + rate * batch)
        if self.training:
            self.ema.copy_(updated)
            ema = updated
        else:  # evaluation never moves the average; before any training use the batch itself
            ema = torch.where(fresh, batch, self.ema)

        # mean e^{S_ij} / ema, computed in the log domain so large scores do not overflow
        ratio = torch.exp(log_mean - torch.log(ema.to(scores.dtype)))
        surrogate = scores.diagonal().mean() - ratio
        # same number as DV, gradient of the surrogate
        objective = value.detach() + (surrogate - surrogate.detach())
        return Estimate(value, objective)


class SMILEParams(EstimatorParams):
    """``tau``: negatives' scores are clipped to [-tau, tau] in the reported DV estimate."""

    tau: float = Field(5.0, gt=0)


class SMILE(Estimator):
    """SMILE (Song & Ermon 2020): train with JS, report DV with clipped negatives' scores."""

    name = "smile"
    Params = SMILEParams
    is_lower_bound = False

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        tau = self.params.tau
        value = _dv(scores, _off_diagonal(scores).clamp(-tau, tau))
        return Estimate(value, _js_fgan(scores))


class TUBA(Estimator):
    """TUBA with a learnable constant log-baseline a (Poole et al.): 1 + mean(S_ii - a) - mean e^{S_ij - a}.

    At a = 1 this is NWJ; training a alongside the critic tightens the bound.
    """

    name = "tuba"
    has_parameters = True

    def __init__(self, params: EstimatorParams):
        super().__init__(params)
        self.log_baseline = nn.Parameter(torch.zeros(()))

    def forward(self, scores: torch.Tensor) -> Estimate:
        _check(scores)
        a = self.log_baseline.to(scores.dtype)
        marginal = torch.exp(_logmeanexp(_off_diagonal(scores)) - a)
        value = 1 + (scores.diagonal() - a).mean() - marginal
        return Estimate(value, value)


class KPair(Estimator):
    """Multi-class K-pair loss read as an MI estimate (paper §4): log K - mean_i log(1 + sum_{j!=i}
    e^{S_ij - S_ii}). Algebraically identical to InfoNCE."""

    name = "kpair"

    def ceiling(self, k: int) -> float | None:
        return math.log(k)

    def forward(self, scores: torch.Tensor) -> Estimate:
        k = _check(scores)
        # the diagonal of the margins is 0, so it contributes the "1 +" inside the log
        margins = scores - scores.diagonal()[:, None]
        value = math.log(k) - torch.logsumexp(margins, dim=1).mean()
        return Estimate(value, value)


class Triplet(Estimator):
    """Soft triplet loss = InfoNCE with K = 2 (paper §4): each anchor i against one negative
    j = (i + 1) mod K: log 2 - mean softplus(S_ij - S_ii); <= log 2."""

    name = "triplet"

    def ceiling(self, k: int) -> float | None:
        return math.log(2)

    def forward(self, scores: torch.Tensor) -> Estimate:
        k = _check(scores)
        anchors = torch.arange(k, device=scores.device)
        margins = scores[anchors, (anchors + 1) % k] - scores.diagonal()
        value = math.log(2) - torch.nn.functional.softplus(margins).mean()
        return Estimate(value, value)


ESTIMATORS: dict[str, type[Estimator]] = {c.name: c for c in (NCE, NWJ, JS, DV, MINE, SMILE, TUBA, KPair, Triplet)}
