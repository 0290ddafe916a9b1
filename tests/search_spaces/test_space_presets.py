"""The presets enumerate exactly the paper's grids, with the paper's hyperparameters at budget ``paper``.

The oracle is /work/shared/paper-protocol.md (Tschannen et al., ICLR 2020, and the authors' notebook),
written out here by hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mimax.search_spaces import load_space, load_spec, preset_names
from mimax.search_spaces.check import sample_params
from mimax.search_spaces.spec import PRESET_DIR
from mimax.trainables.config import validate
from mimax.trainables.probes import PROBES

FIGURES = ["fig1ab-bijective", "fig1c-adversarial", "fig2-conditioning", "fig3-critics", "fig4ab-encoders",
           "fig4c-noniid"]
ALL = FIGURES + ["calibration", "explore", "fig3-nwj-21k", "pixel-baseline", "sec4-metric"]

# The paper's protocol (Optimisation and evaluation).
STEPS, EVERY, BATCH, LR, SEEDS = 21_000, 1_000, 128, 1e-4, 20
SKLEARN = {"C": 10.0, "tol": 0.1, "max_iter": 100}  # LogisticRegression(saga, tol 0.1, C 10, max_iter 100)

# Each figure's grid: the set of (section, name-or-value) tuples it must enumerate, and nothing else.
GRIDS = {
    "fig1ab-bijective": [("realnvp", "bilinear", est) for est in ("nce", "nwj")],
    "fig1c-adversarial": [("realnvp", None, None)],
    "fig2-conditioning": [("residual-mlp", "bilinear", est) for est in ("nce", "nwj")],
    "fig3-critics": list(itertools.product(["mlp"], ["bilinear", "separable", "concat"], ["nce", "nwj"])),
    "fig4ab-encoders": list(itertools.product(["convnet", "mlp"], ["bilinear"], ["nce", "nwj"])),
    "fig4c-noniid": list(itertools.product(["identity"], ["concat"], ["nce", "nwj"])),
}
EXTRA_AXIS = {  # a fourth axis, where the figure has one
    "fig4ab-encoders": ("estimator", "target", [2.0, 4.0]),
    "fig4c-noniid": ("data", "iid", [False, True]),
}
COUNTS = {"fig1ab-bijective": 2, "fig1c-adversarial": 1, "fig2-conditioning": 2, "fig3-critics": 6,
          "fig4ab-encoders": 8, "fig4c-noniid": 4}


def _paper(name):
    space = load_space(name, "paper")
    return space, [validate({**c, "seed": 0}) for c in space.enumerate()]


def _key(cfg, extra):
    key = (cfg.encoder["name"], cfg.critic and cfg.critic["name"], cfg.estimator and cfg.estimator["name"])
    if extra:
        section, field, _ = extra
        key += (getattr(cfg, section)[field],)
    return key


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_enumerates_exactly_the_papers_grid(name):
    space, configs = _paper(name)
    extra = EXTRA_AXIS.get(name)
    expected = GRIDS[name]
    if extra:
        expected = [g + (v,) for g in expected for v in extra[2]]
    assert len(expected) == COUNTS[name]
    assert space.n_configs == COUNTS[name] and space.sampler.name == "grid"
    assert sorted(map(repr, (_key(c, extra) for c in configs))) == sorted(map(repr, expected))
    assert space.seeds == SEEDS


@pytest.mark.parametrize("name", [n for n in FIGURES if n not in ("fig1c-adversarial", "fig4c-noniid")])
def test_mnist_figures_use_the_papers_protocol_at_budget_paper(name):
    _, configs = _paper(name)
    for c in configs:
        assert c.data["name"] == "mnist"
        assert (c.train.steps, c.eval.every, c.train.batch_size, c.train.lr) == (STEPS, EVERY, BATCH, LR)
        assert c.train.mode == "infomax"
        paper, fast = c.eval.probe  # the paper's probe first (probe_accuracy), then the fast one
        probe = dict(paper)
        assert probe.pop("name") == "sklearn"
        assert {k: probe[k] for k in SKLEARN} == SKLEARN
        assert fast["name"] == "torch"
        assert c.eval.probe_train_size is None  # all 60,000 training images
        assert c.estimator["target"] is None or name == "fig4ab-encoders"


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", FIGURES)
def test_the_figures_use_the_notebooks_init_adam_and_both_probes_at_every_budget(name, budget):
    space = load_space(name, budget)
    for raw in space.enumerate():
        c = validate({**raw, "seed": 0})
        assert (c.init, c.train.adam) == ("tf", "tf1")
        if c.eval.probe != "none":
            assert [p.get("label", p["name"]) for p in c.eval.probe] == ["sklearn", "torch"]
            assert c.eval.probe_train_size is None or budget == "smoke"  # all 60k images but in a smoke run


def test_the_sklearn_probe_is_the_papers():
    settings = PROBES["sklearn"](PROBES["sklearn"].Params(**SKLEARN)).settings()
    assert settings["solver"] == "saga" and settings["scaler"] == "minmax"


def test_paper_architectures():
    _, fig1 = _paper("fig1ab-bijective")
    assert {(c.encoder["coupling"], c.encoder["layers"], c.encoder["hidden"]) for c in fig1} == {("additive", 30, 512)}
    _, fig2 = _paper("fig2-conditioning")
    assert all(c.data["noise"] == 0.05 and c.eval.jacobian and c.eval.jacobian_batch == 128 for c in fig2)
    assert {(c.encoder["layers"], c.encoder["init_std"]) for c in fig2} == {(5, 1e-4)}
    _, fig3 = _paper("fig3-critics")
    assert {(c.encoder["hidden"][0], c.encoder["hidden"][1], c.encoder["out_dim"]) for c in fig3} == {(300, 300, 100)}
    critics = {c.critic["name"]: c.critic for c in fig3}
    assert (critics["separable"]["hidden"], critics["separable"]["out"], critics["separable"]["layers"]) == (100, 100, 1)
    assert (critics["concat"]["hidden"], critics["concat"]["layers"]) == (200, 1)
    _, fig4 = _paper("fig4ab-encoders")
    convnet = next(c.encoder for c in fig4 if c.encoder["name"] == "convnet")
    assert (convnet["channels"], convnet["kernel"], convnet["out_dim"]) == ([64, 128], 5, 100)


def test_fig1c_is_the_papers_adversarial_protocol():
    space, (c,) = _paper("fig1c-adversarial")
    assert c.train.mode == "adversarial" and c.critic is None and c.estimator is None
    assert (c.encoder["name"], c.encoder["coupling"], c.encoder["layers"]) == ("realnvp", "affine", 30)
    assert (c.adversarial.warmup, c.adversarial.classifier_steps) == (1000, 10)
    assert (c.adversarial.classifier_lr, c.adversarial.encoder_lr) == (1e-3, 1e-5)
    assert (c.train.steps, c.eval.every, c.train.batch_size) == (4001, 400, 128)
    assert [p["name"] for p in c.eval.probe] == ["sklearn", "torch"] and space.seeds == SEEDS


def test_fig4c_is_the_papers_noniid_protocol():
    _, configs = _paper("fig4c-noniid")
    for c in configs:
        assert c.data["name"] == "noniid-gaussian" and c.encoder["name"] == "identity"
        assert (c.critic["name"], c.critic["layers"], c.critic["hidden"]) == ("concat", 5, 10)  # 5 x 10 ReLU
        assert (c.train.steps, c.train.batch_size, c.train.lr) == (20_000, 128, 1e-4)
        assert c.eval.probe == "none"


def test_calibration_is_the_known_mi_table():
    space = load_space("calibration", "paper")
    configs = [validate({**c, "seed": 0}) for c in space.enumerate()]
    keys = {(c.data["mi"], c.estimator["name"], c.critic["name"]) for c in configs}
    assert keys == set(itertools.product([2.0, 4.0, 6.0, 8.0, 10.0], ["nce", "nwj", "js", "dv", "mine", "smile", "tuba"],
                                         ["separable", "concat"]))
    assert len(configs) == space.n_configs == 70
    assert all(c.data["dim"] == 20 and c.train.batch_size == 64 and c.eval.probe == "none" and
               c.encoder["name"] == "identity" for c in configs)


def test_explore_searches_the_requested_space():
    space = load_space("explore", "paper")
    assert space.sampler.name == "tpe" and space.metrics == ["probe_accuracy"] and space.directions == ["maximize"]
    params = {p.key: p for p in space.params}
    assert set(params["encoder.name"].values) == {"mlp", "convnet", "residual-mlp"}
    assert set(params["critic.name"].values) == {"bilinear", "separable", "concat", "inner", "cosine"}
    assert set(params["estimator.name"].values) == {"nce", "nwj", "js", "smile"}
    assert set(params["train.batch_size"].values) == {64, 128, 256}
    lr = params["train.lr"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-5, 1e-3, True)
    assert dict(params["critic.hidden"].when) == {"critic.name": ("separable", "concat")}
    assert dict(params["critic.temperature"].when) == {"critic.name": ("cosine",)}
    assert dict(params["estimator.tau"].when) == {"estimator.name": ("smile",)}
    trials = {b: load_space("explore", b).n_configs for b in ("smoke", "cpu", "paper")}
    assert trials["smoke"] < trials["cpu"] < trials["paper"]


def test_200_random_explore_trials_pass_the_validator():
    space = load_space("explore", "smoke")
    samples = sample_params(space, 200, seed=11)
    for params in samples:
        config = validate({**space.config_for(params), "seed": 0})
        assert ("hidden" in config.critic) == (config.critic["name"] in ("separable", "concat"))
        assert ("tau" in config.estimator) == (config.estimator["name"] == "smile")
        if config.critic["name"] in ("separable", "concat"):
            assert config.critic["hidden"] == params["critic.hidden"]
        if config.critic["name"] == "cosine":
            assert config.critic["temperature"] == params["critic.temperature"]
    assert {p["critic.name"] for p in samples} == {"bilinear", "separable", "concat", "inner", "cosine"}


def test_pixel_baseline_is_the_papers_probe_on_raw_top_halves():
    space = load_space("pixel-baseline", "paper")
    configs = [validate({**c, "seed": 0}) for c in space.enumerate()]
    assert sorted(c.data["noise"] for c in configs) == [0.0, 0.05]  # without and with the Fig. 2 noise
    for c in configs:
        assert c.data["name"] == "mnist" and c.encoder["name"] == "identity" and c.train.steps == 0
        probe = dict(c.eval.probe[0])
        assert probe.pop("name") == "sklearn" and {k: probe[k] for k in SKLEARN} == SKLEARN
        assert c.eval.probe_train_size is None
    assert space.seeds == SEEDS
    cpu = load_space("pixel-baseline", "cpu")
    assert cpu.seeds >= 3 and validate({**cpu.enumerate()[0], "seed": 0}).eval.probe[0]["name"] == "sklearn"


def test_sec4_compares_nce_with_the_metric_learning_losses():
    space = load_space("sec4-metric", "paper")
    configs = [validate({**c, "seed": 0}) for c in space.enumerate()]
    assert sorted(c.estimator["name"] for c in configs) == ["kpair", "nce", "triplet"]
    for c in configs:
        assert (c.encoder["name"], c.critic["name"]) == ("mlp", "separable")  # separable: the K-pair loss
        assert (c.train.steps, c.eval.every, c.train.batch_size, c.train.lr) == (STEPS, EVERY, BATCH, LR)
    assert space.seeds == SEEDS


@pytest.mark.parametrize("name", ALL)
def test_every_preset_has_smoke_cpu_and_paper_budgets(name):
    spec = load_spec(name)
    assert spec.name == name == Path(spec.source).stem and spec.description
    assert list(spec.budgets) in (["smoke", "cpu", "paper"], ["smoke", "cpu", "paper-steps", "paper"])
    assert spec.default_budget == "smoke"
    smoke, cpu, paper = (load_space(name, b) for b in ("smoke", "cpu", "paper"))
    s_cfg, c_cfg, p_cfg = (validate({**s.config_for(sample_params(s, 1, 0)[0]), "seed": 0}) for s in (smoke, cpu, paper))
    # smoke: a pipeline check; cpu: a reduced but faithful run (several thousand steps at most, 3+ seeds).
    if name == "pixel-baseline":  # nothing is trained at any budget: only the probe's size changes
        assert s_cfg.train.steps == c_cfg.train.steps == p_cfg.train.steps == 0
        assert smoke.seeds <= 2 and cpu.seeds >= 3 and paper.seeds >= 10
        return
    assert s_cfg.train.steps <= 40 and smoke.seeds <= 2
    assert s_cfg.eval.probe == "none" or (s_cfg.eval.probe_train_size or 0) <= 2000  # quick probes
    if name == "fig3-nwj-21k":  # its point: the paper's number of steps at budget cpu, with fewer seeds
        assert c_cfg.train.steps == p_cfg.train.steps == STEPS and cpu.seeds == 3
        assert paper.seeds == SEEDS
        return
    assert s_cfg.train.steps < c_cfg.train.steps < p_cfg.train.steps and c_cfg.train.steps <= 5000 and cpu.seeds >= 3
    assert paper.seeds >= 10 and paper.n_configs >= cpu.n_configs >= smoke.n_configs
    if "paper-steps" in spec.budgets:  # the paper's length and evaluation schedule, fewer seeds (mimax decide)
        steps = load_space(name, "paper-steps")
        e_cfg = validate({**steps.config_for(sample_params(steps, 1, 0)[0]), "seed": 0})
        assert (e_cfg.train.steps, e_cfg.eval.every) == (p_cfg.train.steps, p_cfg.eval.every)
        assert cpu.seeds <= steps.seeds < paper.seeds and steps.n_configs == paper.n_configs


def test_presets_are_package_data():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == preset_names() == sorted(ALL)


def test_fig3_nwj_21k_is_fig3s_nwj_half_with_the_paper_steps_at_budget_cpu():
    _, fig3 = _paper("fig3-critics")
    _, nwj = _paper("fig3-nwj-21k")
    as_dicts = lambda cs: sorted((c.to_dict() for c in cs), key=repr)  # noqa: E731
    assert as_dicts(nwj) == as_dicts(c for c in fig3 if c.estimator["name"] == "nwj")
    cpu = load_space("fig3-nwj-21k", "cpu")
    for c in (validate({**c, "seed": 0}) for c in cpu.enumerate()):
        assert (c.train.steps, c.eval.every, [p["name"] for p in c.eval.probe]) == (STEPS, 3000, ["sklearn", "torch"])
