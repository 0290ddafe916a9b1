"""Memory sizing of packs and the out-of-memory driver, with real trainers: the estimate grows with the
model, the pack size with the free memory, and a pack that runs out of memory before its first step
splits having reported nothing (the members then train in smaller packs and give the reference's
records), while later failures are raised."""

from __future__ import annotations

import pytest
import torch

from mimax.trainables.loop import Trainer
from mimax.trainables.memory import auto_pack_size, free_memory, replicate_bytes, start_or_split
from reference import reference_records
from test_packed import assert_same_records, config


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


def test_an_adversarial_replicate_is_sized_too():
    adversarial = {"data": "digits", "encoder": {"name": "realnvp", "layers": 2}, "train": {"steps": 1, "mode": "adversarial"},
                   "eval": {"every": 1, "probe": "none"}}
    params = 2 * (16 * 512 + 512 + 512 * 512 + 512 + 512 * 16 + 16) + 32 * 10 + 10  # 2 couplings + classifier
    assert replicate_bytes(adversarial) >= 16 * params


def test_cpu_free_memory_comes_from_meminfo():
    with open("/proc/meminfo") as fh:
        total = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal:"))
    assert 0 < free_memory("cpu") <= total
    assert auto_pack_size(config(), 3, device="cpu") == 3  # a tiny model fits thrice


def test_auto_packs_nothing_on_cpu_when_a_full_probe_dominates():
    mnist = dict(config(), data={"name": "mnist"})
    assert auto_pack_size(mnist, 3, device="cpu") == 1  # 60,000 probe images: one trial per seed
    assert auto_pack_size(dict(mnist, eval={**mnist["eval"], "probe_train_size": 2000}), 3, device="cpu") == 3
    assert auto_pack_size(dict(mnist, eval={**mnist["eval"], "probe": "none"}), 3, device="cpu") == 3
    assert auto_pack_size(config(), 3, device="cpu") == 3  # digits: 1,347 probe images
    # with a GPU's memory given, the probe rule does not apply
    assert auto_pack_size(mnist, 3, free_bytes=1 << 40) == 3


def test_auto_pack_takes_a_share_of_free_memory(monkeypatch):
    # One reading of free memory for both calls: other processes freeing memory between two real readings
    # made this fail under load (271 > 1073 // 4 + 1).
    import mimax.trainables.memory as memory
    free = memory.free_memory(memory.resolve_device("cpu"))
    monkeypatch.setattr(memory, "free_memory", lambda dev: free)
    mlp = config()
    whole = auto_pack_size(mlp, 10**6, device="cpu")
    assert 0 < auto_pack_size(mlp, 10**6, device="cpu", share=0.25) <= whole // 4 + 1


# ------------------------------------------------------------------------------ start or split


def train_in_packs(cfg, seeds, size):
    """What the searcher and the Ray adapter do together: packs of ``size``, split when told to.
    Yields (seed, record)."""
    queue = [(list(seeds), size)]
    while queue:
        members, size = queue.pop(0)
        chunk, rest = members[:size], members[size:]
        if rest:
            queue.insert(0, (rest, size))
        started = start_or_split(lambda: Trainer(cfg, chunk), len(chunk), len(chunk))
        if isinstance(started, int):
            queue.insert(0, (chunk, started))
            continue
        _, outputs = started
        for out in outputs:
            yield from ((chunk[r], rec) for r, rec in enumerate(out) if rec is not None)


def by_seed(items):
    out: dict[int, list] = {}
    for seed, rec in items:
        out.setdefault(seed, []).append(rec)
    return out


def test_a_pack_that_runs_out_of_memory_before_its_first_step_splits_and_reports_once(monkeypatch):
    real = Trainer.train_step
    sizes = []

    def train_step(self):
        sizes.append(self.size)
        if self.size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    cfg = config()
    got = by_seed(train_in_packs(cfg, [0, 1, 2], 3))
    assert sizes[:2] == [3, 1] and set(sizes[2:]) == {1}  # 3 seeds: halved to 1 (3 // 2)
    assert sorted(got) == [0, 1, 2]
    for seed, records in got.items():
        assert_same_records(reference_records(cfg, seed), records)  # step 0 reported once


def test_a_pack_that_fits_gives_every_seeds_records():
    cfg = config()
    got = by_seed(train_in_packs(cfg, [0, 1, 2], 2))
    for seed, records in got.items():
        assert_same_records(reference_records(cfg, seed), records)


def test_late_or_other_errors_are_raised(monkeypatch):
    real = Trainer.train_step

    def late(self):
        if self.step == 12:
            raise RuntimeError("CUDA error: out of memory")
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", late)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(train_in_packs(config(), [0, 1], 2))  # step 10 was already reported: no silent re-run

    def broken(self):
        raise RuntimeError("something else")

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="something else"):
        list(train_in_packs(config(), [0, 1], 2))


def test_a_lone_trial_out_of_memory_is_raised(monkeypatch):
    def oom(self):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Trainer, "train_step", oom)
    with pytest.raises(RuntimeError, match="out of memory"):  # a single replicate has nowhere to go
        start_or_split(lambda: Trainer(config(), [0]), 1, 1)
