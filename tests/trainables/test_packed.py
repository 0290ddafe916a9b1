"""Packed replicates: a replicate trained inside a pack gives the records that ``Trainer`` gives for its
seed alone (the oracle), for every encoder, critic and estimator; the batched probe and Jacobian match
their single versions; a pack checkpoints, diverges, sizes itself and falls back like the brief says."""

from __future__ import annotations

import copy

import pytest
import torch

from mimax.errors import ConfigError
from mimax.trainables.base import ViewSpec, parse_params
from mimax.trainables.diagnostics import log_condition_numbers
from mimax.trainables.encoders import ENCODERS
from mimax.trainables.estimators import ESTIMATORS
from mimax.trainables.functional import Stacked, fit_torch_probes, stacked_log_condition_numbers
from mimax.trainables.loop import Trainer
from mimax.trainables.packed import PackedTrainer, auto_pack_size, replicate_bytes, train_packs
from mimax.trainables.probes import TorchProbe

N_TEST = 450  # digits' test split: one probe prediction is 1/450 of accuracy
# How far a probe accuracy may move. A bijection passes digits' pixels through: on those features the
# torch probe itself (10 L-BFGS steps) moves by up to 4 of 450 predictions when its input features move
# by 1e-6 relative, the size of float32 rounding differences between batched and single kernels
# (measured on the single probe alone). Elsewhere one prediction.
PROBE_TOL = {"realnvp": 4 / N_TEST, "realnvp-affine": 4 / N_TEST}

# Weights large enough that the features are well mixed: the torch probe is then stable to float
# rounding of its input (see PROBE_TOL).
ENCODER_SECTIONS = {
    "mlp": {"name": "mlp", "hidden": [32], "out_dim": 16},
    "convnet": {"name": "convnet", "channels": [8, 16], "kernel": 3, "out_dim": 16},
    "residual-mlp": {"name": "residual-mlp", "layers": 2, "init_std": 0.1},
    "realnvp": {"name": "realnvp", "layers": 2, "hidden": 32, "init_std": 0.1},
    "realnvp-affine": {"name": "realnvp", "coupling": "affine", "layers": 2, "hidden": 32, "init_std": 0.1},
}
CRITIC_SECTIONS = {
    "bilinear": {"name": "bilinear"},
    "separable": {"name": "separable", "hidden": 16, "out": 16},
    "concat": {"name": "concat", "hidden": 16, "chunk": 300},
    "inner": {"name": "inner"},
    "cosine": {"name": "cosine"},
}


def config(encoder="mlp", critic="bilinear", estimator="nce", steps=20, **eval_extra):
    return {
        "data": {"name": "digits"},
        "encoder": ENCODER_SECTIONS[encoder],
        "critic": CRITIC_SECTIONS[critic],
        "estimator": estimator if isinstance(estimator, dict) else {"name": estimator},
        "train": {"steps": steps, "batch_size": 32, "lr": 1e-4},
        "eval": {"every": 10, "probe": "torch", "bound_batches": 2, **eval_extra},
    }


def alone(cfg, seed):
    return list(Trainer(dict(cfg, seed=seed)).run())


def trained_alone(cfg, seed):
    t = Trainer(dict(cfg, seed=seed))
    return t, list(t.run())


def column(pack_records, r):
    return [recs[r] for recs in pack_records if recs[r] is not None]


def assert_same_records(single, packed, rel=1e-4, abs_=1e-5, probe_tol=1 / N_TEST):
    assert len(single) == len(packed)
    for a, b in zip(single, packed):
        assert a.keys() == b.keys()
        for key, va in a.items():
            vb = b[key]
            if key == "wall_s":
                continue
            if key == "probe_accuracy" and va is not None:
                assert abs(va - vb) <= probe_tol + 1e-6, (key, a["step"], va, vb)  # float32 means
            elif isinstance(va, float):
                assert vb == pytest.approx(va, rel=rel, abs=abs_), (key, a["step"], va, vb)
            else:
                assert va == vb, key


