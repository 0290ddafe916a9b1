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
