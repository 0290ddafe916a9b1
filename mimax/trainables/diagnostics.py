"""Encoder diagnostics: the Jacobian's log condition number (paper Fig. 2) and percentile bands."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.func import jacrev, vmap


def jacobians(encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Per-example Jacobians d encoder(x_b) / d x_b, (B, out_dim, in_dim)."""

    def one(xi: torch.Tensor) -> torch.Tensor:
        return encoder(xi.unsqueeze(0)).squeeze(0)

    return vmap(jacrev(one))(x)


@torch.no_grad()
def log_condition_numbers(
    encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int | None = 32
) -> torch.Tensor:
    """Per example, natural log(σ_max / σ_min) of the encoder's Jacobian at x (B, in_dim) -> (B,).

    Non-square Jacobians use their min(out, in) singular values. Examples go through ``chunk`` at a
    time (None: all at once) because reverse mode holds out_dim copies of every activation.
    Singular values are taken in float64 so that ill-conditioned Jacobians keep their small ones.
    The encoder's mode is left as it is (the paper's encoders have no train/eval differences).
    """
    step = x.shape[0] if chunk is None else chunk
    out = []
    for start in range(0, x.shape[0], max(1, step)):
        s = torch.linalg.svdvals(jacobians(encoder, x[start : start + step]).double())
        out.append(torch.log(s[:, 0] / s[:, -1]))
    return torch.cat(out).to(x.dtype) if out else x.new_zeros(0)


def percentiles(
    values: torch.Tensor | Sequence[float],
    qs: Sequence[float] = (5, 25, 50, 75, 95),
    prefix: str | None = None,
) -> dict:
    """The q-th percentiles (linear interpolation, numpy's default), NaN for no values.

    Keyed by q itself (``{50: ...}``), or with a prefix by metric name (``{"log_cond_p50": ...}``).
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if v.numel():
        got = torch.quantile(v, torch.tensor([q / 100 for q in qs], dtype=torch.float64)).tolist()
    else:
        got = [float("nan")] * len(qs)
    return {q if prefix is None else f"{prefix}_p{q:g}": p for q, p in zip(qs, got)}