def assert_pack_matches_trainer(cfg, seeds=(0, 1), **tol):
    pack = PackedTrainer(cfg, list(seeds))
    packed = list(pack.run())
    for r, seed in enumerate(seeds):
        trainer, single = trained_alone(cfg, seed)
        assert_same_records(single, column(packed, r), **tol)
        if pack.alive[r]:  # the final encoders: g1 of replicate r is g1 of its seed trained alone
            x = pack.data.eval_batches("test", 200, 1, torch.Generator().manual_seed(5))[0][0]
            idx = torch.tensor([r])
            torch.testing.assert_close(pack._features([x], idx)[0], trainer.features(x), rtol=1e-4, atol=1e-5)
    return packed


# ------------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("critic", sorted(CRITIC_SECTIONS))
@pytest.mark.parametrize("encoder", sorted(ENCODER_SECTIONS))
def test_replicate_in_a_pack_matches_its_seed_alone(encoder, critic):
    packed = assert_pack_matches_trainer(config(encoder, critic), probe_tol=PROBE_TOL.get(encoder, 1 / N_TEST))
    assert [recs[0]["step"] for recs in packed] == [0, 10, 20]
    # the replicates really are different trials
    assert packed[-1][0]["bound_train"] != packed[-1][1]["bound_train"]


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_matches_alone(estimator):
    # MINE's moving average and TUBA's learnt baseline are per-replicate state
    assert_pack_matches_trainer(config(estimator=estimator))


def test_target_loss_and_a_pack_of_three():
    assert_pack_matches_trainer(config(estimator={"name": "nwj", "target": 0.5}), seeds=(5, 0, 9))


def test_a_pack_of_one_is_trainer():
    assert_pack_matches_trainer(config("convnet", "concat"), seeds=(3,))


def test_an_encoder_without_parameters():
    cfg = dict(config(), encoder={"name": "identity"})
    assert_pack_matches_trainer(cfg)
    assert PackedTrainer(cfg, [0]).param_counts()["g1"] == 0


def test_noisy_views_draw_their_own_noise_per_replicate():
    # noise makes the probe's inputs differ per replicate (no shared feature pass)
    cfg = dict(config("mlp", "separable"), data={"name": "digits", "noise": 0.1})
    assert_pack_matches_trainer(cfg)


def test_jacobian_diagnostics_match_alone():
    cfg = config("residual-mlp", "bilinear", jacobian=True, jacobian_batch=40)
    packed = assert_pack_matches_trainer(cfg)
    assert all("log_cond_p50" in recs[0] for recs in packed)


def test_sklearn_probe_and_probe_train_size():
    assert_pack_matches_trainer(config(probe="sklearn", probe_train_size=500))


def test_no_probe_on_gaussian_data():
    cfg = dict(config("realnvp", "concat", probe="none"), data={"name": "gaussian", "dim": 4, "mi": 1.0})
    packed = assert_pack_matches_trainer(cfg)
    assert packed[0][0]["probe_accuracy"] is None


ADVERSARIAL = {
    "data": {"name": "digits"},
    "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
    "train": {"steps": 10, "batch_size": 32, "mode": "adversarial"},
    "adversarial": {"warmup": 5, "classifier_steps": 2, "encoder_lr": 1e-4},
    "eval": {"every": 5, "probe": "torch", "bound_batches": 2},
}


def test_adversarial_mode_matches_alone():
    packed = assert_pack_matches_trainer(ADVERSARIAL)
    assert all("classifier_accuracy" in recs[1] for recs in packed)


def test_adversarial_replicate_hands_off_to_trainer():
    pack = PackedTrainer(ADVERSARIAL, [1, 2])
    tail = []
    for recs in pack.run():
        if recs[0]["step"] == 5:
            state = pack.replicate_state_dict(0)
        elif recs[0]["step"] > 5:
            tail.append(recs[0])
    handed = Trainer(dict(ADVERSARIAL, seed=1))
    handed.load_state_dict(state)
    assert handed._warm
    assert_same_records(list(handed.run()), tail)


def test_param_counts_and_start_records_are_trainers():
    cfg = config("realnvp", "separable", estimator="tuba")
    pack = PackedTrainer(cfg, [4, 2])
    for r, seed in enumerate([4, 2]):
        t = Trainer(dict(cfg, seed=seed))
        assert pack.param_counts() == t.param_counts()
        assert pack.start_record()[r] == t.start_record()


