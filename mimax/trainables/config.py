"""The trial config validated against the component registries: every unknown key or value an error that
names it. The config's model (``TrialConfig``) is part of the torch-free contract, ``mimax.contract``.

A config is a nested mapping (usually YAML)::

    data: {name: mnist}
    encoder: {name: mlp}
    critic: {name: bilinear}
    estimator: {name: nce}
    train: {steps: 2000, batch_size: 128, lr: 1.0e-4}
    eval: {every: 500, probe: torch}
    seed: 0

Component sections hold a ``name`` from their registry plus that component's own parameters.
``validate`` returns a ``TrialConfig`` whose component sections are complete (defaults filled in),
so the stored config says exactly what ran.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from mimax.contract import PROBE_LABEL, SPEED_DEFAULTS, AdversarialConfig, TrialConfig, yaml_value
from mimax.errors import ConfigError, from_validation_error
from mimax.trainables.base import Params, ViewSpec, lookup, parse_params
from mimax.trainables.data import DATASETS
from mimax.trainables.encoders import ENCODERS
from mimax.trainables.modes import MODES
from mimax.trainables.plugins import check_view, import_plugins, load_entry_points, try_out
from mimax.trainables.probes import PROBES


@dataclass(frozen=True)
class Resolved:
    """A validated config with each component's class and parameters looked up."""

    config: TrialConfig
    data: tuple[type, Params]
    encoder: tuple[type, Params]
    critic: tuple[type, Params] | None
    estimator: tuple[type, Params] | None
    probes: list[tuple[str, type, Params]]  # (label, class, params), in the config's order; [] for none
    view: ViewSpec


def _section(raw: Any, family: str) -> dict:
    """A component section: ``{name: ..., **params}``; a bare string is shorthand for ``{name: s}``."""
    if isinstance(raw, str):
        return {"name": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(family, f"expected a mapping with a 'name', got {raw!r}")
    if "name" not in raw:
        raise ConfigError(f"{family}.name", "missing required key")
    return dict(raw)


def _component(registry, family: str, raw: Any) -> tuple[type, Params, dict]:
    section = _section(raw, family)
    cls = lookup(registry, family, section["name"])
    params = parse_params(cls, section, family)
    return cls, params, {"name": section["name"], **params.model_dump(mode="json")}


def resolve(raw: Mapping[str, Any] | TrialConfig) -> Resolved:
    """Validate a raw config; raise ConfigError naming the first offending key."""
    if isinstance(raw, TrialConfig):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"a trial config must be a mapping, got {type(raw).__name__}")
    try:
        cfg = TrialConfig.model_validate(raw)  # not **raw: a key need not be a string (YAML 1: x)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    load_entry_points()
    import_plugins(cfg.plugins)

    data_cls, data_params, data_sec = _component(DATASETS, "data", cfg.data)
    enc_cls, enc_params, enc_sec = _component(ENCODERS, "encoder", cfg.encoder)
    view = data_cls.spec_for(data_params)
    check_view(data_cls, view)
    enc_cls.check(enc_params, view)

    mode = MODES[cfg.train.mode]
    if cfg.adversarial is not None and mode.section != "adversarial":
        raise ConfigError("adversarial", "only used with train.mode 'adversarial'")
    crit, est, sections = mode.resolve(cfg, data_cls, (enc_cls, enc_params), view, _component)
    if not mode.speed_switches:
        for key, default in SPEED_DEFAULTS.items():
            if getattr(cfg.train, key) != default:
                raise ConfigError(f"train.{key}", "only used with train.mode 'infomax'; remove it")

    try_out((enc_cls, enc_params), crit, est, view)

    probes, probe_sec = _probes(cfg.eval.probe)
    if probes and not data_cls.labelled:
        raise ConfigError("eval.probe", f"a probe needs labels; data {data_sec['name']!r} has none (use probe: none)")
    full = cfg.model_copy(
        update={
            "data": data_sec,
            "encoder": enc_sec,
            **sections,
            "eval": cfg.eval.model_copy(update={"probe": probe_sec}),
            "adversarial": (cfg.adversarial or AdversarialConfig()) if mode.section == "adversarial" else None,
        }
    )
    return Resolved(full, (data_cls, data_params), (enc_cls, enc_params), crit, est, probes, view)


def _probes(raw: Any) -> tuple[list[tuple[str, type, Params]], Any]:
    """The probes of ``eval.probe`` (one, "none" or a list) and the section to store, defaults filled in.
    A listed probe may carry a ``label`` (default: its name); labels name the metrics, so they differ."""
    if raw == "none":
        return [], raw
    if not isinstance(raw, list):
        cls, params, section = _component(PROBES, "eval.probe", raw)
        return [(section["name"], cls, params)], section
    if not raw:
        raise ConfigError("eval.probe", "an empty list; give one probe or more, or 'none'")
    probes, sections = [], []
    for i, item in enumerate(raw):
        where = f"eval.probe[{i}]"
        label = item.get("label") if isinstance(item, Mapping) else None
        item = {k: v for k, v in item.items() if k != "label"} if isinstance(item, Mapping) else item
        cls, params, section = _component(PROBES, where, item)
        if label is None:
            label = section["name"]
        elif not isinstance(label, str) or not re.fullmatch(PROBE_LABEL, label):
            raise ConfigError(f"{where}.label", f"expected letters, digits, '_' or '-', got {label!r}")
        else:
            section = {"name": section["name"], "label": label, **{k: v for k, v in section.items() if k != "name"}}
        if any(label == other for other, _, _ in probes):
            raise ConfigError(f"{where}.label", f"a second probe labelled {label!r}; give each probe its own label")
        probes.append((label, cls, params))
        sections.append(section)
    return probes, sections


def validate(raw: Mapping[str, Any] | TrialConfig) -> TrialConfig:
    return resolve(raw).config


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as a YAML scalar)."""
    key, sep, value = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", f"expected key=value with a dotted key, got {item!r}")
    try:  # as a config file reads it: 3e-4 is a number (YAML 1.2), not the text YAML 1.1 makes of it
        parsed = yaml_value(value) if value else ""
    except (yaml.YAMLError, ConfigError):
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict:
    """Apply ``--set key=value`` items; a component section's params are dropped when its name changes."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # a bare component name is shorthand for {name: ...}
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(path[: i + 1]), f"is not a section (value {child!r})")
            node[part] = child = dict(child)
            node = child
        last = path[-1]
        if last == "name" and node.get("name") != value:
            node.clear()  # a new component keeps none of the old one's parameters
        node[last] = value
    return out
