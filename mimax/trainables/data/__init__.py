"""Two-view datasets. Registry: DATASETS (name -> Views subclass).

Adding a dataset is one class (``name``, ``Params``, ``spec_for``, the three ``Views`` methods) and one
line below (or ``register("data")`` from a user's module, ``mimax.trainables.plugins``); the conformance
suite ``mimax.testing`` checks it. A user's own arrays need no class: ``data: {name: arrays, path: ...}``.
"""

from __future__ import annotations

from mimax.trainables.data.arrays import Arrays
from mimax.trainables.data.base import HeldViews, Views
from mimax.trainables.data.gaussian import CorrelatedGaussian, NonIIDGaussian
from mimax.trainables.data.images import CIFAR10, MNIST, Digits, FashionMNIST, ImageHalves

DATASETS: dict[str, type[Views]] = {
    c.name: c for c in (MNIST, FashionMNIST, Digits, CIFAR10, CorrelatedGaussian, NonIIDGaussian, Arrays)}

__all__ = [
    "Arrays",
    "HeldViews",
    "CIFAR10",
    "DATASETS",
    "MNIST",
    "CorrelatedGaussian",
    "Digits",
    "FashionMNIST",
    "ImageHalves",
    "NonIIDGaussian",
    "Views",
]
