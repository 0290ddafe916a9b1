"""Datasets: the real MNIST's published facts, the view split, the noise protocol, loaders' errors, and
the synthetic Gaussians against their closed forms, a user's arrays; the conformance suite over every DATASETS
entry is mimax.testing's (test_conformance.py)."""

from __future__ import annotations

import gzip
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from requires import require

from mimax.errors import ConfigError
from mimax.trainables.base import ViewSpec, parse_params
from mimax.trainables.data import DATASETS, Views
from mimax.trainables.data import images as images_mod
from mimax.trainables.data.gaussian import CorrelatedGaussian
from mimax.trainables.data.idx import parse_idx

MNIST_DIR = Path(__file__).resolve().parents[2] / "mimax" / "trainables" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raw_idx_images(path: Path) -> np.ndarray:
    """An independent reader: the 16-byte IDX image header, then 28×28 bytes per image."""
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)


def make(name: str, **params) -> Views:
    cls = DATASETS[name]
    return cls(parse_params(cls, params, "data"))


# ---------------------------------------------------------------- tiny CIFAR-10 in the real format


def write_cifar(root: Path, n_train: int = 3, n_test: int = 2, protocol: int = 2) -> dict[str, np.ndarray]:
    """The standard python batches: pickled dicts with b"data" uint8 (N, 3072) and b"labels"."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for fname, n in [*((f"data_batch_{i}", n_train) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"batch_label": fname.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        with open(root / fname, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        written[fname] = data
    return written


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    write_cifar(root)
    return root


# ------------------------------------------------------------------------------- conformance suite


@pytest.fixture(scope="module")
def needed(cifar_root):
    """The parameters an entry needs to exist here (everything else has defaults)."""
    return lambda name: {"cifar10": {"root": str(cifar_root)}}.get(name, {})


@pytest.fixture(scope="module")
def instances(needed):
    """One instance per registry entry, built on first use."""
    cache: dict[str, Views] = {}

    def get(name: str) -> Views:
        if name == "fashion-mnist":
            require(FASHION_DIR.is_dir(), f"Fashion-MNIST at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
        if name not in cache:
            cache[name] = make(name, **needed(name))
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------ MNIST


@pytest.fixture(scope="module")
def mnist():
    return make("mnist")


@pytest.fixture(scope="module")
def mnist_raw():
    return tuple(raw_idx_images(MNIST_DIR / f"{split}-images-idx3-ubyte.gz") for split in ("train", "t10k"))


def test_mnist_published_facts(mnist):
    x_tr, y_tr, x_te, y_te = mnist.probe_data(gen())
    assert mnist.spec == ViewSpec(392, (1, 14, 28))
    assert x_tr.shape == (60000, 392) and x_te.shape == (10000, 392)
    assert y_tr.tolist()[:10] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(y_tr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(y_te).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.n_classes == 10 and mnist.labelled and mnist.true_mi is None
    # Mean training pixel over both halves: 33.318 / 255.
    top = x_tr.double().sum()
    bottom = sum(b.double().sum() for _, b in mnist.eval_batches("train", 60000, 1, gen()))
    assert abs(float(top + bottom) / (60000 * 784) - 33.318 / 255) < 1e-3


def test_mnist_views_are_top_and_bottom_rows(mnist, mnist_raw):
    raw_tr, raw_te = mnist_raw
    x_tr, _, x_te, _ = mnist.probe_data(gen())
    expect_tr = torch.from_numpy(raw_tr[:, :14].reshape(60000, -1).astype(np.float32) / 255)
    assert torch.equal(x_tr, expect_tr)
    assert torch.equal(x_te[:100], torch.from_numpy(raw_te[:100, :14].reshape(100, -1).astype(np.float32) / 255))
    # A batch pairs each image's top half with its own bottom half: find the image by its top half.
    by_top = {raw_tr[i, :14].tobytes(): i for i in range(len(raw_tr))}
    x1, x2 = mnist.train_batch(64, gen(5))
    for a, b in zip(x1, x2):
        i = by_top[(a * 255).round().to(torch.uint8).numpy().tobytes()]
        assert torch.equal(b, torch.from_numpy(raw_tr[i, 14:].reshape(-1).astype(np.float32) / 255))


def test_batches_hold_distinct_images_and_follow_the_generator(mnist):
    x1, _ = mnist.train_batch(128, gen(7))
    assert len(torch.unique(x1, dim=0)) == 128
    same = mnist.train_batch(128, gen(7))[0]
    other = mnist.train_batch(128, gen(8))[0]
    g = gen(7)
    first, second = mnist.train_batch(128, g)[0], mnist.train_batch(128, g)[0]
    assert torch.equal(x1, same) and torch.equal(first, x1)
    assert not torch.equal(x1, other) and not torch.equal(first, second)


def test_noise_protocol(mnist):
    clean, noisy = mnist, make("mnist", noise=0.05)
    # The same generator state draws the same images; only the noise differs.
    c1, c2 = clean.train_batch(256, gen(11))
    n1, n2 = noisy.train_batch(256, gen(11))
    e1, e2 = n1 - c1, n2 - c2
    assert torch.allclose(e1, e2, atol=1e-6)  # the same noise tensor on both halves (float rounding only)
    assert abs(float(e1.std()) - 0.05) < 0.002 and abs(float(e1.mean())) < 0.002
    for seed in (12, 13):  # one batch per call: the noise draws advance the generator
        (c1, c2), = clean.eval_batches("test", 64, 1, gen(seed))
        (n1, n2), = noisy.eval_batches("test", 64, 1, gen(seed))
        assert torch.allclose(n1 - c1, n2 - c2, atol=1e-6)
        assert float((n1 - c1).abs().max()) > 0.05

    x_clean, y_clean, t_clean, _ = clean.probe_data(gen())
    x_a, y_a, t_a, _ = noisy.probe_data(gen(13))
    x_b, _, _, _ = noisy.probe_data(gen(14))
    assert torch.equal(y_a, y_clean)
    for noise in (x_a - x_clean, t_a - t_clean):
        assert abs(float(noise.std()) - 0.05) < 0.001 and abs(float(noise.mean())) < 0.001
    # Fresh noise per evaluation, independent across entries: two draws correlate only by chance.
    d_a, d_b = (x_a - x_clean).flatten(), (x_b - x_clean).flatten()
    assert abs(float(torch.corrcoef(torch.stack([d_a, d_b]))[0, 1])) < 0.01


def test_mnist_root_and_env(tmp_path, monkeypatch):
    copy = tmp_path / "mnist"
    copy.mkdir()
    for f in MNIST_DIR.glob("*.gz"):
        (copy / f.name).symlink_to(f)
    monkeypatch.setenv("MIMAX_DATA", str(tmp_path))
    assert make("mnist").probe_data(gen())[1][:3].tolist() == [5, 0, 4]
    with pytest.raises(ConfigError, match=r"^data\.root: mnist not found in .*nowhere.*missing train-images"):
        make("mnist", root=str(tmp_path / "nowhere"))  # data.root wins over MIMAX_DATA
    monkeypatch.setenv("MIMAX_DATA", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"^data\.root: mnist not found in .*empty"):
        make("mnist")


def test_mnist_checksum_mismatch_names_the_file(tmp_path):
    for f in MNIST_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"^data\.root: checksum mismatch for .*t10k-labels-idx1-ubyte\.gz"):
        make("mnist", root=str(tmp_path))


def test_idx_header_checks():
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 2, 3))
    arr = parse_idx(header + bytes(range(12)), 0x803, "f")
    assert arr.shape == (2, 2, 3) and arr[1, 1, 2] == 11
    with pytest.raises(ValueError, match="magic 0x803, expected 0x801"):
        parse_idx(header + bytes(12), 0x801, "f")
    with pytest.raises(ValueError, match="11 data bytes"):
        parse_idx(header + bytes(11), 0x803, "f")


# ---------------------------------------------------------------------------------- other images


def test_fashion_mnist(instances):
    data = instances("fashion-mnist")
    x_tr, y_tr, x_te, y_te = data.probe_data(gen())
    assert data.spec == ViewSpec(392, (1, 14, 28))
    assert x_tr.shape == (60000, 392) and x_te.shape == (10000, 392)
    assert torch.bincount(y_tr).tolist() == [6000] * 10 and torch.bincount(y_te).tolist() == [1000] * 10
    raw = raw_idx_images(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(x_te[:50], torch.from_numpy(raw[:50, :14].reshape(50, -1).astype(np.float32) / 255))


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod, "FASHION_DIR", tmp_path)
    hint = r"install it with `apt-get install dataset-fashion-mnist` or set data\.root"
    with pytest.raises(ConfigError, match=rf"^data\.name: fashion-mnist not found in .*; {hint}"):
        make("fashion-mnist")
    with pytest.raises(ConfigError, match=r"^data\.root: fashion-mnist not found"):
        make("fashion-mnist", root=str(tmp_path))


def test_digits():
    from sklearn.datasets import load_digits

    data = make("digits")
    ref = load_digits()
    x_tr, y_tr, x_te, y_te = data.probe_data(gen())
    assert data.spec == ViewSpec(32, (1, 4, 8))
    assert len(y_tr) == 1347 and len(y_te) == 450
    assert torch.equal(x_tr, torch.from_numpy(ref.images[:1347, :4].reshape(1347, -1) / 16).float())
    assert torch.equal(y_te, torch.from_numpy(ref.target[1347:]))
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_views_from_the_raw_rows(tmp_path, protocol):
    raw = write_cifar(tmp_path, n_train=4, n_test=3, protocol=protocol)
    data = make("cifar10", root=str(tmp_path))
    assert data.spec == ViewSpec(1536, (3, 16, 32))
    x_tr, y_tr, x_te, y_te = data.probe_data(gen())
    assert x_tr.shape == (20, 1536) and x_te.shape == (3, 1536) and len(y_tr) == 20
    # A row is R(1024) G(1024) B(1024), each 32 rows of 32: the top 16 rows are its first 512 per channel.
    rows = np.concatenate([raw[f"data_batch_{i}"] for i in range(1, 6)])
    top = np.concatenate([rows[:, c * 1024 : c * 1024 + 512] for c in range(3)], axis=1)
    bottom = np.concatenate([rows[:, c * 1024 + 512 : (c + 1) * 1024] for c in range(3)], axis=1)
    assert torch.equal(x_tr, torch.from_numpy(top.astype(np.float32) / 255))
    x1, x2 = data.train_batch(20, gen())
    pairs = {a.numpy().tobytes(): b for a, b in zip(x1, x2)}
    for t, b in zip(top, bottom):
        assert torch.equal(pairs[(t.astype(np.float32) / 255).tobytes()], torch.from_numpy(b.astype(np.float32) / 255))


def test_cifar10_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.root: missing required key"):
        parse_params(DATASETS["cifar10"], {}, "data")
    with pytest.raises(ConfigError, match=r"^data\.root: cifar10: .*nowhere is not a directory; expected .*batch_1"):
        make("cifar10", root=str(tmp_path / "nowhere"))
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"^data\.root: cifar10: .* lacks data_batch_3; expected"):
        make("cifar10", root=str(tmp_path))
    # The batches are pickles: anything but arrays and lists is refused, not executed.
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": print, b"labels": []}, protocol=2))
    with pytest.raises(ConfigError, match=r"cannot read .*data_batch_3 .*refusing to load \S+"):
        make("cifar10", root=str(tmp_path))


# ------------------------------------------------------------------------------------- Gaussians


def gaussian_mi(x: np.ndarray, y: np.ndarray) -> float:
    """I(x; y) of a joint Gaussian from the sample covariance: ½ log(det Σx det Σy / det Σ)."""
    cov = np.cov(np.concatenate([x, y], axis=1), rowvar=False)
    d = x.shape[1]
    logdet = lambda m: np.linalg.slogdet(np.atleast_2d(m))[1]  # noqa: E731
    return 0.5 * (logdet(cov[:d, :d]) + logdet(cov[d:, d:]) - logdet(cov))


@pytest.mark.parametrize("mi,dim", [(0.1, 1), (1.0, 2), (4.0, 20), (10.0, 20)])
def test_gaussian_rho_formula(mi, dim):
    rho = CorrelatedGaussian.rho_for(mi, dim)
    assert 0 < rho < 1
    assert -dim / 2 * math.log(1 - rho**2) == pytest.approx(mi, rel=1e-9)


def test_gaussian_matches_its_mi():
    data = make("gaussian", dim=1, mi=0.5)
    assert data.true_mi == 0.5 and data.spec == ViewSpec(1) and not data.labelled
    x, y = (t.double().numpy() for t in data.train_batch(200_000, gen(21)))
    r = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
    # sampling error of 200,000 pairs: sd(r) ≈ (1 − r²)/√n ≈ 0.0014, so sd(MI) ≈ 0.003 and sd(var) ≈ √(2/n)
    # ≈ 0.003: the tolerances are 3–5 sd (seeded, so the draw is fixed; the margin is for other kernels' streams)
    assert -0.5 * math.log(1 - r**2) == pytest.approx(0.5, abs=0.015)
    assert x.var() == pytest.approx(1, abs=0.01) and y.var() == pytest.approx(1, abs=0.01)

    data = make("gaussian", dim=3, mi=2.0)
    x, y = (torch.cat(t).double().numpy() for t in zip(*data.eval_batches("test", 50_000, 4, gen(22))))
    assert gaussian_mi(x, y) == pytest.approx(2.0, abs=0.03)  # 200,000 pairs: sd of the plug-in MI ≈ 0.006


def test_gaussian_batches_are_fresh():
    data = make("gaussian")
    g = gen(1)
    a, b = data.train_batch(8, g), data.train_batch(8, g)
    assert not torch.equal(a[0], b[0])
    assert torch.equal(a[0], data.train_batch(8, gen(1))[0])


def test_noniid_true_mi():
    sigma = np.array([[1, -0.5], [-0.5, 1]]) + np.array([[1, 0.9], [0.9, 1]])  # Σ_Z + Σ_ε, one pair
    corr = sigma[0, 1] / math.sqrt(sigma[0, 0] * sigma[1, 1])
    expect = -0.5 * math.log(1 - corr**2)
    assert round(expect, 6) == 0.020411
    for iid in (False, True):
        assert make("noniid-gaussian", iid=iid).true_mi == pytest.approx(expect, abs=1e-12)


def test_noniid_iid_covariance():
    data = make("noniid-gaussian", iid=True)
    assert data.spec == ViewSpec(1)
    x, y = data.train_batch(200_000, gen(31))
    cov = np.cov(torch.cat([x, y], 1).double().numpy(), rowvar=False)
    np.testing.assert_allclose(cov, [[2, 0.4], [0.4, 2]], atol=0.03)  # sd of a covariance of 200,000: ≈ 2√(2/n) ≈ 0.006


def test_noniid_batches_share_one_z():
    k, n = 64, 4000
    batches = make("noniid-gaussian").eval_batches("train", k, n, gen(32))
    pairs = torch.stack([torch.cat([x, y], 1) for x, y in batches]).double().numpy()  # (n, k, 2)
    means = pairs.mean(1)
    sigma_z, sigma_eps = np.array([[1, -0.5], [-0.5, 1]]), np.array([[1, 0.9], [0.9, 1]])
    # Batch means are Z + mean ε: covariance Σ_Z + Σ_ε / k (i.i.d. pairs would give Σ / k).
    np.testing.assert_allclose(np.cov(means, rowvar=False), sigma_z + sigma_eps / k, atol=0.07)
    # Within a batch only ε varies.
    within = (pairs - means[:, None]).reshape(-1, 2)
    np.testing.assert_allclose(np.cov(within, rowvar=False), sigma_eps * (k - 1) / k, atol=0.03)
    np.testing.assert_allclose(np.cov(pairs.reshape(-1, 2), rowvar=False), sigma_z + sigma_eps, atol=0.08)


# ------------------------------------------------------------------------------------- user arrays


def savez(path: Path, n: int = 12, shape=(5,), **override) -> Path:
    rng = np.random.default_rng(1)
    arrays = {"x1": rng.normal(size=(n, *shape)), "x2": rng.normal(size=(n, *shape)),
              "labels": rng.integers(0, 4, n), "split": np.where(np.arange(n) % 3 == 0, "test", "train")}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_arrays_hold_the_files_rows_per_split(tmp_path, monkeypatch):
    path = savez(tmp_path / "v.npz")
    monkeypatch.chdir(tmp_path)
    data = make("arrays", path="v.npz")  # relative to where the config is validated, then absolute
    assert data.params.path == str(path) and data.spec == ViewSpec(5)
    f = np.load(path)
    x_tr, y_tr, x_te, y_te = data.probe_data(gen(0))
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        rows = f["split"] == split
        np.testing.assert_array_equal(x.numpy(), f["x1"][rows].astype(np.float32))
        np.testing.assert_array_equal(y.numpy(), f["labels"][rows])
    assert data.n_classes == int(f["labels"].max()) + 1 and data.true_mi is None
    # every drawn pair is one example's two views
    pairs = {tuple(a.astype(np.float32)): tuple(b.astype(np.float32)) for a, b in zip(f["x1"], f["x2"])}
    a, b = data.train_batch(4, gen(1))
    assert all(pairs[tuple(u.tolist())] == tuple(v.tolist()) for u, v in zip(a.numpy(), b.numpy()))


@pytest.mark.parametrize("shape, spec", [((6, 4), ViewSpec(24, (1, 6, 4))), ((2, 3, 4), ViewSpec(24, (2, 3, 4)))])
def test_arrays_of_images_keep_their_image_shape(tmp_path, shape, spec):
    data = make("arrays", path=str(savez(tmp_path / "v.npz", shape=shape)), true_mi=1.5)
    assert data.spec == spec and data.true_mi == 1.5


@pytest.mark.parametrize("override, message", [
    ({"x2": np.zeros((12, 4))}, r"x1 \(12, 5\) and x2 \(12, 4\) differ in shape"),
    ({"split": None}, r"lacks the arrays split \(expected x1, x2, labels, split\)"),
    ({"labels": np.zeros(11, int)}, r"labels has shape \(11,\); expected \(12,\)"),
    ({"labels": np.full(12, -1)}, "labels must be non-negative integers"),
    ({"labels": np.zeros(12)}, "labels must be non-negative integers, got float64"),
    ({"split": np.array(["train"] * 11 + ["valid"])}, "split must hold the strings 'train' or 'test'"),
    ({"split": np.array(["train"] * 12)}, "no example has split 'test'"),
    ({"x1": np.full((12, 5), np.nan)}, "x1 holds values that are not finite"),
    ({"x1": np.array([["a"] * 5] * 12)}, "x1 holds <U1, not numbers"),
    ({"x1": np.zeros(12), "x2": np.zeros(12)}, r"x1 has shape \(12,\); expected \(N, D\)"),
])
def test_arrays_file_problems_are_one_line_at_data_path(tmp_path, override, message):
    path = savez(tmp_path / "v.npz", **override)
    with pytest.raises(ConfigError, match=message) as err:
        make("arrays", path=str(path))
    assert err.value.path == "data.path" and "\n" not in str(err.value)


def test_arrays_that_are_no_file_or_no_npz(tmp_path):
    with pytest.raises(ConfigError, match="data.path: no such file"):
        make("arrays", path=str(tmp_path / "missing.npz"))
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match=r"data.path: .*x.npz is not an .npz file"):
        make("arrays", path=str(tmp_path / "x.npz"))


@pytest.mark.parametrize("field, value, names", [
    ("compress_type", 99, "NotImplementedError"),  # a compression method zipfile lacks
    ("flag_bits", 0x1, "RuntimeError"),  # an encrypted member
])
def test_arrays_with_an_unreadable_zip_member_are_one_line_at_data_path(tmp_path, field, value, names):
    """zipfile raises neither BadZipFile nor OSError for these two (found by tests/test_inputs_property.py)."""
    import struct
    import zipfile

    path = savez(tmp_path / "v.npz")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    # the same field in each member's local header (offset 6: flags, 8: method) and central directory entry
    local = {"flag_bits": 6, "compress_type": 8}[field]
    central = {"flag_bits": 8, "compress_type": 10}[field]
    for info in infos:
        struct.pack_into("<H", raw, info.header_offset + local, value)
    start = raw.rfind(b"PK\x01\x02", 0, len(raw))
    while start != -1:
        struct.pack_into("<H", raw, start + central, value)
        start = raw.rfind(b"PK\x01\x02", 0, start)
    path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=rf"^data\.path: .*v\.npz is not a readable \.npz file \({names}"):
        make("arrays", path=str(path))
