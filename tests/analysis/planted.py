"""Synthetic results databases with a planted truth, written through ``mimax.storage.store.Store``.

``planted_study`` writes a study shaped like one the engine writes (one Optuna trial per
configuration, one mimax trial per configuration × seed, trial keys ``c0003-s1``, evaluations at a few
steps) whose final numbers are chosen, so tests can check that the analysis finds what was planted:

- ``effect={"critic": {"concat": 0.05}}``: +5 points of final probe accuracy for every trial whose
  critic is ``concat`` (keys are short factor names or dotted config keys; several are added up);
- ``corr="zero"``: the final test bound is a U-shaped (even) function of the accuracy's centred rank
  over the completed trials, so Spearman and Kendall over all completed trials are exactly 0;
  ``corr="independent"``: the bound is drawn independently of the accuracy (zero only in expectation);
  ``corr="monotone"``: the bound is a strictly increasing function of the final accuracy (Spearman and
  Kendall exactly 1); ``corr="anti"``: strictly decreasing (both exactly -1).
- replicate noise is centred within each configuration, so each configuration's mean final accuracy
  is exactly the planted value: a pair of levels without a planted effect differs by exactly 0.

Every number is also returned (``Planted.finals``), but tests should prefer an independent oracle
(plain SQL, a pandas groupby, a Python loop) over echoing these back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Planted", "bare_study", "planted_study", "STUDY_DEFAULTS"]

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # trial c, seed s starts at T0 + (c * seeds + s) minutes
CORR = ("zero", "independent", "monotone", "anti")
STUDY_DEFAULTS = dict(
    budget="smoke",
    sampler="grid",
    directions=["maximize"],
    metrics=["probe_accuracy"],
    results_dir="/tmp/mimax-planted",
)


@dataclass
class Planted:
    """What was written. ``finals``: one dict per trial (trial_key, state, seed, config_id, each factor
    by short name, and the final step's probe_accuracy / bound_test / bound_train, None when the trial
    failed before its last evaluation). ``configs``: one dict per configuration (its factor values and
    the replicate mean accuracy told to Optuna, None when no replicate completed)."""

    url: str
    name: str
    factors: dict[str, list] = field(default_factory=dict)  # dotted key -> levels
    finals: list[dict] = field(default_factory=list)
    configs: list[dict] = field(default_factory=list)


def _short(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def _space(name: str, grid: Mapping[str, Sequence], seeds: int, steps: Sequence[int], batch_size: int) -> dict:
    return {
        "name": name,
        "description": "planted-truth test study",
        "budget": "smoke",
        "base": {"data": {"name": "digits"}, "train": {"steps": max(steps), "batch_size": batch_size}},
        "params": {k: {"grid": list(v)} for k, v in grid.items()},
        "seeds": seeds,
    }


def _fingerprint(space: dict) -> str:
    body = {k: v for k, v in space.items() if k not in ("name", "description", "budget")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _config(grid_values: Mapping[str, object], seed: int, steps: Sequence[int], batch_size: int,
            base: Mapping[str, Mapping] | None = None) -> dict:
    cfg = {
        "data": {"name": "digits"},
        "encoder": {"name": "mlp", "hidden": [64], "out_dim": 32},
        "critic": {"name": "bilinear"},
        "estimator": {"name": "nce", "target": "bound"},
        "train": {"steps": max(steps), "batch_size": batch_size, "lr": 1e-3, "mode": "infomax"},
        "eval": {"every": steps[1] - steps[0] if len(steps) > 1 else max(steps),
                 "probe": {"name": "torch"}, "bound_batches": 4},
        "seed": seed,
    }
    for section, values in (base or {}).items():
        cfg[section] = dict(cfg.get(section) or {}, **values)
    for key, value in grid_values.items():
        section, _, leaf = key.partition(".")
        cfg.setdefault(section, {})
        cfg[section] = dict(cfg[section], **{leaf: value})
    return cfg


def _recorded(config: dict) -> dict:
    """What a trial of ``config`` records once, its ceiling and true MI, as the trainer reports them (the
    0003 backfill is checked against the trainer in tests/study/test_migrations.py)."""
    from schema_at import migration

    m = migration("0003")
    return {"ceiling": m.ceiling(config), "true_mi": m.true_mi(config)}


def planted_study(
    url: str,
    name: str,
    *,
    critics: Sequence[str] = ("bilinear", "separable", "concat"),
    estimators: Sequence[str] = ("nce", "nwj"),
    params: Mapping[str, Sequence] | None = None,
    seeds: int = 10,
    steps: Sequence[int] = (0, 500, 1000),
    effect: Mapping[str, Mapping[object, float]] | None = None,
    corr: str = "zero",
    base_accuracy: float = 0.80,
    noise: float = 0.01,
    batch_size: int = 64,
    failed: Iterable[str] | str = (),
    evaluations: bool = True,
    optuna_study: bool = True,
    seed: int = 0,
    base: Mapping[str, Mapping] | None = None,
    record: Callable[[dict, int, int, float], dict] | None = None,
) -> Planted:
    """Write study ``name`` into the database at ``url`` (created if needed) and its Optuna study
    ``mimax:<name>``; return what was planted.

    Configurations are the grid ``critic.name × estimator.name × params`` (an empty level list drops
    that factor; ``params`` adds dotted keys such as ``{"train.lr": [1e-4, 1e-3]}``), numbered in that
    order (Optuna trial number = ``replicate_group`` = configuration index). Each configuration runs
    ``seeds`` replicates (seeds 0..seeds-1). Final accuracy of a trial = ``base_accuracy`` + the sum of
    its planted ``effect`` shifts + Gaussian noise (sd about ``noise``, drawn from ``seed``, centred
    within the configuration); earlier steps climb linearly to it. Bounds follow ``corr`` (see the
    module docstring) and stay below log(batch_size) = NCE's ceiling for the defaults.

    ``failed``: trial keys (or "all") that end ``failed`` with only their first evaluation written;
    ``evaluations=False`` writes trials (all ``pending``) and no evaluations; ``optuna_study=False``
    skips the Optuna study. ``base`` updates config sections of every trial (``{"data": {"name": "mnist"}}``);
    ``record(levels, seed, step, frac)`` returns fields to add to (or replace in) each evaluation record,
    with ``levels`` the configuration's short factor -> level and ``frac`` = step / last step.
    """
    from mimax.storage.store import Store

    if corr not in CORR:
        raise ValueError(f"corr must be one of {', '.join(CORR)}, got {corr!r}")
    steps = sorted(int(s) for s in steps)
    grid: dict[str, list] = {}
    if critics:
        grid["critic.name"] = list(critics)
    if estimators:
        grid["estimator.name"] = list(estimators)
    grid.update({k: list(v) for k, v in (params or {}).items()})
    shifts = {}
    for key, levels in (effect or {}).items():
        dotted = key if key in grid else f"{key}.name"
        if dotted not in grid:
            raise ValueError(f"effect on {key!r}: not a factor of this study ({', '.join(grid)})")
        shifts[dotted] = dict(levels)

    rng = np.random.default_rng(seed)
    space = _space(name, grid, seeds, steps, batch_size)
    out = Planted(url=url, name=name, factors=grid)
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    fail_all = failed == "all"
    failed = set() if fail_all else set(failed)

    # Pass 1: final accuracies. Noise is centred within each configuration, so every configuration's
    # replicate mean is exactly base + its planted shifts (a null pair of levels differs by exactly 0).
    keys, accs, dead = {}, {}, {}
    for number, combo in enumerate(combos):
        z = rng.standard_normal(seeds)
        z = z - z.mean() if seeds > 1 else z * 0
        planted_mean = base_accuracy + sum(shifts.get(k, {}).get(v, 0.0) for k, v in combo.items())
        for rep in range(seeds):
            key = f"c{number:04d}-s{rep}"
            keys[(number, rep)] = key
            accs[key] = float(planted_mean + noise * z[rep])
            dead[key] = fail_all or key in failed
    # Pass 2: final bounds, from the accuracies of the trials that complete.
    live = [k for k in accs if not dead[k] and evaluations]
    bounds = {k: 2.0 for k in accs}
    if corr == "independent":
        bounds.update({k: float(rng.uniform(1.0, 3.5)) for k in accs})
    elif corr == "zero":
        # U-shape in the accuracy rank r (1..n): bound = f(|r - (n+1)/2|), an even function of the
        # centred rank, so Spearman and Kendall over the live trials are exactly 0.
        order = sorted(live, key=accs.__getitem__)
        centre = (len(order) + 1) / 2
        bounds.update({k: 1.5 + 2.0 * abs(r + 1 - centre) / max(len(order), 1) for r, k in enumerate(order)})
    else:  # strictly monotone in accuracy (accuracies are continuous: no ties), so both are exactly ±1
        sign = 1 if corr == "monotone" else -1
        bounds.update({k: 3.0 + sign * 10.0 * (a - base_accuracy) for k, a in accs.items()})

    trials, evals = [], []
    for number, combo in enumerate(combos):
        done_accs = []
        for rep in range(seeds):
            key = keys[(number, rep)]
            acc, bound = accs[key], bounds[key]
            state = "failed" if dead[key] else ("completed" if evaluations else "pending")
            started = T0 + dt.timedelta(minutes=number * seeds + rep)
            config = _config(combo, rep, steps, batch_size, base)
            trials.append({"trial_key": key, "optuna_trial_number": number, "config": config, "seed": rep,
                           "replicate_group": str(number), "replicate_index": rep, "state": "pending",
                           "started_at": started if evaluations else None, **_recorded(config)})
            written = steps[:1] if dead[key] else steps
            if evaluations:
                for i, step in enumerate(written):
                    frac = step / steps[-1] if steps[-1] else 1.0
                    rec = {
                        "event": "eval", "step": step,
                        "probe_accuracy": 0.1 + (acc - 0.1) * frac,
                        "bound_test": bound * frac, "bound_train": bound * frac + 0.1,
                        "loss": -bound * frac, "wall_s": 0.5 * (i + 1),
                        "log_cond_p50": 2.0 + frac, "replayed": False,
                    }
                    if record is not None:
                        rec.update(record({_short(k): v for k, v in combo.items()}, rep, step, frac))
                    last = i == len(written) - 1
                    end = {"state": state, "last_step": step, "node": "planted-node",
                           "ended_at": started + dt.timedelta(seconds=30 + rep)}
                    evals.append({"trial_key": key, "step": step, "record": rec, "trial": end if last else None})
            final = not dead[key] and evaluations
            out.finals.append({
                "trial_key": key, "state": state, "seed": rep, "config_id": str(number),
                **{_short(k): v for k, v in combo.items()},
                "probe_accuracy": acc if final else None,
                "bound_test": bound if final else None,
                "bound_train": bound + 0.1 if final else None,
            })
            if final:
                done_accs.append(acc)
        out.configs.append({"config_id": str(number), **{_short(k): v for k, v in combo.items()},
                            "accuracy_mean": float(np.mean(done_accs)) if done_accs else None})

    store = Store(url)
    try:
        optuna_name = f"mimax:{name}"
        store.create_study(
            name, space_source="planted", space_json=space, space_fingerprint=_fingerprint(space),
            seeds=seeds, n_configs_requested=len(combos), optuna_study_name=optuna_name, **STUDY_DEFAULTS,
        )
        store.record_environment(name, {"python": "3", "hostname": "planted", "device": "cpu"}, 0)
        store.add_trials(name, trials)
        if evals:
            store.write_evaluations(name, evals)
        if optuna_study:
            _optuna(store, optuna_name, grid, out.configs)
        store.update_study(name, status="completed")
    finally:
        store.close()
    return out


def _optuna(store, optuna_name: str, grid: Mapping[str, list], configs: list[dict]) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=optuna_name, storage=store.optuna_storage(), direction="maximize")
    dists = {k: CategoricalDistribution(v) for k, v in grid.items()}
    for conf in configs:
        params = {k: conf[_short(k)] for k in grid}
        if conf["accuracy_mean"] is None:
            trial = optuna.trial.create_trial(params=params, distributions=dists, state=optuna.trial.TrialState.FAIL)
        else:
            trial = optuna.trial.create_trial(params=params, distributions=dists, value=conf["accuracy_mean"])
        study.add_trial(trial)


def bare_study(url: str, name: str) -> None:
    """A study row with no trials at all (and an empty Optuna study)."""
    from mimax.storage.store import Store

    space = _space(name, {"critic.name": ["bilinear"]}, 1, (0, 10), 64)
    store = Store(url)
    try:
        store.create_study(
            name, space_source="planted", space_json=space, space_fingerprint=_fingerprint(space),
            seeds=1, n_configs_requested=1, optuna_study_name=f"mimax:{name}", **STUDY_DEFAULTS,
        )
    finally:
        store.close()


def database_at_revision(url: str, revision: str) -> None:
    """Create the mimax tables at an older schema ``revision`` (as an older mimax would have left them)."""
    from schema_at import upgrade_to

    upgrade_to(url, revision)
