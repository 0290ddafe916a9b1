"""Every trial config a space can produce must pass the trial-config validator; this checks that at load.

Exhaustive spaces (grid, bruteforce) are checked config by config. Sampled spaces are checked on a few
random draws (RandomSampler, fixed seed) plus, for every searched parameter, each of its values (choices)
or both ends of its range, placed in a configuration where its condition holds. A rejection is reported
at the place in the space file that produced the offending value.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import optuna

from mimax.contract import metric
from mimax.errors import ConfigError
from mimax.search_spaces.compile import Space
from mimax.search_spaces.spec import Param, show

N_RANDOM = 8
RANDOM_SEED = 20200101
MAX_EXHAUSTIVE_CHECK = 5000


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def sample_params(space: Space, n: int, seed: int, sampler: optuna.samplers.BaseSampler | None = None) -> list[dict]:
    """``n`` flat param dicts drawn through ``space.suggest`` (RandomSampler(seed) unless a sampler is given)."""
    with _quiet_optuna():
        study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=seed),
                                    directions=space.directions)
        out = []
        for _ in range(n):
            trial = study.ask()
            space.suggest(trial)
            out.append(dict(trial.params))
    return out


def check_space(space: Space) -> None:
    """Raise ConfigError at the first configuration of ``space`` that the trial validator rejects."""
    from mimax.trainables.config import validate  # the trainables stack (torch) only when checking

    space.make_sampler()  # sampler options are checked by constructing it
    for flat in _candidates(space):
        try:
            config = validate(space.config_for(flat))
        except ConfigError as err:
            raise ConfigError(_origin(space, err.path, flat),
                              f"the trial config is rejected: {err}{_context(space, flat)}") from None
        for i, objective in enumerate(space.objectives):
            missing = metric(objective.metric).missing(config)
            if missing:
                raise ConfigError(f"objectives[{i}].metric",
                                  f"{objective.metric} needs {missing}{_context(space, flat)}")


def _candidates(space: Space) -> Iterator[dict]:
    if space.exhaustive:
        flats = space.enumerate_params()
        if len(flats) <= MAX_EXHAUSTIVE_CHECK:
            yield from flats
            return
    samples = sample_params(space, N_RANDOM, RANDOM_SEED)
    yield from samples
    for p in space.params:
        if not p.searched:
            continue
        for v in (p.low, p.high) if p.is_range else p.values:
            flat = _complete(space, {**_requirements(space, p), p.key: v}, samples)
            if flat is not None and p.key in flat:
                yield flat


def _requirements(space: Space, p: Param) -> dict:
    """Values that make ``p``'s condition (and its references' conditions) hold: the first allowed ones."""
    out: dict[str, Any] = {}
    for ref, allowed in p.when:
        out.setdefault(ref, allowed[0])
        for k, v in _requirements(space, space.spec.param(ref)).items():
            out.setdefault(k, v)
    return out


def _complete(space: Space, forced: dict, refs: list[dict]) -> dict | None:
    """A full flat dict with ``forced`` values, other values from the first sample that keeps the
    forced parameter active (defaults where a sample has none)."""
    target = next(reversed(forced))
    for ref in [*refs, {}]:
        chosen: dict[str, Any] = {}
        flat: dict[str, Any] = {}
        for p in space.params:
            if not p.active(chosen):
                continue
            v = p.values[0] if not p.searched else forced.get(p.key, ref.get(p.key, p.default()))
            chosen[p.key] = v
            if p.searched:
                flat[p.key] = v
        if target in flat:
            return flat
    return None


def _origin(space: Space, err_path: str, flat: dict) -> str:
    """Where in the space file the value at trial-config path ``err_path`` came from."""
    chosen = space._resolve(flat)

    def under(key: str) -> bool:
        return err_path == key or err_path.startswith(key + ".")

    for p in space.params:
        if p.key in chosen and under(p.key):
            return p.value_path(chosen[p.key])
    for key in reversed(space._set_keys):
        if under(key):
            return f"budgets.{space.budget}.set.{key}"
    return f"base.{err_path}" if err_path else "base"


def _context(space: Space, flat: dict) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={show(v)}" for k, v in flat.items()]
    if space.budget:
        parts.append(f"budget {space.budget}")
    return f" [{'; '.join(parts)}]" if parts else ""
