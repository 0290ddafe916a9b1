"""A pack that does not fit its device splits into smaller packs instead of crashing its Ray trial.

The decision (``memory.start_or_split``) and the trainable (``tune_trial``, with Ray's calls stubbed) are tested
in-process; the whole path through the searcher and the store runs a real study whose trials see a
small ``MIMAX_FREE_MEMORY``.
"""

from __future__ import annotations

import json
import math
import types
from collections import defaultdict, deque

import optuna
import pytest
import ray
import torch
from ray import tune

from engine_helpers import SPACES, evaluations, optuna_trials, query, run, trials
from mimax.errors import ConfigError
from mimax.search_spaces import load_space
from mimax.study.callback import StoreCallback
from mimax.study.searcher import StudySearcher
from mimax.trainables import loop
from mimax.trainables.memory import FILL, fitting_pack_size, free_memory, replicate_bytes, start_or_split
from mimax.trainables.tune_adapter import tune_trial

TS = optuna.trial.TrialState
SPACE = SPACES / "pack-split.yaml"


def trial_config() -> dict:
    return load_space(str(SPACE), None).enumerate()[0]


def two_fit() -> str:
    """A MIMAX_FREE_MEMORY under which 2 replicates of the space's config fit, not 3."""
    return str(int(2.5 * replicate_bytes(trial_config()) / FILL))


# ---------------------------------------------------------------------------------- the decision


class FakeRunner:
    """Yields an output at step 0, then one per step; raises ``fail`` once it reaches step ``fail_at``."""

    def __init__(self, steps=3, fail_at=None, fail=None):
        self.step, self.steps, self.fail_at, self.fail = 0, steps, fail_at, fail

    def run(self):
        yield ["rec0"]
        while self.step < self.steps:
            self.step += 1
            if self.step == self.fail_at:
                raise self.fail
            yield [f"rec{self.step}"]


def test_a_pack_that_fits_starts_and_gives_every_output():
    runner = FakeRunner()
    got, outputs = start_or_split(lambda: runner, 4, fitting=4)
    assert got is runner and list(outputs) == [["rec0"], ["rec1"], ["rec2"], ["rec3"]]


def test_a_pack_too_big_for_free_memory_splits_without_being_built():
    def build():
        raise AssertionError("a pack that does not fit must not be built")

    assert start_or_split(build, 4, fitting=2) == 2
    assert start_or_split(build, 4, fitting=3) == 3


@pytest.mark.parametrize("oom", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                 RuntimeError("CUDA out of memory")])
@pytest.mark.parametrize("where", ["build", "first step"])
def test_out_of_memory_before_the_first_step_halves_the_pack(oom, where):
    def build():
        if where == "build":
            raise oom
        return FakeRunner(fail_at=1, fail=oom)

    assert start_or_split(build, 4, fitting=4) == 2
    assert start_or_split(build, 3, fitting=4) == 1
    with pytest.raises(type(oom)):  # a single replicate has nowhere to go
        start_or_split(build, 1, fitting=1)


def test_out_of_memory_after_the_first_step_and_other_errors_are_raised():
    runner = FakeRunner(fail_at=2, fail=RuntimeError("CUDA out of memory"))
    got, outputs = start_or_split(lambda: runner, 4, fitting=4)
    with pytest.raises(RuntimeError):
        list(outputs)
    with pytest.raises(ValueError):
        start_or_split(lambda: FakeRunner(fail_at=1, fail=ValueError("a bug")), 4, fitting=4)


# --------------------------------------------------------------------------- the Ray trainable


@pytest.fixture
def reports(monkeypatch):
    """Run ``tune_trial`` in this process: Ray's calls stubbed, its reports collected."""
    out: list[tuple[dict, object]] = []
    ctx = types.SimpleNamespace(get_node_id=lambda: "node", get_assigned_resources=lambda: {"CPU": 1.0})
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: ctx)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: out.append((metrics, checkpoint)))
    return out


def pack_config(seeds) -> dict:
    members = [{"trial_key": f"c0000-s{s}", "seed": s} for s in seeds]
    return {"pack_key": f"c0000-p{seeds[0]}x{len(seeds)}", "trial": trial_config(), "members": members,
            "resume_from": None}


