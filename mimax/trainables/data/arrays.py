"""A user's own two views from one ``.npz`` file: ``data: {name: arrays, path: views.npz}``.

The file holds, for N examples (``numpy.savez``; no pickled objects):

- ``x1``, ``x2``: the two views, numbers of one shape (N, D) for flat vectors, (N, H, W) or (N, C, H, W)
  for images (then image encoders such as ``convnet`` apply);
- ``labels``: (N,) non-negative integers, the classes the probe predicts from view 1's features;
- ``split``: (N,) strings, ``"train"`` or ``"test"`` per example; both splits non-empty.

Views are used as stored (float32; scale them beforehand). ``true_mi``: the views' mutual information in
nats where the user knows it (recorded with each trial, as for the Gaussians). A relative ``path`` is
made absolute when the config is validated: every Ray worker reads the same file (on a cluster, keep it
where every node sees it at that path).
"""

from __future__ import annotations

import functools
import math
import lzma
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from mimax.errors import ConfigError
from mimax.trainables.base import ViewSpec
from mimax.trainables.data.base import SPLITS, HeldViews

KEYS = ("x1", "x2", "labels", "split")
WHERE = "data.path"


class Arrays(HeldViews):
    name = "arrays"

    class Params(HeldViews.Params):
        path: str
        true_mi: float | None = Field(default=None, gt=0)

        @field_validator("path")
        @classmethod
        def _absolute(cls, value: str) -> str:
            return str(Path(value).expanduser().resolve())

    @classmethod
    def spec_for(cls, params: Params) -> ViewSpec:
        shape = _view_shape(params.path, *_stamp(params.path))
        dim = math.prod(shape)
        return ViewSpec(dim, shape if len(shape) == 3 else None)

    def __init__(self, params: Params, device: torch.device | str = "cpu"):
        super().__init__(params, device)
        x1, x2, labels, split = _load(params.path, *_stamp(params.path))
        self.hold({s: (x1[split == s], x2[split == s], labels[split == s]) for s in SPLITS})
        self.n_classes = int(labels.max()) + 1
        self.true_mi = params.true_mi


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = Path(path).stat()
    except OSError:
        raise ConfigError(WHERE, f"no such file: {path}") from None
    return st.st_mtime_ns, st.st_size


# What zipfile, zlib and numpy raise on a damaged file (a bad header is a ValueError, a SyntaxError from
# its literal_eval or a TokenError from its tokenizer, a deep one a RecursionError, a truncated member an
# EOFError or zlib.error).
# zipfile raises NotImplementedError for a compression method it lacks and RuntimeError for an encrypted member
_DAMAGED = (OSError, EOFError, ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError,
            zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError)


def _damaged(path: str, exc: BaseException) -> ConfigError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return ConfigError(WHERE, f"{path} is not a readable .npz file ({type(exc).__name__}"
                              f"{': ' + first if first else ''}); write it with numpy.savez")


def _open(path: str) -> zipfile.ZipFile:
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        raise ConfigError(WHERE, f"{path} is not an .npz file (write it with numpy.savez)") from None
    except _DAMAGED as exc:
        raise _damaged(path, exc) from None
    missing = [k for k in KEYS if f"{k}.npy" not in z.namelist()]
    if missing:
        z.close()
        raise ConfigError(WHERE, f"{path} lacks the arrays {', '.join(missing)} (expected {', '.join(KEYS)})")
    return z


def _header(z: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its header, checked against the bytes stored after it (so that
    loading it never allocates what a damaged header claims)."""
    path = z.filename
    try:
        with z.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            stored = z.getinfo(f"{key}.npy").file_size - fh.tell()
    except _DAMAGED as exc:
        raise _damaged(path, exc) from None
    if dtype.hasobject:
        raise ConfigError(WHERE, f"{path}: {key} holds Python objects, which a data file may not (no pickle)")
    size = math.prod(shape) * dtype.itemsize
    if size != stored:
        raise ConfigError(WHERE, f"{path}: {key} has shape {shape} of {dtype} ({size:,} bytes) but {stored:,} bytes "
                                 "are stored; the file is damaged")
    return shape, dtype


@functools.lru_cache(maxsize=16)
def _view_shape(path: str, *_stamp) -> tuple[int, ...]:
    """One example's shape as an encoder sees it, (D,) or (C, H, W), from the arrays' headers alone."""
    with _open(path) as z:
        heads = {k: _header(z, k) for k in KEYS}
    (s1, d1), (s2, d2) = heads["x1"], heads["x2"]
    if s1 != s2:
        raise ConfigError(WHERE, f"{path}: x1 {s1} and x2 {s2} differ in shape; both views need one shape")
    if len(s1) not in (2, 3, 4):
        raise ConfigError(WHERE, f"{path}: x1 has shape {s1}; expected (N, D), (N, H, W) or (N, C, H, W)")
    for key, dtype in (("x1", d1), ("x2", d2)):
        if dtype.kind not in "biuf":
            raise ConfigError(WHERE, f"{path}: {key} holds {dtype}, not numbers")
    n = s1[0]
    for key in ("labels", "split"):
        if heads[key][0] != (n,):
            raise ConfigError(WHERE, f"{path}: {key} has shape {heads[key][0]}; expected ({n},), one per example")
    rest = s1[1:]
    return rest if len(rest) != 2 else (1, *rest)


@functools.lru_cache(maxsize=2)
def _load(path: str, *_stamp) -> tuple[np.ndarray, ...]:
    _view_shape(path, *_stamp)
    try:
        with np.load(path, allow_pickle=False) as f:
            x1, x2, labels, split = (f[k] for k in KEYS)
    except _DAMAGED as exc:  # the headers were fine, the data after one is not (a bad CRC, say)
        raise _damaged(path, exc) from None
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise ConfigError(WHERE, f"{path}: labels must be non-negative integers, got {labels.dtype}")
    if split.dtype.kind != "U" or not np.isin(split, SPLITS).all():
        raise ConfigError(WHERE, f"{path}: split must hold the strings 'train' or 'test' per example")
    for s in SPLITS:
        if not (split == s).any():
            raise ConfigError(WHERE, f"{path}: no example has split '{s}'")
    x1, x2 = x1.astype(np.float32), x2.astype(np.float32)
    for key, x in (("x1", x1), ("x2", x2)):
        if not np.isfinite(x).all():
            raise ConfigError(WHERE, f"{path}: {key} holds values that are not finite")
    return x1, x2, labels, split
