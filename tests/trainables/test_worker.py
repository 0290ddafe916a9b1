"""What a reused Ray worker resets before each trial and what it keeps (mimax.trainables.worker); the
end-to-end check on Ray is tests/study/test_worker_reuse.py."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mimax.trainables import worker
from mimax.trainables.critics import CRITICS, Bilinear
from mimax.trainables.data import Digits
from mimax.trainables.loop import Trainer
from mimax.trainables.plugins import BUILTIN


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_each_trial_starts_from_its_seed_whatever_ran_before(monkeypatch, threads):
    monkeypatch.setattr(worker, "_threads", None)
    worker.fresh(7)
    first = draws()
    threads_before = torch.get_num_threads()
    # what a trial may leave behind: used RNGs, another thread count, a registered component
    torch.set_num_threads(threads_before + 1)
    monkeypatch.setitem(CRITICS, "left-behind", type("Left", (Bilinear,), {"name": "left-behind"}))
    worker.fresh(7)
    assert draws() == first
    assert torch.get_num_threads() == threads_before
    assert CRITICS == BUILTIN["critic"]
    worker.fresh(8)
    assert draws() != first


def test_a_dataset_is_built_once_per_config_and_device(monkeypatch):
    monkeypatch.setattr(worker, "_datasets", type(worker._datasets)())
    built = []
    monkeypatch.setattr(Digits, "load", lambda self, load=Digits.load: built.append(1) or load(self))
    plain, noisy = Digits.Params(), Digits.Params(noise=0.1)
    a = worker.dataset(Digits, plain, "cpu")
    assert worker.dataset(Digits, Digits.Params(), "cpu") is a and len(built) == 1
    b = worker.dataset(Digits, noisy, "cpu")
    assert b is not a and b.params.noise == 0.1 and len(built) == 2
    worker.dataset(Digits, plain, "cpu")  # the most recent again: the noisy one is the oldest now
    worker.dataset(Digits, Digits.Params(noise=0.2), "cpu")  # a third: KEEP = 2, the noisy one goes
    assert worker.dataset(Digits, plain, "cpu") is a and len(built) == 3
    assert worker.dataset(Digits, noisy, "cpu") is not b and len(built) == 4


def test_a_trainer_on_a_cached_dataset_trains_as_on_its_own(small_config):
    config = dict(small_config, train=dict(small_config["train"], steps=6), eval={"every": 3, "probe": "none"})
    own = list(Trainer(config).run())
    worker.dataset(Digits, Digits.Params(), "cpu")  # cached, and used by an earlier trial
    list(Trainer(dict(config, seed=1), dataset=worker.dataset).run())
    cached = list(Trainer(config, dataset=worker.dataset).run())
    strip = lambda runs: [{k: v for k, v in r.items() if k != "wall_s"} for (r,) in runs]  # noqa: E731
    assert strip(cached) == strip(own)