def test_initial_weights_are_the_seeds_own():
    cfg = config("realnvp", "bilinear")
    pack = PackedTrainer(cfg, [7, 8])
    for r, seed in enumerate([7, 8]):
        mods = Trainer(dict(cfg, seed=seed))._modules()
        for name in ("g1", "g2", "critic"):
            state = pack._stacks()[name].replicate_state(r)
            for key, value in mods[name].state_dict().items():
                assert torch.equal(state[key], value), (name, key)  # permutations included


# ------------------------------------------------------------------------------ checkpoints


def strip(packed):
    return [[None if rec is None else {k: v for k, v in rec.items() if k != "wall_s"} for rec in recs]
            for recs in packed]


@pytest.mark.parametrize("estimator", ["mine", "tuba"])
def test_save_and_load_continue_exactly(estimator, tmp_path):
    cfg = config(estimator=estimator, steps=30)
    full = strip(PackedTrainer(cfg, [0, 1]).run())
    pack = PackedTrainer(cfg, [0, 1])
    head = []
    for recs in pack.run():
        head.append(recs)
        if recs[0]["step"] == 10:
            pack.save(tmp_path / "pack.pt")
            break
    resumed = PackedTrainer(cfg, [0, 1])
    resumed.load(tmp_path / "pack.pt")
    assert resumed.step == 10
    assert strip(head) + strip(resumed.run()) == full  # bit for bit, nothing evaluated twice


def test_checkpoint_of_other_seeds_or_config_is_refused(tmp_path):
    cfg = config()
    PackedTrainer(cfg, [0, 1]).save(tmp_path / "p.pt")
    with pytest.raises(ConfigError, match="seeds"):
        PackedTrainer(cfg, [0, 2]).load(tmp_path / "p.pt")
    other = copy.deepcopy(cfg)
    other["train"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="different trial config"):
        PackedTrainer(other, [0, 1]).load(tmp_path / "p.pt")
    Trainer(dict(cfg, seed=0)).save(tmp_path / "t.pt")
    with pytest.raises(ValueError, match="not a pack checkpoint"):
        PackedTrainer(cfg, [0]).load(tmp_path / "t.pt")


@pytest.mark.parametrize("estimator", ["nce", "mine", "tuba"])
def test_a_replicate_hands_off_to_trainer(estimator):
    """Replicate r's exported state is its seed's Trainer state (weights, Adam moments, RNG), and a
    Trainer loading it continues as the pack does."""
    cfg = config(estimator=estimator, steps=30)
    pack = PackedTrainer(cfg, [3, 4])
    tail = []
    for recs in pack.run():
        if recs[1]["step"] == 10:
            state = pack.replicate_state_dict(1)
        elif recs[1]["step"] > 10:
            tail.append(recs[1])

    alone_t = Trainer(dict(cfg, seed=4))
    for rec in alone_t.run():
        if rec["step"] == 10:
            break
    own = alone_t.state_dict()
    # InfoNCE with a bilinear critic is blind to a shift of all of g2's outputs (it adds a constant to
    # each row of scores), so the gradient of g2's last bias is zero but for rounding, which Adam
    # scales up to steps of size lr: that bias is rounding noise in both runs.
    blind = {("g2", "net.2.bias")} if estimator == "nce" else set()
    assert state.keys() == own.keys()
    for name, mod in own["modules"].items():
        assert state["modules"][name].keys() == mod.keys()
        for key, value in mod.items():
            if (name, key) in blind:
                continue
            torch.testing.assert_close(state["modules"][name][key], value, rtol=1e-3, atol=1e-5)
    assert state["opt"]["param_groups"] == own["opt"]["param_groups"]
    assert state["opt"]["state"].keys() == own["opt"]["state"].keys()
    for i, st in own["opt"]["state"].items():
        for key, value in st.items():  # Adam's moments: R Adams in one
            torch.testing.assert_close(state["opt"]["state"][i][key], value, rtol=1e-3, atol=1e-9)
    assert torch.equal(state["gen"], own["gen"])
    assert (state["step"], state["last_eval"], state["config"]) == (own["step"], own["last_eval"], own["config"])

    handed = Trainer(dict(cfg, seed=4))
    handed.load_state_dict(state)
    assert_same_records(list(handed.run()), tail)


