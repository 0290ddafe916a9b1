import pytest

from mimax.trainables.data import DATASETS


@pytest.fixture
def poison(monkeypatch):
    """poison({seed: step}): the training batch of that step (1-based) of the run with that seed is NaN.
    A replicate's training generator is seeded with its seed, in the trainer as in the reference;
    evaluation batches are drawn otherwise, so they stay clean."""
    real = DATASETS["digits"].train_batch
    plan: dict[int, int] = {}
    calls: dict[int, int] = {}
    seen: list = []  # keeps every generator alive, so no later one reuses its id and its count

    def train_batch(self, k, gen):
        x1, x2 = real(self, k, gen)
        if id(gen) not in calls:
            seen.append(gen)
        calls[id(gen)] = calls.get(id(gen), 0) + 1
        return (x1 * float("nan"), x2) if plan.get(gen.initial_seed()) == calls[id(gen)] else (x1, x2)

    monkeypatch.setattr(DATASETS["digits"], "train_batch", train_batch)
    return plan.update
