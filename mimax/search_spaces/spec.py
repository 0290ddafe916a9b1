"""The search-space file format: reading (a file or a preset), parsing and structural validation (no
Optuna, no trainables).

A space file is a YAML mapping; see docs/SEARCH_SPACES.md for the format. ``parse_space`` turns it into a
``SpaceSpec`` or raises ``ConfigError`` whose path names the place in the file: top-level key, then
mapping keys joined by ``.``, list positions as ``[i]``; a parameter's dotted key is kept whole, e.g.
``params.critic.hidden.int[0]`` or ``budgets.smoke.set.train.steps``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mimax.contract import METRICS, SECTIONS, load_yaml, metric
from mimax.errors import ConfigError

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "nsga2", "grid", "bruteforce")
EXHAUSTIVE = ("grid", "bruteforce")  # samplers that visit every configuration exactly once
DIRECTIONS = ("maximize", "minimize")
KINDS = ("value", "choice", "grid", "int", "float")

TOP_KEYS = ("name", "description", "plugins", "base", "params", "seeds", "sampler", "objectives", "trials",
            "budgets", "default_budget")
BUDGET_KEYS = ("description", "set", "seeds", "trials")
SAMPLER_KEYS = ("name", "seed", "options")
MAX_ENUMERATION = 100_000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_DOTTED = re.compile(rf"{_SEGMENT}(\.{_SEGMENT})*")
_MISSING = object()
Scalar = (str, int, float, bool, type(None))


def show(value: Any) -> str:
    """A value as the user wrote it, with a hint for YAML 1.1's ``1e-4`` (a string, not a number)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return repr(value)
        return f"{value!r} (a string: YAML reads 1e-4 as text, write 1.0e-4)"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _mapping(raw: Any, path: str, what: str = "a mapping") -> Mapping:
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"expected {what}, got {show(raw)}")
    return raw


def _known_keys(raw: Mapping, allowed: tuple[str, ...], path: str) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, f"unknown key (expected one of: {', '.join(allowed)})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any, path: str, minimum: int | None = None) -> int:
    if not _is_int(v) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" ≥ {minimum}"
        raise ConfigError(path, f"expected an integer{bound}, got {show(v)}")
    return v


def _name(v: Any, path: str) -> str:
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise ConfigError(path, f"expected a name (letters, digits, '.', '_', '-'), got {show(v)}")
    return v


def _dotted(key: Any, path: str) -> str:
    """A dotted trial-config key whose first part is a trial-config section."""
    if not isinstance(key, str) or not _DOTTED.fullmatch(key):
        raise ConfigError(path, f"expected a dotted trial-config key like critic.hidden, got {show(key)}")
    top = key.split(".")[0]
    if top == "seed":
        raise ConfigError(path, "the seed is set per replicate; use the top-level 'seeds' instead")
    if top not in SECTIONS:
        raise ConfigError(path, f"unknown trial-config section {top!r} (expected one of: {', '.join(SECTIONS)})")
    return key


