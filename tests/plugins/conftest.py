import sys
from pathlib import Path

import pytest

from example_plugin import EXAMPLE, on_pythonpath

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "study"))  # engine_helpers: the real command line and the database it leaves


@pytest.fixture(autouse=True)
def registries():
    """Every registry as it was, after each test, and the modules that registered a component in the test
    forgotten, so that a later test in this process (xdist runs many per worker) sees the built-ins only
    and a later import of the plugin registers it again. Only those modules: forgetting, say, a library
    first imported during the test would leave two copies of it in the process."""
    from mimax.trainables.plugins import FAMILIES, load_entry_points

    saved = {family: dict(reg) for family, (reg, _, _) in FAMILIES.items()}
    load_entry_points.cache_clear()
    yield
    added = {cls.__module__ for family, (reg, _, _) in FAMILIES.items() for name, cls in reg.items()
             if saved[family].get(name) is not cls}
    for family, (reg, _, _) in FAMILIES.items():
        reg.clear()
        reg.update(saved[family])
    for name in added:
        sys.modules.pop(name, None)
    load_entry_points.cache_clear()


@pytest.fixture
def example_on_path(monkeypatch):
    on_pythonpath(monkeypatch, EXAMPLE / "src")
