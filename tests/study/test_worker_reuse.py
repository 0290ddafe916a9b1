"""A reused Ray worker runs trial after trial, and each trial's numbers are those it gets alone in a fresh
worker: no RNG state, plugin registration or dataset of one trial leaks into the next.

The same four trials run through mimax's Ray trainable twice on a one-CPU cluster: with Tune's actor reuse
(one worker process runs them all, one after another) and without it (each in a fresh process, the oracle).
They differ in seed, plugins and data; the tests' ``noisy-bilinear`` critic draws from torch's global RNG at
every step, so a worker that carried that RNG on from an earlier trial would change its numbers; the last
trial names the example plugin's critic without listing the plugin, and must fail on the reused worker as it
does on a fresh one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray import tune
from ray.tune.search import Searcher

from example_plugin import EXAMPLE, on_pythonpath
from mimax.trainables.tune_adapter import records_of, tune_trial

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
NOISY = "noisy_critic"  # tests/study/reuse_plugin
EXAMPLE_PLUGIN = "mimax_example.components"


def trial(key: str, seed: int, plugins: list[str], data, critic: str, estimator: str) -> dict:
    config = {"plugins": plugins, "data": data, "encoder": {"name": "mlp", "hidden": [16], "out_dim": 8},
              "critic": critic, "estimator": estimator, "train": {"steps": 30, "batch_size": 32, "lr": 1e-3},
              "eval": {"every": 10, "probe": "none", "bound_batches": 2}}
    return {"pack_key": key, "trial": config, "members": [{"trial_key": key, "seed": seed}], "resume_from": None}


TRIALS = [
    trial("a", 3, [NOISY], "digits", "noisy-bilinear", "nce"),
    trial("b", 5, [EXAMPLE_PLUGIN, NOISY], {"name": "noisy-copies", "dim": 4}, "noisy-bilinear", "symmetric-nce"),
    trial("a2", 4, [NOISY], "digits", "noisy-bilinear", "nwj"),  # digits again: the worker's cached copy
    trial("unlisted", 6, [], "digits", "lowrank", "nce"),  # b's plugin, not listed: an unknown critic
]


class Listed(Searcher):
    """These trial configs, in this order (as mimax's searcher hands out packs)."""

    def __init__(self, configs: list[dict]):
        super().__init__()
        self.todo = list(configs)

    def suggest(self, trial_id: str):
        return self.todo.pop(0) if self.todo else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass


class Collect(tune.Callback):
    def __init__(self):
        self.results: dict[str, list[dict]] = {}
        self.errors: dict[str, str] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.setdefault(trial.config["pack_key"], []).append(result)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errors[trial.config["pack_key"]] = Path(trial.error_file).read_text() if trial.error_file else ""


def run(reuse: bool, tmp_path) -> Collect:
    collect = Collect()
    tuner = tune.Tuner(
        tune.with_resources(tune_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=Listed(TRIALS), num_samples=len(TRIALS), reuse_actors=reuse,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / f"reuse{reuse}"), callbacks=[collect], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    tuner.fit()
    return collect


@pytest.fixture
def one_cpu_ray(monkeypatch):
    for directory in (HERE / "reuse_plugin", EXAMPLE / "src"):
        on_pythonpath(monkeypatch, directory)  # the workers import both plugins themselves
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             num_cpus=1)
    yield
    ray.shutdown()


def numbers(results: list[dict]) -> list[dict]:
    """Each evaluation record of the trial, without its wall time."""
    return [{k: v for k, v in rec.items() if k != "wall_s"} for r in results for rec in records_of(r).values()]


def test_a_reused_worker_gives_each_trial_the_numbers_of_a_fresh_one(one_cpu_ray, tmp_path):
    reused, fresh = run(True, tmp_path), run(False, tmp_path)

    keys = ["a", "b", "a2"]
    pids = {k: {r["pid"] for r in reused.results[k]} for k in keys}
    assert len(set.union(*pids.values())) == 1, pids  # one worker process ran every trial
    fresh_pids = {k: {r["pid"] for r in fresh.results[k]} for k in keys}
    assert len(set.union(*fresh_pids.values())) == 3, fresh_pids  # a fresh one for each

    for key in keys:
        got, want = numbers(reused.results[key]), numbers(fresh.results[key])
        assert [r["step"] for r in want] == [0, 10, 20, 30]
        assert got == want, key  # exactly: the same arithmetic from the same state

    for collected in (reused, fresh):
        assert "unlisted" not in collected.results
        assert "unknown critic 'lowrank'" in collected.errors["unlisted"], collected.errors["unlisted"][-500:]
