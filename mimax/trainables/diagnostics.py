"""Encoder diagnostics: the Jacobian's log condition number (paper Fig. 2) and percentile bands."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from mimax.contract import LOG_COND_PERCENTILES
from mimax.trainables.functional import Index, Stacked


@torch.no_grad()
def log_condition_numbers(encoder: Stacked | nn.Module, x: torch.Tensor, idx: Index = None,
                          chunk: int | None = 32) -> torch.Tensor:
    """Per example, natural log(σ_max / σ_min) of the encoder's Jacobian at x.

    ``encoder`` is a stack of R' replicates (those of ``idx``) and x (R', B, in) -> (R', B), replicate r
    at x[r]; or a single module and x (B, in) -> (B,). Non-square Jacobians use their min(out, in)
    singular values. Examples go through ``chunk`` at a time (None: all at once) because reverse mode
    holds out_dim copies of every activation. Singular values are taken in float64 so that
    ill-conditioned Jacobians keep their small ones. The encoder's mode is left as it is (the paper's
    encoders have no train/eval differences).
    """
    if isinstance(encoder, nn.Module):
        return log_condition_numbers(Stacked([encoder]), x[None], chunk=chunk)[0]
    params, buffers = encoder.tensors(idx)

    def jac(p, b, xs):
        def one(xi):
            return functional_call(encoder.module, (p, b), (xi.unsqueeze(0),)).squeeze(0)

        return vmap(jacrev(one))(xs)

    step = max(1, x.shape[1] if chunk is None else chunk)
    out = []
    for start in range(0, x.shape[1], step):
        j = vmap(jac)(params, buffers, x[:, start : start + step])  # the transforms ignore no_grad
        s = torch.linalg.svdvals(j.double())
        out.append(torch.log(s[..., 0] / s[..., -1]))
    return torch.cat(out, dim=1).to(x.dtype) if out else x.new_zeros(x.shape[0], 0)


def percentiles(
    values: torch.Tensor | Sequence[float],
    qs: Sequence[float] = LOG_COND_PERCENTILES,
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