# ------------------------------------------------------------------------------ divergence


def nan_at(estimator, call: int):
    real = estimator.loss
    calls = {"n": 0}

    def loss(est):
        calls["n"] += 1
        out = real(est)
        return out * float("nan") if calls["n"] == call else out

    return loss


def test_a_diverged_replicate_stops_and_the_others_go_on(monkeypatch):
    cfg = config(steps=30)
    pack = PackedTrainer(cfg, [0, 1, 2])
    pack.set_vmap(False)  # one loss per replicate, so that replicate 1's alone can turn NaN
    monkeypatch.setattr(pack.estimators[1], "loss", nan_at(pack.estimators[1], 15))
    packed = list(pack.run())
    # The losses are read at the evaluation at step 20 (not every step): replicate 1's diverged record comes
    # then, with the step it happened at, and the others' evaluations in the same list.
    assert [[rec is not None for rec in recs] for recs in packed] == [
        [True, True, True], [True, True, True], [True, True, True], [True, False, True]]
    assert [rec["event"] for rec in packed[2]] == ["eval", "diverged", "eval"] and packed[2][1]["step"] == 15

    lone = Trainer(dict(cfg, seed=1))
    monkeypatch.setattr(lone.estimator, "loss", nan_at(lone.estimator, 15))
    lone_records = list(lone.run())
    assert lone_records[-1]["event"] == "diverged"
    assert_same_records(lone_records, column(packed, 1))
    for r in (0, 2):  # the others, evaluated without replicate 1 from step 20 on
        assert_same_records(alone(cfg, r), column(packed, r))
    assert pack.alive == [True, False, True]


def test_a_pack_whose_replicates_all_diverge_stops(monkeypatch):
    pack = PackedTrainer(config(steps=30), [0, 1])
    pack.set_vmap(False)
    for est in pack.estimators:
        monkeypatch.setattr(est, "loss", nan_at(est, 3))
    packed = list(pack.run())
    assert pack.step == 10  # found at the next read of the losses, the evaluation at step 10
    assert [(rec["event"], rec["step"]) for rec in packed[-1]] == [("diverged", 3), ("diverged", 3)]


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_stateless_estimators_are_vmapped_over_the_pack(estimator):
    pack = PackedTrainer(config(estimator=estimator), [0, 1])
    stateful = any(True for e in pack.estimators for _ in (*e.parameters(), *e.buffers()))
    assert pack.vmapped != stateful
    assert stateful == (estimator in ("mine", "tuba"))  # MINE's moving average, TUBA's learned baseline


def test_losses_are_read_every_sync_every_steps_between_evaluations(monkeypatch):
    import mimax.trainables.packed as packed_mod

    monkeypatch.setattr(packed_mod, "SYNC_EVERY", 4)
    pack = PackedTrainer(config(steps=30), [0, 1])
    pack.set_vmap(False)
    monkeypatch.setattr(pack.estimators[0], "loss", nan_at(pack.estimators[0], 13))
    seen = []
    for recs in pack.run():
        seen.append((pack.step, [None if r is None else (r["event"], r["step"]) for r in recs]))
    # read at steps 4, 8, 10 (evaluation), 12, 16: the NaN of step 13 is found at step 16
    assert seen[2] == (16, [("diverged", 13), None])


# ------------------------------------------------------------------------------ batched pieces


