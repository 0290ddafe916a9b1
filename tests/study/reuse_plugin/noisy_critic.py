"""A test plugin whose critic draws from torch's global RNG at every step (as a component using dropout
does): its numbers depend on that RNG's state when the trial starts, so a worker that leaked it from one
trial into the next would change them. Registered under a name no other module takes."""

from __future__ import annotations

import torch

from mimax.trainables.critics import Bilinear
from mimax.trainables.plugins import register


@register("critic")
class NoisyBilinear(Bilinear):
    name = "noisy-bilinear"

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = super().forward(u, v)
        return scores + 0.1 * torch.randn(scores.shape)  # the global RNG, on purpose
