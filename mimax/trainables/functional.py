"""R modules of one architecture as one: the replicate axis of ``mimax.trainables.loop.Trainer``.

``Stacked`` holds R modules' parameters and buffers with a leading replicate dimension and runs them
with ``torch.func.functional_call`` under ``torch.vmap``. A stack of one holds its module as it is and
calls it directly: a lone trial pays nothing for the replicate axis. Either way each replicate computes
what its own module computes; only the float rounding of batched kernels can differ.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

Index = torch.Tensor | None  # replicate indices to use; None: all of them


def join(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The replicates' tensors as one (R, ...) tensor; a lone replicate's is a view, not a copy."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(list(tensors))


class Stacked:
    """R modules of one architecture as tensors with a leading replicate dimension.

    ``parameters()`` are what an optimiser updates in place; ``tensors()`` gives them, and the buffers,
    in the modules' own layout with the replicate dimension first, as ``functional_call`` fills
    ``module`` (for R > 1 a copy of the first replicate on the meta device) with one replicate's tensors
    at a time.

    For R > 1 the weights of ``nn.Linear`` layers are stored transposed, (R, in, out): under vmap their
    gradient arrives in that layout, which autograd can then take over as it is instead of copying it
    into the weight's layout (the copy was ~10% of an MLP pack's step on CPU). Fused Adam needs a
    parameter, its gradient and its moments in one layout, and this keeps them all contiguous.
    For R = 1 the parameters are the module's own (``plain``): no copy, no vmap, no functional_call.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        self.size = len(modules)
        self.plain = self.size == 1
        self.transposed: frozenset[str] = frozenset()
        if self.plain:
            self.module = modules[0]
            return
        params, self.buffers = stack_module_state(list(modules))
        linear = {f"{n}.weight" if n else "weight" for n, m in modules[0].named_modules() if isinstance(m, nn.Linear)}
        self.transposed = frozenset(k for k in params if k in linear)
        self.leaves = {
            k: v.detach().transpose(1, 2).contiguous().requires_grad_() if k in self.transposed else v
            for k, v in params.items()
        }
        self.module = copy.deepcopy(modules[0]).to("meta")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.module.parameters() if self.plain else self.leaves.values())

    def n_params(self) -> int:
        """Parameters of one replicate."""
        return sum(p[0].numel() for p in self.tensors()[0].values())

    def train(self, mode: bool) -> None:
        self.module.train(mode)

    def tensors(self, idx: Index = None) -> tuple[dict, dict]:
        """(params, buffers) in the modules' layout, (R, ...), for the replicates ``idx`` (None: all)."""
        if self.plain:
            leaves = {k: v.unsqueeze(0) for k, v in self.module.named_parameters()}
            buffers = {k: v.unsqueeze(0) for k, v in self.module.named_buffers()}
        else:
            leaves, buffers = self.leaves, self.buffers
        pick = (lambda t: t) if idx is None else (lambda t: t[idx])  # noqa: E731
        params = {k: pick(v).transpose(-1, -2) if k in self.transposed else pick(v) for k, v in leaves.items()}
        return params, {k: pick(v) for k, v in buffers.items()}

    def __call__(self, *xs: torch.Tensor, idx: Index = None, shared: bool = False) -> torch.Tensor:
        """Each replicate r applied to ``xs[...][r]`` (or, ``shared``, to the same ``xs``): (R, ...)."""
        if self.plain:
            return self.module(*(x if shared else x.squeeze(0) for x in xs)).unsqueeze(0)
        params, buffers = self.tensors(idx)
        if shared and not params and not buffers:  # nothing differs between replicates (identity)
            out = functional_call(self.module, ({}, {}), xs)
            return out.expand(self.size if idx is None else len(idx), *out.shape)

        def one(p, b, *x):
            return functional_call(self.module, (p, b), x)

        return vmap(one, in_dims=(0, 0, *([None if shared else 0] * len(xs))))(params, buffers, *xs)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        params, buffers = self.tensors()  # the modules' layout, whatever the storage
        return {"params": {k: v.detach() for k, v in params.items()}, "buffers": dict(buffers)}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():  # in place: the optimiser holds these tensors
            for kind, tensors in zip(("params", "buffers"), self.tensors()):
                for k, v in tensors.items():
                    v.copy_(state[kind][k])
