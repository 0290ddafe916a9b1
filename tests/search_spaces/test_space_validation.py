"""A malformed space is one error naming the place in the file and what was expected (exit code 2)."""

from __future__ import annotations

import pytest
from spaces_helpers import run_cli, valid, write

from mimax.errors import ConfigError
from mimax.search_spaces import load_space, parse_space
from mimax.search_spaces.presets import space_from_spec


def _p(raw):  # the params mapping
    return raw["params"]


def _set(path_fn, value):
    def edit(raw):
        parent, key = path_fn(raw)
        parent[key] = value
    return edit


# (id, edit of the valid space, expected error path, a fragment of the expected message)
CASES = [
    ("unknown top key", lambda r: r.update(sampeler="tpe"), "sampeler", "unknown key"),
    ("missing name", lambda r: r.pop("name"), "name", "missing required key"),
    ("unknown param key", lambda r: _p(r)["critic.hidden"].update(logg=True), "params.critic.hidden.logg", "unknown key"),
    ("unknown section", lambda r: _p(r).update({"critc.name": {"choice": ["bilinear"]}}), "params.critc.name",
     "unknown trial-config section 'critc'"),
    ("seed as a param", lambda r: _p(r).update(seed={"choice": [1, 2]}), "params.seed", "use the top-level 'seeds'"),
    ("two kinds", lambda r: _p(r)["train.lr"].update(choice=[1]), "params.train.lr", "exactly one of"),
    ("bare list", lambda r: _p(r).update({"train.batch_size": [32, 64]}), "params.train.batch_size", "ambiguous"),
    ("empty choices", lambda r: _p(r)["critic.name"].update(choice=[]), "params.critic.name.choice",
     "at least one value"),
    ("duplicate choice", lambda r: _p(r)["estimator.name"].update(choice=["nce", "nce"]),
     "params.estimator.name.choice[1]", "duplicate value 'nce'"),
    ("unknown component in a choice", lambda r: _p(r)["critic.name"]["choice"].append("bilinar"),
     "params.critic.name.choice[3]", "unknown critic 'bilinar'"),
    ("unknown component in base", lambda r: r["base"]["encoder"].update(name="mlpp"), "base.encoder.name",
     "unknown encoder 'mlpp'"),
    ("low > high", lambda r: _p(r)["critic.hidden"].update(int=[512, 16]), "params.critic.hidden.int",
     "expected low ≤ high"),
    ("int bound not an integer", lambda r: _p(r)["critic.hidden"].update(int=[16.5, 512]),
     "params.critic.hidden.int[0]", "expected an integer"),
    ("log with a non-positive bound", lambda r: _p(r)["train.lr"].update(float=[0.0, 1.0e-3]),
     "params.train.lr.float[0]", "a log range needs low > 0"),
    ("step not dividing the range", lambda r: _p(r).update({"train.batch_size": {"int": [32, 100], "step": 32}}),
     "params.train.batch_size.step", "not a multiple of step"),
    ("condition on a missing key", lambda r: _p(r)["critic.hidden"].update(when={"critic.nam": "concat"}),
     "params.critic.hidden.when.critic.nam", "no parameter 'critic.nam'"),
    ("condition on a later key", lambda r: _p(r)["critic.hidden"].update(when={"estimator.name": "nce"}),
     "params.critic.hidden.when.estimator.name", "defined before it"),
    ("condition value never taken", lambda r: _p(r)["critic.hidden"].update(when={"critic.name": ["concat", "cosine"]}),
     "params.critic.hidden.when.critic.name[1]", "'cosine' is never a value of params.critic.name"),
    ("overlapping params", lambda r: _p(r).update({"critic": {"value": {"name": "bilinear"}}}), "params.critic",
     "overlaps params.critic.name"),
    ("unknown sampler", lambda r: r.update(sampler={"name": "tpee"}), "sampler.name", "unknown sampler 'tpee'"),
    ("cmaes with only categoricals", lambda r: (r.update(sampler={"name": "cmaes"}), _p(r).pop("train.lr"),
                                                _p(r).pop("critic.hidden")),
     "sampler.name", "cmaes needs at least one int or float range"),
    ("cmaes with two objectives", lambda r: (r.update(sampler={"name": "cmaes"}),
                                             r.update(objectives=[{"metric": "probe_accuracy"},
                                                                  {"metric": "params.critic", "direction": "minimize"}])),
     "sampler.name", "single objective"),
    ("grid with a continuous range", lambda r: r.update(sampler={"name": "grid"}), "sampler.name",
     "grid enumerates value lists only, but params.critic.hidden is an int range"),
    ("bruteforce with a continuous range", lambda r: r.update(sampler={"name": "bruteforce"}), "sampler.name",
     "params.train.lr is a float range without a step"),
    ("grid axis under tpe", lambda r: _p(r).update({"estimator.name": {"grid": ["nce", "nwj"]}}), "sampler.name",
     "params.estimator.name is a grid axis"),
    ("unknown sampler option", lambda r: r["sampler"].update(options={"n_startup": 3}), "sampler.options.n_startup",
     "not an option of TPESampler"),
    ("seeds below one", lambda r: r.update(seeds=0), "seeds", "expected an integer ≥ 1, got 0"),
    ("unknown metric", lambda r: r.update(objectives=[{"metric": "probe_acc"}]), "objectives[0].metric",
     "unknown metric 'probe_acc'"),
    ("bad direction", lambda r: r.update(objectives=[{"metric": "loss", "direction": "down"}]),
     "objectives[0].direction", "expected maximize or minimize"),
    ("metric the configs never report", lambda r: r["base"]["eval"].update(probe="none"), "objectives[0].metric",
     "probe_accuracy needs a probe"),
    ("unknown default budget", lambda r: r.update(default_budget="huge"), "default_budget",
     "unknown budget 'huge' (choose from smoke)"),
    ("budget sets a searched key", lambda r: r["budgets"]["smoke"]["set"].update({"critic.name": "concat"}),
     "budgets.smoke.set.critic.name", "overlaps the searched parameter params.critic.name"),
    ("unknown budget key", lambda r: r["budgets"]["smoke"].update(step=3), "budgets.smoke.step", "unknown key"),
    ("validator rejects a budget value", lambda r: r["budgets"]["smoke"]["set"].update({"train.steps": -1}),
     "budgets.smoke.set.train.steps", "greater than or equal to 0"),
    ("validator rejects a range end", lambda r: _p(r)["critic.hidden"].update(int=[-3, 512], log=False),
     "params.critic.hidden.int[0]", "critic.hidden: input should be greater than 0, got -3"),
    ("validator rejects a conditional range end", lambda r: _p(r)["estimator.name"].update(choice=["nce", "smile"]) or
     _p(r).update({"estimator.tau": {"float": [0.0, 5.0], "when": {"estimator.name": "smile"}}}),
     "params.estimator.tau.float[0]", "estimator.tau: input should be greater than 0"),
    ("validator rejects base keys for some choices", lambda r: r["base"].update(critic={"hidden": 64}),
     "base.critic.hidden", "critic.hidden: unknown key"),
    ("a param set for every choice", lambda r: _p(r).update({"estimator.tau": {"float": [1.0, 5.0]}}),
     "params.estimator.tau.float", "estimator.tau: unknown key"),
    ("base that is not a mapping", lambda r: r.update(base=[1]), "base", "expected a mapping"),
]


