"""The training loop of a lone trial: deterministic, resumable from a checkpoint (also one written by the
trainers of mimax before the single trainer), honest about evaluation and divergence; ``mimax train``."""

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mimax.cli import main
from mimax.trainables.loop import CHECKPOINT_VERSION, Trainer
from reference import reference_records

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1"


def strip(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def lone(config):
    """The records of a lone trial."""
    return [out for (out,) in Trainer(config).run()]


def test_same_seed_same_records_other_seed_differs(small_config):
    a = strip(lone(small_config))
    b = strip(lone(small_config))
    assert a == b
    assert [r["step"] for r in a] == [0, 10, 20, 30]
    other = dict(small_config, seed=1)
    assert strip(lone(other)) != a


def test_a_lone_trial_matches_the_reference(small_config):
    expected, got = reference_records(small_config, 0), lone(small_config)
    assert [r.keys() - {"wall_s"} for r in got] == [r.keys() for r in expected]
    for a, b in zip(expected, got):
        for key in ("bound_train", "bound_test", "loss"):
            # float32 sums over a batch (≤ K·eps32 ≈ 1.5e-5 relative), 20 steps at a small learning rate
            # (test_packed.py's bound): within 1e-4 on any x86 kernel
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (key, a["step"])
        assert abs(a["probe_accuracy"] - b["probe_accuracy"]) <= 1 / 450 + 1e-6


def test_resume_from_checkpoint_continues_exactly(small_config, tmp_path):
    full = strip(lone(small_config))
    t = Trainer(small_config)
    head = []
    for (rec,) in t.run():
        head.append(rec)
        if rec["step"] == 10:
            t.save(tmp_path / "ckpt.pt")
            break
    resumed = Trainer(small_config)
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.step == 10
    tail = [rec for (rec,) in resumed.run()]
    assert strip(head) + strip(tail) == full  # no step evaluated twice, none lost


def test_checkpoint_of_another_config_is_refused(small_config, tmp_path):
    t = Trainer(small_config)
    t.save(tmp_path / "c.pt")
    other = copy.deepcopy(small_config)
    other["train"]["lr"] = 0.5
    with pytest.raises(ValueError, match="different trial config"):
        Trainer(other).load(tmp_path / "c.pt")


def test_evaluating_does_not_change_the_training_trajectory(small_config):
    sparse = copy.deepcopy(small_config)
    sparse["eval"]["every"] = 30
    dense_last = lone(small_config)[-1]
    sparse_last = lone(sparse)[-1]
    for key in ("bound_train", "bound_test", "probe_accuracy"):
        # the same kernels on the same numbers: equal up to float32 sums of K ≤ 32 terms (~eps32 · K ≈ 4e-6
        # on a bound of ~1; the evaluations draw from their own generators, never the training's)
        assert dense_last[key] == pytest.approx(sparse_last[key], rel=1e-6, abs=1e-7)


def test_nce_bound_never_exceeds_log_k(small_config):
    for rec in lone(small_config):
        assert rec["bound_train"] <= math.log(32) + 1e-6
        assert rec["bound_test"] <= math.log(32) + 1e-6


def test_divergence_is_recorded_and_stops(small_config, poison):
    poison({0: 15})
    t = Trainer(small_config)
    recs = [rec for (rec,) in t.run()]
    assert recs[-1]["event"] == "diverged" and recs[-1]["step"] == 15
    assert [r["step"] for r in recs] == [0, 10, 15]
    assert t.step == 20  # found at the next read of the losses, the evaluation at step 20
    assert t.last_records == [recs[-1]]


def test_target_loss_is_distance_to_target(small_config):
    cfg = copy.deepcopy(small_config)
    cfg["estimator"]["target"] = 1.5
    (rec,) = next(Trainer(cfg).run())
    assert rec["loss"] == pytest.approx(abs(rec["bound_train"] - 1.5))


def test_jacobian_diagnostic_and_unlabelled_data():
    cfg = {
        "data": {"name": "gaussian", "dim": 4, "mi": 1.0},
        "encoder": {"name": "residual-mlp"},
        "critic": {"name": "bilinear"},
        "estimator": {"name": "nwj"},
        "train": {"steps": 4, "batch_size": 16, "lr": 1e-3},
        "eval": {"every": 4, "probe": "none", "bound_batches": 2, "jacobian": True, "jacobian_batch": 8},
    }
    recs = lone(cfg)
    assert recs[0]["probe_accuracy"] is None
    # A residual MLP starts as (almost) the identity: condition number ~ 1, log ~ 0.
    assert 0 <= recs[0]["log_cond_p50"] < 1e-2
    assert recs[0]["log_cond_p5"] <= recs[0]["log_cond_p50"] <= recs[0]["log_cond_p95"]
    t = Trainer(cfg)
    assert t.start_record()["true_mi"] == 1.0


def test_adversarial_mode_runs_rounds():
    cfg = {
        "data": {"name": "digits"},
        "encoder": {"name": "realnvp", "coupling": "affine", "layers": 2, "hidden": 16},
        "train": {"steps": 4, "batch_size": 32, "mode": "adversarial"},
        "adversarial": {"warmup": 20, "classifier_steps": 2},
        "eval": {"every": 2, "probe": "torch"},
    }
    recs = lone(cfg)
    assert [r["step"] for r in recs] == [0, 2, 4]
    assert all(0 <= r["classifier_accuracy"] <= 1 and 0 <= r["probe_accuracy"] <= 1 for r in recs)
    assert recs[0]["bound_train"] is None


def test_cli_json_lines(tmp_path, capsys, small_config):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(small_config))
    assert main(["train", str(f), "--json", "--set", "train.steps=20"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["event"] == "start"
    assert set(lines[0]["params"]) >= {"g1", "g2", "critic"}
    assert lines[0]["params"]["g1"] == 64 * 0 + (32 * 32 + 32) + (32 * 16 + 16)
    evals = lines[1:-1]
    assert [e["step"] for e in evals] == [0, 10, 20]
    for e in evals:
        assert e["event"] == "eval"
        assert set(e) >= {"step", "bound_train", "bound_test", "probe_accuracy", "loss", "wall_s"}
        assert 0 <= e["probe_accuracy"] <= 1
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == "completed"


def test_cli_checkpoint_resumes(tmp_path, capsys, small_config):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(small_config))
    ck = str(tmp_path / "run.pt")
    assert main(["train", str(f), "--json", "--checkpoint", ck, "--set", "train.steps=20"]) == 0
    capsys.readouterr()
    # Same config but more steps is another config, so use the full run and check nothing re-runs.
    assert main(["train", str(f), "--json", "--checkpoint", ck, "--set", "train.steps=20"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["event"] for r in lines] == ["start", "end"]  # already finished: nothing to redo


def assert_close_records(expected, got):
    """Within the tolerances of the equivalence tests (tests/trainables/test_packed.py)."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got):
        for key in ("bound_train", "bound_test", "loss"):
            # float32 sums over a batch (≤ K·eps32 ≈ 1.5e-5 relative), 20 steps at a small learning rate
            # (test_packed.py's bound): within 1e-4 on any x86 kernel
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (key, a["step"])
        assert abs(a["probe_accuracy"] - b["probe_accuracy"]) <= 1 / 450 + 1e-6


@pytest.mark.parametrize("name,seeds", [("trainer", None), ("pack", [0, 1])])
def test_a_version_1_checkpoint_resumes(name, seeds):
    """Checkpoints written at step 20 of 40 by the trainers of commit b524cb7 (a lone Trainer, a PackedTrainer
    of seeds 0 and 1) continue as those runs did uninterrupted."""
    config = json.loads((V1 / "config.json").read_text())
    expected = json.loads((V1 / f"{name}-records.json").read_text())
    expected = [expected] if seeds is None else expected
    trainer = Trainer(config, seeds)
    trainer.load(V1 / f"{name}-v1-step20.pt")
    assert trainer.step == 20 and trainer.last_eval == 20
    assert strip(r for r in trainer.last_records) == [recs[2] for recs in expected]  # re-reported after a restore
    outputs = list(trainer.run())
    for r, recs in enumerate(expected):
        assert_close_records(recs[3:], [out[r] for out in outputs])


def test_a_version_1_checkpoint_of_other_seeds_is_refused():
    config = json.loads((V1 / "config.json").read_text())
    with pytest.raises(ValueError, match=r"pack-v1-step20.pt: was written for seeds \[0, 1\], not \[0\]"):
        Trainer(config).load(V1 / "pack-v1-step20.pt")


def test_cli_continues_a_version_1_checkpoint(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(json.loads((V1 / "config.json").read_text())))
    ck = tmp_path / "old.pt"
    shutil.copy(V1 / "trainer-v1-step20.pt", ck)
    assert main(["train", str(f), "--json", "--checkpoint", str(ck)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["event"] for r in lines] == ["start", "eval", "eval", "end"]
    assert_close_records(json.loads((V1 / "trainer-records.json").read_text())[3:], lines[1:3])
    assert torch.load(ck, weights_only=False)["version"] == CHECKPOINT_VERSION  # saved anew after each evaluation


def test_cli_refuses_a_checkpoint_of_another_config_or_no_checkpoint(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    config = json.loads((V1 / "config.json").read_text())
    f.write_text(yaml.safe_dump(config))
    ck = tmp_path / "old.pt"
    shutil.copy(V1 / "trainer-v1-step20.pt", ck)
    assert main(["train", str(f), "--json", "--checkpoint", str(ck), "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert err == f"mimax: error: --checkpoint: {ck} was written by a different trial config\n"
    assert main(["train", str(f), "--json", "--checkpoint", str(ck), "--set", "seed=3"]) == 2
    assert capsys.readouterr().err == f"mimax: error: --checkpoint: {ck} was written for seeds [0], not [3]\n"
    ck.write_text("not a checkpoint")
    assert main(["train", str(f), "--json", "--checkpoint", str(ck)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mimax: error: --checkpoint: {ck} is not a mimax checkpoint") and err.count("\n") == 1


@pytest.mark.slow
def test_mnist_mlp_bilinear_nce_beats_its_step0_probe():
    cfg = {
        "data": {"name": "mnist"},
        "encoder": {"name": "mlp"},
        "critic": {"name": "bilinear"},
        "estimator": {"name": "nce"},
        "train": {"steps": 2000, "batch_size": 128, "lr": 1.0e-4},
        "eval": {"every": 2000, "probe": "torch"},
        "seed": 0,
    }
    first, last = lone(cfg)
    assert last["step"] == 2000
    assert last["probe_accuracy"] > first["probe_accuracy"] + 0.01, (first, last)
    assert last["bound_test"] > first["bound_test"]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["nce", "nwj", "smile"])
def test_gaussian_known_mi_within_a_tenth_of_a_nat(estimator):
    cfg = {
        "data": {"name": "gaussian", "dim": 2, "mi": 1.0},
        "encoder": {"name": "identity"},
        "critic": {"name": "concat", "hidden": 64},
        "estimator": {"name": estimator},
        "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3},
        "eval": {"every": 3000, "probe": "none", "bound_batches": 200},
        "seed": 0,
    }
    last = lone(cfg)[-1]
    assert abs(last["bound_test"] - 1.0) < 0.1, last


def test_the_train_summary_names_a_plugins_ceiling_plainly_and_nces_as_log_k(tmp_path, capsys, small_config,
                                                                             monkeypatch):
    """`mimax train`'s summary said "ceiling log K = 6.5373" of a plugin estimator whose ceiling is
    log(K / α) at K = 128."""
    from mimax.trainables.estimators import ESTIMATORS

    (tmp_path / "alpha_plugin.py").write_text(
        "import math\n"
        "from mimax.trainables.estimators import NCE\n"
        "from mimax.trainables.plugins import register\n\n\n"
        "class Alpha(NCE):\n"
        "    name = 'alpha-nce'\n\n"
        "    def ceiling(self, k):\n"
        "        return math.log(k / 0.1855)\n\n\n"
        "register('estimator', Alpha)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for estimator, want in (("alpha-nce", f"ceiling {math.log(128 / 0.1855):.4f} nats"),
                                ("nce", "ceiling log K = 4.8520 nats (K = 128)")):
            config = dict(small_config, plugins=["alpha_plugin"], estimator={"name": estimator},
                          train=dict(small_config["train"], steps=2, batch_size=128), eval={"every": 2, "probe": "none"})
            f = tmp_path / "c.yaml"
            f.write_text(yaml.safe_dump(config))
            assert main(["train", str(f)]) == 0
            out = capsys.readouterr().out
            assert want in out and "log K = 6.5" not in out, out
    finally:
        ESTIMATORS.pop("alpha-nce", None)
