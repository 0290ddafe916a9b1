"""A budget-applied space compiled to Optuna: define-by-run suggestion, exact enumeration, samplers.

``Space`` is what the study engine uses::

    space = load_space("fig3-critics", budget="smoke")
    sampler = space.make_sampler()
    config = space.suggest(trial)             # inside an objective; a trial config without ``seed``
    config = space.config_for(trial.params)   # the same config, rebuilt from a finished trial
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import warnings
from functools import cached_property
from typing import Any, Mapping

import optuna

from mimax.errors import ConfigError
from mimax.search_spaces.spec import EXHAUSTIVE, MAX_ENUMERATION, Param, SpaceSpec, show

SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}
# These fall back to independent sampling for categorical or conditional parameters by design; the
# per-trial warning about it is noise for mimax spaces.
_QUIET_FALLBACK = ("cmaes", "gp", "qmc")


def set_path(config: dict, key: str, value: Any, path: str) -> None:
    """Set dotted ``key`` in ``config`` (in place); a component given as a bare name becomes ``{name: ...}``."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif isinstance(child, str):
            child = {"name": child}
        elif isinstance(child, Mapping):
            child = dict(child)
        else:
            where = ".".join(parts[: i + 1])
            raise ConfigError(path, f"cannot set {key}: {where} is {show(child)}, not a section")
        node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)


class ConditionalGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler over an explicit list of combinations instead of a full product.

    A conditional grid (``critic.hidden`` only for some critics) is not a product: crossing every axis
    would repeat each configuration once per value of every inactive parameter. Each combination is a
    tuple over the sorted parameter names, ``None`` where the parameter is inactive (never suggested,
    so never read). Everything else (grid ids, shuffling by seed, stopping when exhausted) is
    GridSampler's own.
    """

    def __init__(self, axes: Mapping[str, list], combos: list[dict], seed: int | None = None):
        super().__init__({}, seed=seed)
        self._search_space = {k: list(axes[k]) for k in sorted(axes)}
        self._param_names = sorted(axes)
        self._all_grids = [tuple(c.get(k) for k in self._param_names) for c in combos]
        self._n_min_trials = len(self._all_grids)
        self._rng.rng.shuffle(self._all_grids)


class Space:
    """A search space with one budget applied. Immutable in practice: every method returns fresh dicts."""

    def __init__(self, spec: SpaceSpec, budget: str | None = None):
        chosen = spec.budget(budget)
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.source = spec.source
        self.budget = chosen.name if chosen else None
        self.params: tuple[Param, ...] = spec.params
        self.sampler = spec.sampler
        self.objectives = spec.objectives
        self.seeds: int = chosen.seeds if chosen and chosen.seeds is not None else spec.seeds
        self.trials: int | None = chosen.trials if chosen and chosen.sets_trials else spec.trials
        base = copy.deepcopy(dict(spec.base))
        for key, value in chosen.set if chosen else ():
            set_path(base, key, value, f"budgets.{chosen.name}.set.{key}")
        self.base = base
        self._set_keys = tuple(k for k, _ in chosen.set) if chosen else ()

    # ----------------------------------------------------------------------------- study settings
    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def exhaustive(self) -> bool:
        """True when the sampler visits every configuration once (grid, bruteforce)."""
        return self.sampler.name in EXHAUSTIVE

    @property
    def n_configs(self) -> int | None:
        """Configurations the study runs: the enumeration (capped by ``trials``) for exhaustive samplers,
        else ``trials`` (None: no limit). Each runs ``seeds`` times."""
        if not self.exhaustive:
            return self.trials
        n = len(self.enumerate_params())
        return n if self.trials is None else min(n, self.trials)

    def seed_values(self) -> list[int]:
        """The replicate seeds of every configuration."""
        return list(range(self.seeds))

    # --------------------------------------------------------------------------------- configs
    def config_for(self, params: Mapping[str, Any]) -> dict:
        """The trial config (without ``seed``) for a flat dict of searched values, e.g. ``trial.params``.

        Fixed params fill themselves in; a searched param whose condition holds must be given, one whose
        condition fails must not be.
        """
        chosen = self._resolve(params)
        config = copy.deepcopy(self.base)
        for p in self.params:
            if p.key in chosen:
                set_path(config, p.key, chosen[p.key], p.path)
        return config

    def _resolve(self, params: Mapping[str, Any]) -> dict:
        """Every active parameter's value (fixed ones included), checking ``params`` against the space."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not p.active(chosen):
                if p.searched and p.key in params:
                    raise ConfigError(p.path, f"given {show(params[p.key])} but its condition does not hold")
                continue
            if not p.searched:
                chosen[p.key] = p.values[0]
            elif p.key not in params:
                raise ConfigError(p.path, "missing a value (its condition holds)")
            elif not p.contains(params[p.key]):
                raise ConfigError(p.path, f"{show(params[p.key])} is not in the space")
            else:
                chosen[p.key] = params[p.key]
        unknown = sorted(set(params) - {p.key for p in self.params if p.searched})
        if unknown:
            raise ConfigError(f"params.{unknown[0]}", "not a searched parameter of this space")
        return chosen

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict:
        """Define-by-run: suggest each parameter whose condition holds; return the trial config."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if p.active(chosen):
                chosen[p.key] = _suggest(trial, p)
        return self.config_for({p.key: chosen[p.key] for p in self.params if p.searched and p.key in chosen})

    def enumerate_params(self) -> list[dict]:
        """Every combination of searched values (conditions respected), in file order. Needs discrete
        parameters; raises ConfigError beyond MAX_ENUMERATION combinations."""
        return [dict(c) for c in self._enumeration]

    @cached_property
    def _enumeration(self) -> list[dict]:
        out: list[dict] = []

        def walk(i: int, chosen: dict, searched: dict) -> None:
            if i == len(self.params):
                if len(out) >= MAX_ENUMERATION:
                    raise ConfigError("params", f"more than {MAX_ENUMERATION} configurations to enumerate; "
                                      "use a sampling sampler (tpe, random, ...) with trials")
                out.append(dict(searched))
                return
            p = self.params[i]
            if not p.active(chosen):
                walk(i + 1, chosen, searched)
                return
            for v in p.options():
                walk(i + 1, {**chosen, p.key: v}, {**searched, p.key: v} if p.searched else searched)

        walk(0, {}, {})
        return out

    def enumerate(self) -> list[dict] | None:
        """Every trial config (without seed) for exhaustive samplers (grid, bruteforce); else None."""
        if not self.exhaustive:
            return None
        return [self.config_for(c) for c in self._enumeration]

    # --------------------------------------------------------------------------------- sampler
    def make_sampler(self, *, session: int = 0) -> optuna.samplers.BaseSampler:
        """A fresh Optuna sampler, seeded by ``sampler.seed``, with ``sampler.options`` as keyword args.

        ``session`` > 0 (a resumed study) shifts the seed: a sampler re-created with the same seed would
        replay the configurations it proposed before. Not a grid's: its seed orders the grid, and Optuna
        gives trial n the n-th point of that order, so another order would repeat points and skip others.
        """
        name, seed = self.sampler.name, self.sampler.seed
        if seed is not None and session and name != "grid":
            seed = (seed + 1_000_003 * session) % 2**32
        options = dict(self.sampler.options)
        cls = SAMPLER_CLASSES[name]
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "seed", "search_space"}
        for key in options:
            if key not in accepted:
                raise ConfigError(f"sampler.options.{key}",
                                  f"not an option of {cls.__name__} (choose from {', '.join(sorted(accepted))})")
        if name in _QUIET_FALLBACK:
            options.setdefault("warn_independent_sampling", False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                if name == "grid":
                    return self._grid_sampler(seed, options)
                return cls(seed=seed, **options)
            except (TypeError, ValueError) as exc:
                raise ConfigError("sampler.options", f"{cls.__name__} rejected them: {exc}") from None

    def _grid_sampler(self, seed: int | None, options: dict) -> optuna.samplers.GridSampler:
        searched = [p for p in self.params if p.searched]
        axes = {p.key: p.options() for p in searched}
        if not any(p.when for p in searched):
            return optuna.samplers.GridSampler(axes, seed=seed, **options)
        return ConditionalGridSampler(axes, self.enumerate_params(), seed=seed)

    # --------------------------------------------------------------------------------- identity
    def to_dict(self) -> dict:
        """Everything that defines this budget of the space, as plain JSON-able data."""
        return {
            "name": self.name,
            "description": self.description,
            "budget": self.budget,
            "base": copy.deepcopy(self.base),
            "params": {p.key: p.to_dict() for p in self.params},
            "seeds": self.seeds,
            "sampler": {"name": self.sampler.name, "seed": self.sampler.seed, "options": dict(self.sampler.options)},
            "objectives": [{"metric": o.metric, "direction": o.direction} for o in self.objectives],
            "trials": self.trials,
        }

    def fingerprint(self) -> str:
        """A stable hash (sha256 hex) of what decides which trials run and what they optimise.

        Name, description and budget name are left out: renaming changes no trial.
        """
        content = {k: v for k, v in self.to_dict().items() if k not in ("name", "description", "budget")}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def __repr__(self) -> str:
        return (f"Space({self.name!r}, budget={self.budget!r}, sampler={self.sampler.name!r}, "
                f"n_configs={self.n_configs})")


def _suggest(trial: optuna.trial.BaseTrial, p: Param) -> Any:
    if p.kind == "value":
        return p.values[0]
    if p.kind in ("choice", "grid"):
        return trial.suggest_categorical(p.key, list(p.values))
    if p.kind == "int":
        return trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