def overlaps(a: str, b: str) -> bool:
    """True when one dotted key equals or contains the other (``critic`` and ``critic.hidden``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


@dataclass(frozen=True)
class Param:
    """One entry of ``params``: a fixed value, a choice, a grid axis or an int / float range."""

    key: str
    kind: str  # one of KINDS
    values: tuple = ()  # choice / grid; (value,) for kind "value"
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    when: tuple[tuple[str, tuple], ...] = ()  # ((param key, allowed values), ...): all must hold
    bare: bool = False  # a fixed value written without ``{value: ...}``

    @property
    def path(self) -> str:
        return f"params.{self.key}"

    @property
    def searched(self) -> bool:
        return self.kind != "value"

    @property
    def is_range(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def discrete(self) -> bool:
        return self.kind != "float" or self.step is not None

    def active(self, chosen: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values chosen so far (an inactive reference fails it)."""
        return all(k in chosen and _member(chosen[k], allowed) for k, allowed in self.when)

    def contains(self, v: Any) -> bool:
        if self.kind in ("value", "choice", "grid"):
            return _member(v, self.values)
        if not _is_number(v) or not self.low <= v <= self.high:
            return False
        return _is_int(v) if self.kind == "int" else True

    def options(self) -> list:
        """Every value, for exhaustive enumeration (raises for a continuous range)."""
        if not self.is_range:
            return list(self.values)
        if self.kind == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            raise ConfigError(self.path, "a float range without a step cannot be enumerated")
        n = round((self.high - self.low) / self.step)
        return [self._on_step(self.low + i * self.step) for i in range(n + 1)]

    def _on_step(self, v: float) -> float:
        # Round away float noise the way a reader expects: 0.1 + 2 * 0.1 -> 0.3.
        return float(f"{v:.12g}")

    def default(self) -> Any:
        return self.values[0] if not self.is_range else self.low

    def value_path(self, v: Any) -> str:
        """The place in the file that produced value ``v`` (for error messages)."""
        if self.kind == "value":
            return self.path if self.bare else f"{self.path}.value"
        if self.kind in ("choice", "grid"):
            for i, option in enumerate(self.values):
                if _same(option, v):
                    return f"{self.path}.{self.kind}[{i}]"
            return f"{self.path}.{self.kind}"
        if v == self.low:
            return f"{self.path}.{self.kind}[0]"
        if v == self.high:
            return f"{self.path}.{self.kind}[1]"
        return f"{self.path}.{self.kind}"

    def to_dict(self) -> Any:
        if self.kind == "value":
            out: dict[str, Any] = {"value": self.values[0]}
        elif self.kind in ("choice", "grid"):
            out = {self.kind: list(self.values)}
        else:
            out = {self.kind: [self.low, self.high]}
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out


def _same(a: Any, b: Any) -> bool:
    # YAML true is not the integer 1 here, even though Python says True == 1.
    return type(a) is type(b) and a == b or (_is_number(a) and _is_number(b) and a == b)


def _member(v: Any, allowed: tuple) -> bool:
    return any(_same(v, a) for a in allowed)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    seed: int | None = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    name: str
    description: str = ""
    set: tuple[tuple[str, Any], ...] = ()  # (dotted key, value) applied to ``base`` in order
    seeds: int | None = None
    trials: Any = _MISSING  # int, None (no limit) or _MISSING (keep the space's)

    @property
    def sets_trials(self) -> bool:
        return self.trials is not _MISSING


@dataclass(frozen=True)
class SpaceSpec:
    """A parsed, structurally valid space file (budgets not yet applied)."""

    name: str
    description: str
    base: Mapping[str, Any]
    params: tuple[Param, ...]
    seeds: int
    sampler: SamplerSpec
    objectives: tuple[Objective, ...]
    trials: int | None
    budgets: Mapping[str, Budget]
    default_budget: str | None
    source: str | None = None

    def param(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)

    def budget(self, name: str | None) -> Budget | None:
        """The named budget; ``None`` means the default one (``default_budget``, else ``smoke`` if present)."""
        if name is None:
            name = self.default_budget
            if name is None:
                return None
        if name not in self.budgets:
            choices = ", ".join(self.budgets) or "none defined"
            raise ConfigError("budget", f"unknown budget {name!r} for space {self.name!r} (choose from {choices})")
        return self.budgets[name]

    def fixed_value(self, key: str, budget: str | None) -> Any:
        """A fixed (not searched) dotted key's value under ``budget``: the budget's ``set``, else ``base``;
        None where neither sets it."""
        for k, v in reversed((self.budget(budget) or Budget("")).set):
            if k == key:
                return v
        node: Any = self.base
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node


