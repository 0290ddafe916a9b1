"""A thin Ray Tune adapter around the training loop: report every evaluation with a checkpoint.

One Ray trial trains a *pack*: one or more seed replicates of one configuration. Its Ray config is
``{"pack_key", "trial" (trial config without seed), "members": [{"trial_key", "seed"}], "resume_from"}``.
A pack of one runs the plain ``Trainer``; a larger pack runs ``PackedTrainer`` (vmapped replicates).
Each result carries ``records`` = {trial_key: evaluation record} for the members with something new,
plus the members' mean of each metric at top level (what a scheduler compares).

A trial restored from a checkpoint (Ray's own restore, or ``resume_from`` given by ``mimax resume``)
re-reports the records stored in that checkpoint first: writes are idempotent on (trial, step), and
this closes the gap when the driver died between a checkpoint and its database write.

A fresh pack that does not fit its device (by ``fitting_pack_size``, or a real out-of-memory error
before its first evaluation after step 0) trains nothing: it reports one result without records,
``{"pack_split": size, "records": {}}``, and the searcher runs its members again in packs of ``size``.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

CHECKPOINT_FILE = "trainer.pt"
META_FILE = "meta.json"
MEAN_KEYS = ("bound_train", "bound_test", "probe_accuracy", "loss", "classifier_accuracy")


def read_meta(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(checkpoint_dir) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def records_of(result: dict[str, Any] | None) -> dict[str, dict]:
    """The per-member records of a result, whether Ray passed it nested or flattened ("records/KEY/x")."""
    if not result:
        return {}
    if isinstance(result.get("records"), dict):
        return result["records"]
    out: dict[str, dict] = {}
    for name, value in result.items():
        if name.startswith("records/"):
            _, key, field = name.split("/", 2)
            out.setdefault(key, {})[field] = value
    return out


def summary(records: dict[str, dict], step: int) -> dict[str, Any]:
    """Top-level metrics of a pack's result: the members' mean, where every member has a value."""
    out: dict[str, Any] = {"step": step, "event": "eval"}
    evals = [r for r in records.values() if r.get("event") == "eval"]
    if not evals:
        out["event"] = "diverged"
        return out
    for key in MEAN_KEYS:
        values = [r.get(key) for r in evals]
        if values and all(v is not None for v in values):
            out[key] = sum(values) / len(values)
    return out


class _Single:
    """``Trainer`` seen as a pack of one."""

    def __init__(self, trial: dict, seed: int, device: str):
        from mimax.trainables.loop import Trainer

        self.trainer = Trainer(dict(trial, seed=seed), device=device)

    def params(self) -> dict[str, int]:
        return self.trainer.param_counts()

    def load(self, path):
        self.trainer.load(path)

    def last(self) -> list[dict | None]:
        return [self.trainer.last_record]

    def run(self):
        for rec in self.trainer.run():
            yield [rec]

    @property
    def step(self) -> int:
        return self.trainer.step

    def save(self, path):
        self.trainer.save(path)


class _Pack(_Single):
    def __init__(self, trial: dict, seeds: list[int], device: str):
        from mimax.trainables.packed import PackedTrainer

        self.trainer = PackedTrainer(trial, seeds, device=device)

    def last(self) -> list[dict | None]:
        return list(self.trainer.last_records)

    def run(self):
        yield from self.trainer.run()


def _fit_or_split(build: Callable[[], _Single], n: int, fitting: int) -> tuple[_Single, Iterator] | int:
    """Start a fresh pack of ``n`` replicates: ``(runner, its outputs)``, or the pack size to split it
    into: ``fitting`` when only that many replicates fit, half when it runs out of memory before its
    first output after step 0. The step-0 outputs are held back until then, so a pack that splits has
    reported nothing."""
    from mimax.trainables.packed import _is_oom

    if n > 1 and fitting < n:
        return max(1, fitting)
    runner = outputs = None
    try:
        runner = build()
        outputs = runner.run()
        held = []
        for out in outputs:
            held.append(out)
            if runner.step > 0:
                break
        return runner, itertools.chain(held, outputs)
    except Exception as exc:
        if n == 1 or not _is_oom(exc):
            raise
    # Out of the except clause, the traceback no longer holds the pack's frames: free its memory.
    runner = outputs = None
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return max(1, n // 2)


def _gpu_share(ctx, device: str) -> float:
    """The trial's share of its GPU (Ray gives whole GPUs above 1); all of the memory on CPU."""
    if device != "cuda":
        return 1.0
    return min(1.0, float(ctx.get_assigned_resources().get("GPU") or 1.0))


def tune_trial(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    from mimax.trainables.packed import fitting_pack_size

    device = "cuda" if ray.get_gpu_ids() else "cpu"  # CPU-only trials never touch a GPU
    members = config["members"]
    keys = [m["trial_key"] for m in members]
    seeds = [m["seed"] for m in members]
    ctx = ray.get_runtime_context()
    where = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "device": device,
             "pack_size": len(members)}

    def build() -> _Single:
        return _Single(config["trial"], seeds[0], device) if len(members) == 1 else _Pack(config["trial"], seeds, device)

    restored = tune.get_checkpoint()
    replay: dict[str, dict] = {}
    if restored is None and not config.get("resume_from") and len(members) > 1:
        # The driver sized the pack from its own view of memory: check it on the trial's device.
        fitting = fitting_pack_size(config["trial"], len(members), device, share=_gpu_share(ctx, device))
        started = _fit_or_split(build, len(members), fitting)
        if isinstance(started, int):
            tune.report({**where, "pack_split": started, "records": {}})
            return
        runner, outputs = started
    else:
        runner = build()
        if restored is not None:
            with restored.as_directory() as d:
                runner.load(Path(d) / CHECKPOINT_FILE)
        elif config.get("resume_from"):
            runner.load(Path(config["resume_from"]) / CHECKPOINT_FILE)
        replay = {k: r for k, r in zip(keys, runner.last()) if r is not None and r.get("event") == "eval"}
        outputs = runner.run()
    where.update({f"params.{k}": v for k, v in runner.params().items()})
    if replay:
        step = max(r["step"] for r in replay.values())
        tune.report({**summary(replay, step), **where, "records": replay, "replayed": True})

    for out in outputs:
        records = {k: r for k, r in zip(keys, out) if r is not None}
        step = max(r["step"] for r in records.values())
        metrics = {**summary(records, step), **where, "records": records, "replayed": False}
        # Only divergences are worth no checkpoint; nor are held-back step-0 records (the pack is past them).
        if step != runner.step or not any(r["event"] == "eval" for r in records.values()):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            runner.save(Path(d) / CHECKPOINT_FILE)
            meta = {"pack_key": config["pack_key"], "trial_keys": keys, "step": runner.step}
            Path(d, META_FILE).write_text(json.dumps(meta))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
