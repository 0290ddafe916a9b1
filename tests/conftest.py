import os
from collections import Counter, defaultdict

import pytest
import torch
from ray_cluster import two_node_cluster  # noqa: F401 - a fixture for tests/study and tests/plugins
from requires import FOUND

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


# A test that found a system package (tests/requires.py) says so on its reports.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    what = FOUND.get(item.nodeid)
    if what and ("requires", what) not in item.user_properties:
        item.user_properties.append(("requires", what))  # copied into this and the later phases' reports


# What each fault test measured (tests/faults, recorded with record_property("fault", line)), printed at
# the end of the run so that it lands in CI's log; here, not in tests/faults, so that xdist's controller
# (which collects nothing) has the hook.
def pytest_terminal_summary(terminalreporter):
    reports = [rep for reports in terminalreporter.stats.values() for rep in reports
               if getattr(rep, "when", None) == "call"]
    lines = sorted({value for rep in reports for key, value in rep.user_properties if key == "fault"})
    if lines:
        terminalreporter.section("faults: what each fault test measured")
        for line in lines:
            terminalreporter.write_line(line)
    outcomes: dict[str, Counter] = defaultdict(Counter)
    for rep in reports:
        for key, what in rep.user_properties:
            if key == "requires":
                outcomes[what][rep.outcome] += 1
    if outcomes:
        terminalreporter.section("system packages: the tests that found and used them")
        for what, counts in sorted(outcomes.items()):
            terminalreporter.write_line(f"{what}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
