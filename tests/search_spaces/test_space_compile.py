"""Compiling a space to Optuna: define-by-run suggestion, conditions, enumeration, samplers, identity."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math

import optuna
import pytest
from spaces_helpers import valid, write

from mimax.errors import ConfigError
from mimax.search_spaces import SAMPLERS, Space, load_space, parse_space
from mimax.search_spaces.check import sample_params
from mimax.search_spaces.compile import Space
from mimax.search_spaces.presets import space_from_spec
from mimax.trainables.config import validate

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {
    "data": {"name": "digits"},
    "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
    "train": {"steps": 5, "batch_size": 32},
    "eval": {"every": 5, "probe": {"name": "torch"}},
}

# Conditionals of every kind, one of them chained: critic.out only for a separable critic with 2+ layers.
CONDITIONAL = {
    "name": "conditional",
    "base": BASE,
    "params": {
        "critic.name": {"choice": ["bilinear", "separable", "concat", "cosine"]},
        "critic.hidden": {"int": [4, 64], "log": True, "when": {"critic.name": ["separable", "concat"]}},
        "critic.layers": {"int": [1, 3], "when": {"critic.name": "separable"}},
        "critic.out": {"choice": [8, 16], "when": {"critic.layers": [2, 3]}},
        "critic.temperature": {"float": [0.05, 1.0], "log": True, "when": {"critic.name": "cosine"}},
        "estimator.name": {"choice": ["nce", "smile", "mine"]},
        "estimator.tau": {"float": [1.0, 10.0], "step": 0.5, "when": {"estimator.name": "smile"}},
        "estimator.ema_rate": {"value": 0.1, "when": {"estimator.name": "mine"}},
        "train.lr": {"float": [1.0e-5, 1.0e-2], "log": True},
    },
    "sampler": {"name": "tpe", "seed": 0},
    "trials": 50,
}


def _expected_keys(p: dict) -> set[str]:
    """The oracle for which parameters a trial must have, written out by hand from CONDITIONAL."""
    keys = {"critic.name", "estimator.name", "train.lr"}
    if p["critic.name"] in ("separable", "concat"):
        keys.add("critic.hidden")
    if p["critic.name"] == "separable":
        keys.add("critic.layers")
        if p["critic.layers"] >= 2:
            keys.add("critic.out")
    if p["critic.name"] == "cosine":
        keys.add("critic.temperature")
    if p["estimator.name"] == "smile":
        keys.add("estimator.tau")
    return keys


@pytest.fixture(scope="module")
def conditional() -> Space:
    return space_from_spec(parse_space(CONDITIONAL))


def _space(raw: dict, budget=None) -> Space:
    return space_from_spec(parse_space(raw), budget)


def _run(space: Space, n: int, sampler=None) -> list[dict]:
    """Run ``n`` trials of a study (a deterministic objective of the config) and return their params."""
    study = optuna.create_study(sampler=sampler or space.make_sampler(), directions=space.directions)

    def objective(trial):
        config = space.suggest(trial)
        return -math.log10(config["train"].get("lr", 1e-3)) + (config["critic"]["name"] == "bilinear")

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_only_parameters_whose_condition_holds_are_suggested(conditional, sampler):
    space = Space(conditional.spec)
    space.sampler = dataclasses.replace(space.sampler, name=sampler, seed=3)
    trials = _run(space, 120)
    for params in trials:
        assert set(params) == _expected_keys(params)
    # Every branch was actually explored, the chained one (critic.out) included.
    assert {p["critic.name"] for p in trials} == {"bilinear", "separable", "concat", "cosine"}
    assert {p["estimator.name"] for p in trials} == {"nce", "smile", "mine"}
    assert any("critic.out" in p for p in trials) and any("critic.layers" in p and "critic.out" not in p for p in trials)


def test_every_sampled_configuration_passes_the_trial_validator(conditional):
    for params in sample_params(conditional, 200, seed=7):
        config = conditional.config_for(params)
        assert "seed" not in config
        checked = validate({**config, "seed": 0})
        assert checked.critic["name"] == params["critic.name"]
        if "critic.out" in params:
            assert checked.critic["out"] == params["critic.out"]
        if params["estimator.name"] == "mine":
            assert checked.estimator["ema_rate"] == 0.1  # the conditional fixed value
        else:
            assert "ema_rate" not in checked.estimator


def test_suggest_and_config_for_agree(conditional):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        assert conditional.suggest(trial) == conditional.config_for(trial.params)


def test_suggested_values_land_in_the_config(conditional):
    trial = optuna.trial.FixedTrial({"critic.name": "separable", "critic.hidden": 9, "critic.layers": 2,
                                     "critic.out": 16, "estimator.name": "smile", "estimator.tau": 2.5,
                                     "train.lr": 3e-4})
    config = conditional.suggest(trial)
    assert config["critic"] == {"name": "separable", "hidden": 9, "layers": 2, "out": 16}
    assert config["estimator"] == {"name": "smile", "tau": 2.5}
    assert config["train"] == {"steps": 5, "batch_size": 32, "lr": 3e-4}
    assert config["data"] == BASE["data"] and config["eval"] == BASE["eval"]


@pytest.mark.parametrize("params, path", [
    ({"critic.name": "bilinear", "estimator.name": "nce"}, "params.train.lr"),  # missing though active
    ({"critic.name": "bilinear", "critic.hidden": 8, "estimator.name": "nce", "train.lr": 1e-4},
     "params.critic.hidden"),  # given though its condition fails
    ({"critic.name": "inner", "estimator.name": "nce", "train.lr": 1e-4}, "params.critic.name"),  # not a choice
    ({"critic.name": "bilinear", "estimator.name": "nce", "train.lr": 1e-4, "train.steps": 3}, "params.train.steps"),
])
def test_config_for_rejects_params_outside_the_space(conditional, params, path):
    with pytest.raises(ConfigError) as info:
        conditional.config_for(params)
    assert info.value.path == path


def test_sampling_is_reproducible_by_seed(conditional):
    def run(seed: int, name: str) -> list[dict]:
        space = Space(conditional.spec)
        space.sampler = dataclasses.replace(space.sampler, name=name, seed=seed)
        return _run(space, 14)

    for name in ("tpe", "random"):
        first = run(0, name)
        assert run(0, name) == first
        assert run(1, name) != first


# ----------------------------------------------------------------------------------- enumeration
GRID = {
    "name": "grid",
    "base": {**BASE, "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16}},
    "params": {
        "critic.name": {"grid": ["bilinear", "separable", "concat"]},
        "critic.hidden": {"grid": [8, 16], "when": {"critic.name": ["separable", "concat"]}},
        "estimator.name": {"grid": ["nce", "nwj"]},
        "train.lr": 1.0e-3,
    },
    "seeds": 4,
    "sampler": {"name": "grid", "seed": 0},
}


def _brute_force(axes: dict, rule) -> list[dict]:
    """Every combination of every axis, with the inactive keys dropped, de-duplicated."""
    out = []
    for values in itertools.product(*axes.values()):
        combo = dict(zip(axes, values))
        combo = {k: v for k, v in combo.items() if rule(k, combo)}
        if combo not in out:
            out.append(combo)
    return out


def _hidden_rule(key, combo):
    return key != "critic.hidden" or combo["critic.name"] in ("separable", "concat")


def test_a_conditional_grid_is_enumerated_exactly():
    space = _space(GRID)
    expected = _brute_force({"critic.name": ["bilinear", "separable", "concat"], "critic.hidden": [8, 16],
                             "estimator.name": ["nce", "nwj"]}, _hidden_rule)
    assert len(expected) == (1 + 2 * 2) * 2
    flats = space.enumerate_params()
    assert sorted(map(str, flats)) == sorted(map(str, expected))
    assert space.n_configs == 10 and space.seeds == 4
    configs = space.enumerate()
    assert len(configs) == 10 and all(c["train"]["lr"] == 1.0e-3 for c in configs)
    assert [space.config_for(f) for f in flats] == configs


@pytest.mark.parametrize("conditional_axis", [False, True])
def test_the_grid_sampler_runs_each_configuration_once(conditional_axis):
    raw = copy.deepcopy(GRID)
    if not conditional_axis:
        del raw["params"]["critic.hidden"]
    space = _space(raw)
    sampler = space.make_sampler()
    assert isinstance(sampler, optuna.samplers.GridSampler)
    study = optuna.create_study(sampler=sampler)
    configs = []
    study.optimize(lambda t: configs.append(space.suggest(t)) or 0.0, n_trials=100)  # stops when exhausted
    assert len(configs) == space.n_configs
    assert sorted(map(str, configs)) == sorted(map(str, space.enumerate()))


def test_the_bruteforce_sampler_matches_the_enumeration():
    raw = copy.deepcopy(GRID)
    raw["params"]["critic.name"] = {"choice": ["bilinear", "separable", "concat"]}
    raw["params"]["critic.hidden"] = {"int": [8, 10], "when": {"critic.name": ["separable", "concat"]}}
    raw["params"]["estimator.name"] = {"choice": ["nce", "nwj"]}
    raw["params"]["train.lr"] = {"float": [1.0e-4, 3.0e-4], "step": 1.0e-4}
    raw["sampler"] = {"name": "bruteforce", "seed": 0}
    space = _space(raw)
    expected = _brute_force({"critic.name": ["bilinear", "separable", "concat"], "critic.hidden": [8, 9, 10],
                             "estimator.name": ["nce", "nwj"], "train.lr": [1.0e-4, 2.0e-4, 3.0e-4]}, _hidden_rule)
    assert space.n_configs == len(expected) == (1 + 2 * 3) * 2 * 3
    study = optuna.create_study(sampler=space.make_sampler())
    study.optimize(lambda t: space.suggest(t) and 0.0, n_trials=200)
    seen = [t.params for t in study.trials]
    assert len(seen) == len(expected)
    key = lambda d: sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in d.items())  # noqa: E731
    assert sorted(map(key, seen)) == sorted(map(key, expected)) == sorted(map(key, space.enumerate_params()))


def test_trials_caps_a_grid_and_sampled_spaces_count_trials():
    raw = copy.deepcopy(GRID)
    raw["trials"] = 3
    assert _space(raw).n_configs == 3
    assert len(_space(raw).enumerate()) == 10  # the enumeration stays whole
    sampled = _space(CONDITIONAL)
    assert sampled.enumerate() is None and sampled.n_configs == 50
    assert _space({**CONDITIONAL, "trials": None}).n_configs is None


def test_a_space_without_params_is_one_configuration():
    space = _space({"name": "one", "base": {**BASE, "critic": {"name": "bilinear"}, "estimator": {"name": "nce"}}})
    assert space.sampler.name == "grid" and space.enumerate() == [space.base] and space.n_configs == 1


# ------------------------------------------------------------------------------------ samplers
EXPECTED_CLASS = {
    "tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler, "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler, "nsga2": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler, "bruteforce": optuna.samplers.BruteForceSampler,
}


def _numeric_space(sampler: str) -> Space:
    raw = {"name": "numeric", "base": {**BASE, "critic": {"name": "separable"}},
           "params": {"critic.hidden": {"grid" if sampler == "grid" else "int": [8, 16]},
                      "estimator.name": {"grid" if sampler in ("grid", "bruteforce") else "choice": ["nce", "nwj"]},
                      "train.lr": ({"grid": [1e-4, 1e-3]} if sampler == "grid" else
                                   {"float": [1e-4, 1e-3], "step": 1e-4} if sampler == "bruteforce" else
                                   {"float": [1e-4, 1e-3], "log": True})},
           "sampler": {"name": sampler, "seed": 5}}
    return _space(raw)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_is_selectable_by_name_and_runs(name):
    assert set(SAMPLERS) == set(EXPECTED_CLASS)
    space = _numeric_space(name)
    sampler = space.make_sampler()
    assert type(sampler) is EXPECTED_CLASS[name]
    trials = _run(space, 4)
    assert len(trials) == 4 and all(8 <= t["critic.hidden"] <= 16 for t in trials)


def test_sampler_options_are_passed_through():
    raw = valid()
    raw["sampler"] = {"name": "tpe", "seed": 1, "options": {"n_startup_trials": 3}}
    sampler = _space(raw).make_sampler()
    assert sampler._n_startup_trials == 3


def test_a_multi_objective_space_gives_directions_and_runs_with_nsga2():
    raw = valid()
    raw["sampler"] = {"name": "nsga2", "seed": 0}
    raw["objectives"] = [{"metric": "probe_accuracy", "direction": "maximize"},
                         {"metric": "params.critic", "direction": "minimize"}]
    space = _space(raw)
    assert space.metrics == ["probe_accuracy", "params.critic"]
    assert space.directions == ["maximize", "minimize"]
    study = optuna.create_study(sampler=space.make_sampler(), directions=space.directions)
    study.optimize(lambda t: (space.suggest(t)["train"]["lr"], 1.0), n_trials=3)
    assert len(study.trials) == 3


# ------------------------------------------------------------------------------------ identity
def test_the_fingerprint_is_stable_and_tracks_what_decides_the_trials(tmp_path):
    raw = valid()
    first = load_space(write(tmp_path, raw, "a.yaml")).fingerprint()
    assert len(first) == 64
    assert load_space(write(tmp_path, copy.deepcopy(raw), "b.yaml")).fingerprint() == first

    def edited(edit) -> str:
        changed = copy.deepcopy(raw)
        edit(changed)
        return load_space(write(tmp_path, changed, "c.yaml")).fingerprint()

    # Words and values that the default budget (smoke) overrides change no trial.
    assert edited(lambda r: r.update(name="other", description="other words")) == first
    assert edited(lambda r: r.update(seeds=4)) == first  # smoke sets seeds 1
    assert edited(lambda r: r["base"]["train"].update(steps=9)) == first  # smoke sets train.steps 2
    # Everything else that decides which trials run, or what they optimise, does.
    for edit in (lambda r: r["params"]["critic.hidden"].update(int=[16, 256]),
                 lambda r: r["params"]["critic.hidden"].update(when={"critic.name": "concat"}),
                 lambda r: r["budgets"]["smoke"].update(seeds=2),
                 lambda r: r["budgets"]["smoke"]["set"].update({"train.steps": 3}),
                 lambda r: r["sampler"].update(seed=1),
                 lambda r: r["base"]["train"].update(batch_size=64),
                 lambda r: r["objectives"][0].update(metric="bound_test"),
                 lambda r: r.update(trials=11)):
        assert edited(edit) != first


def test_to_dict_round_trips_through_the_parser(conditional):
    d = conditional.to_dict()
    again = _space({k: v for k, v in d.items() if k != "budget"})
    assert again.to_dict() == d and again.fingerprint() == conditional.fingerprint()


def test_budgets_override_seeds_trials_and_keys(tmp_path):
    raw = valid()
    raw["budgets"]["big"] = {"set": {"train.steps": 7, "eval.probe_train_size": 100}, "seeds": 5, "trials": None}
    spec = parse_space(raw)
    smoke, big, none = space_from_spec(spec, "smoke"), space_from_spec(spec, "big"), Space(spec)
    assert (smoke.seeds, smoke.trials, smoke.base["train"]["steps"]) == (1, 10, 2)
    assert (big.seeds, big.trials, big.base["train"]["steps"]) == (5, None, 7)
    assert big.base["eval"] == {"every": 5, "probe": {"name": "torch"}, "probe_train_size": 100}
    assert none.budget == "smoke"  # the default budget is smoke when the space has one
    assert spec.base["train"]["steps"] == 5  # budgets do not touch the parsed spec


@pytest.mark.parametrize("when", [False, True])
def test_a_resumed_grid_keeps_its_order_so_no_point_repeats(when):
    # Optuna gives trial n the grid's n-th point (n below the grid's size) in the order the seed shuffles;
    # a resumed session that reshuffled would repeat points and skip others.
    params = {"critic.name": {"grid": ["separable", "bilinear"]}, "estimator.name": {"grid": ["nce", "nwj", "dv"]}}
    if when:
        params["critic.hidden"] = {"grid": [8, 16], "when": {"critic.name": ["separable"]}}
    raw = {"name": "g", "base": {"data": {"name": "gaussian"}, "encoder": {"name": "identity"},
                                 "train": {"steps": 1}, "eval": {"every": 1, "probe": "none"}},
           "params": params, "sampler": {"name": "grid", "seed": 0},
           "objectives": [{"metric": "loss", "direction": "minimize"}]}
    space = Space(parse_space(raw))
    storage = optuna.storages.InMemoryStorage()
    seen = []
    for session, n in ((0, 2), (1, 1), (2, space.n_configs - 3)):  # a launch and two resumes
        study = optuna.create_study(storage=storage, study_name="g", load_if_exists=True,
                                    sampler=space.make_sampler(session=session))
        for _ in range(n):
            trial = study.ask()
            seen.append(json.dumps(space.suggest(trial), sort_keys=True))
            if len(seen) < space.n_configs:  # the last tell would stop the study, outside an optimize()
                study.tell(trial, 0.0)
    assert sorted(seen) == sorted(json.dumps(c, sort_keys=True) for c in space.enumerate())
