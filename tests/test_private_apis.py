"""mimax holds Optuna and Ray by their public APIs: every private touch of theirs is in one adapter module,
mimax/study/adapters.py, listed here. A new one there, or one anywhere else in mimax, fails this test.

Read from the source (every statement, lazy imports included): an import of a private module or name of
optuna or ray; an attribute ``x._name`` read or written on anything but ``self`` / ``cls`` whose name mimax
does not define itself (its own helpers on its own objects), or that is one of the private names of
Optuna's and Ray's objects mimax has leaned on before."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mimax"
ADAPTER = PACKAGE / "study" / "adapters.py"
DEPENDENCIES = ("optuna", "ray")
# The adapter's private touches, each explained there.
ADAPTER_TOUCHES = {"import ray._private.utils"}
# Underscored names that are public API of their library.
PUBLIC_UNDERSCORED = {"_mapping": "SQLAlchemy's Row._mapping, the documented mapping view of a row"}
# Private attributes of Optuna's and Ray's objects that mimax used before the adapter: never again,
# whatever mimax itself names so.
KNOWN_PRIVATE = {"_storage", "_trial_id", "_study_id", "_thread_local", "_stop_flag", "_private", "_backend",
                 "_cached_frozen_trial"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@functools.cache
def _own_names() -> frozenset[str]:
    """The private names mimax defines: functions, classes, module, class and instance attributes."""
    out = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                out.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
    return frozenset(n for n in out if _private(n))


def touches(path: Path, own: set[str]) -> set[str]:
    """The private touches of Optuna or Ray in one module, as short descriptions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in DEPENDENCIES and any(_private(p) for p in parts):
                    found.add(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in DEPENDENCIES:
            for name in [*node.module.split("."), *(a.name for a in node.names)]:
                if _private(name):
                    found.add(f"from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in PUBLIC_UNDERSCORED:
                continue
            if node.attr in KNOWN_PRIVATE or node.attr not in own:
                found.add(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_no_private_touch_outside_the_adapter():
    own = _own_names() - KNOWN_PRIVATE
    outside = {str(p.relative_to(ROOT)): t for p in _modules() if p != ADAPTER and (t := touches(p, own))}
    assert outside == {}, ("private Optuna/Ray API used outside mimax/study/adapters.py; use a public route, or "
                           f"move it there with a test of the behaviour it relies on: {outside}")


def test_the_adapters_private_touches_are_the_listed_ones():
    assert touches(ADAPTER, _own_names() - KNOWN_PRIVATE) == ADAPTER_TOUCHES


def test_the_scan_finds_what_it_is_for(tmp_path):
    """The scan itself, on the touches mimax had before the adapter (study/searcher.py, study/cluster.py)."""
    before = tmp_path / "before.py"
    before.write_text(
        "import ray._private.utils as ray_utils\n"
        "from optuna.storages._cached_storage import _CachedStorage\n"
        "def tell(self, t):\n"
        "    local = self.ot_study._thread_local\n"
        "    self.ot_study._stop_flag = False\n"
        "    return self.ot_study._storage.get_trial(t._trial_id), row._mapping, space._resolve\n")
    assert touches(before, {"_resolve", "_trial_id"}) == {
        "import ray._private.utils", "from optuna.storages._cached_storage import _CachedStorage",
        "self.ot_study._thread_local (line 4)", "self.ot_study._stop_flag (line 5)",
        "self.ot_study._storage (line 6)", "t._trial_id (line 6)"}
