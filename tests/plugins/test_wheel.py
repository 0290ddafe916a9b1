"""mimax built as a wheel and installed (not editable) into a fresh venv runs `mimax train` and a smoke
`mimax launch` on MNIST from a directory outside the repository: the data it needs (MNIST is package
data, mimax/trainables/data/mnist) reaches the installed copy and its Ray workers. The example plugin,
installed beside it from its own wheel, registers through its entry point.

To stay offline and fast the fresh venv gets mimax alone from the wheel (``pip install --no-deps``) and a
``.pth`` line naming the site-packages this test runs with, for the heavy dependencies (torch, Ray, ...).
That directory is appended to sys.path after the venv's own site-packages, and a ``.pth`` line only adds
a path (no ``.pth`` there runs), so no editable mimax of a checkout can shadow the wheel; the test checks
which mimax answered."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from engine_helpers import query

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEPS = Path(torch.__file__).resolve().parents[1]  # the site-packages that hold the heavy dependencies


def sh(*args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}: {r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # the files a wheel is built from, copied: the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "mimax", src / "mimax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # no build isolation (offline): the build backend comes from the dependencies' site-packages
    build_env = dict(os.environ, PYTHONPATH=str(DEPS))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src,
       cwd=tmp, env=build_env)
    shutil.copytree(REPO / "examples" / "plugin", tmp / "example", ignore=shutil.ignore_patterns("__pycache__"))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist",
       tmp / "example", cwd=tmp, env=build_env)
    wheels = sorted((tmp / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["mimax", "mimax_example_plugin"], wheels
    env_dir = tmp / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", env_dir, cwd=tmp)
    py = env_dir / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", *wheels, cwd=tmp)
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip())
    (site / "_mimax_test_deps.pth").write_text(f"{DEPS}\n")
    return env_dir


def clean_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MIMAX_DATA", "MIMAX_DB",
                                                            "PYTEST_XDIST_WORKER", "VIRTUAL_ENV")}
    return dict(env, PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")


def test_the_installed_wheel_trains_and_launches_on_mnist_outside_the_repository(venv, tmp_path):
    env = clean_env(venv)
    where = sh(venv / "bin" / "python", "-c", "import mimax.trainables.data.images as m; print(m.__file__)",
               cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's mimax, not a checkout's
    assert not str(tmp_path).startswith(str(REPO))

    config = {"data": {"name": "mnist"}, "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
              "critic": {"name": "bilinear"}, "estimator": {"name": "nce"},
              "train": {"steps": 20, "batch_size": 64, "lr": 1e-3},
              "eval": {"every": 10, "probe": "none", "bound_batches": 2}}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(config))
    r = sh(venv / "bin" / "mimax", "train", "trial.yaml", "--json", cwd=tmp_path, env=env)
    last = yaml.safe_load(r.stdout.strip().splitlines()[-1])
    assert last["event"] == "end" and last["status"] == "completed" and last["step"] == 20

    space = {"name": "wheel-smoke", "base": config, "params": {"estimator.name": {"grid": ["nce", "nwj"]}},
             "sampler": {"name": "grid", "seed": 0}, "objectives": [{"metric": "bound_test", "direction": "maximize"}]}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sh(venv / "bin" / "mimax", "launch", "space.yaml", "--name", "w", "--db", url, "--quiet", cwd=tmp_path, env=env,
       timeout=600)
    rows = query(url, "SELECT state, last_step FROM mimax_trials")
    assert sorted(rows) == [("completed", 20), ("completed", 20)], rows


def test_an_installed_plugin_registers_through_its_entry_point(venv, tmp_path):
    # no plugins key: the example's entry point (group mimax.components) registers its components
    config = {"data": {"name": "noisy-copies"}, "encoder": {"name": "mlp", "hidden": [16], "out_dim": 4},
              "critic": {"name": "lowrank", "rank": 2}, "estimator": {"name": "symmetric-nce"},
              "train": {"steps": 10, "batch_size": 16}, "eval": {"every": 5, "probe": "none", "bound_batches": 1}}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(config))
    r = sh(venv / "bin" / "mimax", "train", "trial.yaml", "--json", cwd=tmp_path, env=clean_env(venv))
    start, *_, end = (yaml.safe_load(line) for line in r.stdout.strip().splitlines())
    assert start["config"]["critic"] == {"name": "lowrank", "rank": 2} and "plugins" not in start["config"]
    assert start["true_mi"] > 0 and end["status"] == "completed" and end["step"] == 10
