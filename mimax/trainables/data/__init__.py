"""Two-view datasets. Registry: DATASETS (name -> Views subclass).

Adding a dataset is one class (``name``, ``Params``, ``spec_for``, the three ``Views`` methods) and one
line below; the conformance tests in tests/trainables/test_data.py pick it up.
"""

from __future__ import annotations

from mimax.trainables.data.base import Views
from mimax.trainables.data.gaussian import CorrelatedGaussian, NonIIDGaussian
from mimax.trainables.data.images import CIFAR10, MNIST, Digits, FashionMNIST, ImageHalves

DATASETS: dict[str, type[Views]] = {
    "mnist": MNIST,
    "fashion-mnist": FashionMNIST,
    "digits": Digits,
    "cifar10": CIFAR10,
    "gaussian": CorrelatedGaussian,
    "noniid-gaussian": NonIIDGaussian,
}

__all__ = [
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
