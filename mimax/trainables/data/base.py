"""Two-view datasets held on the trial's device and batched by index (no DataLoader)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

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
    ``spec_for(params)`` gives the ViewSpec without loading data, so configs validate cheaply; ``__init__``
    sets ``spec`` from it.
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
        self.spec = self.spec_for(params)

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

    def _randn(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Standard normal float32 drawn with ``gen`` on its device, moved to the data's device."""
        return torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32).to(self.device)


SPLITS = ("train", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


class HeldViews(Views):
    """Views held as float32 tensors on the trial's device (``hold``), batched by index with the caller's
    generator: the image datasets and user arrays.

    Noise protocol (``noise`` = σ > 0, the paper's Fig. 2): a training or evaluation batch gets one
    Gaussian noise tensor added to *both* views; ``probe_data`` adds fresh noise to view 1.
    """

    class Params(Params):
        noise: float = Field(default=0.0, ge=0)

    _views: dict[str, tuple[torch.Tensor, torch.Tensor]]
    _labels: dict[str, torch.Tensor]

    def hold(self, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], scale: float = 1.0) -> None:
        """Keep each split's (view 1, view 2, labels), views flattened per example and divided by ``scale``."""
        self._views, self._labels = {}, {}
        for split, (x1, x2, y) in splits.items():
            n = len(x1)
            # Copy to the device in the stored dtype (uint8 for pixels), convert there.
            self._views[split] = tuple(
                torch.from_numpy(np.array(x).reshape(n, -1)).to(self.device).to(torch.float32) / scale
                for x in (x1, x2))
            self._labels[split] = torch.as_tensor(np.asarray(y, dtype=np.int64)).to(self.device)

    def size(self, split: str) -> int:
        return len(self._labels[check_split(split)])

    def _indices(self, split: str, k: int, gen: torch.Generator) -> torch.Tensor:
        """k distinct examples, uniformly at random (a batch of a shuffled stream holds no repeats)."""
        n = self.size(split)
        if not 1 <= k <= n:
            raise ValueError(f"batch size {k} must be between 1 and the {split} size {n}")
        return torch.randperm(n, generator=gen, device=gen.device)[:k].to(self.device)

    def _batch(self, split: str, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._indices(split, k, gen)
        first, second = self._views[split]
        x1, x2 = first[idx], second[idx]
        if self.params.noise > 0:
            eps = self.params.noise * self._randn((k, self.spec.dim), gen)
            x1, x2 = x1 + eps, x2 + eps  # the same noise tensor on both views
        return x1, x2

    def train_batch(self, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch("train", k, gen)

    def eval_batches(self, split: str, k: int, n: int, gen: torch.Generator):
        check_split(split)
        return [self._batch(split, k, gen) for _ in range(n)]

    def probe_data(self, gen: torch.Generator):
        """(x_train, y_train, x_test, y_test): view 1 of every example, labels int64.

        Without noise the tensors are the dataset's own storage: do not modify them in place.
        """
        out = []
        for split in SPLITS:
            x = self._views[split][0]
            if self.params.noise > 0:
                x = x + self.params.noise * self._randn(tuple(x.shape), gen)
            out += [x, self._labels[split]]
        return tuple(out)
