"""Two-view datasets held on the trial's device and batched by index (no DataLoader)."""

from __future__ import annotations

from typing import ClassVar

import torch

from mimax.trainables.base import Params, ViewSpec


class Views:
    """Base of every dataset. Both views share one ViewSpec (``self.spec``).

    - ``train_batch(k, gen)`` -> (x1, x2), each (k, dim), drawn with ``gen`` by the training protocol
      (for noisy MNIST the same noise tensor is added to both halves).
    - ``eval_batches(split, k, n, gen)`` -> list of n (x1, x2) batches of size k from ``split``
      ("train" or "test"), same protocol as training.
    - ``probe_data(gen)`` -> (x_train, y_train, x_test, y_test): view 1 only, with fresh evaluation
      noise; only for ``labelled`` datasets.
    ``true_mi`` is the analytic MI between the views in nats, where known, else None.
    ``spec_for(params)`` gives the ViewSpec without loading data, so configs validate cheaply.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    labelled: ClassVar[bool] = True

    spec: ViewSpec
    true_mi: float | None = None
    n_classes: int | None = None

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        self.params = params
        self.device = torch.device(device)

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        """The view shape these params give, without loading any data (used by the validator)."""
        raise NotImplementedError  # pragma: no cover

    def train_batch(self, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    def eval_batches(
        self, split: str, k: int, n: int, gen: torch.Generator
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError  # pragma: no cover

    def probe_data(self, gen: torch.Generator):
        raise NotImplementedError  # pragma: no cover
