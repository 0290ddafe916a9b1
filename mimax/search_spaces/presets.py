"""``load_space``: a space file or a preset (``spec.load_spec``) with a budget applied, every configuration
it can produce checked against the trial validator (which needs the trainables, so torch)."""

from __future__ import annotations

import os

from mimax.search_spaces.check import check_space
from mimax.search_spaces.compile import Space
from mimax.search_spaces.spec import SpaceSpec, load_spec


def load_space(name_or_path: str | os.PathLike, budget: str | None = None, *, check: bool = True) -> Space:
    """A preset name or a space file, with ``budget`` applied (default: the space's ``default_budget``,
    else ``smoke`` if it has one, else none), every configuration it can produce checked against the
    trial-config validator unless ``check`` is False. Bad input raises ConfigError."""
    return space_from_spec(load_spec(name_or_path), budget, check=check)


def space_from_spec(spec: SpaceSpec, budget: str | None = None, *, check: bool = True) -> Space:
    space = Space(spec, budget)
    if check:
        check_space(space)
    return space


def check_all_budgets(spec: SpaceSpec) -> Space:
    """Check every budget of ``spec`` (none: the space as written); return the default budget's space."""
    spaces = {name: space_from_spec(spec, name) for name in spec.budgets}
    default = spec.budget(None)
    return spaces[default.name] if default else space_from_spec(spec, None)