def test_tune_trial_reports_one_split_result_when_building_the_pack_runs_out_of_memory(reports, monkeypatch):
    class Oom:
        def __init__(self, config, seeds, device=None, dataset=None):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(loop, "Trainer", Oom)
    assert tune_trial(pack_config([0, 1, 2, 3])) is None  # returns normally: no failed Ray trial
    assert len(reports) == 1
    metrics, checkpoint = reports[0]
    assert metrics["pack_split"] == 2 and metrics["records"] == {} and checkpoint is None
    assert metrics["pack_size"] == 4 and "step" not in metrics  # nothing for a scheduler to compare


def test_tune_trial_splits_to_what_fits_under_mimax_free_memory(reports, monkeypatch):
    built = []
    monkeypatch.setattr(loop, "Trainer", lambda *a, **kw: built.append(a))
    monkeypatch.setenv("MIMAX_FREE_MEMORY", two_fit())
    tune_trial(pack_config([0, 1, 2, 3]))
    assert [m["pack_split"] for m, _ in reports] == [2] and reports[0][0]["records"] == {} and not built


def test_tune_trial_holds_step_0_back_until_the_first_step_and_checkpoints_only_current_state(reports):
    tune_trial(pack_config([0, 1]))
    assert [m["step"] for m, _ in reports] == [0, 20, 40]
    assert all(sorted(m["records"]) == ["c0000-s0", "c0000-s1"] and "pack_split" not in m for m, _ in reports)
    # Step 0 is reported once the pack is at step 20: no checkpoint of a state past the records.
    assert [c is None for _, c in reports] == [True, False, False]
    # What the pack is, in every result: one replicate's parameters, log K, no known MI (digits).
    params = {"params.g1": 32 * 32 + 32 + 32 * 16 + 16, "params.g2": 32 * 32 + 32 + 32 * 16 + 16, "params.critic": 16 * 16}
    for m, _ in reports:
        assert {k: m[k] for k in params} == params and m["true_mi"] is None
        assert m["ceiling"] == pytest.approx(math.log(32))


def test_mimax_free_memory_caps_free_memory(monkeypatch):
    monkeypatch.setenv("MIMAX_FREE_MEMORY", "2e5")
    assert free_memory("cpu") == 200_000
    assert fitting_pack_size(trial_config(), 4, "cpu") == 1
    monkeypatch.setenv("MIMAX_FREE_MEMORY", "1" + "0" * 30)  # more than there is: the real figure
    assert 0 < free_memory("cpu") < 10**30
    monkeypatch.setenv("MIMAX_FREE_MEMORY", "lots")
    with pytest.raises(ConfigError, match="MIMAX_FREE_MEMORY"):
        free_memory("cpu")


# ------------------------------------------------------------------ the searcher and the store


def test_the_searcher_runs_a_split_packs_members_next_and_ends_nothing():
    s = StudySearcher.__new__(StudySearcher)  # its split bookkeeping alone: no store, no Optuna
    s.queue, s.live, s.last, s.groups = deque(), {}, {}, defaultdict(dict)
    s.pack, s.metrics, s.seeds, s.target, s.asked = 4, ["bound_test"], [0, 1, 2, 3], 2, 2
    s._maybe_tell = lambda number: pytest.fail("a split pack is no outcome for Optuna")
    cfg = trial_config()
    s._queue_packs(1, [(f"c0001-s{i}", i) for i in range(4)], cfg)
    s.live["ray-a"] = s._item("c0000-p0x4", 0, [(f"c0000-s{i}", i) for i in range(4)], cfg, None)
    split = {"pack_split": 2, "records": {}, "pack_size": 4}
    s.on_trial_result("ray-a", split)
    s.on_trial_complete("ray-a", result=split)
    assert [i["pack_key"] for i in s.queue] == ["c0000-p0x2", "c0000-p2x2", "c0001-p0x4"]
    assert [m["seed"] for i in list(s.queue)[:2] for m in i["members"]] == [0, 1, 2, 3]
    assert not s.groups and not s.last and not s.live
    assert s.remaining() == 3 + 3 + 7  # a pack of n may still take 2n - 1 Ray trials


