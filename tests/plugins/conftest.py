import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "study"))  # engine_helpers: the real command line and the database it leaves

EXAMPLE = TESTS.parent / "examples" / "plugin"


def on_pythonpath(monkeypatch, directory) -> None:
    """``directory`` importable here and in every process started from here (mimax drivers, Ray's nodes
    and their workers), as a plugin is that is not installed."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{directory}:{old}" if old else str(directory))
    monkeypatch.syspath_prepend(str(directory))


@pytest.fixture
def example_on_path(monkeypatch):
    on_pythonpath(monkeypatch, EXAMPLE / "src")
