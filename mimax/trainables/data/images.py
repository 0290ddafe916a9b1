"""Image datasets cut into two views: view 1 = the top half of the rows, view 2 = the bottom half.

Every image is held as float32 on the trial's device, split once into its two halves; batches are
drawn by index with the caller's generator. The paper's MNIST protocol (pixels / 255, top 14 rows vs
bottom 14 rows, optional Gaussian noise as in its Fig. 2) applies to every image dataset here.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec
from mimax.trainables.data.base import HeldViews
from mimax.trainables.data.idx import load_split_dir

MNIST_DIR = Path(__file__).resolve().parent / "mnist"  # package data: in the wheel too, so on every Ray node
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# md5 of the .gz files of the real MNIST (mimax/trainables/data/mnist/README.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "c7dfcf1bfd3481a40f7b3aedbdbd083c",
    "train-labels-idx1-ubyte.gz": "d289298a347a2cc65765a3c81043ba88",
    "t10k-images-idx3-ubyte.gz": "ecff87aa27c74fbc2c1f97e89c19221d",
    "t10k-labels-idx1-ubyte.gz": "a38049bc042dc6e683842a84160daae1",
}

class ImageHalves(HeldViews):
    """Base of the image datasets. Subclasses set ``image_shape`` (C, H, W), ``scale`` and ``load()``; the
    views are the top and bottom halves of the rows, drawn and noised as ``HeldViews`` says."""

    image_shape: ClassVar[tuple[int, int, int]]
    scale: ClassVar[float] = 255.0
    n_classes = 10

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        """The view shape, known without loading any data."""
        c, h, w = cls.image_shape
        return ViewSpec(c * (h // 2) * w, (c, h // 2, w))

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """(train images (N, C, H, W), train labels (N,), test images, test labels), values in [0, scale]."""
        raise NotImplementedError

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        super().__init__(params, device)
        x_tr, y_tr, x_te, y_te = self.load()
        h = self.image_shape[1] // 2
        self.hold({split: (x[:, :, :h, :], x[:, :, h:, :], y) for split, x, y in
                   (("train", x_tr, y_tr), ("test", x_te, y_te))}, self.scale)


def _with_channel(arrays):
    x_tr, y_tr, x_te, y_te = arrays
    return x_tr[:, None], y_tr, x_te[:, None], y_te


def mnist_dir(root: str | None) -> Path:
    """Where MNIST is read from: data.root, else $MIMAX_DATA/mnist, else the copy shipped in the package."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MIMAX_DATA")
    return Path(env) / "mnist" if env else MNIST_DIR


class MNIST(ImageHalves):
    """The real MNIST shipped with the package (mimax/trainables/data/mnist), checked against its md5 table.

    View 1 = top 14 rows (392 values), view 2 = bottom 14 rows; 60,000 train / 10,000 test.
    """

    name = "mnist"
    image_shape = (1, 28, 28)

    class Params(ImageHalves.Params):
        root: str | None = None  # directory with the four .gz files; default $MIMAX_DATA/mnist or the shipped copy

    def load(self):
        hint = "set data.root (or MIMAX_DATA to a directory holding mnist/) to where the four MNIST .gz files are"
        return _with_channel(load_split_dir(mnist_dir(self.params.root), "mnist", hint, MNIST_MD5))


class FashionMNIST(ImageHalves):
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (same IDX-gz format and sizes as MNIST)."""

    name = "fashion-mnist"
    image_shape = (1, 28, 28)

    class Params(ImageHalves.Params):
        root: str | None = None  # default /usr/share/datasets/fashion-mnist

    def load(self):
        root = self.params.root
        directory = FASHION_DIR if root is None else Path(root)
        hint = "install it with `apt-get install dataset-fashion-mnist` or set data.root"
        path = "data.name" if root is None else "data.root"
        arrays = load_split_dir(directory, "fashion-mnist", hint, path=path)
        if arrays[0].shape[1:] != (28, 28) or arrays[2].shape[1:] != (28, 28):
            raise ConfigError(path, f"fashion-mnist in {directory}: images are not 28×28")
        return _with_channel(arrays)


class Digits(ImageHalves):
    """scikit-learn's 8×8 digits (1,797 images, values 0..16, divided by 16).

    Split: the first 1,347 images train, the last 450 test (a fixed, documented 75/25 cut in the file's
    own order, the order of its writers). Views: top 4 rows / bottom 4 rows, 32 values each.
    """

    name = "digits"
    image_shape = (1, 8, 8)
    scale = 16.0
    n_train: ClassVar[int] = 1347

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.images.astype(np.float32)[:, None]
        y = d.target
        return x[: self.n_train], y[: self.n_train], x[self.n_train :], y[self.n_train :]


# -- CIFAR-10 from the standard python batches

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
_EXPECTED = "the CIFAR-10 python batches data_batch_1..data_batch_5 and test_batch (cifar-10-batches-py)"


class _ArraysOnly(pickle.Unpickler):
    """The batches are pickles: allow only what a pickled numpy array and list need, so a stray file in
    a user-given directory cannot run code."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy.core.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
        ("numpy._core.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        d = _ArraysOnly(fh, encoding="bytes").load()
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"data {data.dtype} {data.shape}, labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=2)
def _load_cifar(directory: str, _stamps) -> tuple[np.ndarray, ...]:
    root = Path(directory)
    parts = []
    for fname in (*CIFAR_TRAIN, CIFAR_TEST):
        try:
            parts.append(_read_cifar_batch(root / fname))
        except Exception as exc:  # any unreadable batch is the user's directory's fault: say which file
            raise ConfigError("data.root", f"cifar10: cannot read {root / fname} as a CIFAR-10 batch ({exc})") from None
    x_tr = np.concatenate([p[0] for p in parts[:-1]])
    y_tr = np.concatenate([p[1] for p in parts[:-1]])
    return x_tr, y_tr, *parts[-1]


class CIFAR10(ImageHalves):
    """CIFAR-10 from a user-given directory of the standard python batches (50,000 train / 10,000 test).

    View 1 = the top 16 rows of all three channels (3×16×32 = 1,536 values), view 2 = the bottom 16.
    """

    name = "cifar10"
    image_shape = (3, 32, 32)

    class Params(ImageHalves.Params):
        root: str

    def load(self):
        directory = Path(self.params.root).expanduser().resolve()
        if not directory.is_dir():
            raise ConfigError("data.root", f"cifar10: {directory} is not a directory; expected {_EXPECTED}")
        files = [directory / f for f in (*CIFAR_TRAIN, CIFAR_TEST)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError("data.root", f"cifar10: {directory} lacks {', '.join(missing)}; expected {_EXPECTED}")
        stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        return _load_cifar(str(directory), stamps)
