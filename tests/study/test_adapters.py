"""The behaviour of Optuna and Ray that mimax.study.adapters relies on, checked against the installed
versions: a new Optuna or Ray that changes it fails here, saying what changed."""

from __future__ import annotations

import inspect

import optuna
import pytest

from mimax.study import adapters
from mimax.study.adapters import scrub_ray_entrypoint, without_stop

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": [1, 2, 3]}


def _exhaust(study) -> None:
    for _ in range(3):
        trial = study.ask()
        trial.suggest_categorical("x", SPACE["x"])
        study.tell(trial, float(trial.params["x"]))


@pytest.mark.parametrize("sampler", [lambda: optuna.samplers.GridSampler(SPACE, seed=0),
                                     lambda: optuna.samplers.BruteForceSampler(seed=0)])
def test_a_sampler_that_stops_the_study_makes_tell_outside_optimize_raise(sampler):
    """Why without_stop exists. If this fails, Optuna no longer refuses such a tell: without_stop may go."""
    study = optuna.create_study(sampler=sampler())
    with pytest.raises(RuntimeError, match=r"Study\.stop"):
        _exhaust(study)


@pytest.mark.parametrize("sampler", [lambda: optuna.samplers.GridSampler(SPACE, seed=0),
                                     lambda: optuna.samplers.BruteForceSampler(seed=0)])
def test_without_stop_tells_the_last_point_and_the_sampler_still_sees_the_study(sampler, monkeypatch, tmp_path):
    stops = []
    monkeypatch.setattr(adapters._Unstoppable, "stop", lambda self: stops.append(self.study))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(sampler=without_stop(sampler()), storage=storage)
    _exhaust(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(t.params["x"] for t in study.get_trials(deepcopy=False)) == [1, 2, 3]  # each point once
    # the behaviour relied on: the sampler ends the study through stop() on the study it is handed
    assert stops and all(s is study for s in stops), stops


def test_ray_init_reads_the_entrypoint_through_the_function_the_adapter_wraps(monkeypatch):
    """ray.init records the driver's command line by calling ray._private.utils.get_entrypoint_name() at
    call time; the end-to-end check (a password absent from Ray's job table) is
    tests/study/test_secrets.py."""
    import ray._private.utils as ray_utils
    import ray._private.worker as ray_worker

    assert "ray._private.utils.get_entrypoint_name()" in inspect.getsource(ray_worker.init)
    monkeypatch.setattr(ray_utils, "get_entrypoint_name", ray_utils.get_entrypoint_name)  # undone after
    real = ray_utils.get_entrypoint_name()
    # the command line of this process, read from the OS (under xdist a worker's `python -c ...`, not pytest)
    token = real.split()[0]
    assert token and "***" not in real
    scrub_ray_entrypoint(lambda text: text.replace(token, "***"))
    scrub_ray_entrypoint(lambda text: text.replace("***", "twice"))  # a second call wraps nothing more
    assert ray_utils.get_entrypoint_name() == real.replace(token, "***") != real