@pytest.mark.parametrize("edit, path, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_space_is_one_error_naming_its_place(tmp_path, capsys, edit, path, fragment):
    raw = valid()
    edit(raw)
    with pytest.raises(ConfigError) as info:
        load_space(write(tmp_path, raw))
    assert info.value.path == path
    assert fragment in info.value.message
    assert "\n" not in str(info.value)

    # The CLI: one line on stderr naming the same place, exit code 2.
    assert run_cli(["spaces", "validate", write(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mimax: error: {path}: ")


def test_the_valid_space_is_valid(tmp_path, capsys):
    # Guards the cases above: each fails because of its edit, not because the starting point is broken.
    assert run_cli(["spaces", "validate", write(tmp_path, valid())]) == 0
    assert capsys.readouterr().out.strip() == "ok: test-space (10 configurations)"


def test_an_unknown_budget_is_an_error():
    spec = parse_space(valid())
    with pytest.raises(ConfigError) as info:
        space_from_spec(spec, "paper")
    assert str(info.value) == "budget: unknown budget 'paper' for space 'test-space' (choose from smoke)"


def test_a_rejected_config_is_reported_with_its_values(tmp_path):
    raw = valid()
    raw["base"]["critic"] = {"hidden": 64}  # fine for separable / concat, not for bilinear
    with pytest.raises(ConfigError) as info:
        load_space(write(tmp_path, raw))
    assert "critic.name='bilinear'" in info.value.message and "budget smoke" in info.value.message


def test_duplicate_yaml_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nparams:\n  train.lr: 1.0e-4\n  train.lr: 2.0e-4\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'train.lr'"):
        load_space(str(path))


def test_missing_files_and_presets_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="space file not found"):
        load_space(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="no preset of that name"):
        load_space("fig9-nothing")


def test_invalid_yaml_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_space(str(path))


def test_a_per_probe_metric_is_an_objective(tmp_path):
    # probe_accuracy.<label>: one per probe once eval.probe may be a list (it needs a probe like probe_accuracy).
    raw = valid()
    raw["objectives"] = [{"metric": "probe_accuracy.linear"}]
    assert load_space(write(tmp_path, raw)).metrics == ["probe_accuracy.linear"]
    raw["base"]["eval"]["probe"] = "none"
    with pytest.raises(ConfigError, match="probe_accuracy.linear needs a probe"):
        load_space(write(tmp_path, raw))