# ----------------------------------------------------------------------------------------- parsing
def parse_space(raw: Any, source: str | None = None) -> SpaceSpec:
    """Validate the structure of a space file (already loaded from YAML)."""
    raw = _mapping(raw, "", "a space file to be a mapping")
    _known_keys(raw, TOP_KEYS, "")
    if "name" not in raw:
        raise ConfigError("name", "missing required key")
    name = _name(raw["name"], "name")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError("description", f"expected text, got {show(description)}")

    base = _parse_base(raw.get("base"))
    if "plugins" in raw:  # the trial-config key, written once for the whole space
        if "plugins" in base:
            raise ConfigError("plugins", "set plugins at the top level or in base, not both")
        base["plugins"] = raw["plugins"]
    params = _parse_params(raw.get("params"))
    seeds = _int(raw.get("seeds", 1), "seeds", 1)
    trials = _optional_int(raw.get("trials"), "trials")
    objectives = _parse_objectives(raw.get("objectives", _MISSING))
    sampler = _parse_sampler(raw.get("sampler"), params)
    _check_sampler(sampler, params, objectives)

    budgets = _parse_budgets(raw.get("budgets"), params)
    default_budget = raw.get("default_budget")
    if default_budget is not None:
        default_budget = _name(default_budget, "default_budget")
        if default_budget not in budgets:
            choices = ", ".join(budgets) or "none defined"
            raise ConfigError("default_budget", f"unknown budget {default_budget!r} (choose from {choices})")
    elif "smoke" in budgets:
        default_budget = "smoke"
    return SpaceSpec(name, description, base, params, seeds, sampler, objectives, trials, budgets,
                     default_budget, source)


def _optional_int(v: Any, path: str, minimum: int = 1) -> int | None:
    return None if v is None else _int(v, path, minimum)


def _parse_base(raw: Any) -> dict:
    if raw is None:
        return {}
    raw = _mapping(raw, "base")
    for key in raw:
        _dotted(key, f"base.{key}")
        if "." in key:
            raise ConfigError(f"base.{key}", "write base as nested mappings (dotted keys belong in params or budgets)")
    return dict(raw)


def _parse_params(raw: Any) -> tuple[Param, ...]:
    if raw is None:
        return ()
    raw = _mapping(raw, "params")
    params: list[Param] = []
    for key, spec in raw.items():
        path = f"params.{key}"
        _dotted(key, path)
        for earlier in params:
            if overlaps(key, earlier.key):
                raise ConfigError(path, f"overlaps params.{earlier.key}: set a section or its keys, not both")
        params.append(_parse_param(key, spec, path, params))
    return tuple(params)


def _parse_param(key: str, spec: Any, path: str, earlier: list[Param]) -> Param:
    if isinstance(spec, Scalar):
        return Param(key, "value", (spec,), bare=True)
    if isinstance(spec, list):
        raise ConfigError(path, "a bare list is ambiguous: write {choice: [...]}, {grid: [...]} or {value: [...]}")
    spec = _mapping(spec, path, "a value or a mapping with one of: value, choice, grid, int, float")
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        got = "none" if not kinds else ", ".join(kinds)
        raise ConfigError(path, f"expected exactly one of value, choice, grid, int, float (got {got})")
    kind = kinds[0]
    _known_keys(spec, (kind, "log", "step", "when") if kind in ("int", "float") else (kind, "when"), path)
    when = _parse_when(spec.get("when"), f"{path}.when", key, earlier)
    if kind == "value":
        return Param(key, kind, (spec["value"],), when=when)
    if kind in ("choice", "grid"):
        return Param(key, kind, _parse_values(spec[kind], f"{path}.{kind}"), when=when)
    return _parse_range(key, kind, spec, path, when)


def _parse_values(raw: Any, path: str) -> tuple:
    if not isinstance(raw, list):
        raise ConfigError(path, f"expected a list of values, got {show(raw)}")
    if not raw:
        raise ConfigError(path, "expected at least one value, got an empty list")
    for i, v in enumerate(raw):
        if not isinstance(v, Scalar) or (isinstance(v, float) and not math.isfinite(v)):
            raise ConfigError(f"{path}[{i}]", f"expected a string, number, boolean or null, got {show(v)}")
        if _member(v, tuple(raw[:i])):
            raise ConfigError(f"{path}[{i}]", f"duplicate value {show(v)}")
    return tuple(raw)


