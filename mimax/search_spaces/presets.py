"""Spaces shipped with mimax (presets/*.yaml, one per experiment of the paper) and ``load_space``."""

from __future__ import annotations

import os
from pathlib import Path

from mimax.contract import load_yaml
from mimax.errors import ConfigError
from mimax.search_spaces.check import check_space
from mimax.search_spaces.compile import Space
from mimax.search_spaces.spec import SpaceSpec, parse_space

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("space", f"unknown preset {name!r} (choose from {', '.join(preset_names())})")
    return path


def resolve_source(name_or_path: str | os.PathLike) -> Path:
    """A file path as given, else a preset name."""
    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return Path(text)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        raise ConfigError("", f"space file not found: {text}")
    if text not in preset_names():
        raise ConfigError("", f"no space file {text!r} and no preset of that name "
                              f"(presets: {', '.join(preset_names())})")
    return preset_path(text)


def load_spec(name_or_path: str | os.PathLike) -> SpaceSpec:
    """Parse a space file or preset (structure only; no budget, no trial-config validation)."""
    path = resolve_source(name_or_path)
    return parse_space(load_yaml(str(path), "space"), source=str(path))


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
