"""What to try: declarative search spaces compiled to Optuna, and the paper's experiments as presets."""

from mimax.search_spaces.compile import Space
from mimax.search_spaces.presets import load_space
from mimax.search_spaces.spec import SAMPLERS, SpaceSpec, load_spec, parse_space, preset_names

__all__ = ["SAMPLERS", "Space", "SpaceSpec", "load_space", "load_spec", "parse_space", "preset_names"]