def _parse_range(key: str, kind: str, spec: Mapping, path: str, when) -> Param:
    rpath = f"{path}.{kind}"
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(rpath, f"expected [low, high], got {show(bounds)}")
    check = _is_int if kind == "int" else _is_number
    what = "an integer" if kind == "int" else "a number"
    for i, b in enumerate(bounds):
        if not check(b):
            raise ConfigError(f"{rpath}[{i}]", f"expected {what}, got {show(b)}")
    low, high = bounds
    if kind == "float":
        low, high = float(low), float(high)
    if low > high:
        raise ConfigError(rpath, f"expected low ≤ high, got [{low}, {high}]")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}.log", f"expected true or false, got {show(log)}")
    if log and low <= 0:
        raise ConfigError(f"{rpath}[0]", f"a log range needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if kind == "int":
            step = _int(step, f"{path}.step", 1)
        elif not _is_number(step) or step <= 0:
            raise ConfigError(f"{path}.step", f"expected a number > 0, got {show(step)}")
        else:
            step = float(step)
        if log and step != 1:
            raise ConfigError(f"{path}.step", "a log range cannot have a step (Optuna samples it continuously)")
        span = (high - low) / step
        if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
            raise ConfigError(f"{path}.step", f"high - low ({high - low:g}) is not a multiple of step {step:g}")
        if kind == "int" and step == 1:
            step = None  # the same as no step
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(raw: Any, path: str, key: str, earlier: list[Param]) -> tuple:
    if raw is None:
        return ()
    raw = _mapping(raw, path, "a mapping of parameter -> value or list of values")
    if not raw:
        raise ConfigError(path, "expected at least one condition, got an empty mapping")
    by_key = {p.key: p for p in earlier}
    out = []
    for ref, allowed in raw.items():
        cpath = f"{path}.{ref}"
        if ref == key:
            raise ConfigError(cpath, "a parameter cannot depend on itself")
        if ref not in by_key:
            raise ConfigError(cpath, f"no parameter {ref!r} above in params "
                                     "(a condition names a parameter defined before it)")
        target = by_key[ref]
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values:
            raise ConfigError(cpath, "expected at least one value, got an empty list")
        for i, v in enumerate(values):
            vpath = f"{cpath}[{i}]" if isinstance(allowed, list) else cpath
            if not isinstance(v, Scalar):
                raise ConfigError(vpath, f"expected a string, number, boolean or null, got {show(v)}")
            if not target.contains(v):
                raise ConfigError(vpath, f"{show(v)} is never a value of params.{ref} ({_describe(target)})")
        out.append((ref, values))
    return tuple(out)


def _describe(p: Param) -> str:
    if p.kind in ("value", "choice", "grid"):
        return ", ".join(show(v) for v in p.values)
    return f"{p.kind} range [{p.low}, {p.high}]"


def _parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if raw is _MISSING:
        return (Objective("probe_accuracy", "maximize"),)
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("objectives", f"expected a non-empty list of {{metric, direction}}, got {show(raw)}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        path = f"objectives[{i}]"
        item = _mapping(item, path, "a mapping {metric, direction}")
        _known_keys(item, ("metric", "direction"), path)
        name = item.get("metric")
        if not isinstance(name, str) or metric(name) is None:
            choices = ", ".join(m.shown or m.name for m in METRICS)
            raise ConfigError(f"{path}.metric", f"unknown metric {show(name)} (choose from {choices})")
        if any(o.metric == name for o in out):
            raise ConfigError(f"{path}.metric", f"metric {name!r} is already an objective")
        direction = item.get("direction", "maximize")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{path}.direction", f"expected maximize or minimize, got {show(direction)}")
        out.append(Objective(name, direction))
    return tuple(out)


def _parse_sampler(raw: Any, params: tuple[Param, ...]) -> SamplerSpec:
    if raw is None:
        # Default: enumerate when every searched parameter is a grid axis, otherwise TPE.
        searched = [p for p in params if p.searched]
        return SamplerSpec("grid" if all(p.kind == "grid" for p in searched) else "tpe")
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping(raw, "sampler", "a sampler name or a mapping {name, seed, options}")
    _known_keys(raw, SAMPLER_KEYS, "sampler")
    name = raw.get("name")
    if name not in SAMPLERS:
        raise ConfigError("sampler.name", f"unknown sampler {show(name)} (choose from {', '.join(SAMPLERS)})")
    seed = _optional_int(raw.get("seed", 0), "sampler.seed", 0)
    options = raw.get("options") or {}
    options = dict(_mapping(options, "sampler.options"))
    for key in options:
        if not isinstance(key, str):
            raise ConfigError("sampler.options", f"expected option names, got {show(key)}")
        if key == "seed":
            raise ConfigError("sampler.options.seed", "set sampler.seed instead")
    return SamplerSpec(name, seed, options)


def _check_sampler(sampler: SamplerSpec, params: tuple[Param, ...], objectives) -> None:
    """Reject a sampler that cannot handle this space."""
    name = sampler.name
    searched = [p for p in params if p.searched]
    for p in searched:
        if name == "grid" and p.is_range:
            article = "an" if p.kind == "int" else "a"
            raise ConfigError("sampler.name", f"grid enumerates value lists only, but {p.path} is {article} "
                              f"{p.kind} range (write grid: [...] values, or use sampler bruteforce, tpe, random, ...)")
        if name == "bruteforce" and not p.discrete:
            raise ConfigError("sampler.name", f"bruteforce enumerates discrete values only, but {p.path} is a "
                              "float range without a step (add a step, or use a sampling sampler)")
        if name not in EXHAUSTIVE and p.kind == "grid":
            raise ConfigError("sampler.name", f"{name} samples configurations, but {p.path} is a grid axis, which "
                              "only sampler grid or bruteforce enumerate (write choice: [...] to let it pick)")
    if name == "cmaes":
        if not any(p.is_range for p in searched):
            raise ConfigError("sampler.name", "cmaes needs at least one int or float range in params; "
                              "with only categorical parameters use tpe, random or grid")
        if len(objectives) > 1:
            raise ConfigError("sampler.name", "cmaes handles a single objective; use nsga2, tpe or gp for several")


def _parse_budgets(raw: Any, params: tuple[Param, ...]) -> dict[str, Budget]:
    if raw is None:
        return {}
    raw = _mapping(raw, "budgets")
    out: dict[str, Budget] = {}
    for bname, spec in raw.items():
        path = f"budgets.{bname}"
        _name(bname, path)
        spec = _mapping(spec if spec is not None else {}, path)
        _known_keys(spec, BUDGET_KEYS, path)
        description = spec.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"{path}.description", f"expected text, got {show(description)}")
        sets = []
        for key, value in _mapping(spec.get("set") or {}, f"{path}.set").items():
            kpath = f"{path}.set.{key}"
            _dotted(key, kpath)
            for p in params:
                if overlaps(key, p.key):
                    raise ConfigError(kpath, f"overlaps the searched parameter {p.path}; a budget sets fixed keys only")
            sets.append((key, value))
        seeds = _optional_int(spec.get("seeds"), f"{path}.seeds")
        trials = _optional_int(spec["trials"], f"{path}.trials") if "trials" in spec else _MISSING
        out[bname] = Budget(bname, description, tuple(sets), seeds, trials)
    return out


# ------------------------------------------------------------------------------------------- files
PRESET_DIR = Path(__file__).parent / "presets"  # the spaces shipped with mimax, one per experiment of the paper


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


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
    return PRESET_DIR / f"{text}.yaml"


def load_spec(name_or_path: str | os.PathLike) -> SpaceSpec:
    """Parse a space file or preset (structure only; no budget, no trial-config validation)."""
    path = resolve_source(name_or_path)
    return parse_space(load_yaml(str(path), "space"), source=str(path))
