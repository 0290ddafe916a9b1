"""The example plugin's own tests (what a user writes: mimax.testing over their components) pass when run
with pytest as its author would, and its space validates with the plugin importable."""

from __future__ import annotations

import os
import subprocess
import sys

from example_plugin import EXAMPLE


def test_the_example_passes_the_conformance_suite(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(EXAMPLE / "src"))
    env.pop("PYTEST_XDIST_WORKER", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLE),
                        str(EXAMPLE / "tests")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    # lowrank: 7 checks, symmetric-nce: 6, noisy-copies: 2
    assert "15 passed" in r.stdout, r.stdout[-2000:]


def test_the_example_space_validates(example_on_path):
    from mimax.search_spaces import load_space

    space = load_space(str(EXAMPLE / "space.yaml"))
    assert space.base["plugins"] == ["mimax_example.components"] and space.n_configs == 4