def test_the_store_callback_leaves_a_split_packs_members_pending():
    puts = []
    writer = types.SimpleNamespace(put=lambda kind, payload: puts.append((kind, payload)))
    cb = StoreCallback(writer)
    cfg = pack_config([0, 1, 2, 3])
    result = {"pack_split": 2, "records": {}, "pack_size": 4}
    trial = types.SimpleNamespace(config=cfg, last_result=result, trial_id="ray-a")
    cb.on_trial_result(0, [], trial, result)
    assert puts == []  # no records, nothing to write
    cb.on_trial_complete(0, [], trial)
    cb.on_trial_error(0, [], trial)
    assert puts == [("trial", (m["trial_key"], {"state": "pending"})) for m in cfg["members"]] * 2


# ------------------------------------------------------------------------------ a real study


def ray_trial_states(experiment_dir) -> dict[str, dict]:
    """Ray's own view of each trial of a session, by pack key (from Tune's experiment state file)."""
    (path,) = experiment_dir.glob("experiment_state-*.json")
    out = {}
    for trial_json, meta_json in json.loads(path.read_text())["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["relative_logdir"]] = {"status": trial["status"], **meta}
    return out


@pytest.mark.slow
def test_a_pack_that_does_not_fit_runs_as_smaller_packs_in_a_study(tmp_path, sqlite_url, monkeypatch):
    """--pack 4 with room for 2: the 4-pack's Ray trial splits, two 2-packs run, and the store and Optuna
    hold what a --pack 1 study of the same space holds."""
    monkeypatch.setenv("MIMAX_FREE_MEMORY", two_fit())  # Ray's local workers inherit the driver's environment
    r = run("launch", SPACE, "--name", "split", "--db", sqlite_url, "--pack", "4", "--results-dir",
            tmp_path / "res", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    monkeypatch.delenv("MIMAX_FREE_MEMORY")
    r = run("launch", SPACE, "--name", "alone", "--db", sqlite_url, "--pack", "1", "--results-dir",
            tmp_path / "res", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    keys = [f"c0000-s{s}" for s in range(4)]
    ts = trials(sqlite_url, "split")
    assert sorted(ts) == keys  # one row per replicate
    assert all(t["state"] == "completed" and t["last_step"] == 40 for t in ts.values()), ts
    assert sorted(evaluations(sqlite_url, "split")) == sorted(evaluations(sqlite_url, "alone"))
    assert len(evaluations(sqlite_url, "split")) == 4 * 3  # steps 0, 20, 40
    # The members ran as two packs of 2, not as the pack of 4 nor alone.
    assert ts["c0000-s0"]["ray_trial_id"] == ts["c0000-s1"]["ray_trial_id"] != ts["c0000-s2"]["ray_trial_id"]
    assert ts["c0000-s2"]["ray_trial_id"] == ts["c0000-s3"]["ray_trial_id"]
    rows = query(sqlite_url, """SELECT s.name, t.trial_key, e.step, e.bound_test, e.metrics FROM mimax_evaluations e
                                JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON s.id = t.study_id""")
    by = {(n, k, step): (b, json.loads(m)) for n, k, step, b, m in rows}
    assert {m["pack_size"] for (n, *_), (_, m) in by.items() if n == "split"} == {2}
    for k in keys:
        assert by[("alone", k, 40)][0] > 0.05  # trained: the relative tolerance means something
        # a pack's batched kernels against one trial's: rounding only (test_packed.py's bound)
        assert by[("split", k, 40)][0] == pytest.approx(by[("alone", k, 40)][0], rel=1e-4, abs=1e-6)

    # In Ray, the trial that split ended normally (no failure, no error) with its one result.
    ray_trials = ray_trial_states(tmp_path / "res" / "split-session0")
    assert sorted(ray_trials) == ["c0000-p0x2", "c0000-p0x4", "c0000-p2x2"]
    assert all(t["status"] == "TERMINATED" and t["num_failures"] == 0 and not t["error_filename"]
               for t in ray_trials.values()), ray_trials
    split = ray_trials["c0000-p0x4"]["last_result"]
    assert split["pack_split"] == 2 and split["training_iteration"] == 1 and not split.get("records")
    st = json.loads(run("status", "split", "--db", sqlite_url, "--json", cwd=tmp_path).stdout)
    assert st["states"] == {"completed": 4, "running": 0, "pruned": 0, "failed": 0, "diverged": 0}
    # Optuna was told once, after all four: COMPLETE with their mean.
    (ot,) = optuna_trials(sqlite_url, "split")
    assert ot.state == TS.COMPLETE
    assert ot.value == pytest.approx(sum(by[("split", k, 40)][0] for k in keys) / 4, rel=1e-9)
