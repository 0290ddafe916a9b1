"""Reading IDX files (the MNIST format), gzipped or not, into numpy arrays.

IDX: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of dimensions, then
one big-endian int32 per dimension, then the values in C order. Images are magic 0x803 (3 dims),
labels 0x801 (1 dim).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path

import numpy as np

from mimax.errors import ConfigError

IMAGES_MAGIC = 0x803
LABELS_MAGIC = 0x801

# The four files of an MNIST-format split, in the order (train images, train labels, test images, test labels).
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def parse_idx(raw: bytes, expect_magic: int, where: str) -> np.ndarray:
    """Decode one IDX file's bytes; ``where`` names the file in errors."""
    if len(raw) < 4:
        raise ValueError(f"{where}: too short for an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise ValueError(f"{where}: IDX magic {magic:#x}, expected {expect_magic:#x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    n_values = int(np.prod(dims))
    if len(raw) != header + n_values:
        raise ValueError(f"{where}: {len(raw) - header} data bytes for shape {dims}, expected {n_values}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, expect_magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return parse_idx(fh.read(), expect_magic, str(path))


def _fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def load_split_dir(
    directory: Path, dataset: str, hint: str, md5s: dict[str, str] | None = None, path: str = "data.root"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as uint8 arrays from the four FILES.

    ``md5s`` maps file name -> expected md5 of the .gz; a mismatch is an error naming the file.
    Errors are ConfigErrors at ``path``; ``hint`` tells the user how to fix a missing directory.
    Results are cached in-process (many trials load the same files); the key includes each file's
    mtime and size, so a replaced file is read again.
    """
    directory = Path(directory).expanduser().resolve()
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise ConfigError(path, f"{dataset} not found in {directory} (missing {', '.join(missing)}); {hint}")
    stamps = tuple(_fingerprint(directory / f) for f in FILES)
    checks = tuple(sorted(md5s.items())) if md5s else ()
    return _load_cached(str(directory), dataset, stamps, checks, path)


@functools.lru_cache(maxsize=8)
def _load_cached(directory: str, dataset: str, _stamps, checks, path: str) -> tuple[np.ndarray, ...]:
    root = Path(directory)
    for fname, want in checks:
        got = md5(root / fname)
        if got != want:
            raise ConfigError(
                path,
                f"checksum mismatch for {root / fname}: md5 {got}, expected {want} "
                f"(corrupted or not the real {dataset})",
            )
    arrays = []
    try:
        for fname in FILES:
            magic = IMAGES_MAGIC if "images" in fname else LABELS_MAGIC
            arrays.append(read_idx(root / fname, magic))
    except (ValueError, OSError, EOFError) as exc:
        raise ConfigError(path, f"{dataset}: cannot read {exc}") from None
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(
                path, f"{dataset} {split}: images {x.shape} and labels {y.shape} do not match"
            )
    return x_tr, y_tr, x_te, y_te
