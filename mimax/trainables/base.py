"""What every component family shares: strict parameter models, registry look-up, view shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from mimax.contract import StrictModel
from mimax.errors import ConfigError, from_validation_error


class Params(StrictModel):
    """Parameters of one component; unknown keys are errors, never warnings."""


@dataclass(frozen=True)
class ViewSpec:
    """Shape of one view as an encoder sees it: a flat vector of ``dim`` values.

    ``image_shape`` (C, H, W) is set when the vector is an image half, so that ConvNets can reshape it.
    """

    dim: int
    image_shape: tuple[int, int, int] | None = None


def lookup(registry: Mapping[str, type], family: str, name: Any) -> type:
    if not isinstance(name, str):
        raise ConfigError(f"{family}.name", f"expected a name, got {name!r}")
    try:
        return registry[name]
    except KeyError:
        choices = ", ".join(sorted(registry))
        raise ConfigError(f"{family}.name", f"unknown {family} {name!r} (choose from {choices})") from None


def parse_params(cls: type, section: Mapping[str, Any], family: str) -> Params:
    """Validate ``section`` (without its ``name``) against ``cls.Params``."""
    fields = {k: v for k, v in section.items() if k != "name"}
    try:
        return cls.Params.model_validate(fields)  # not **fields: a key need not be a string
    except ValidationError as exc:
        raise from_validation_error(exc, family) from None
