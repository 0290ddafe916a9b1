"""What pip and setuptools make of pyproject.toml, and what the docs tell a user who installs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_setuptools_reads_pyproject_without_a_warning():
    """A table-form ``project.license`` made every install print ~30 lines of deprecation warnings."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_extending_says_how_to_choose_the_torch_build_before_pip_install():
    text = (ROOT / "docs" / "EXTENDING.md").read_text()
    block = text.index("```\npip install ./examples/plugin")
    paragraph = text[text.rindex("\n\n", 0, block - 1):block]
    assert "CUDA" in paragraph and "torch==2.13.0" in paragraph and re.search(r"README", paragraph)


def _requirements() -> dict:
    import tomllib

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    return {r.name: r.specifier for r in reqs}


def test_the_declared_ranges_admit_the_versions_ci_runs_and_the_next_ray():
    """torch was capped below 2.15 (current) and Ray pinned to one minor, 2.60: an upgrade users make broke
    the install. CI runs the tests on torch 2.13.0 (the install default) and 2.15.0 (.ci/run)."""
    import re

    reqs = _requirements()
    assert reqs["torch"].contains("2.13.0") and reqs["torch"].contains("2.15.0")
    assert reqs["ray"].contains("2.60.0") and reqs["ray"].contains("2.61.0")
    assert re.search(r"^TORCH +\?= torch==2\.13\.0$", (ROOT / "Makefile").read_text(), re.M)  # the default stays
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'TORCH_NEXT="${TORCH_NEXT:-torch==2.15.0}"' in ci and "tests/trainables/test_conformance.py" in ci
