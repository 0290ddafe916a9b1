"""mimax's import graph, read from the source with ``ast``: every import statement counts, at module level or
inside a function (a lazy import is an import all the same).

- no cycle among mimax's modules;
- data flows one way: ``analysis`` never reaches torch, Ray or ``mimax.trainables``; ``trainables`` never
  reaches ``study``, ``search_spaces`` or ``analysis``; the contract and the database layer reach none of
  torch, Ray and ``trainables``;
- no module imports a private (``_name``) name of another package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mimax

ROOT = Path(mimax.__file__).parent


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(module imported from, name imported or None) for every import statement of ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out += [(base, a.name) for a in node.names]
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """mimax module -> the mimax modules it imports, and -> the other top-level packages it imports."""
    inner: dict[str, set[str]] = {m: set() for m in MODULES}
    outer: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for base, name in _imports(module):
            if base.split(".")[0] != "mimax":
                outer[module].add(base.split(".")[0])
                continue
            target = f"{base}.{name}" if name and f"{base}.{name}" in MODULES else base
            assert target in MODULES, f"{module} imports {target}, which is not a module of mimax"
            inner[module].add(target)
    return inner, outer


INNER, OUTER = _graph()


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += INNER[m]
    return seen


def _cycle() -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(INNER[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_is_read():
    # Guards the checks below against an empty graph: known edges are there.
    assert "mimax.storage.db" in INNER["mimax.storage.store"] and "mimax.contract" in INNER["mimax.analysis.load"]
    assert "mimax.trainables.cli" in INNER["mimax.cli"]  # a lazy import, inside build_parser
    assert {"torch", "ray"} <= set().union(*OUTER.values())


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package, forbidden", [
    ("mimax.analysis", ("torch", "ray", "mimax.trainables")),
    ("mimax.trainables", ("mimax.study", "mimax.search_spaces", "mimax.analysis")),
    ("mimax.contract", ("torch", "ray", "mimax.trainables")),
    # the storage layer: below study and analysis, which both use it
    ("mimax.storage", ("torch", "ray", "mimax.trainables", "mimax.study", "mimax.analysis", "mimax.search_spaces")),
])
def test_data_flows_one_way(package, forbidden):
    for module in [m for m in MODULES if m == package or m.startswith(package + ".")]:
        reached = _reach(module)
        names = reached | {p for m in reached for p in OUTER[m]}
        bad = sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
        assert not bad, f"{module} reaches {', '.join(bad)}"


def test_no_private_names_across_packages():
    def package(m: str) -> str:
        return ".".join(m.split(".")[:2])

    bad = []
    for module in MODULES:
        for base, name in _imports(module):
            private = name and name.startswith("_") and not name.endswith("__")
            if base.split(".")[0] == "mimax" and private and package(base) != package(module):
                bad.append(f"{module}: from {base} import {name}")
    assert not bad, bad
