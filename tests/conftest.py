import os

import pytest
import torch

# Tests run two at a time (pytest -n 2) on two cores: one thread each keeps them from fighting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def small_config():
    """A fast, valid trial config on scikit-learn's digits."""
    return {
        "data": {"name": "digits"},
        "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
        "critic": {"name": "bilinear"},
        "estimator": {"name": "nce"},
        "train": {"steps": 30, "batch_size": 32, "lr": 1e-3},
        "eval": {"every": 10, "probe": "torch", "bound_batches": 3},
        "seed": 0,
    }
