"""A study whose space uses the example plugin's critic and estimator on a real two-node Ray cluster on
loopback: it completes, resumes after its driver is killed, and analyses. The plugin is not installed: it
is on PYTHONPATH only, and the workers import it from the trial config's ``plugins`` list (the driver's
import does not reach them)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from example_plugin import EXAMPLE
from engine_helpers import evaluations, kill_group, query, run, start, trials, wait_for

pytestmark = pytest.mark.slow

STEPS, EVERY = 600, 100


def test_a_plugin_study_on_two_nodes_completes_resumes_and_analyses(example_on_path, two_node_cluster, tmp_path):
    space = yaml.safe_load((EXAMPLE / "space.yaml").read_text())
    space["budgets"]["test"] = {"description": "long enough to be killed mid-way", "seeds": 1,
                                "set": {"train.steps": STEPS, "eval.every": EVERY}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    where = ["--db", url, "--address", two_node_cluster.address, "--cpus-per-trial", "1"]

    proc = start("launch", path, "--name", "ex", "--budget", "test", *where, "--results-dir", tmp_path / "res",
                 "--quiet", cwd=tmp_path, log=tmp_path / "launch.log")
    try:
        wait_for(lambda: any((t["checkpoint_step"] or 0) >= EVERY and t["state"] == "running"
                             for t in trials(url, "ex").values()), timeout=240, proc=proc, every=0.1)
    finally:
        kill_group(proc)
    before = trials(url, "ex")
    assert not all(t["state"] == "completed" for t in before.values())

    r = run("resume", "ex", *where, "--quiet", cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr + (tmp_path / "launch.log").read_text()[-2000:]
    after = trials(url, "ex")
    assert len(after) == 4 and all(t["state"] == "completed" for t in after.values()), after
    assert sorted(evaluations(url, "ex")) == sorted((k, s) for k in after for s in range(0, STEPS + 1, EVERY))
    rows = query(url, "SELECT trial_key, optuna_trial_number, config_json FROM mimax_trials")
    configs = [json.loads(c) for _, _, c in rows]
    combos = [(c["critic"]["name"], c["estimator"]["name"]) for c in configs]
    assert set(combos) <= {(c, e) for c in ("lowrank", "bilinear") for e in ("symmetric-nce", "nce")}
    assert {"lowrank", "symmetric-nce"} <= {name for combo in combos for name in combo}, combos
    assert all(c["plugins"] == ["mimax_example.components"] and c["data"]["name"] == "noisy-copies" for c in configs)
    # trials ran on both nodes: the worker node imported the plugin itself
    assert len({t["node"] for t in after.values()}) == 2, after
    # the data's closed-form MI and symmetric InfoNCE's ceiling (log K) reached the database
    rows = query(url, "SELECT true_mi, ceiling FROM mimax_trials")
    assert all(mi == pytest.approx(-2 * math.log(1 - 0.8**2)) and top == pytest.approx(math.log(64)) for mi, top in rows)

    r = run("analyze", "ex", "--db", url, "--out", tmp_path / "report", "--json", "--no-importance",
            "--n-boot", "20", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "lowrank" in r.stdout and "symmetric-nce" in r.stdout
    # The grid's four configurations, each once (a resumed session once reshuffled the grid: trial 3 got
    # trial 0's point; tests/search_spaces/test_space_compile.py has the fast test of that)
    assert sorted(combos) == sorted((c, e) for c in ("lowrank", "bilinear") for e in ("symmetric-nce", "nce")), \
        sorted(zip((r[1] for r in rows), combos))
