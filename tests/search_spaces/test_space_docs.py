"""The complete example in docs/SEARCH_SPACES.md loads, as written, at every budget."""

from __future__ import annotations

import re
from pathlib import Path

import optuna

from mimax.search_spaces import load_space, load_spec
from mimax.search_spaces.check import sample_params
from mimax.trainables.config import validate

DOC = Path(__file__).resolve().parents[2] / "docs" / "SEARCH_SPACES.md"


def _example(tmp_path) -> str:
    text = DOC.read_text()
    block = re.search(r"<!-- This block is loaded by .*?-->\n```yaml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "critic-pareto.yaml"
    path.write_text(block)
    return str(path)


def test_the_documented_example_loads_at_every_budget(tmp_path):
    path = _example(tmp_path)
    spec = load_spec(path)
    assert list(spec.budgets) == ["smoke", "cpu", "paper"]
    smoke, cpu, paper = (load_space(path, b) for b in spec.budgets)
    assert (smoke.n_configs, smoke.seeds) == (4, 1)
    assert (cpu.n_configs, cpu.seeds, paper.n_configs, paper.seeds) == (20, 3, 60, 20)
    assert smoke.directions == ["maximize", "minimize"] and smoke.metrics == ["probe_accuracy", "params.critic"]
    assert load_space(path).budget == "smoke"


def test_the_documented_example_runs_a_multi_objective_study(tmp_path):
    space = load_space(_example(tmp_path), "smoke")
    study = optuna.create_study(sampler=space.make_sampler(), directions=space.directions)
    study.optimize(lambda t: (space.suggest(t)["train"]["lr"], 1.0), n_trials=space.n_configs)
    for trial in study.trials:
        config = validate({**space.config_for(trial.params), "seed": 0})
        assert ("critic.out" in trial.params) == (config.critic["name"] == "separable")
    for params in sample_params(space, 50, seed=1):
        validate({**space.config_for(params), "seed": 0})


def test_the_documented_python_numbers_are_right():
    space = load_space("fig3-critics", budget="smoke")
    assert (space.n_configs, space.seeds, space.trials) == (6, 2, None)
    assert (space.metrics, space.directions) == (["probe_accuracy"], ["maximize"])
