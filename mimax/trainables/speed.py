"""The training step's optional speed switches: ``train.precision`` and ``train.compile``.

Both trainers build their step's forward pass here, as ``forward(x1, x2) -> loss(es)``:

- ``precision: bf16`` runs the encoders and the critic under bf16 autocast; the estimator gets the
  scores in float32, because its log-sum-exps over K scores are where bf16's 8-bit mantissa would hurt.
- ``compile`` wraps the forward in ``torch.compile`` (mode ``default`` or ``reduce-overhead``, which
  adds CUDA graphs on a GPU). A stateful estimator (MINE's moving average, TUBA's baseline) stays
  outside the compiled region, so its buffer updates run eagerly as before.

Evaluation never goes through this: bounds, probes and Jacobians are always float32 and uncompiled,
so a switch's effect is measured by the same yardstick as the default.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def stateless(estimator: torch.nn.Module) -> bool:
    """No parameters and no buffers: the loss is a pure function of the scores."""
    return not any(True for _ in (*estimator.parameters(), *estimator.buffers()))


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_forward(scores_fn: Forward, loss_fn: Callable[[torch.Tensor], torch.Tensor], train, device: torch.device,
                  stateless: bool) -> Forward:
    """``loss_fn(scores_fn(x1, x2))`` with ``train.precision`` and ``train.compile`` applied."""

    def scores(x1, x2):
        with autocast(device, train.precision):
            return scores_fn(x1, x2).float()

    def forward(x1, x2):
        return loss_fn(scores(x1, x2))

    if train.compile == "none":
        return forward
    compile = lambda f: torch.compile(f, mode=train.compile, dynamic=False)  # noqa: E731
    if stateless:
        compiled = compile(forward)
    else:
        compiled_scores = compile(scores)
        compiled = lambda x1, x2: loss_fn(compiled_scores(x1, x2))  # noqa: E731
    if train.compile != "reduce-overhead":
        return compiled

    def graphed(x1, x2):
        # CUDA graphs reuse their output buffers at the next replay: mark the step, and hand out a copy,
        # since the trainers hold on to the losses until their next read.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(x1, x2).clone()

    return graphed
