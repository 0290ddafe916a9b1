import os

import pytest
import torch
from ray_cluster import two_node_cluster  # noqa: F401 - a fixture for tests/study and tests/plugins

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


# What each fault test measured (tests/faults, recorded with record_property("fault", line)), printed at
# the end of the run so that it lands in CI's log; here, not in tests/faults, so that xdist's controller
# (which collects nothing) has the hook.
def pytest_terminal_summary(terminalreporter):
    lines = sorted({value for reports in terminalreporter.stats.values() for rep in reports
                    for key, value in getattr(rep, "user_properties", ()) if key == "fault"})
    if lines:
        terminalreporter.section("faults: what each fault test measured")
        for line in lines:
            terminalreporter.write_line(line)