def test_batched_probe_is_the_single_probe_per_replicate():
    """fit_torch_probes on R feature sets = TorchProbe.fit on each: the same L-BFGS path (evaluations),
    weights and accuracy; labels that are not 0..K-1; a constant feature; features far from [0, 1]."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 7, 9]).repeat_interleave(200)
    centres = torch.randn(3, 3, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5])[:, None, None]
    x = torch.stack([c[torch.arange(3).repeat_interleave(200)] for c in centres])
    x = x + 1.5 * torch.randn(x.shape, generator=g)
    x[1] = 50 + 10 * x[1]
    x[2, :, 4] = 3.0  # a constant feature
    x_test = x + 0.3 * torch.randn(x.shape, generator=g)
    x_test[2, :, 4] = 3.0  # (its weight is arbitrary: compare logits, not weights)
    # Early iterations (tol 0: no stop on a change at the float32 noise floor): the very same path.
    # Then the protocol's settings, which may stop an iteration apart at that noise floor: near one optimum.
    for params, tol in (({"max_iter": 4, "tol": 0}, 1e-4), ({"max_iter": 4, "tol": 0, "precond_rows": 0}, 1e-4),
                        ({}, 1e-2), ({"max_iter": 30}, 1e-2)):
        probe = TorchProbe(parse_params(TorchProbe, params, "eval.probe"))
        fitted = fit_torch_probes(probe, x, labels)
        scores = fitted.scores(x_test, labels)
        for r in range(3):
            one = probe.fit(x[r], labels)
            if params.get("tol") == 0:
                assert int(fitted.n_evals[r]) == one.n_evals
            torch.testing.assert_close(fitted.logits(x_test)[r], one.logits(x_test[r]), rtol=tol, atol=tol)
            torch.testing.assert_close(fitted.bias[r], one.bias, rtol=tol, atol=tol)
            assert scores[r] == one.score(x_test[r], labels)
        assert len(set(scores)) > 1  # really three different problems


@pytest.mark.parametrize("encoder", ["mlp", "convnet", "realnvp-affine"])
def test_stacked_modules_compute_what_each_module_computes(encoder):
    section = dict(ENCODER_SECTIONS[encoder])
    cls = ENCODERS[section.pop("name")]
    params = cls.Params(**section)
    view = ViewSpec(32, (1, 4, 8))
    mods = []
    for seed in range(3):
        torch.manual_seed(seed)
        mods.append(cls(params, view))
    stack = Stacked(mods)
    x = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(stack(x), torch.stack([m(x[r]) for r, m in enumerate(mods)]))
        torch.testing.assert_close(stack(x[0], shared=True), torch.stack([m(x[0]) for m in mods]))
        sub = stack(x[[2, 0]], idx=torch.tensor([2, 0]))
        torch.testing.assert_close(sub, torch.stack([mods[2](x[2]), mods[0](x[0])]))
    for r, m in enumerate(mods):  # weights as each module holds them, whatever the stack's storage
        state = stack.replicate_state(r)
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in m.state_dict().items()}
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert all(leaf.is_contiguous() for leaf in stack.parameters())  # fused Adam needs one layout


def test_stacked_jacobian_condition_numbers_are_each_encoders():
    view = ViewSpec(12)
    cls = ENCODERS["residual-mlp"]
    mods = []
    for seed in range(3):
        torch.manual_seed(seed)
        mods.append(cls(cls.Params(layers=3, init_std=0.2), view))
    x = torch.randn(3, 40, 12, generator=torch.Generator().manual_seed(1))
    got = stacked_log_condition_numbers(Stacked(mods), x, chunk=16)
    for r, m in enumerate(mods):
        torch.testing.assert_close(got[r], log_condition_numbers(m, x[r]), rtol=1e-4, atol=1e-5)
    sub = stacked_log_condition_numbers(Stacked(mods), x[[0, 2]], idx=torch.tensor([0, 2]))
    torch.testing.assert_close(sub, got[[0, 2]], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ pack size


def mnist_config(encoder):
    return {"data": {"name": "mnist"}, "encoder": encoder, "critic": "bilinear", "estimator": "nce",
            "train": {"steps": 10}, "eval": {"every": 10, "probe": "none"}}


def test_a_realnvp_packs_fewer_than_an_mlp():
    realnvp, mlp = mnist_config({"name": "realnvp"}), mnist_config({"name": "mlp"})
    # parameters alone: weights, gradients and Adam's two moments in float32, two encoders + critic
    # (the paper's counts: RealNVP 13,922,040, MLP 238,300 per encoder; bilinear 392² or 100²)
    assert replicate_bytes(realnvp) >= 16 * (2 * 13_922_040 + 392 * 392)
    assert 16 * (2 * 238_300 + 100 * 100) <= replicate_bytes(mlp) < replicate_bytes(realnvp) / 10
    free = 8 << 30
    small, large = auto_pack_size(realnvp, 64, free_bytes=free), auto_pack_size(mlp, 64, free_bytes=free)
    assert 1 <= small < large <= 64
    assert small <= 0.7 * free / (16 * 2 * 13_922_040)
    assert auto_pack_size(realnvp, 64, free_bytes=1 << 20) == 1  # never less than one
    assert auto_pack_size(mlp, 5, free_bytes=1 << 40) == 5  # never more than the seeds


def test_cpu_free_memory_comes_from_meminfo():
    from mimax.trainables.packed import free_memory

    with open("/proc/meminfo") as fh:
        total = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal:"))
    assert 0 < free_memory("cpu") <= total
    assert auto_pack_size(config(), 3, device="cpu") == 3  # a tiny model fits thrice


# ------------------------------------------------------------------------------ train_packs


def by_seed(items):
    out: dict[int, list] = {}
    for seed, rec in items:
        out.setdefault(seed, []).append(rec)
    return out


def test_train_packs_yields_every_seeds_records():
    cfg = config()
    got = by_seed(train_packs(cfg, [0, 1, 2], pack=2))
    assert sorted(got) == [0, 1, 2]
    for seed, records in got.items():
        assert_same_records(alone(cfg, seed), records)


def test_train_packs_halves_a_pack_that_runs_out_of_memory(monkeypatch):
    real = PackedTrainer.train_step
    sizes = []

    def train_step(self):
        sizes.append(self.size)
        if self.size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self)

    monkeypatch.setattr(PackedTrainer, "train_step", train_step)
    cfg = config()
    got = by_seed(train_packs(cfg, [0, 1, 2], pack=4))
    assert sizes[:2] == [3, 2] and set(sizes[2:]) == {1}  # 4 -> 3 seeds, then 2, then 1
    for seed, records in got.items():
        assert_same_records(alone(cfg, seed), records)  # step 0 reported once


def test_train_packs_raises_late_or_other_errors(monkeypatch):
    real = PackedTrainer.train_step

    def late(self):
        if self.step == 12:
            raise RuntimeError("CUDA error: out of memory")
        return real(self)

    monkeypatch.setattr(PackedTrainer, "train_step", late)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(train_packs(config(), [0, 1], pack=2))  # step 10 was already reported: no silent re-run

    def broken(self):
        raise RuntimeError("something else")

    monkeypatch.setattr(PackedTrainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="something else"):
        list(train_packs(config(), [0, 1], pack=2))


def test_bad_seeds_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        PackedTrainer(config(), [])
    with pytest.raises(ValueError, match="distinct"):
        PackedTrainer(config(), [1, 1])
    with pytest.raises(ConfigError, match="^train.batch_size"):
        PackedTrainer(dict(config(), train={"steps": 1, "batch_size": 1}), [0])


def test_auto_packs_nothing_on_cpu_when_a_full_probe_dominates():
    mnist = dict(config(), data={"name": "mnist"})
    assert auto_pack_size(mnist, 3, device="cpu") == 1  # 60,000 probe images: one trial per seed
    assert auto_pack_size(dict(mnist, eval={**mnist["eval"], "probe_train_size": 2000}), 3, device="cpu") == 3
    assert auto_pack_size(dict(mnist, eval={**mnist["eval"], "probe": "none"}), 3, device="cpu") == 3
    assert auto_pack_size(config(), 3, device="cpu") == 3  # digits: 1,347 probe images
    # with a GPU's memory given, the probe rule does not apply
    assert auto_pack_size(mnist, 3, free_bytes=1 << 40) == 3


def test_auto_pack_takes_a_share_of_free_memory():
    mlp = config()
    whole = auto_pack_size(mlp, 10**6, device="cpu")
    assert 0 < auto_pack_size(mlp, 10**6, device="cpu", share=0.25) <= whole // 4 + 1
