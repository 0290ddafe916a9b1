"""The speed switches train.precision (bf16 autocast) and train.compile (torch.compile): validated like
every config key, really in effect during training, absent from evaluation, and, against the default
float32 eager run of the same seed as the oracle, close (bf16) or equal within float rounding (compile)."""

from __future__ import annotations

import pytest
import torch

from mimax.errors import ConfigError
from mimax.storage.store import config_hash
from mimax.trainables.config import validate
from mimax.trainables.loop import Trainer


def with_train(cfg, **train):
    return dict(cfg, train=dict(cfg["train"], **train))


def test_defaults_are_left_out_of_the_stored_config(small_config):
    # A config stored before the switches existed must hash (replicate groups) and compare (checkpoints)
    # as the same config.
    stored = validate(small_config).to_dict()
    assert "precision" not in stored["train"] and "compile" not in stored["train"]
    explicit = validate(with_train(small_config, precision="fp32", compile="none")).to_dict()
    assert explicit == stored and config_hash(explicit) == config_hash(stored)
    bf16 = validate(with_train(small_config, precision="bf16", compile="default")).to_dict()
    assert (bf16["train"]["precision"], bf16["train"]["compile"]) == ("bf16", "default")
    assert config_hash(bf16) != config_hash(stored)


@pytest.mark.parametrize("key,value", [("precision", "fp16"), ("compile", "max-speed"), ("compile", True)])
def test_unknown_switch_values_are_errors_naming_the_key(small_config, key, value):
    with pytest.raises(ConfigError) as err:
        validate(with_train(small_config, **{key: value}))
    assert f"train.{key}" in str(err.value)


def test_switches_are_refused_in_adversarial_mode():
    cfg = {"data": {"name": "digits"}, "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
           "train": {"steps": 10, "mode": "adversarial", "precision": "bf16"}, "eval": {"every": 5}}
    with pytest.raises(ConfigError, match="train.precision"):
        validate(cfg)


def record_dtypes(module: torch.nn.Module, seen: list):
    return module.register_forward_hook(lambda _m, _i, out: seen.append((module.training, out.dtype)))


def test_bf16_runs_the_encoders_in_bf16_for_training_only(small_config):
    trainer = Trainer(with_train(small_config, precision="bf16", steps=3))
    seen = []
    record_dtypes(trainer.stacks["g1"].module, seen)
    records = [rec for (rec,) in trainer.run()]
    assert {dt for training, dt in seen if training} == {torch.bfloat16}
    assert {dt for training, dt in seen if not training} == {torch.float32}  # evaluation
    assert records[-1]["event"] == "eval" and records[-1]["step"] == 3


def bound_and_probe(outputs):
    return [(out[0]["step"], out[0]["bound_test"], out[0]["probe_accuracy"]) for out in outputs]


def test_bf16_training_stays_close_to_float32(small_config):
    cfg = with_train(small_config, steps=200)
    cfg["eval"] = dict(cfg["eval"], every=100)
    fp32 = bound_and_probe(list(Trainer(cfg).run()))
    bf16 = bound_and_probe(list(Trainer(with_train(cfg, precision="bf16")).run()))
    assert fp32[-1][1] > fp32[0][1] + 0.5  # it learned something for the comparison to mean anything
    assert bf16 != fp32  # bf16 rounding did change the trajectory
    for (step, b32, p32), (_, b16, p16) in zip(fp32, bf16):
        # bf16 keeps 8 bits (eps 2^-8 ≈ 0.004): scores of size ~3 carry ~0.01 each, and the bound averages
        # them over K pairs and K rows; 0.02 nats is that rounding, not a change of the estimate (log K = 3.47)
        assert b16 == pytest.approx(b32, abs=0.02), step
        assert abs(p16 - p32) <= 0.01, step


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["nce", "mine"])  # stateless: all compiled; stateful: scores only
def test_compiled_training_matches_eager(small_config, estimator):
    cfg = dict(small_config, estimator={"name": estimator})
    eager = bound_and_probe(list(Trainer(cfg).run()))
    before = graphs_compiled()
    compiled = bound_and_probe(list(Trainer(with_train(cfg, compile="default")).run()))
    assert graphs_compiled() > before
    packed = Trainer(with_train(cfg, compile="default"), [0, 1])
    packed_first = bound_and_probe(packed.run())
    for other in (compiled, packed_first):
        for (step, b, p), (_, b2, p2) in zip(eager, other):
            assert b2 == pytest.approx(b, rel=1e-4, abs=1e-5), step  # fused kernels' rounding: test_packed's bound
            assert abs(p2 - p) <= 1 / 450 + 1e-6, step  # at most one digits test prediction
